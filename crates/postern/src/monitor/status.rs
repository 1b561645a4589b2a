//! The `postern status` report: what the daemon sends over the control
//! socket (`status` -> `ok <JSON>`), and the health verdict the command
//! draws from it ([`problems`]), pure so it is table-tested.
//!
//! May touch: certificate files (reads, in [`CertStatus::from_file`]).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls;

/// CA-issued client certificates are reported when they expire within this many days.
pub const CA_ISSUED_WINDOW_DAYS: i64 = 30;

/// The daemon's status (`postern status --json` prints it, plus `healthy` and `problems`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// postern's version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Unix time the daemon started.
    pub started: i64,
    /// Seconds since then.
    pub uptime_seconds: u64,
    /// The config file the daemon loaded (`null`: the embedded default).
    pub config_file: Option<String>,
    /// The data directory.
    pub data_dir: String,
    /// The host name it uses.
    pub hostname: String,
    /// The metrics endpoint, if enabled.
    pub metrics_address: Option<String>,
    /// The SMTP listeners.
    pub listeners: Vec<ListenerStatus>,
    /// The queue.
    pub queue: QueueStatus,
    /// Certificates and their expiry.
    pub certificates: Vec<CertStatus>,
}

/// One listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ListenerStatus {
    /// Its name (default: the role).
    pub name: String,
    /// smtp, submission or submissions.
    pub role: String,
    /// The bound address.
    pub address: String,
    /// Its accept loop is running.
    pub up: bool,
}

/// Queue counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueStatus {
    /// Messages not tried yet.
    pub active: u64,
    /// Messages tried that wait for a retry.
    pub deferred: u64,
    /// Messages on hold.
    pub hold: u64,
    /// Bytes of active messages.
    pub active_bytes: u64,
    /// Bytes of deferred messages.
    pub deferred_bytes: u64,
    /// Bytes of held messages.
    pub hold_bytes: u64,
    /// Envelopes that cannot be read.
    pub corrupt: u64,
    /// Age of the oldest active or deferred message, seconds (`null`: none).
    pub oldest_age_seconds: Option<u64>,
    /// Why the queue could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertStatus {
    /// `server`, `client` (outbound, `tls.smarthost_client_certificate`),
    /// `ca` (the built-in CA) or `ca_issued` (a client certificate it issued).
    pub kind: String,
    /// The file, or the name given to `postern ca issue`.
    pub name: String,
    /// Subject DN.
    pub subject: String,
    /// notAfter, unix time (`null` when it could not be read).
    pub not_after: Option<i64>,
    /// Whole days left (negative: expired).
    pub days_left: Option<i64>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CertStatus {
    /// A certificate whose expiry is known (or not).
    pub fn new(kind: &str, name: &str, subject: &str, not_after: Option<i64>, now: i64) -> CertStatus {
        CertStatus {
            kind: kind.into(),
            name: name.into(),
            subject: subject.into(),
            not_after,
            days_left: not_after.map(|t| (t - now).div_euclid(86400)),
            error: None,
        }
    }

    fn failed(kind: &str, name: &str, error: String) -> CertStatus {
        CertStatus { kind: kind.into(), name: name.into(), error: Some(error), ..CertStatus::default() }
    }

    /// The first certificate of a DER chain element.
    pub fn from_der(kind: &str, name: &str, der: &[u8]) -> CertStatus {
        match tls::cert_info(der) {
            Ok(i) => CertStatus::new(kind, name, &i.subject, Some(i.not_after), chrono::Utc::now().timestamp()),
            Err(e) => CertStatus::failed(kind, name, e.to_string()),
        }
    }

    /// The first certificate of a PEM file.
    pub fn from_file(kind: &str, path: &Path) -> CertStatus {
        let name = path.display().to_string();
        match tls::files::load_certs(path) {
            Ok(certs) => match certs.first() {
                Some(c) => CertStatus::from_der(kind, &name, c),
                None => CertStatus::failed(kind, &name, "no certificate in file".into()),
            },
            Err(e) => CertStatus::failed(kind, &name, e.to_string()),
        }
    }
}

/// What makes a running daemon unhealthy, each as one sentence; empty
/// when healthy. `now` is unix time; `max_age` bounds the oldest queued
/// message; certificates must have more than `cert_days` days left.
pub fn problems(s: &Status, now: i64, max_age: Duration, cert_days: i64) -> Vec<String> {
    let mut out = Vec::new();
    for l in s.listeners.iter().filter(|l| !l.up) {
        out.push(format!("listener {} ({}) on {} is down", l.name, l.role, l.address));
    }
    if let Some(e) = &s.queue.error {
        out.push(format!("queue cannot be read: {e}"));
    }
    if let Some(age) = s.queue.oldest_age_seconds.filter(|a| *a > max_age.as_secs()) {
        out.push(format!("oldest queued message is {} old (more than --max-age {})", human(age), human(max_age.as_secs())));
    }
    if s.queue.corrupt > 0 {
        out.push(format!("{} queue envelope(s) cannot be read (postern queue list)", s.queue.corrupt));
    }
    for c in &s.certificates {
        match (c.not_after, &c.error) {
            (Some(t), _) if t <= now => out.push(format!("{} certificate {} expired {} day(s) ago", c.kind, c.name, (now - t) / 86400)),
            (Some(t), _) if t - now < cert_days * 86400 => {
                out.push(format!("{} certificate {} expires in {} day(s)", c.kind, c.name, (t - now) / 86400))
            }
            (None, Some(e)) => out.push(format!("{} certificate {} cannot be read: {e}", c.kind, c.name)),
            _ => {}
        }
    }
    out
}

/// `90061` -> `1d1h1m1s`; `0` -> `0s`.
pub fn human(secs: u64) -> String {
    let mut s = String::new();
    let mut left = secs;
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= n {
            s.push_str(&format!("{}{unit}", left / n));
            left %= n;
        }
    }
    if s.is_empty() {
        s.push_str("0s");
    }
    s
}
