//! `postern bench`: runs the load generator ([`crate::loadgen`]) and
//! prints its report, as text or JSON.
//!
//! May touch: the password file named (read), the network (one server
//! address, through the load generator), standard output.

use super::sysexits as exit;
use crate::loadgen::{self, Plan};

/// The AUTH login for `--auth-user` and `--password-file` (the file's
/// first line); `Err(exit code)` after saying why the file is unreadable.
pub(super) fn login(user: Option<String>, password_file: Option<std::path::PathBuf>) -> Result<Option<(String, String)>, i32> {
    match (user, password_file) {
        (Some(u), Some(f)) => match std::fs::read_to_string(&f) {
            Ok(t) => Ok(Some((u, t.lines().next().unwrap_or("").to_string()))),
            Err(e) => {
                eprintln!("postern: {}: {e}", f.display());
                Err(exit::USAGE)
            }
        },
        _ => Ok(None),
    }
}

/// Runs the plan on `rt` and prints the report; exit 75 if any message failed.
pub(super) fn run(rt: &tokio::runtime::Runtime, plan: Plan, json: bool) -> i32 {
    match rt.block_on(loadgen::run(plan)) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "accepted {} failed {} in {:.2} s: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms{}",
                    r.accepted,
                    r.failed,
                    r.seconds,
                    r.rate,
                    r.p50_ms,
                    r.p99_ms,
                    r.first_error.as_ref().map(|e| format!(" (first error: {e})")).unwrap_or_default()
                );
            }
            if r.failed == 0 {
                exit::OK
            } else {
                exit::TEMPFAIL
            }
        }
        Err(e) => {
            eprintln!("postern: bench: {e}");
            exit::TEMPFAIL
        }
    }
}
