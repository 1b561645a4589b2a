//! The verdicts of `postern check smarthost`: from what the probe saw
//! ([`Facts`]) to one [`Step`] per stage, each OK / WARN / FAIL / SKIP with
//! what to do, the final verdict, the exit code, and the text and JSON
//! forms. Pure, so every verdict is table-tested.
//!
//! May touch: nothing. RFC 5321 (replies), RFC 3207 (STARTTLS), RFC 4954 (AUTH).

use serde::Serialize;

use crate::config::{Endpoint, OutboundTls};
use crate::delivery::smtp::{ConnError, Event};
use crate::delivery::Outcome;

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Works, but not as it should (mail goes, less safely).
    Warn,
    /// Mail to this next hop would not be delivered.
    Fail,
    /// Not reached (an earlier step failed) or not applicable.
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One verdict line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which step: `dns`, `connect`, `ehlo`, `tls`, `certificate`,
    /// `client_certificate`, `auth`, `transaction`.
    pub step: &'static str,
    /// How it went.
    pub verdict: Verdict,
    /// What was seen.
    pub text: String,
    /// What to do about it (WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// More lines (the server's certificate chain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// A FAIL that may pass by itself later (connect, 4xx): exit 75, not 69.
    #[serde(skip)]
    pub temporary: bool,
}

/// The order of the steps.
pub const STEPS: [&str; 8] = ["dns", "connect", "ehlo", "tls", "certificate", "client_certificate", "auth", "transaction"];

/// What the TLS handshake showed.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    /// The server's chain, one line per certificate, end entity first.
    pub chain: Vec<String>,
    /// Whether the chain verifies for the server name against our CAs.
    pub verify: Option<Result<(), String>>,
    /// The server sent a CertificateRequest.
    pub requested: bool,
    /// Its acceptable CA names.
    pub acceptable_cas: Vec<String>,
    /// We sent a certificate.
    pub sent: bool,
}

/// How the connection ended.
#[derive(Debug, Clone)]
pub enum Finish {
    /// No test message: RSET's reply (or why it failed), then QUIT.
    Rset(Result<String, String>),
    /// `--send-test TO`: the outcome of the test transaction.
    Sent {
        /// The recipient.
        to: String,
        /// Its outcome, or the connection error.
        outcome: Result<Outcome, String>,
    },
}

/// Everything the probe saw, and the configuration it connected with.
#[derive(Debug)]
pub struct Facts {
    /// What was checked ("smarthost", "route example.org").
    pub target: String,
    /// The next hop.
    pub endpoint: Endpoint,
    /// The effective TLS policy (`None` when no TLS is configured).
    pub policy: OutboundTls,
    /// Implicit TLS (port 465 style).
    pub implicit_tls: bool,
    /// The name sent as SNI and verified.
    pub server_name: String,
    /// The subject of our configured client certificate.
    pub client_cert: Option<String>,
    /// The configured AUTH user name (never the password).
    pub user: Option<String>,
    /// The addresses the host resolves to (empty for a unix socket).
    pub dns: Result<Vec<String>, String>,
    /// What opening the connection reported, in order.
    pub events: Vec<Event>,
    /// The handshake, when TLS was attempted.
    pub tls: Option<TlsFacts>,
    /// How opening the connection ended.
    pub open: Result<(), ConnError>,
    /// How the session ended, when it opened.
    pub finish: Option<Finish>,
}

fn step(step: &'static str, verdict: Verdict, text: impl Into<String>) -> Step {
    Step { step, verdict, text: text.into(), fix: None, details: Vec::new(), temporary: false }
}

impl Step {
    fn fix(mut self, fix: impl Into<String>) -> Step {
        self.fix = Some(fix.into());
        self
    }
    fn temporary(mut self, yes: bool) -> Step {
        self.temporary = yes;
        self
    }
}

fn policy_word(p: OutboundTls) -> &'static str {
    match p {
        OutboundTls::None => "none",
        OutboundTls::May => "may",
        OutboundTls::Encrypt => "encrypt",
        OutboundTls::Verify => "verify",
        OutboundTls::Dane => "dane",
    }
}

/// The EHLO keywords of a reply (its lines after the first).
fn keywords(e: &Event) -> Vec<String> {
    match e {
        Event::Hello { reply, .. } => reply.lines.iter().skip(1).map(|l| l.to_string()).collect(),
        _ => Vec::new(),
    }
}

impl Facts {
    fn hello(&self, tls: bool) -> Option<&Event> {
        self.events.iter().find(|e| matches!(e, Event::Hello { tls: t, .. } if *t == tls))
    }
    fn tls_note(&self) -> Option<&str> {
        self.events.iter().find_map(|e| if let Event::Tls(n) = e { Some(n.as_str()) } else { None })
    }
    fn requested(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.requested)
    }

    /// The step the connection error belongs to.
    fn failing_step(&self, e: &ConnError) -> &'static str {
        let tls_done = self.tls_note().is_some();
        let has = |f: fn(&Event) -> bool| self.events.iter().any(f);
        match e {
            // Postfix with smtpd_tls_req_ccert answers the first command
            // inside TLS with 421 "No client certificate presented".
            ConnError::Greeting { .. } | ConnError::HelloRefused { .. } if tls_done && self.requested() => "client_certificate",
            ConnError::Connect { .. } | ConnError::Greeting { .. } => "connect",
            ConnError::HelloRefused { .. } => "ehlo",
            ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } | ConnError::TlsNotConfigured(_) => "tls",
            ConnError::BadServerName { .. } => "tls",
            ConnError::Handshake { reason, .. } if reason.contains("invalid peer certificate") => "certificate",
            ConnError::Handshake { .. } if self.requested() => "client_certificate",
            ConnError::Handshake { .. } => "tls",
            ConnError::CredentialsWithoutTls(_)
            | ConnError::PasswordOverUnverifiedTls { .. }
            | ConnError::NoAuthMechanism { .. }
            | ConnError::AuthFailed { .. }
            | ConnError::Sasl(_)
            | ConnError::ScramServer(_) => "auth",
            _ if !has(|e| matches!(e, Event::Connected { .. })) => "connect",
            _ if tls_done && self.hello(true).is_none() && !self.implicit_tls => {
                if self.requested() {
                    "client_certificate"
                } else {
                    "tls"
                }
            }
            _ if !has(|e| matches!(e, Event::Greeting(_))) => "connect",
            _ if self.hello(false).is_none() && self.hello(true).is_none() => "ehlo",
            _ if !tls_done && has(|e| matches!(e, Event::StartTls(_))) => "tls",
            _ => "auth",
        }
    }
}

/// The verdict of every step, in [`STEPS`] order.
pub fn assess(f: &Facts) -> Vec<Step> {
    let failing = match &f.open {
        Err(e) => Some((f.failing_step(e), e)),
        Ok(()) => None,
    };
    let fail_at = match (&f.dns, failing) {
        (Err(_), _) => Some("dns"),
        (_, Some((s, _))) => Some(s),
        _ => None,
    };
    let fail_idx = fail_at.and_then(|s| STEPS.iter().position(|x| *x == s));
    STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| match fail_idx {
            Some(k) if i > k && !(*name == "certificate" && f.tls.as_ref().is_some_and(|t| !t.chain.is_empty())) => {
                step(name, Verdict::Skip, "not reached")
            }
            Some(k) if i == k => failed(f, name, failing.map(|(_, e)| e)),
            _ => passed(f, name),
        })
        .collect()
}

/// A step that went through (possibly with a warning).
fn passed(f: &Facts, name: &'static str) -> Step {
    let policy = policy_word(f.policy);
    match name {
        "dns" => match (&f.endpoint, &f.dns) {
            (Endpoint::Unix(p), _) => step(name, Verdict::Ok, format!("unix socket {} (no DNS)", p.display())),
            (ep, Ok(addrs)) => step(name, Verdict::Ok, format!("{ep} resolves to {}", addrs.join(", "))),
            (_, Err(e)) => step(name, Verdict::Skip, e.clone()),
        },
        "connect" => {
            let mut text = String::new();
            for e in &f.events {
                match e {
                    Event::Connected { peer, elapsed } => text.push_str(&format!("connected to {peer} in {} ms", elapsed.as_millis())),
                    Event::Greeting(r) => text.push_str(&format!("; greeting: {}", r.summary())),
                    _ => {}
                }
            }
            step(name, Verdict::Ok, text)
        }
        "ehlo" => match f.hello(false).or_else(|| f.hello(true)) {
            Some(e @ Event::Hello { reply, .. }) => {
                let kw = keywords(e);
                step(
                    name,
                    Verdict::Ok,
                    format!("{} {}; extensions: {}", reply.code, reply.lines.first().map(|l| l.as_ref()).unwrap_or(""), kw.join(", ")),
                )
            }
            _ => step(name, Verdict::Skip, "no EHLO"),
        },
        "tls" => tls_passed(f, policy),
        "certificate" => certificate_step(f, policy),
        "client_certificate" => client_cert_passed(f),
        "auth" => auth_passed(f),
        _ => transaction_step(f),
    }
}

fn tls_passed(f: &Facts, policy: &str) -> Step {
    let name = "tls";
    if let Some(note) = f.tls_note() {
        let summary: Vec<&str> = note.split_whitespace().take(2).collect();
        let how = if f.implicit_tls { "implicit TLS" } else { "STARTTLS" };
        return step(name, Verdict::Ok, format!("{how}: {}", summary.join(" ")));
    }
    if f.policy == OutboundTls::None {
        return step(name, Verdict::Warn, "TLS is off (relay.smarthost_tls = \"none\"): mail and any password travel in clear")
            .fix("set relay.smarthost_tls = \"verify\" (or \"encrypt\")");
    }
    let reply = f.events.iter().find_map(|e| if let Event::StartTls(r) = e { Some(r) } else { None });
    if f.implicit_tls || reply.is_some_and(|r| r.code == 220) {
        let how = if f.implicit_tls { "implicit TLS" } else { "STARTTLS accepted" };
        return step(name, Verdict::Ok, format!("{how}; the handshake did not finish (see below)"));
    }
    let text = match reply.map(|r| r.summary()) {
        Some(r) => format!("the server refused STARTTLS ({r}); mail goes unencrypted (smarthost_tls = \"{policy}\")"),
        None => format!("the server does not offer STARTTLS; mail goes unencrypted (smarthost_tls = \"{policy}\")"),
    };
    step(name, Verdict::Warn, text).fix("enable STARTTLS on the server, then set relay.smarthost_tls = \"verify\"")
}

/// The fix for a certificate that does not verify, by reason.
fn verify_fix(reason: &str) -> &'static str {
    if reason.contains("not valid for") {
        "set relay.smarthost_server_name to a name the certificate holds (its SANs are above)"
    } else if reason.contains("expired") || reason.contains("not valid yet") {
        "the server's certificate is outside its validity period: renew it on the server (or check this host's clock)"
    } else if reason.contains("no CA") {
        "set relay.smarthost_ca_files to the CA that issued the server's certificate"
    } else {
        "set relay.smarthost_ca_files to the CA that issued the server's certificate (or relay.smarthost_tls = \"encrypt\" to accept it unverified)"
    }
}

fn certificate_step(f: &Facts, policy: &str) -> Step {
    let name = "certificate";
    let Some(t) = f.tls.as_ref().filter(|t| !t.chain.is_empty() || f.tls_note().is_some()) else {
        return step(name, Verdict::Skip, "no TLS");
    };
    let mut s = match &t.verify {
        None => step(name, Verdict::Skip, "no certificate received"),
        Some(Ok(())) => step(name, Verdict::Ok, format!("verifies for \"{}\" against the configured CAs", f.server_name)),
        Some(Err(reason)) if f.policy == OutboundTls::Verify => {
            step(name, Verdict::Fail, format!("does not verify for \"{}\": {reason}", f.server_name)).fix(verify_fix(reason))
        }
        Some(Err(reason)) => step(
            name,
            Verdict::Warn,
            format!(
                "does not verify for \"{}\": {reason}; accepted anyway (smarthost_tls = \"{policy}\"), so anyone on the path could pose as the server",
                f.server_name
            ),
        )
        .fix(format!("{}, then set relay.smarthost_tls = \"verify\"", verify_fix(reason))),
    };
    s.details = t.chain.clone();
    s
}

fn requested_text(t: &TlsFacts) -> String {
    if t.acceptable_cas.is_empty() {
        "requested (no CA names given)".to_string()
    } else {
        format!("requested (acceptable CAs: {})", t.acceptable_cas.join("; "))
    }
}

fn client_cert_passed(f: &Facts) -> Step {
    let name = "client_certificate";
    let Some(t) = f.tls.as_ref().filter(|_| f.tls_note().is_some()) else { return step(name, Verdict::Skip, "no TLS") };
    let ours = f.client_cert.as_deref().unwrap_or("ours");
    match (t.requested, t.sent, &f.client_cert) {
        (true, true, _) => step(name, Verdict::Ok, format!("{}; sent {ours}; accepted", requested_text(t))),
        (true, false, None) => step(name, Verdict::Ok, format!("{}; none configured, the server went on without one", requested_text(t))),
        (true, false, Some(_)) => step(name, Verdict::Warn, format!("{}; {ours} was not sent", requested_text(t)))
            .fix("check that relay.smarthost_client_certificate and smarthost_client_key belong together"),
        (false, _, Some(_)) => step(name, Verdict::Warn, format!("not requested by the server; {ours} was not sent"))
            .fix("if the server should know us by certificate, have it ask for one (Postfix: smtpd_tls_ask_ccert = yes)"),
        (false, _, None) => step(name, Verdict::Ok, "not requested, none configured"),
    }
}

/// The mechanisms of the last EHLO's AUTH line.
fn offered(f: &Facts) -> Vec<String> {
    let e = f.hello(true).or_else(|| f.hello(false));
    e.map(keywords)
        .unwrap_or_default()
        .iter()
        .find(|l| l.to_ascii_uppercase().starts_with("AUTH "))
        .map(|l| l.split_whitespace().skip(1).map(|m| m.to_ascii_uppercase()).collect())
        .unwrap_or_default()
}

fn auth_passed(f: &Facts) -> Step {
    let name = "auth";
    let offered = offered(f);
    let offer = if offered.is_empty() { "AUTH not offered".to_string() } else { format!("offered: {}", offered.join(" ")) };
    let done = f.events.iter().find_map(|e| if let Event::Auth { mech, reply } = e { Some((mech, reply)) } else { None });
    match (&f.user, done) {
        (Some(u), Some((mech, reply))) => step(name, Verdict::Ok, format!("{offer}; trial login as {u} with {mech}: {}", reply.summary())),
        (Some(_), None) => step(name, Verdict::Skip, format!("{offer}; no trial login")),
        (None, _) => step(name, Verdict::Ok, format!("{offer}; no credentials configured (relay.smarthost_username), no login tried")),
    }
}

fn transaction_step(f: &Facts) -> Step {
    let name = "transaction";
    match &f.finish {
        None => step(name, Verdict::Skip, "not reached"),
        Some(Finish::Rset(Ok(r))) => step(name, Verdict::Ok, format!("no test message (--send-test ADDR sends one); RSET: {r}; QUIT")),
        Some(Finish::Rset(Err(e))) => {
            step(name, Verdict::Fail, format!("RSET failed: {e}")).fix("the server dropped the session; see its log").temporary(true)
        }
        Some(Finish::Sent { to, outcome: Ok(Outcome::Delivered(r)) }) => {
            step(name, Verdict::Ok, format!("test message to {to} accepted: {r}"))
        }
        Some(Finish::Sent { to, outcome: Ok(Outcome::Deferred(r)) }) => {
            step(name, Verdict::Fail, format!("test message to {to} deferred: {r}"))
                .fix("the server refused for now; its reply says why")
                .temporary(true)
        }
        Some(Finish::Sent { to, outcome: Ok(Outcome::Failed(r)) }) => {
            step(name, Verdict::Fail, format!("test message to {to} refused: {r}"))
                .fix("the server does not relay this for us: check its relay rules for our address, login or certificate")
        }
        Some(Finish::Sent { to, outcome: Err(e) }) => step(name, Verdict::Fail, format!("test message to {to}: {e}"))
            .fix("the server dropped the session; see its log")
            .temporary(true),
    }
}

/// The FAIL line of the step that stopped the probe.
fn failed(f: &Facts, name: &'static str, e: Option<&ConnError>) -> Step {
    let Some(e) = e else {
        let why = f.dns.as_ref().err().cloned().unwrap_or_default();
        return step(name, Verdict::Fail, format!("{} does not resolve: {why}", f.endpoint))
            .fix("check the host name in the configuration and this host's resolver (/etc/resolv.conf)")
            .temporary(true);
    };
    let msg = e.to_string();
    let transient = e.status().0 == 4 && !matches!(e, ConnError::AuthFailed { permanent: true, .. });
    match name {
        "connect" => {
            let fix = if matches!(e, ConnError::Greeting { .. }) {
                "the server turns us away at the greeting: check that it accepts connections from this host"
            } else {
                "check that the server is up, the host and port are right and no firewall is in between"
            };
            step(name, Verdict::Fail, msg).fix(fix).temporary(transient)
        }
        "ehlo" => {
            step(name, Verdict::Fail, msg).fix("the server refuses our EHLO name: set `hostname` to a name it accepts").temporary(transient)
        }
        "tls" => {
            let fix = match e {
                ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } => {
                    "enable STARTTLS on the server, or (if it speaks TLS from the first byte) set relay.smarthost_implicit_tls = true"
                }
                _ if f.implicit_tls => {
                    "check that the port speaks implicit TLS (465); for STARTTLS ports set relay.smarthost_implicit_tls = false"
                }
                _ => "check the TLS versions and ciphers the server allows (postern speaks TLS 1.2 and 1.3)",
            };
            step(name, Verdict::Fail, msg).fix(fix)
        }
        "certificate" => {
            let mut s = certificate_step(f, policy_word(f.policy));
            if s.verdict != Verdict::Fail {
                s = step(name, Verdict::Fail, msg).fix(verify_fix(""));
            }
            s
        }
        "client_certificate" => {
            let t = f.tls.clone().unwrap_or_default();
            let ours = f.client_cert.as_deref().unwrap_or("ours");
            match (t.requested, t.sent) {
                (true, true) => step(name, Verdict::Fail, format!("{}; sent {ours}; refused: {msg}", requested_text(&t)))
                    .fix("the server does not trust our certificate: have it trust the CA that issued relay.smarthost_client_certificate, or use one from the CA it names"),
                (true, false) => step(name, Verdict::Fail, format!("{}; none sent; refused: {msg}", requested_text(&t))).fix(
                    "the server requires a client certificate: set relay.smarthost_client_certificate and smarthost_client_key (`postern ca issue client NAME` makes one)",
                ),
                (false, _) => step(name, Verdict::Fail, format!("the server ended the session after the handshake: {msg}")).fix("see the server's log"),
            }
        }
        "auth" => {
            let fix = match e {
                ConnError::AuthFailed { permanent: true, .. } => {
                    "check relay.smarthost_username and the password (first line of relay.smarthost_password_file)"
                }
                ConnError::AuthFailed { .. } => "the server could not check the login now; try again later",
                ConnError::CredentialsWithoutTls(_) => "enable TLS: relay.smarthost_tls = \"verify\"",
                ConnError::PasswordOverUnverifiedTls { .. } => {
                    "set relay.smarthost_tls = \"verify\" (and relay.smarthost_ca_files if the server uses a private CA)"
                }
                ConnError::NoAuthMechanism { .. } => "the server offers no mechanism postern speaks (SCRAM-SHA-256, PLAIN, LOGIN)",
                _ => "see the server's log",
            };
            let user = f.user.as_deref().unwrap_or("?");
            step(name, Verdict::Fail, format!("offered: {}; trial login as {user}: {msg}", offered(f).join(" ")))
                .fix(fix)
                .temporary(transient)
        }
        _ => step(name, Verdict::Fail, msg).temporary(transient),
    }
}

/// The whole report: the steps and the final verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was checked.
    pub target: String,
    /// The next hop.
    pub endpoint: String,
    /// OK or FAIL.
    pub verdict: Verdict,
    /// One sentence.
    pub summary: String,
    /// The exit code: 0, 75 (try later) or 69 (fix something).
    pub exit_code: i32,
    /// Every step, in order.
    pub steps: Vec<Step>,
}

/// sysexits(3) EX_UNAVAILABLE and EX_TEMPFAIL (the library does not use `cli::sysexits`).
const UNAVAILABLE: i32 = 69;
const TEMPFAIL: i32 = 75;

impl Report {
    /// The report for `f`.
    pub fn new(f: &Facts) -> Report {
        let steps = assess(f);
        let fails: Vec<&Step> = steps.iter().filter(|s| s.verdict == Verdict::Fail).collect();
        let warns = steps.iter().filter(|s| s.verdict == Verdict::Warn).count();
        let (verdict, exit_code, summary) = if fails.is_empty() {
            let w = if warns == 0 { String::new() } else { format!(" ({warns} warning{})", if warns == 1 { "" } else { "s" }) };
            (Verdict::Ok, 0, format!("mail for the {} can go to {}{w}", f.target, f.endpoint))
        } else {
            let code = if fails.iter().all(|s| s.temporary) { TEMPFAIL } else { UNAVAILABLE };
            let names: Vec<&str> = fails.iter().map(|s| s.step).collect();
            (Verdict::Fail, code, format!("mail for the {} cannot go to {} (failed: {})", f.target, f.endpoint, names.join(", ")))
        };
        Report { target: f.target.clone(), endpoint: f.endpoint.to_string(), verdict, summary, exit_code, steps }
    }

    /// The lines printed without `--json`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!("{:<4} {}: {}", s.verdict.word(), s.step, s.text));
            if let Some(fix) = &s.fix {
                out.push_str(&format!("; fix: {fix}"));
            }
            out.push('\n');
            for d in &s.details {
                out.push_str(&format!("       {d}\n"));
            }
        }
        out.push_str(&format!("{:<4} verdict: {}\n", self.verdict.word(), self.summary));
        out
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
