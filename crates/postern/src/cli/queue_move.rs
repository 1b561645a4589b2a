//! `postern queue move --to HOST:PORT [--all | ID...]`: the CLI face of
//! `crate::queue::moveout` (drain this node into another before retiring
//! it). Needs the daemon stopped: it takes the spool lock the daemon holds.
//! Prints one line per message and a count; exit 0 only when everything
//! asked for left this node.
//!
//! May touch: the spool, the control socket (to tell a running daemon
//! apart), outbound SMTP to the target, standard output.

use serde_json::json;

use super::queue::open;
use super::sysexits as exit;
use crate::config::Endpoint;
use crate::control;
use crate::queue::moveout::{self, LockError, Moved, SpoolLock};
use crate::settings::Settings;
use crate::spool::QueueId;

/// Runs `queue move`; returns the exit code: 0 all moved, 75 something
/// stayed (or the daemon runs), 64 usage, 66 unknown id.
pub(super) fn run(s: &Settings, to: &str, all: bool, ids: &[String], as_json: bool) -> i32 {
    let to: Endpoint = match to.parse() {
        Ok(Endpoint::Unix(_)) | Err(_) => {
            eprintln!("postern: --to {to:?}: expected HOST:PORT (e.g. mx2.example.org:25 or [2001:db8::2]:25)");
            return exit::USAGE;
        }
        Ok(e) => e,
    };
    if all != ids.is_empty() {
        eprintln!("postern: queue move needs either --all or queue ids\nFor more information, try '--help'.");
        return exit::USAGE;
    }
    let mut wanted = Vec::new();
    for id in ids {
        match QueueId::parse(id) {
            Some(q) => wanted.push(q),
            None => {
                eprintln!("postern: {id:?} is not a queue id (16 hex digits)");
                return exit::USAGE;
            }
        }
    }
    let spool = match open(s) {
        Ok(sp) => sp,
        Err(c) => return c,
    };
    if control::request(&s.data_dir, "status").is_ok() {
        eprintln!(
            "postern: the daemon is running on {}: stop it first (its scheduler would race the move), then run queue move again",
            s.data_dir.display()
        );
        return exit::TEMPFAIL;
    }
    let _lock = match SpoolLock::acquire(spool.root()) {
        Ok(l) => l,
        Err(e @ LockError::Busy(_)) => {
            eprintln!("postern: {e}: stop the daemon first");
            return exit::TEMPFAIL;
        }
        Err(e) => {
            eprintln!("postern: {e}");
            return exit::CANTCREAT;
        }
    };
    // The moved lines go where the daemon's lines went (it is stopped).
    if let Err(e) = crate::maillog::init(&s.config.log.mail_log, s.config.log.format.into()) {
        eprintln!("postern: mail log {}: {e} (logging to standard error)", s.config.log.mail_log);
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let which = if all { None } else { Some(wanted) };
    let reports = match rt.block_on(moveout::move_all(s, &spool, &to, which)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern: {e}");
            return exit::TEMPFAIL;
        }
    };
    let moved = reports.iter().filter(|r| r.moved.is_whole()).count();
    let stayed = reports.len() - moved;
    if as_json {
        let v: Vec<_> = reports
            .iter()
            .map(|r| match &r.moved {
                Moved::Whole { reply } => json!({"id": r.id, "result": "moved", "reply": reply}),
                Moved::Partly { moved, kept, reply } => {
                    json!({"id": r.id, "result": "partly", "moved": moved, "kept": kept, "reply": reply})
                }
                Moved::Kept { reason } => json!({"id": r.id, "result": "kept", "reason": reason}),
            })
            .collect();
        println!("{}", json!({"to": to.to_string(), "moved": moved, "stayed": stayed, "messages": v}));
    } else {
        for r in &reports {
            match &r.moved {
                Moved::Whole { reply } => println!("{}: moved to {to} ({reply})", r.id),
                Moved::Partly { moved, kept, reply } => {
                    println!("{}: {moved} recipient(s) moved to {to}, {kept} still queued here ({reply})", r.id)
                }
                Moved::Kept { reason } => println!("{}: still queued here: {reason}", r.id),
            }
        }
        println!("{moved} message{} moved to {to}, {stayed} still queued here", if moved == 1 { "" } else { "s" });
    }
    let unknown = reports.iter().any(|r| matches!(&r.moved, Moved::Kept { reason } if reason.starts_with("no message ")));
    match (stayed, unknown) {
        (0, _) => exit::OK,
        (_, true) => exit::NOINPUT,
        _ => exit::TEMPFAIL,
    }
}
