//! The operator's mail log: one stable, greppable line per event.
//!
//! Format `logfmt` (default): `<RFC 3339 UTC time> <event> key=value key="value with spaces"`.
//! Format `json`: one object per line, `{"time":"…","event":"…","key":"value",…}`,
//! every value a JSON string (numbers too), keys in the same order as logfmt.
//! Separate from `tracing`, which is for debugging. Every event has its
//! own function below (and nothing else can write a line), so this list is
//! the whole vocabulary; a unit test checks that it matches [`EVENTS`].
//! All of them go through the one `write` function.
//!
//! Events: connect, helo, tls, auth, rcpt, reject, milter, queued, hold,
//! discarded, delivered, deferred, failed, bounced, dsn, expired, removed,
//! release, delete, bounce, disconnect, reload, start, stop, error, dnsbl,
//! pregreet, cluster, moved, directory, mta_sts, tlsrpt.
//!
//! The log file is created mode 0600 (whatever the umask) and opened for
//! append; [`reopen`] closes and opens it again by name (after logrotate
//! or `mv`), [`configure`] switches to another file or format.
//!
//! May touch: the mail log file or standard error.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, MutexGuard};

/// How lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `time event key=value ...`.
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

enum Sink {
    Stderr,
    File(std::fs::File),
}

struct State {
    target: String,
    format: Format,
    sink: Sink,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Every line written, for unit tests that assert on the log.
#[cfg(test)]
pub(crate) static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn state() -> MutexGuard<'static, Option<State>> {
    match STATE.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Opens `target` ("-": standard error; else a file, created 0600, append).
fn open(target: &str) -> std::io::Result<Sink> {
    if target == "-" {
        return Ok(Sink::Stderr);
    }
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(target)?;
    Ok(Sink::File(f))
}

/// Sets where the mail log goes: "-" for standard error, or a file path
/// (opened for append, created 0600), and its format. Called at start-up.
pub fn init(target: &str, format: Format) -> std::io::Result<()> {
    let sink = open(target)?;
    *state() = Some(State { target: target.to_string(), format, sink });
    Ok(())
}

/// Opens the log file again by name (after it was renamed by logrotate
/// or `mv`): new lines go to a new file. On error the old file is kept.
pub fn reopen() -> std::io::Result<()> {
    let mut g = state();
    if let Some(st) = g.as_mut() {
        st.sink = open(&st.target)?;
    }
    Ok(())
}

/// Where the log goes now ("-" for standard error), if [`init`] ran.
pub fn current_target() -> Option<String> {
    state().as_ref().map(|st| st.target.clone())
}

/// Switches to `target` and `format` (a reload), reopening the file in any
/// case; returns whether the target or format changed. On error the old
/// file and format are kept.
pub fn configure(target: &str, format: Format) -> std::io::Result<bool> {
    let sink = open(target)?;
    let mut g = state();
    let changed = g.as_ref().is_none_or(|st| st.target != target || st.format != format);
    *g = Some(State { target: target.to_string(), format, sink });
    Ok(changed)
}

/// Appends a value, quoted if it needs it, so lines stay parseable.
fn push_value(line: &mut String, v: &str) {
    if !v.is_empty() && !v.bytes().any(|c| c <= b' ' || c == b'"' || c == b'\\' || c == b'=' || c >= 0x7f) {
        line.push_str(v);
        return;
    }
    line.push('"');
    for c in v.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if c.is_control() => line.push_str(&format!("\\x{:02x}", c as u32)),
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Appends `event key=value ...` to `line`.
fn push_event(line: &mut String, event: &str, fields: &[(&str, &str)]) {
    line.push_str(event);
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        push_value(line, v);
    }
}

/// Formats one log line (without the time stamp).
pub fn format_event(event: &str, fields: &[(&str, &str)]) -> String {
    let mut line = String::with_capacity(line_capacity(event, fields));
    push_event(&mut line, event, fields);
    line
}

/// Room for a line without quoting, and its time stamp.
fn line_capacity(event: &str, fields: &[(&str, &str)]) -> usize {
    32 + event.len() + fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
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
    /// AUTH: `client`, `mechanism`, `user`, `result` (ok, fail, refused, banned, ban,
    /// tempfail: the account directory could not answer), `reason`.
    auth,
    /// An accepted recipient: `client`, `from`, `to`, `result`, `rule`, `origin`.
    rcpt,
    /// A refused command: `client`, `command`, `reply`, and what it was about.
    reject,
    /// A milter decision or modification: `client`, `id`, `milter`, `stage`, `action` | `error`.
    milter,
    /// A message is on disk: `id`, `from`, `size`, `nrcpt`, `client` | `uid`, `helo`,
    /// `authres` (verification results, `spf:pass,dkim:pass,dmarc:pass,arc:none`, when checked).
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
    /// A client's DNSBL score: `client`, `score`, `lists` (`zone:weight,...`),
    /// `verdict` (pass, allowlisted, listed), `failed` (lists that did not answer).
    dnsbl,
    /// The pre-greeting test: `client`, `result` (pass, pregreet, pipelining), `action`, `waited`.
    pregreet,
    /// The cluster's shared store changed state: `redis` (unreachable, ok),
    /// `action` (local counters), `server`, `request`, `error`.
    cluster,
    /// `queue move` relayed a message to another node and removed it here:
    /// `id`, `to`, `nrcpt`, `reply` (or `result=kept` with `reason`).
    moved,
    /// An account directory went down or came back (one line per transition):
    /// `backend`, `state` (unavailable, available), `reason`.
    directory,
    /// MTA-STS (RFC 8461, docs/delivery.md): `domain`, `result` (fetched,
    /// fetch-error, txt-invalid, mx-mismatch, tls-failure), `mode`, `host`,
    /// `ip`, `type` (the TLS-RPT result type), `error` | `detail`, `using` |
    /// `action`.
    mta_sts,
    /// A TLS report (RFC 8460) for one policy domain and day: `day`, `domain`,
    /// `result` (queued, skipped, failed), `report_id`, `notice_id`, `to`, `reason`.
    tlsrpt,
}

/// One JSON line (without the newline): `time`, `event`, then the fields.
pub fn format_json(time: &str, event: &str, fields: &[(&str, &str)]) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
    let mut line = format!("{{\"time\":{},\"event\":{}", q(time), q(event));
    for (k, v) in fields {
        line.push(',');
        line.push_str(&q(k));
        line.push(':');
        line.push_str(&q(v));
    }
    line.push('}');
    line
}

/// The single writer: every event goes through here.
fn write(event: &str, fields: &[(&str, &str)]) {
    crate::metrics::observe(event, fields);
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let format = state().as_ref().map(|st| st.format).unwrap_or_default();
    // Built in one buffer, outside the lock; the lock is held for the write only.
    let line = match format {
        Format::Logfmt => {
            let mut line = String::with_capacity(line_capacity(event, fields));
            line.push_str(&time);
            line.push(' ');
            push_event(&mut line, event, fields);
            line.push('\n');
            line
        }
        Format::Json => format!("{}\n", format_json(&time, event, fields)),
    };
    let mut guard = state();
    #[cfg(test)]
    match CAPTURED.lock() {
        Ok(mut g) => g.push(line.clone()),
        Err(p) => p.into_inner().push(line.clone()),
    }
    let _ = match guard.as_mut().map(|st| &mut st.sink) {
        None | Some(Sink::Stderr) => std::io::stderr().write_all(line.as_bytes()),
        Some(Sink::File(f)) => f.write_all(line.as_bytes()),
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

    /// Every event in JSON is one object that serde_json reads back:
    /// `time`, `event`, then the same keys and values, quoting included.
    #[test]
    fn json_round_trip_for_every_event() {
        let fields: &[(&str, &str)] = &[
            ("id", "0123456789ABCDEF"),
            ("reply", "550 5.7.1 \"no\" \\ way"),
            ("from", ""),
            ("ctl", "a\r\nb\x07\u{7f}"),
            ("utf8", "Grüße ✉"),
            ("size", "1234"),
        ];
        for event in EVENTS {
            let line = format_json("2026-12-05T09:00:00.000Z", event, fields);
            assert!(!line.contains('\n'), "{line}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{event}: {e}: {line}"));
            let obj = v.as_object().expect("object");
            assert_eq!(obj.len(), 2 + fields.len());
            assert_eq!(v["time"], "2026-12-05T09:00:00.000Z");
            assert_eq!(v["event"], *event);
            for (k, val) in fields {
                assert_eq!(v[*k], *val, "{event} {k}");
            }
            assert!(line.starts_with("{\"time\":\"2026-12-05T09:00:00.000Z\",\"event\":"), "{line}");
        }
    }

    /// Reopen: write, rename the file away, reopen, write: the second line
    /// is in a new file with mode 0600, the first stays in the renamed one.
    #[test]
    fn reopen_after_rename_writes_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("postern-maillog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("mail.log");
        let target = log.to_str().expect("utf-8").to_string();
        configure(&target, Format::Logfmt).expect("configure");
        error(&[("marker", "before-rotation")]);
        std::fs::rename(&log, dir.join("mail.log.1")).expect("rename");
        error(&[("marker", "still-old-file")]);
        assert!(!log.exists());
        reopen().expect("reopen");
        error(&[("marker", "after-rotation")]);
        // A file that cannot be opened keeps the old file and format.
        assert!(configure("/nonexistent-postern-dir/mail.log", Format::Json).is_err());
        error(&[("marker", "kept-after-failed-switch")]);
        configure("-", Format::Logfmt).expect("back to stderr");
        let old = std::fs::read_to_string(dir.join("mail.log.1")).expect("old");
        let new = std::fs::read_to_string(&log).expect("new");
        assert!(old.contains("before-rotation") && old.contains("still-old-file"), "{old}");
        assert!(!old.contains("after-rotation"), "{old}");
        assert!(new.contains("after-rotation") && !new.contains("before-rotation"), "{new}");
        assert!(new.contains(" error marker=kept-after-failed-switch"), "{new}");
        assert_eq!(std::fs::metadata(&log).expect("meta").permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
