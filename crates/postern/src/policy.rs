//! Relay policy: one pure function over a [`Facts`] value, used by the SMTP
//! session and by `postern explain`. No I/O.
//!
//! The operator's `[[rule]]`s are tried first, in order; then, unless
//! `relay.default_rules = false`, the built-in rules:
//!
//! 1. `local-domains`: recipient in a local domain → accept;
//! 2. `relay-domains`: recipient in a relay domain → accept;
//! 3. `relay-networks`: client in `relay.networks` → relay;
//! 4. `authenticated`: SMTP AUTH done → relay;
//! 5. `trusted-certificate`: client certificate verified by a configured CA → relay;
//!
//! and finally `no-relay`: `550 5.7.1 Relaying denied`. An `accept`ed local
//! recipient must still exist (`550 5.1.1`) and none may route untrusted ([`routing`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use postern_wire::{codes, Enhanced, Mailbox, Path, Reply};

use crate::auth::Authenticated;
use crate::config::{Cidr, ClientCertMode, RcptClass, Resolve, Rule, RuleAction};
use crate::dn::Dn;
use crate::settings::Settings;
use crate::tls::ClientCertIdentity;
use crate::users::UserDb;

mod directory;
pub mod message;
pub mod routing;

pub use directory::DirectoryFacts;

/// Everything a recipient decision may depend on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The listener's name (or role).
    pub listener: &'a str,
    /// The client's address.
    pub client_ip: IpAddr,
    /// TLS is active.
    pub tls: bool,
    /// The SMTP AUTH identity (built only by a successful exchange).
    pub authenticated: Option<&'a Authenticated>,
    /// The client certificate (built only by the TLS layer).
    pub cert: Option<&'a ClientCertIdentity>,
    /// MAIL FROM: `None` for `<>`.
    pub sender: Option<&'a Mailbox>,
    /// The RCPT TO path.
    pub rcpt: &'a Path,
    /// The user database: its users are local mailboxes too.
    pub user_db: Option<&'a UserDb>,
    /// The client's reverse DNS; `None`: not looked up.
    pub client_resolve: Option<Resolve>,
    /// What the account directory (`[sql]`, `[ldap]`) said about the
    /// recipient, looked up by the caller before deciding; `None`: no
    /// directory, or the domain is a static local one.
    pub directory: Option<&'a DirectoryFacts>,
}

/// A recipient decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Accept; deliver to `targets` (after alias expansion).
    Accept {
        /// Final delivery addresses.
        targets: Vec<String>,
        /// The rule's name.
        rule: String,
        /// Where the rule is: `file:line` or `built-in`.
        origin: String,
        /// `accept` or `relay`.
        action: RuleAction,
    },
    /// Refuse with this reply.
    Reject {
        /// What the client is told.
        reply: Reply,
        /// The rule's name.
        rule: String,
        /// Where the rule is.
        origin: String,
    },
}

impl RcptDecision {
    /// The rule name.
    pub fn rule(&self) -> &str {
        match self {
            RcptDecision::Accept { rule, .. } | RcptDecision::Reject { rule, .. } => rule,
        }
    }

    /// Where the rule is.
    pub fn origin(&self) -> &str {
        match self {
            RcptDecision::Accept { origin, .. } | RcptDecision::Reject { origin, .. } => origin,
        }
    }
}

/// The class of a recipient.
pub fn classify(s: &Settings, rcpt: &Path) -> RcptClass {
    match rcpt {
        Path::Postmaster => RcptClass::Local,
        Path::Mailbox(m) if s.is_local_domain(&m.domain) => RcptClass::Local,
        Path::Mailbox(m) if s.relay_domains.contains(&m.domain) => RcptClass::Relay,
        _ => RcptClass::Other,
    }
}

/// `*` glob match (case-insensitive), for SANs.
fn glob(pattern: &str, text: &str) -> bool {
    crate::dn::glob(pattern, text)
}

/// A `cert_subject` / `cert_issuer` pattern against parsed RDNs (F10): see
/// [`Dn::matches`]. A pattern that does not parse (refused at load) never matches.
fn dn_matches(pattern: &str, dn: &Dn) -> bool {
    Dn::parse(pattern).is_ok_and(|p| p.matches(dn))
}

fn hex_eq(a: &str, b: &str) -> bool {
    a.replace(':', "").eq_ignore_ascii_case(&b.replace(':', ""))
}

/// Does one rule match the facts? (`class` is the recipient's class.)
pub fn matches(r: &Rule, f: &Facts<'_>, class: RcptClass) -> bool {
    if r.action == Some(RuleAction::Accept) && class == RcptClass::Other {
        return false;
    }
    if !matches_client(r, f) {
        return false;
    }
    if let Some(classes) = &r.rcpt {
        if !classes.contains(&class) {
            return false;
        }
    }
    true
}

/// The criteria about the client and the sender (everything but the
/// recipient): shared by RCPT rules and message-stage rules ([`message`]).
pub fn matches_client(r: &Rule, f: &Facts<'_>) -> bool {
    if let Some(ls) = &r.listener {
        if !ls.iter().any(|l| l.eq_ignore_ascii_case(f.listener)) {
            return false;
        }
    }
    if r.client.is_some() || r.client_file.is_some() {
        let nets: Vec<&Cidr> = r.client.iter().flatten().chain(&r.client_file_networks).collect();
        if !nets.iter().any(|n| n.contains(f.client_ip)) {
            return false;
        }
    }
    if r.tls.is_some_and(|t| t != f.tls) {
        return false;
    }
    if let Some(want) = &r.rdns {
        if !f.client_resolve.is_some_and(|have| want.contains(&have)) {
            return false;
        }
    }
    if r.authenticated.is_some_and(|a| a != f.authenticated.is_some()) {
        return false;
    }
    if let Some(users) = &r.users {
        match f.authenticated {
            Some(a) if users.iter().any(|u| u.eq_ignore_ascii_case(a.user())) => {}
            _ => return false,
        }
    }
    let verified = f.cert.filter(|c| c.verified.is_ok());
    if let Some(want) = r.cert_verified {
        if want != verified.is_some() {
            return false;
        }
    }
    // Name-based certificate criteria only trust CA-verified certificates:
    // anyone can make a self-signed certificate with any name.
    if let Some(ca) = &r.cert_ca {
        if !verified.is_some_and(|c| c.verified.as_ref().is_ok_and(|a| a.eq_ignore_ascii_case(ca))) {
            return false;
        }
    }
    if let Some(p) = &r.cert_issuer {
        if !verified.is_some_and(|c| dn_matches(p, &c.cert.issuer_dn)) {
            return false;
        }
    }
    if let Some(p) = &r.cert_subject {
        if !verified.is_some_and(|c| dn_matches(p, &c.cert.subject_dn)) {
            return false;
        }
    }
    if let Some(sans) = &r.cert_san {
        let ok = verified.is_some_and(|c| {
            sans.iter()
                .any(|want| c.cert.sans.iter().any(|have| glob(want, have) || have.split_once(':').is_some_and(|(_, v)| glob(want, v))))
        });
        if !ok {
            return false;
        }
    }
    // Pins match the exact certificate or key; the handshake proved possession.
    if let Some(fps) = &r.cert_sha256 {
        if !f.cert.is_some_and(|c| fps.iter().any(|fp| hex_eq(fp, &c.cert.sha256))) {
            return false;
        }
    }
    if let Some(fps) = &r.cert_spki_sha256 {
        if !f.cert.is_some_and(|c| fps.iter().any(|fp| hex_eq(fp, &c.cert.spki_sha256))) {
            return false;
        }
    }
    if let Some(senders) = &r.sender {
        let ok = senders.iter().any(|want| match (f.sender, want.as_str()) {
            (None, "<>") => true,
            (None, _) | (Some(_), "<>") => false,
            (Some(m), w) => {
                let w = w.trim_start_matches('<').trim_end_matches('>');
                if let Some(parent) = w.strip_prefix("@.").or_else(|| w.strip_prefix('.')) {
                    // "@.example.org": any subdomain (Postfix's
                    // parent_domain_matches_subdomains, sendmail's access map).
                    is_subdomain(&m.domain, parent)
                } else if let Some(d) = w.strip_prefix('@') {
                    m.domain.eq_ignore_ascii_case(d)
                } else if w.contains('@') {
                    m.to_string().eq_ignore_ascii_case(w)
                } else {
                    m.domain.eq_ignore_ascii_case(w)
                }
            }
        });
        if !ok {
            return false;
        }
    }
    true
}

/// Is `domain` a proper subdomain of `parent` (`a.example.org` of
/// `example.org`, not `example.org` itself nor `badexample.org`)?
fn is_subdomain(domain: &str, parent: &str) -> bool {
    let (d, p) = (domain.as_bytes(), parent.as_bytes());
    d.len() > p.len() + 1 && d[d.len() - p.len() - 1] == b'.' && d[d.len() - p.len()..].eq_ignore_ascii_case(p)
}

/// The built-in rules appended after the operator's.
pub fn default_rules(s: &Settings) -> Vec<Rule> {
    let base = |name: &str, action: RuleAction| Rule { name: Some(name.into()), action: Some(action), ..Rule::default() };
    vec![
        Rule { rcpt: Some(vec![RcptClass::Local]), ..base("local-domains", RuleAction::Accept) },
        Rule { rcpt: Some(vec![RcptClass::Relay]), ..base("relay-domains", RuleAction::Accept) },
        Rule { client: Some(s.config.relay.networks.clone()), ..base("relay-networks", RuleAction::Relay) },
        Rule { authenticated: Some(true), ..base("authenticated", RuleAction::Relay) },
        Rule { cert_verified: Some(true), ..base("trusted-certificate", RuleAction::Relay) },
    ]
}

/// `config check`'s warning for F15: client CAs are configured
/// (`tls.client_ca_files`), some listener asks for client certificates, and
/// the built-in `trusted-certificate` rule is on, so every holder of any
/// certificate from those CAs may relay. `None` otherwise (the built-in CA
/// alone, made by `postern ca init`, only certifies whom the operator chose).
pub fn trusted_certificate_warning(c: &crate::config::Config) -> Option<String> {
    let cas = c.tls.client_ca_files.as_ref().filter(|v| !v.is_empty())?;
    let asks = c.listeners.iter().any(|l| {
        l.client_certificates != ClientCertMode::None
            || !l.request_client_certificates_from.is_empty()
            || !l.require_client_certificates_from.is_empty()
    });
    if !c.relay.default_rules || !asks {
        return None;
    }
    let files: Vec<String> = cas.iter().map(|p| p.display().to_string()).collect();
    Some(format!(
        "the built-in \"trusted-certificate\" rule (relay.default_rules = true) lets EVERY client whose certificate \
         verifies against tls.client_ca_files ({}) relay to any domain; if these CAs also certify others (a partner \
         or public CA), narrow it: set relay.default_rules = false and add a [[rule]] with cert_subject, cert_san or \
         cert_sha256 and action = \"relay\" for the clients that may relay (see docs/relay.md)",
        files.join(", ")
    ))
}

/// The rule that decided, before the local-user check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// What the rule does.
    pub action: RuleAction,
    /// The rule's name.
    pub rule: String,
    /// Where the rule is: `file:line` or `built-in`.
    pub origin: String,
    /// The rule's `message` for refusals.
    pub message: Option<String>,
}

/// Which rule decides, and how (before the local-user check). First match
/// wins: the operator's rules, then the built-in ones, then `no-relay`.
pub fn evaluate(s: &Settings, f: &Facts<'_>) -> Evaluation {
    let class = directory::class(s, f);
    let file = s.config_file.clone().unwrap_or_else(|| "config".into());
    for (i, spanned) in s.config.rules.iter().enumerate() {
        let r = spanned.get_ref();
        // Decided after DATA and verification (`message::check_message`).
        if r.is_message_stage() {
            continue;
        }
        if matches(r, f, class) {
            let line = s.config.rule_lines.get(i).copied().unwrap_or(0);
            let rule = r.name.clone().unwrap_or_else(|| format!("rule #{}", i + 1));
            let action = r.action.unwrap_or(RuleAction::Reject);
            return Evaluation { action, rule, origin: format!("{file}:{line}"), message: r.message.clone() };
        }
    }
    if s.config.relay.default_rules {
        for r in default_rules(s) {
            if matches(&r, f, class) {
                let action = r.action.unwrap_or(RuleAction::Reject);
                return Evaluation { action, rule: r.name.unwrap_or_default(), origin: "built-in".into(), message: None };
            }
        }
    }
    Evaluation { action: RuleAction::Reject, rule: "no-relay".into(), origin: "built-in".into(), message: None }
}

/// The full recipient decision: rules, then the local-user check.
pub fn check_rcpt(s: &Settings, f: &Facts<'_>) -> RcptDecision {
    let Evaluation { action, rule, origin, message } = evaluate(s, f);
    let (local, domain) = match f.rcpt {
        Path::Postmaster => ("postmaster".to_string(), s.hostname.clone()),
        Path::Mailbox(m) => (m.local.to_ascii_lowercase(), m.domain.clone()),
        Path::Null => return RcptDecision::Reject { reply: codes::syntax_params(), rule, origin },
    };
    let addr = match f.rcpt {
        Path::Mailbox(m) => m.to_string(),
        _ => format!("{local}@{domain}"),
    };
    if let Some(d) = routing::refusal(s, f, action, &addr) {
        return d;
    }
    match action {
        RuleAction::Reject => {
            let text = message.unwrap_or_else(|| "Relay access denied".into());
            RcptDecision::Reject { reply: codes::relay_denied().with_text(format!("<{addr}>: {text}")), rule, origin }
        }
        // `hold` only exists at the message stage (refused at load); were one
        // to reach RCPT, refuse for now rather than accept.
        RuleAction::Tempfail | RuleAction::Hold => {
            let text = message.unwrap_or_else(|| "Try again later".into());
            RcptDecision::Reject { reply: Reply::new(450, Enhanced(4, 7, 1), format!("<{addr}>: {text}")), rule, origin }
        }
        RuleAction::Accept | RuleAction::Relay => {
            if let Some(d) = f.directory.filter(|d| d.virtual_domain) {
                return directory::local_decision(d, &addr, rule, origin, action);
            }
            if classify(s, f.rcpt) == RcptClass::Local {
                let in_db = f.user_db.is_some_and(|db| db.users.contains_key(&local));
                match local_targets(s, &local, &domain).or_else(|| in_db.then(|| vec![format!("{local}@{domain}")])) {
                    Some(targets) => RcptDecision::Accept { targets, rule, origin, action },
                    None => RcptDecision::Reject {
                        reply: codes::no_such_user().with_text(format!("<{local}@{domain}>: No such user here")),
                        rule: "local-unknown".into(),
                        origin: "built-in".into(),
                    },
                }
            } else {
                RcptDecision::Accept { targets: vec![addr], rule, origin, action }
            }
        }
    }
}

/// Expands a local name to delivery addresses, or `None` if unknown.
/// Local targets get `domain` so the envelope holds full addresses.
pub fn local_targets(s: &Settings, local: &str, domain: &str) -> Option<Vec<String>> {
    // RFC 5321 §4.5.1: postmaster is case-insensitive and always exists.
    if !s.knows_local(local) {
        return None;
    }
    Some(s.aliases.expand(local).into_iter().map(|t| if t.contains('@') { t } else { format!("{t}@{domain}") }).collect())
}

/// Would an unknown, unauthenticated client without TLS be allowed to relay
/// through this listener? (`config check` warns about open relays.)
pub fn is_open_relay(s: &Settings, listener: &str) -> bool {
    let probe_rcpt = Path::Mailbox(Mailbox { local: "probe".into(), domain: "open-relay-test.invalid".into() });
    let sender = Mailbox { local: "probe".into(), domain: "example.net".into() };
    let probes = [IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77)), IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77))];
    probes.into_iter().any(|client_ip| {
        let f = Facts {
            listener,
            client_ip,
            tls: false,
            authenticated: None,
            cert: None,
            sender: Some(&sender),
            rcpt: &probe_rcpt,
            user_db: None,
            client_resolve: None,
            directory: None,
        };
        evaluate(s, &f).action == RuleAction::Relay
    })
}

#[cfg(test)]
mod tests;
