//! Table tests of message-stage rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use postern_wire::{Mailbox, Path};

use super::*;
use crate::config::Config;
use crate::settings::Source;

const RULES: &str = r#"
hostname = "mx.example"
[[listener]]
address = "127.0.0.1:25"
[[listener]]
name = "gateway"
address = "127.0.0.1:26"
[local]
domains = ["example.org"]

[[rule]]
name = "partner"
client = ["192.0.2.0/24"]
action = "accept"

[[rule]]
name = "forwarded-by-arc"
dmarc = ["fail"]
arc = ["pass"]
action = "accept"

[[rule]]
name = "dmarc-fail"
dmarc = ["fail"]
action = "reject"
message = "Spoofed sender"

[[rule]]
name = "dns-trouble"
spf = ["temperror"]
action = "tempfail"

[[rule]]
name = "suspicious"
spf = ["fail", "softfail"]
dkim = ["none", "fail"]
action = "hold"

[[rule]]
name = "gateway-no-dkim"
listener = ["gateway"]
dkim = ["none"]
sender = ["@bank.example"]
action = "reject"
"#;

/// listener, client, [spf, dkim, dmarc, arc], action, rule, reply prefix.
type Case = (&'static str, &'static str, [&'static str; 4], Option<RuleAction>, &'static str, &'static str);

fn settings() -> Settings {
    let cfg = Config::parse(RULES, "t.toml").unwrap();
    Settings::from_config(cfg, &Source { config: None, data_dir: Some("/nonexistent".into()) }).unwrap()
}

#[test]
fn first_matching_message_rule_wins() {
    let s = settings();
    let sender = Mailbox { local: "a".into(), domain: "bank.example".into() };
    // listener | client | spf dkim dmarc arc | want action | rule | reply prefix
    let table: &[Case] = &[
        ("smtp", "203.0.113.1", ["pass", "pass", "pass", "none"], None, "", ""),
        ("smtp", "203.0.113.1", ["pass", "fail", "fail", "none"], Some(RuleAction::Reject), "dmarc-fail", "550 5.7.1 Spoofed sender"),
        ("smtp", "203.0.113.1", ["pass", "fail", "fail", "pass"], Some(RuleAction::Accept), "forwarded-by-arc", ""),
        ("smtp", "203.0.113.1", ["pass", "fail", "fail", "fail"], Some(RuleAction::Reject), "dmarc-fail", "550 5.7.1"),
        ("smtp", "203.0.113.1", ["temperror", "none", "none", "none"], Some(RuleAction::Tempfail), "dns-trouble", "451 4.7.1"),
        ("smtp", "203.0.113.1", ["softfail", "none", "none", "none"], Some(RuleAction::Hold), "suspicious", ""),
        ("smtp", "203.0.113.1", ["fail", "fail", "pass", "none"], Some(RuleAction::Hold), "suspicious", ""),
        // dkim must list the result too: pass does not match "suspicious".
        ("smtp", "203.0.113.1", ["fail", "pass", "pass", "none"], None, "", ""),
        (
            "gateway",
            "203.0.113.1",
            ["pass", "none", "pass", "none"],
            Some(RuleAction::Reject),
            "gateway-no-dkim",
            "550 5.7.1 Message refused",
        ),
        ("smtp", "203.0.113.1", ["pass", "none", "pass", "none"], None, "", ""),
        // RCPT-stage rules ("partner") are not message rules.
        ("smtp", "192.0.2.7", ["pass", "fail", "fail", "none"], Some(RuleAction::Reject), "dmarc-fail", "550"),
    ];
    for (i, (listener, ip, [spf, dkim, dmarc, arc], want, rule, reply)) in table.iter().enumerate() {
        let ip: IpAddr = ip.parse().unwrap();
        let f = Facts {
            listener,
            client_ip: ip,
            tls: false,
            authenticated: None,
            cert: None,
            sender: Some(&sender),
            rcpt: &Path::Null,
            user_db: None,
            client_resolve: None,
            directory: None,
        };
        let got = check_message(&s, &f, &MessageAuth::from_keywords(spf, dkim, dmarc, arc));
        assert_eq!(got.as_ref().map(|d| d.action), *want, "case {i}");
        if let Some(d) = got {
            assert_eq!(d.rule, *rule, "case {i}");
            assert!(d.origin.starts_with("config:"), "case {i}: {}", d.origin);
            let wire = d.reply.map(|r| r.to_wire()).unwrap_or_default();
            assert!(wire.starts_with(reply), "case {i}: {wire:?}");
        }
    }
}

#[test]
fn message_rules_are_skipped_at_rcpt() {
    let s = settings();
    let rcpt = Path::Mailbox(Mailbox { local: "postmaster".into(), domain: "example.org".into() });
    let f = Facts {
        listener: "smtp",
        client_ip: "203.0.113.1".parse().unwrap(),
        tls: false,
        authenticated: None,
        cert: None,
        sender: None,
        rcpt: &rcpt,
        user_db: None,
        client_resolve: None,
        directory: None,
    };
    assert_eq!(super::super::evaluate(&s, &f).rule, "local-domains");
}

#[test]
fn stage_mismatches_are_config_errors() {
    let base = "hostname = \"mx.example\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n";
    for (rule, want) in [
        ("[[rule]]\ndmarc = [\"fail\"]\naction = \"relay\"\n", "t.toml:6:10: key `rule.action`"),
        ("[[rule]]\nclient = [\"192.0.2.0/24\"]\naction = \"hold\"\n", "t.toml:6:10: key `rule.action`"),
        ("[[rule]]\nspf = [\"fail\"]\nrcpt = [\"local\"]\naction = \"reject\"\n", "t.toml:6:8: key `rule.rcpt`"),
        ("[[rule]]\nspf = [\"failed\"]\naction = \"reject\"\n", "t.toml:5:"),
    ] {
        let e = Config::parse(&format!("{base}{rule}"), "t.toml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{rule}: want {want:?} in {e}");
    }
    Config::parse(&format!("{base}[[rule]]\ndmarc = [\"fail\"]\narc = [\"pass\"]\naction = \"hold\"\n"), "t.toml").unwrap();
}

#[test]
fn warns_when_message_rules_cannot_match() {
    let base = "hostname = \"mx.example\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n[[rule]]\nname = \"x\"\narc = [\"fail\"]\naction = \"hold\"\n";
    assert_eq!(unverified_warning(&Config::parse(base, "t.toml").unwrap()), None);
    let off = Config::parse(&format!("{base}[mail_auth]\nverify = false\n"), "t.toml").unwrap();
    assert!(unverified_warning(&off).is_some_and(|w| w.contains("(x)")));
}
