//! The operator's mail log: one stable, greppable line per event.
//!
//! Format: `<RFC 3339 UTC time> <event> key=value key="value with spaces"`.
//! Separate from `tracing`, which is for debugging. Every event has its
//! own function below (and nothing else can write a line), so this list is
//! the whole vocabulary; a unit test checks that it matches [`EVENTS`].
//!
//! Events: connect, helo, tls, auth, rcpt, reject, milter, queued, hold,
//! discarded, delivered, deferred, failed, bounced, dsn, expired, removed,
//! release, delete, bounce, disconnect, reload, start, stop, error.
//!
//! May touch: the mail log file or standard error.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

enum Sink {
    Stderr,
    File(std::fs::File),
}

static SINK: OnceLock<Mutex<Sink>> = OnceLock::new();

/// Every line written, for unit tests that assert on the log.
#[cfg(test)]
pub(crate) static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sets where the mail log goes: "-" for standard error, or a file path
/// (opened for append). Called once at start-up.
pub fn init(target: &str) -> std::io::Result<()> {
    let sink = if target == "-" { Sink::Stderr } else { Sink::File(OpenOptions::new().create(true).append(true).open(target)?) };
    let _ = SINK.set(Mutex::new(sink));
    Ok(())
}

/// Quotes a value if it needs it, so lines stay parseable.
fn value(v: &str) -> String {
    if !v.is_empty() && !v.bytes().any(|c| c <= b' ' || c == b'"' || c == b'\\' || c == b'=' || c >= 0x7f) {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Formats one log line (without the time stamp).
pub fn format_event(event: &str, fields: &[(&str, &str)]) -> String {
    let mut line = String::from(event);
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&value(v));
    }
    line
}

macro_rules! events {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every event name, in the order of the module documentation.
        pub const EVENTS: &[&str] = &[$(stringify!($name)),*];
        $(
            $(#[$doc])*
            pub fn $name(fields: &[(&str, &str)]) {
                write(stringify!($name), fields)
            }
        )*
    };
}

events! {
    /// A client connected: `client`, `listener`.
    connect,
    /// HELO/EHLO: `client`, `helo`.
    helo,
    /// TLS handshake result or STARTTLS warning: `client`, `version`, `cipher`,
    /// `client_cert_mode`, `cert_subject`, `cert_sha256`, `cert` | `error` | `warning`;
    /// certificate generation, reload and expiry warnings.
    tls,
    /// AUTH: `client`, `mechanism`, `user`, `result` (ok, fail, refused, banned, ban), `reason`.
    auth,
    /// An accepted recipient: `client`, `from`, `to`, `result`, `rule`, `origin`.
    rcpt,
    /// A refused command: `client`, `command`, `reply`, and what it was about.
    reject,
    /// A milter decision or modification: `client`, `id`, `milter`, `stage`, `action` | `error`.
    milter,
    /// A message is on disk: `id`, `from`, `size`, `nrcpt`, `client` | `uid`, `helo`.
    queued,
    /// A message was put on hold: `id`, `reason` | `by`.
    hold,
    /// A milter discarded a message: `id`, `from`, `client`.
    discarded,
    /// A recipient was delivered: `id`, `to`, `relay`, `reply`, ...
    delivered,
    /// A delivery attempt failed temporarily: `id`, `to`, `relay`, `reply`, `next`.
    deferred,
    /// A recipient failed permanently: `id`, `to`, `relay`, `reply`.
    failed,
    /// A bounce was queued: `id`, `bounce_id`, ...
    bounced,
    /// A success or delay notice (DSN) was queued: `id`, `notice_id`, `kind`, ...
    dsn,
    /// A message outlived `queue.max_lifetime`: `id`, ...
    expired,
    /// A finished message left the queue: `id`.
    removed,
    /// A held message was released: `id`, `by`.
    release,
    /// A message was deleted by the operator: `id`, `by`.
    delete,
    /// The operator returned a message to its sender (`queue bounce`): `id`, `by`.
    bounce,
    /// A client went away: `client`, `messages`, `errors` | `reason`.
    disconnect,
    /// Configuration or TLS reload: `result`, `error`.
    reload,
    /// The daemon started: version, listeners, ...
    start,
    /// The daemon stopped.
    stop,
    /// Something went wrong that is not a client's or a peer's fault: `error`, `action`.
    error,
}

fn write(event: &str, fields: &[(&str, &str)]) {
    crate::metrics::observe(event, fields);
    let line = format!("{} {}\n", chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), format_event(event, fields));
    #[cfg(test)]
    match CAPTURED.lock() {
        Ok(mut g) => g.push(line.clone()),
        Err(p) => p.into_inner().push(line.clone()),
    }
    let sink = SINK.get_or_init(|| Mutex::new(Sink::Stderr));
    let mut guard = match sink.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let _ = match &mut *guard {
        Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
        Sink::File(f) => f.write_all(line.as_bytes()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented event list is exactly the set of event functions.
    #[test]
    fn documented_events_are_the_emitted_ones() {
        let doc = include_str!("maillog.rs");
        let start = doc.find("//! Events: ").map(|i| i + "//! Events: ".len()).unwrap_or(0);
        let end = start + doc[start..].find(".\n").unwrap_or(0);
        let listed: Vec<String> = doc[start..end].replace("//!", " ").split(',').map(|w| w.trim().to_string()).collect();
        assert_eq!(listed, EVENTS.iter().map(|e| e.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            format_event("reject", &[("id", "ABC"), ("reply", "550 5.7.1 no"), ("from", ""), ("x", "a\"b")]),
            "reject id=ABC reply=\"550 5.7.1 no\" from=\"\" x=\"a\\\"b\""
        );
    }
}
