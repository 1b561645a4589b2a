//! Recipient policy: pure functions over facts, no I/O. Every decision names
//! the rule that made it (the relay-policy work and `postern explain` build
//! on this).
//!
//! Rules, first match wins:
//! 1. local domain (or bare `<Postmaster>`): known user or alias → accept,
//!    else `550 5.1.1`;
//! 2. relay domain → accept (anyone may send to it);
//! 3. client authenticated (SMTP AUTH) → accept (relay);
//! 4. client in `relay.networks` → accept (relay);
//! 5. otherwise `550 5.7.1 Relaying denied`.

use std::net::IpAddr;

use postern_wire::{codes, Mailbox, Path, Reply};

use crate::auth::Authenticated;
use crate::settings::Settings;
use crate::users::UserDb;

/// The facts a recipient decision is made from.
#[derive(Debug, Clone)]
pub struct RcptFacts<'a> {
    /// The SMTP client's address (for `relay.networks`).
    pub client_ip: IpAddr,
    /// The RCPT TO path.
    pub rcpt: &'a Path,
    /// The SMTP AUTH identity, if any (built only by a successful exchange).
    pub authenticated: Option<&'a Authenticated>,
    /// The user database: its users are local mailboxes too.
    pub user_db: Option<&'a UserDb>,
}

/// A recipient decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Accept; deliver to `targets` (after alias expansion).
    Accept {
        /// Final delivery addresses.
        targets: Vec<String>,
        /// The rule that decided.
        rule: &'static str,
    },
    /// Refuse with this reply.
    Reject {
        /// What the client is told.
        reply: Reply,
        /// The rule that decided.
        rule: &'static str,
    },
}

/// Decides about one recipient.
pub fn check_rcpt(s: &Settings, f: &RcptFacts<'_>) -> RcptDecision {
    let (local, domain) = match f.rcpt {
        Path::Postmaster => ("postmaster".to_string(), s.hostname.clone()),
        Path::Mailbox(m) => (m.local.to_ascii_lowercase(), m.domain.clone()),
        Path::Null => {
            return RcptDecision::Reject { reply: codes::syntax_params(), rule: "null-recipient" };
        }
    };
    if matches!(f.rcpt, Path::Postmaster) || s.is_local_domain(&domain) {
        let in_db = f.user_db.is_some_and(|db| db.users.contains_key(&local));
        return match local_targets(s, &local, &domain).or_else(|| in_db.then(|| vec![format!("{local}@{domain}")])) {
            Some(targets) => RcptDecision::Accept { targets, rule: "local-user" },
            None => RcptDecision::Reject {
                reply: codes::no_such_user().with_text(format!("<{local}@{domain}>: No such user here")),
                rule: "local-unknown",
            },
        };
    }
    let addr = match f.rcpt {
        Path::Mailbox(m) => m.to_string(),
        _ => unreachable!("handled above"),
    };
    if s.relay_domains.contains(&domain) {
        return RcptDecision::Accept { targets: vec![addr], rule: "relay-domain" };
    }
    if f.authenticated.is_some() {
        return RcptDecision::Accept { targets: vec![addr], rule: "authenticated" };
    }
    if s.config.relay.networks.iter().any(|n| n.contains(f.client_ip)) {
        return RcptDecision::Accept { targets: vec![addr], rule: "relay-networks" };
    }
    RcptDecision::Reject {
        reply: codes::relay_denied().with_text(format!("<{addr}>: Relay access denied")),
        rule: "relay-denied",
    }
}

/// Expands a local name to delivery addresses, or `None` if unknown.
/// Local targets get `domain` so the envelope holds full addresses.
pub fn local_targets(s: &Settings, local: &str, domain: &str) -> Option<Vec<String>> {
    // RFC 5321 §4.5.1: postmaster is case-insensitive and always exists.
    if !s.knows_local(local) {
        return None;
    }
    Some(
        s.aliases
            .expand(local)
            .into_iter()
            .map(|t| if t.contains('@') { t } else { format!("{t}@{domain}") })
            .collect(),
    )
}

/// Is this mailbox in a local domain?
pub fn is_local(s: &Settings, m: &Mailbox) -> bool {
    s.is_local_domain(&m.domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Source;

    fn settings() -> Settings {
        let cfg = Config::parse(
            "hostname = \"mx.example\"\n[local]\ndomains = [\"example.org\", \"localhost\"]\nusers = [\"alice\", \"Bob\"]\n\
             [relay]\nnetworks = [\"192.0.2.0/24\"]\ndomains = [\"backup.example\"]\n",
            "t.toml",
        )
        .unwrap();
        let mut s = Settings::from_config(cfg, &Source { config: None, data_dir: Some("/nonexistent".into()) }).unwrap();
        s.aliases = crate::aliases::Aliases::parse("team: alice, bob, carol@else.example\n", "a").unwrap();
        s
    }

    fn path(s: &str) -> Path {
        postern_wire::address::parse_path(s, true, true, true).unwrap().0
    }

    #[test]
    fn authenticated_relays() {
        let s = settings();
        let who = Authenticated { user: "alice".into(), mechanism: postern_wire::sasl::Mechanism::Plain };
        let p = path("<x@far.example>");
        let f = RcptFacts { client_ip: "198.51.100.1".parse().unwrap(), rcpt: &p, authenticated: Some(&who), user_db: None };
        assert!(matches!(check_rcpt(&s, &f), RcptDecision::Accept { rule: "authenticated", .. }));
    }

    #[test]
    fn table() {
        let s = settings();
        let mut db = UserDb::default();
        db.users.insert("dbuser".into(), Default::default());
        let inside: IpAddr = "192.0.2.7".parse().unwrap();
        let outside: IpAddr = "198.51.100.1".parse().unwrap();
        let table: &[(&str, IpAddr, &str, Option<&[&str]>)] = &[
            ("<alice@example.org>", outside, "local-user", Some(&["alice@example.org"])),
            ("<ALICE@Example.ORG>", outside, "local-user", Some(&["alice@example.org"])),
            ("<bob@localhost>", outside, "local-user", Some(&["bob@localhost"])),
            ("<Postmaster>", outside, "local-user", Some(&["postmaster@mx.example"])),
            ("<postmaster@example.org>", outside, "local-user", Some(&["postmaster@example.org"])),
            ("<team@example.org>", outside, "local-user", Some(&["alice@example.org", "bob@example.org", "carol@else.example"])),
            ("<mallory@example.org>", inside, "local-unknown", None),
            ("<x@backup.example>", outside, "relay-domain", Some(&["x@backup.example"])),
            ("<x@far.example>", inside, "relay-networks", Some(&["x@far.example"])),
            ("<x@far.example>", outside, "relay-denied", None),
            ("<dbuser@example.org>", outside, "local-user", Some(&["dbuser@example.org"])),
            ("<x@mx.example>", outside, "relay-denied", None),
        ];
        for (rcpt, ip, want_rule, want_targets) in table {
            let p = path(rcpt);
            let d = check_rcpt(&s, &RcptFacts { client_ip: *ip, rcpt: &p, authenticated: None, user_db: Some(&db) });
            match (d, want_targets) {
                (RcptDecision::Accept { targets, rule }, Some(t)) => {
                    assert_eq!(rule, *want_rule, "{rcpt}");
                    assert_eq!(targets, t.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{rcpt}");
                }
                (RcptDecision::Reject { reply, rule }, None) => {
                    assert_eq!(rule, *want_rule, "{rcpt}");
                    let want_code = if *want_rule == "local-unknown" { "550 5.1.1" } else { "550 5.7.1" };
                    assert!(reply.to_wire().starts_with(want_code), "{rcpt}: {reply}");
                }
                (d, _) => panic!("{rcpt}: unexpected {d:?}"),
            }
        }
    }
}
