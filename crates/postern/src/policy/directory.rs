//! The account directory's part in the recipient decision: a virtual
//! domain (the directory's `domain()` said yes) is local, and its
//! recipients are its aliases and mailboxes. The session (and `postern
//! explain`) look these up first and pass the answers in as
//! [`DirectoryFacts`]: the decision stays pure. A directory that cannot
//! answer never gets here (the caller answers `451 4.3.0`).
//!
//! May touch: nothing (pure).

use postern_wire::codes;

use super::{classify, Facts, RcptDecision};
use crate::config::{RcptClass, RuleAction};
use crate::settings::Settings;

/// What the directory answered about one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryFacts {
    /// The recipient's domain is a virtual domain of the directory.
    pub virtual_domain: bool,
    /// The address is an alias to these targets (empty: not an alias).
    pub alias: Vec<String>,
    /// The address is a mailbox.
    pub mailbox: bool,
}

/// The recipient's class: local when the directory holds its domain.
pub(super) fn class(s: &Settings, f: &Facts<'_>) -> RcptClass {
    if f.directory.is_some_and(|d| d.virtual_domain) {
        RcptClass::Local
    } else {
        classify(s, f.rcpt)
    }
}

/// An accepted recipient in a virtual domain: its alias targets, else its
/// mailbox (the full address: virtual domains keep their namespaces),
/// else `550 5.1.1`.
pub(super) fn local_decision(d: &DirectoryFacts, addr: &str, rule: String, origin: String, action: RuleAction) -> RcptDecision {
    let addr = addr.to_ascii_lowercase();
    if !d.alias.is_empty() {
        RcptDecision::Accept { targets: d.alias.clone(), rule, origin, action }
    } else if d.mailbox {
        RcptDecision::Accept { targets: vec![addr], rule, origin, action }
    } else {
        RcptDecision::Reject {
            reply: codes::no_such_user().with_text(format!("<{addr}>: No such user here")),
            rule: "directory-unknown".into(),
            origin: "built-in".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use postern_wire::{Mailbox, Path};

    use super::*;
    use crate::policy::check_rcpt;

    fn facts<'a>(rcpt: &'a Path, d: Option<&'a DirectoryFacts>) -> Facts<'a> {
        Facts {
            listener: "smtp",
            client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            tls: false,
            authenticated: None,
            cert: None,
            sender: None,
            rcpt,
            user_db: None,
            directory: d,
            client_resolve: None,
        }
    }

    #[test]
    fn virtual_domains_table() {
        let cfg = crate::config::Config::parse("[local]\ndomains = [\"static.example\"]\n", "t.toml").expect("config");
        let source = crate::settings::Source { config: None, data_dir: Some("/nonexistent".into()) };
        let s = Settings::from_config(cfg, &source).expect("settings");
        let rcpt = |a: &str| {
            let (l, d) = a.split_once('@').expect("@");
            Path::Mailbox(Mailbox { local: l.into(), domain: d.into() })
        };
        let mailbox = DirectoryFacts { virtual_domain: true, alias: vec![], mailbox: true };
        let alias =
            DirectoryFacts { virtual_domain: true, alias: vec!["bob@b.example".into(), "x@elsewhere.example".into()], mailbox: false };
        let unknown = DirectoryFacts { virtual_domain: true, alias: vec![], mailbox: false };
        let not_virtual = DirectoryFacts::default();
        // (recipient, directory facts, expected reply code or targets, rule)
        type Case<'a> = (&'a str, Option<&'a DirectoryFacts>, Result<Vec<&'a str>, u16>, &'a str);
        let table: Vec<Case> = vec![
            ("Alice@a.example", Some(&mailbox), Ok(vec!["alice@a.example"]), "local-domains"),
            ("alice@b.example", Some(&mailbox), Ok(vec!["alice@b.example"]), "local-domains"),
            ("sales@a.example", Some(&alias), Ok(vec!["bob@b.example", "x@elsewhere.example"]), "local-domains"),
            ("nobody@a.example", Some(&unknown), Err(550), "directory-unknown"),
            ("someone@elsewhere.example", Some(&not_virtual), Err(550), "no-relay"),
            ("someone@elsewhere.example", None, Err(550), "no-relay"),
        ];
        for (addr, d, want, rule) in table {
            let r = rcpt(addr);
            let got = check_rcpt(&s, &facts(&r, d));
            assert_eq!(got.rule(), rule, "{addr}");
            match (got, want) {
                (RcptDecision::Accept { targets, .. }, Ok(t)) => assert_eq!(targets, t, "{addr}"),
                (RcptDecision::Reject { reply, .. }, Err(code)) => assert_eq!(reply.code, code, "{addr}"),
                (got, want) => panic!("{addr}: {got:?} vs {want:?}"),
            }
        }
    }
}
