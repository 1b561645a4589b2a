//! The mail-log observer: every operator log line (event name and fields,
//! see `maillog`) also moves the counters. One hook instead of calls
//! spread over the session, queue and delivery code.
//!
//! Label values that a client controls (an AUTH mechanism name, an SMTP
//! verb) are mapped to a fixed set, so a client cannot create series.
//!
//! May touch: nothing (memory only).

use super::{metrics, Labels, Metrics, MAX_TRACKED_CLIENTS};

/// AUTH mechanism names kept as label values; anything else is `other`.
const MECHANISMS: &[&str] = &[
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "EXTERNAL",
    "XOAUTH2",
    "OAUTHBEARER",
    "GSSAPI",
    "NTLM",
    "ANONYMOUS",
];

/// SMTP stages kept as label values (lower case); anything else is `other`.
const STAGES: &[&str] =
    &["connect", "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "vrfy", "expn", "noop", "quit"];

/// Transports kept as label values; anything else is `other`.
const TRANSPORTS: &[&str] = &["maildir", "lmtp", "smtp", "mx", "pipe", "local", "discard", "error"];

/// The longest label value taken from the log (rule names come from the config).
const MAX_LABEL: usize = 64;

fn field<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn bounded(v: &str) -> String {
    v.chars().take(MAX_LABEL).collect()
}

/// The transport of a `relay=` value: `smtp:host:25` -> `smtp`, `mx:example.org` -> `mx`.
pub(super) fn transport(relay: &str) -> String {
    let t = relay.split(':').next().unwrap_or("").to_ascii_lowercase();
    if TRANSPORTS.contains(&t.as_str()) {
        t
    } else {
        "other".into()
    }
}

fn mechanism(m: &str) -> String {
    let m = m.to_ascii_uppercase();
    if MECHANISMS.contains(&m.as_str()) {
        m
    } else {
        "other".into()
    }
}

fn stage(verb: &str) -> String {
    let v = verb.to_ascii_lowercase();
    if STAGES.contains(&v.as_str()) {
        v
    } else {
        "other".into()
    }
}

/// The kind of rule origin: `built-in`, `config` (a `file:line`), or the value itself for the few fixed ones.
fn origin(o: Option<&str>, rule: Option<&str>) -> String {
    match (o, rule) {
        (Some("built-in"), _) => "built-in".into(),
        (Some(_), _) => "config".into(),
        (None, Some("milter")) => "milter".into(),
        (None, _) => "session".into(),
    }
}

/// `delay=12s` -> 12.0.
fn seconds(v: &str) -> Option<f64> {
    v.strip_suffix('s').unwrap_or(v).parse::<f64>().ok()
}

/// Moves the counters for one mail-log line (`maillog::write` calls this).
pub fn observe(event: &str, fields: &[(&str, &str)]) {
    metrics().observe(event, fields);
}

impl Metrics {
    /// [`observe`] on this set of metrics.
    pub(super) fn observe(&self, event: &str, fields: &[(&str, &str)]) {
        let m = self;
        let f = |k: &str| field(fields, k);
        let one = |k: &'static str, v: String| -> Labels { vec![(k, v)] };
        match event {
            "connect" => {
                let listener = bounded(f("listener").unwrap_or("unknown"));
                m.connections.get_or_create(&one("listener", listener.clone())).inc();
                m.sessions.inc();
                if let (Some(client), Ok(mut map)) = (f("client"), m.clients.lock()) {
                    if map.len() < MAX_TRACKED_CLIENTS {
                        map.insert(client.to_string(), listener);
                    }
                }
            }
            "disconnect" => {
                m.sessions.dec();
                if let (Some(client), Ok(mut map)) = (f("client"), m.clients.lock()) {
                    map.remove(client);
                }
            }
            "queued" => {
                let listener = match (f("uid"), f("client")) {
                    (Some(_), _) | (None, Some("local")) => "local".to_string(),
                    (None, Some(c)) => m.clients.lock().ok().and_then(|map| map.get(c).cloned()).unwrap_or_else(|| "unknown".into()),
                    (None, None) => "unknown".into(),
                };
                m.received.get_or_create(&one("listener", listener)).inc();
            }
            "delivered" | "deferred" | "failed" => {
                let t = transport(f("relay").unwrap_or(""));
                let family = match event {
                    "delivered" => &m.delivered,
                    "deferred" => &m.deferred,
                    _ => &m.failed,
                };
                family.get_or_create(&one("transport", t.clone())).inc();
                if event == "delivered" {
                    if let Some(d) = f("delay").and_then(seconds) {
                        m.delay_seconds.get_or_create(&one("transport", t)).observe(d);
                    }
                }
            }
            "bounced" => {
                let result = if f("bounce_id").is_some() { "queued" } else { "suppressed" };
                m.bounces.get_or_create(&one("result", result.into())).inc();
            }
            "expired" => {
                m.expired.inc();
            }
            // Only handshakes with a client; certificate and reload lines have none.
            "tls" if f("client").is_some() => match (f("version"), f("error")) {
                (Some(v), _) => {
                    m.tls_handshakes.get_or_create(&one("version", bounded(v))).inc();
                }
                (None, Some(_)) => {
                    m.tls_failures.get_or_create(&Vec::new()).inc();
                }
                (None, None) => {}
            },
            "auth" => {
                let (Some(mech), Some(result)) = (f("mechanism"), f("result")) else { return };
                let mech = mechanism(mech);
                match result {
                    "ok" => {
                        m.auth_successes.get_or_create(&one("mechanism", mech)).inc();
                    }
                    "fail" | "refused" | "banned" => {
                        m.auth_failures.get_or_create(&vec![("mechanism", mech), ("result", result.to_string())]).inc();
                    }
                    _ => {}
                }
            }
            "reject" => {
                let st = match f("command") {
                    Some(c) => stage(c),
                    None => "connect".into(),
                };
                let rule = f("rule");
                let labels =
                    vec![("stage", st), ("rule", bounded(rule.or(f("reason")).unwrap_or("-"))), ("origin", origin(f("origin"), rule))];
                m.rejects.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }
}
