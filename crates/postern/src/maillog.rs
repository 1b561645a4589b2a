//! The operator's mail log: one stable, greppable line per event.
//!
//! Format: `<RFC 3339 UTC time> <event> key=value key="value with spaces"`.
//! Events: connect, helo, reject, queued, attempt, delivered, deferred,
//! failed, bounced, expired, disconnect, hold, release, delete, reload,
//! start, stop. Separate from `tracing`, which is for debugging.
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
    let sink = if target == "-" {
        Sink::Stderr
    } else {
        Sink::File(OpenOptions::new().create(true).append(true).open(target)?)
    };
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

/// Writes one event.
pub fn event(event: &str, fields: &[(&str, &str)]) {
    let line = format!(
        "{} {}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        format_event(event, fields)
    );
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

    #[test]
    fn quoting() {
        assert_eq!(
            format_event("reject", &[("id", "ABC"), ("reply", "550 5.7.1 no"), ("from", ""), ("x", "a\"b")]),
            "reject id=ABC reply=\"550 5.7.1 no\" from=\"\" x=\"a\\\"b\""
        );
    }
}
