//! `postern status [--json]`: asks the running daemon (control socket
//! `status`) for its listeners, queue and certificates, and says whether
//! it is healthy. Usable as a health check: exit 0 healthy, 1 unhealthy
//! (each reason on standard error), 69 not running.
//!
//! May touch: the control socket, standard output and error.

use std::time::Duration;

use clap::Args;

use super::sysexits as exit;
use crate::control;
use crate::monitor::status::{human, problems, Status};
use crate::settings::Settings;

/// Exit code of a running but unhealthy daemon.
pub const UNHEALTHY: i32 = 1;

/// `postern status` options.
#[derive(Args)]
pub struct StatusArgs {
    /// Print the status as JSON (with `healthy` and `problems`).
    #[arg(long)]
    json: bool,
    /// Unhealthy when the oldest active or deferred message is older than this.
    #[arg(long, value_name = "AGE", default_value = "1d", value_parser = humantime::parse_duration)]
    max_age: Duration,
    /// Unhealthy when a certificate expires within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    cert_days: i64,
}

/// Runs `postern status`. Returns the exit code.
pub fn run(s: &Settings, a: &StatusArgs) -> i32 {
    let status = match fetch(s) {
        Ok(st) => st,
        Err(reason) => {
            let reason = format!("daemon not running: {reason}");
            if a.json {
                println!("{}", serde_json::json!({ "running": false, "healthy": false, "problems": [reason] }));
            }
            eprintln!("postern status: {reason}");
            return exit::UNAVAILABLE;
        }
    };
    let found = problems(&status, chrono::Utc::now().timestamp(), a.max_age, a.cert_days);
    if a.json {
        let mut v = serde_json::to_value(&status).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("running".into(), true.into());
            o.insert("healthy".into(), found.is_empty().into());
            o.insert("problems".into(), found.clone().into());
        }
        println!("{v}");
    } else {
        print!("{}", render(&status));
    }
    for p in &found {
        eprintln!("postern status: unhealthy: {p}");
    }
    if found.is_empty() {
        exit::OK
    } else {
        UNHEALTHY
    }
}

/// Asks the daemon; `Err` says why there is no answer.
fn fetch(s: &Settings) -> Result<Status, String> {
    let sock = control::socket_path(&s.data_dir);
    let answer = control::request(&s.data_dir, "status").map_err(|e| format!("{}: {e}", sock.display()))?;
    let json = answer.strip_prefix("ok ").ok_or_else(|| format!("unexpected answer {answer:?} (daemon older than this command?)"))?;
    serde_json::from_str(json).map_err(|e| format!("bad status answer: {e}"))
}

/// The human-readable report.
fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("postern {} running, pid {}, up {}", s.version, s.pid, human(s.uptime_seconds)));
    line(format!("config:    {}", s.config_file.as_deref().unwrap_or("(embedded default)")));
    line(format!("data dir:  {}", s.data_dir));
    line(format!("hostname:  {}", s.hostname));
    line(format!("metrics:   {}", s.metrics_address.as_deref().map_or("off".to_string(), |a| format!("http://{a}/metrics"))));
    line("listeners:".into());
    for l in &s.listeners {
        line(format!("  {:<12} {:<12} {:<24} {}", l.name, l.role, l.address, if l.up { "up" } else { "DOWN" }));
    }
    let q = &s.queue;
    let oldest = q.oldest_age_seconds.map_or("-".to_string(), human);
    line(format!("queue:     active {}, deferred {}, hold {}; oldest {}", q.active, q.deferred, q.hold, oldest));
    if q.corrupt > 0 {
        line(format!("           {} unreadable envelope(s)", q.corrupt));
    }
    if let Some(e) = &q.error {
        line(format!("           cannot read the queue: {e}"));
    }
    line("certificates:".into());
    if s.certificates.is_empty() {
        line("  (none)".into());
    }
    for c in &s.certificates {
        let when = match (c.not_after, c.days_left, &c.error) {
            (Some(t), Some(d), _) => {
                let date = chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
                if d < 0 {
                    format!("EXPIRED {date}")
                } else {
                    format!("expires {date} ({d} days)")
                }
            }
            (_, _, Some(e)) => format!("unreadable: {e}"),
            _ => "unknown expiry".into(),
        };
        line(format!(
            "  {:<10} {} {}: {}",
            c.kind,
            c.name,
            if c.subject.is_empty() { String::new() } else { format!("[{}]", c.subject) },
            when
        ));
    }
    out
}
