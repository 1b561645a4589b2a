//! Unit tests: main.cf/master.cf grammar, `$name` expansion, tables, the
//! restriction compiler (one case per element), report completeness and a
//! whole conversion whose output loads.

use std::path::{Path, PathBuf};

use super::parse::{main_cf, master_cf, split_list, Params};
use super::restrict::{compile, Ctx, List, Reporter};
use super::tables::{read, Table, TableError};
use crate::import::{Entry, Fate, Loc};

fn loc(line: usize) -> Loc {
    Loc { file: PathBuf::from("main.cf"), line }
}

#[test]
fn main_cf_continuations_comments_and_expansion() {
    let text = "# comment\nmyhostname = mx.example.org\nmydestination = $myhostname,\n    localhost.$mydomain\n  # not a comment end\n\nrelay_domains = ${myhostname}, $(mydomain)\nx = ${relay_domains?{yes}} ${empty:{none}}\nempty =\nbroken line\n";
    let (params, bad) = main_cf(text, Path::new("main.cf"));
    assert_eq!(params.len(), 5, "{params:?}");
    assert_eq!(params[1].name, "mydestination");
    assert_eq!(params[1].loc.line, 3);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].loc.line, 10);
    let p = Params::new(&params, "fallback.example");
    // An indented "#" line is a comment, not a continuation.
    assert_eq!(p.list("mydestination"), vec!["mx.example.org", "localhost.example.org"]);
    assert_eq!(p.list("relay_domains"), vec!["mx.example.org", "example.org"]);
    assert_eq!(p.get("x"), "yes none");
    // Defaults: mydomain from myhostname; Postfix's default relay restrictions.
    assert_eq!(p.get("mydomain"), "example.org");
    assert_eq!(p.list("smtpd_relay_restrictions"), vec!["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]);
}

#[test]
fn expansion_terminates_on_loops() {
    let (params, _) = main_cf("a = $b\nb = $a x\n", Path::new("main.cf"));
    let p = Params::new(&params, "h");
    assert!(p.get("a").len() < 100);
}

#[test]
fn split_keeps_braces_together() {
    assert_eq!(split_list("a, b c,,d inline:{ x=1, y=2 } e"), vec!["a", "b", "c", "d", "inline:{ x=1, y=2 }", "e"]);
}

#[test]
fn master_cf_services_and_overrides() {
    let text = "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_tls_security_level=encrypt\n  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n#comment\npickup unix n - y 60 1 pickup\nshort line\n";
    let (svcs, bad) = master_cf(text, Path::new("master.cf"));
    assert_eq!(svcs.len(), 3);
    assert_eq!(bad.len(), 1);
    let sub = &svcs[1];
    assert_eq!(sub.name, "submission");
    assert_eq!(sub.command, "smtpd");
    assert_eq!(sub.overrides.len(), 3);
    assert_eq!(sub.overrides[1].name, "smtpd_tls_security_level");
    assert_eq!(sub.overrides[1].loc.line, 4);
    assert_eq!(sub.overrides[2].value, "permit_sasl_authenticated, reject");
    let (params, _) = main_cf("smtpd_tls_security_level = may\n", Path::new("main.cf"));
    let p = Params::new(&params, "h").with_overrides(&sub.overrides);
    assert_eq!(p.get("smtpd_tls_security_level"), "encrypt");
    assert_eq!(p.origin("smtpd_tls_security_level").map(|l| l.line), Some(4));
    assert_eq!(super::services::endpoint("127.0.0.1:2525"), Some((Some("127.0.0.1".into()), 2525)));
    assert_eq!(super::services::endpoint("submission"), Some((None, 587)));
}

#[test]
fn tables_in_source_form() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("access"), "# c\n10.1 OK\nfoo.example REJECT go\n  away\n").unwrap();
    std::fs::write(dir.path().join("nets.cidr"), "192.0.2.0/24 REJECT\n").unwrap();
    let at = loc(1);
    let t = read("hash:/etc/postfix/access", dir.path(), &at).unwrap();
    let e = t.entries();
    assert_eq!(e.len(), 2);
    assert_eq!((e[1].key.as_str(), e[1].value.as_str(), e[1].loc.line), ("foo.example", "REJECT go away", 3));
    assert_eq!(read("cidr:nets.cidr", dir.path(), &at).unwrap().entries()[0].key, "192.0.2.0/24");
    let inline = read("inline:{ a=1, { b = two words } }", dir.path(), &at).unwrap();
    assert_eq!(
        inline.entries().iter().map(|e| (e.key.as_str(), e.value.as_str())).collect::<Vec<_>>(),
        vec![("a", "1"), ("b", "two words")]
    );
    assert_eq!(read("static:OK", dir.path(), &at).unwrap(), Table::Static("OK".into()));
    assert!(matches!(read("ldap:/etc/x", dir.path(), &at), Err(TableError::Unsupported(_))));
    assert!(matches!(read("hash:/etc/postfix/missing", dir.path(), &at), Err(TableError::Unreadable(_))));
}

/// Compiles `lists` (name, elements) with mynetworks 10/8 and one pinned
/// fingerprint; returns the rules as "name action criteria" strings and the entries.
fn compiled(lists: &[(&'static str, &str)], dir: &Path) -> (Vec<String>, Vec<Entry>) {
    let lists: Vec<List> = lists.iter().enumerate().map(|(i, (n, e))| List { name: n, loc: loc(i + 1), elements: split_list(e) }).collect();
    let mut entries = vec![Entry { source: loc(99), text: "fp".into(), fate: Fate::Default { why: "(pending)".into() } }];
    let nets = vec!["10.0.0.0/8".to_string()];
    let certs = vec![("AA:BB".to_string(), 0)];
    let ctx = Ctx { config_dir: dir, mynetworks: &nets, clientcerts: &certs };
    let mut settings = Vec::new();
    let rules = compile(&lists, &ctx, &mut Reporter { entries: &mut entries }, &mut settings);
    let mut out: Vec<String> = rules
        .iter()
        .map(|r| r.iter().filter(|k| k.key != "message").map(|k| format!("{}={}", k.key, k.value)).collect::<Vec<_>>().join(" "))
        .collect();
    out.extend(settings.iter().map(|((t, k, v), _)| format!("set {t}.{k}={v}")));
    (out, entries)
}

#[test]
fn each_restriction_element() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.cidr"), "192.0.2.9 REJECT\n198.51.100.0/24 OK\n203.0.113.1 HOLD\n").unwrap();
    std::fs::write(dir.path().join("s"), "spam.example REJECT\n<> 450 later\nx@y.example OK\nuser@ DUNNO\n").unwrap();
    std::fs::write(dir.path().join("cc"), format!("{} OK\n", "AB:".repeat(31) + "AB")).unwrap();
    let table: &[(&str, &[&str])] = &[
        ("permit_mynetworks", &["client=[\"10.0.0.0/8\"] action=\"relay\""]),
        ("permit_sasl_authenticated", &["authenticated=true action=\"relay\""]),
        ("permit_tls_all_clientcerts", &["cert_verified=true action=\"relay\""]),
        ("permit_tls_clientcerts", &["cert_sha256=[\"AA:BB\"] action=\"relay\"", "cert_spki_sha256=[\"AA:BB\"] action=\"relay\""]),
        ("permit_auth_destination", &["action=\"accept\""]),
        ("reject_unauth_destination", &["rcpt=[\"other\"] action=\"reject\""]),
        ("defer_unauth_destination", &["rcpt=[\"other\"] action=\"tempfail\""]),
        ("reject", &["action=\"reject\""]),
        ("defer", &["action=\"tempfail\""]),
        ("permit", &["action=\"relay\""]),
        ("reject_unknown_reverse_client_hostname", &["rdns=[\"fail\", \"temp\"] action=\"tempfail\""]),
        ("reject_unknown_sender_domain", &["set inbound.rdns.sender_domain_check=true"]),
        ("reject_non_fqdn_helo_hostname", &["set inbound.rdns.helo_require_fqdn=true"]),
        ("reject_unknown_helo_hostname", &["set inbound.rdns.helo_require_resolve=true"]),
        ("reject_rbl_client zen.example", &["set inbound.dnsbl.lists=\"zen.example\""]),
        ("reject_sender_login_mismatch", &["set auth.sender_login_match=true"]),
        ("check_client_access cidr:c.cidr", &["client=[\"192.0.2.9\"] action=\"reject\"", "client=[\"198.51.100.0/24\"] action=\"relay\""]),
        (
            "check_sender_access texthash:s",
            &[
                "sender=[\"@spam.example\", \"@.spam.example\"] action=\"reject\"",
                "sender=[\"<>\"] action=\"tempfail\"",
                "sender=[\"x@y.example\"] action=\"relay\"",
            ],
        ),
        ("check_ccert_access texthash:cc", &["cert_sha256=", "cert_spki_sha256="]),
        ("check_client_access inline:{ 10.1.2=REJECT }", &["client=[\"10.1.2.0/24\"] action=\"reject\""]),
    ];
    for (el, want) in table {
        let (rules, entries) = compiled(&[("smtpd_recipient_restrictions", el)], dir.path());
        let rules: Vec<String> = rules.iter().map(|r| r.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or_default()).collect();
        let got: Vec<&String> = rules.iter().filter(|r| !r.is_empty()).collect();
        assert_eq!(got.len(), want.len(), "{el}: {rules:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(g.contains(w) || g.replace("set ", "").contains(&w.replace("set ", "")), "{el}: got {g:?}, want {w:?}");
        }
        // The element has its report entry (its fate is set when the rule is written).
        assert!(entries.iter().any(|e| e.text.starts_with("smtpd_recipient_restrictions: ")), "{el}: {entries:?}");
        // (c.cidr's HOLD line is checked below.)
        assert!(!entries.iter().any(|e| matches!(e.fate, Fate::NotMapped { .. }) && !e.text.contains("HOLD")), "{el}: {entries:?}");
    }
    // Unknown elements and untranslatable entries are restrictions NOT MAPPED.
    for el in ["check_policy_service inet:127.0.0.1:10023", "reject_non_fqdn_sender", "check_recipient_access hash:/none"] {
        let (_, entries) = compiled(&[("smtpd_recipient_restrictions", el)], dir.path());
        assert!(entries.iter().any(|e| matches!(e.fate, Fate::NotMapped { restriction: true, .. })), "{el}: {entries:?}");
    }
    let (_, entries) = compiled(&[("smtpd_recipient_restrictions", "check_client_access cidr:c.cidr")], dir.path());
    assert!(entries.iter().any(|e| e.text.contains("HOLD") && matches!(e.fate, Fate::NotMapped { restriction: true, .. })));
    let (_, entries) = compiled(&[("smtpd_recipient_restrictions", "check_sender_access texthash:s")], dir.path());
    assert!(entries.iter().any(|e| e.text.contains("user@") && matches!(e.fate, Fate::Default { .. })));
}

#[test]
fn lists_in_postfix_order() {
    let dir = tempfile::tempdir().unwrap();
    // A reject in the client list comes before the relay list's permits.
    let (rules, _) = compiled(
        &[
            ("smtpd_client_restrictions", "check_client_access inline:{ 10.9.9.9=REJECT }"),
            ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"),
        ],
        dir.path(),
    );
    assert!(rules[0].contains("10.9.9.9/32") && rules[0].contains("reject"), "{rules:?}");
    assert!(rules[1].contains("relay-permit_mynetworks"), "{rules:?}");
    // The default relay list shielding defer_unauth_destination with the
    // same permits as the deciding recipient list: covered, not an error.
    let (rules, entries) = compiled(
        &[
            ("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"),
            ("smtpd_recipient_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"),
        ],
        dir.path(),
    );
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert!(!entries.iter().any(|e| matches!(e.fate, Fate::NotMapped { .. })), "{entries:?}");
    // A reject shielded by a permit in an earlier list cannot be expressed.
    let (_, entries) = compiled(
        &[
            ("smtpd_client_restrictions", "permit_mynetworks, reject"),
            ("smtpd_relay_restrictions", "permit_sasl_authenticated, reject_unauth_destination"),
        ],
        dir.path(),
    );
    assert!(
        entries.iter().any(|e| e.text.ends_with(": reject") && matches!(e.fate, Fate::NotMapped { restriction: true, .. })),
        "{entries:?}"
    );
    // ... unless the two cannot match the same client.
    let (rules, entries) = compiled(
        &[
            ("smtpd_client_restrictions", "check_client_access inline:{ 10.0.0.1=OK, 192.0.2.1=REJECT }"),
            ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination"),
        ],
        dir.path(),
    );
    assert!(rules[0].contains("192.0.2.1") && !entries.iter().any(|e| matches!(e.fate, Fate::NotMapped { .. })), "{rules:?} {entries:?}");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn whole_conversion_accounts_for_every_line_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "main.cf",
        "# a relay\nmyhostname = mx.example.org\nmydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8, [::1]/128\nrelay_domains = relay.example\ntransport_maps = hash:/etc/postfix/transport\nrelayhost = [smarthost.example]:587\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\nsmtp_tls_security_level = encrypt\nsmtpd_relay_restrictions = permit_mynetworks,\n  permit_sasl_authenticated, reject_unauth_destination\nsmtpd_tls_cert_file = /etc/ssl/c.pem\nsmtpd_tls_key_file = /etc/ssl/k.pem\nsmtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\nbroken_sasl_auth_clients = yes\nvirtual_alias_maps = texthash:/etc/postfix/virtual\nlocal_recipient_maps = texthash:/etc/postfix/users\nsmtpd_milters = inet:localhost:8891\nnon_smtpd_milters = $smtpd_milters\nmessage_size_limit = 10485760\nmaximal_queue_lifetime = 3d\nsome_unknown_thing = 1\n",
    );
    write(d, "master.cf", "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\nsmtps inet n - y - - smtpd\n  -o smtpd_tls_wrappermode=yes\npickup unix n - y 60 1 pickup\nmaildrop unix - n n - - pipe flags=DRhu user=vmail argv=/usr/bin/maildrop\n");
    write(d, "transport", "relay.example smtp:[10.0.0.2]:2525\n");
    write(d, "sasl_passwd", "[smarthost.example]:587 user@example.org:pw\n");
    write(d, "virtual", "info@mx.example.org alice, bob\nx@elsewhere.example carol\n");
    write(d, "users", "alice x\nbob x\n");
    let imported = super::convert(d, Path::new("/out"), "fallback.example").unwrap();
    let cfg = &imported.config;
    for want in [
        "smarthost = \"smarthost.example:587\"",
        "smarthost_username = \"user@example.org\"",
        "smarthost_tls = \"encrypt\"",
        "backend = \"dovecot\"",
        "dovecot_socket = \"unix:/var/spool/postfix/private/auth\"",
        "broken_auth_line = true",
        "role = \"submissions\"",
        "role = \"submission\"",
        "next_hop = \"10.0.0.2:2525\"",
        "max_lifetime = \"3d\"",
        "sendmail_milters = [\"milter-inet-localhost-8891\"]",
        "users = [\"alice\", \"bob\"]",
    ] {
        assert!(cfg.contains(want), "{want} missing in\n{cfg}");
    }
    assert_eq!(imported.aliases.as_deref(), Some("info: alice, bob\n"));
    assert!(imported.extra.iter().any(|(n, t)| n == "smarthost.password" && t == "pw\n"));
    // Every non-comment source line has an entry, none pending.
    let r = &imported.report;
    for (file, text) in
        [("main.cf", std::fs::read_to_string(d.join("main.cf")).unwrap()), ("transport", String::new()), ("virtual", String::new())]
    {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with(' ') {
                continue;
            }
            assert!(
                r.entries.iter().any(|e| e.source.file == d.join(file) && e.source.line == i + 1),
                "{file}:{} not in report:\n{}",
                i + 1,
                r.render()
            );
        }
    }
    assert!(r.entries.iter().all(|e| !matches!(&e.fate, Fate::Default { why } if why.contains("pending"))), "{}", r.render());
    for f in ["transport", "sasl_passwd", "virtual", "users"] {
        assert!(r.entries.iter().any(|e| e.source.file == d.join(f)), "{f}: {}", r.render());
    }
    assert!(r.render().contains("some_unknown_thing = 1\tNOT MAPPED"), "{}", r.render());
    assert!(r.render().contains("x@elsewhere.example carol\tNOT MAPPED"), "{}", r.render());
    assert_eq!(r.unmapped_restrictions().count(), 0, "{}", r.render());
    // Mapped entries name the output line of their key.
    let e = r.entries.iter().find(|e| e.text.starts_with("relayhost")).unwrap();
    match &e.fate {
        Fate::Mapped { target, at: Some(at) } => {
            assert_eq!(target, "relay.smarthost");
            assert!(cfg.lines().nth(at.line - 1).unwrap().starts_with("smarthost ="), "{at}");
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn missing_main_cf_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(super::convert(dir.path(), Path::new("/out"), "h"), Err(super::ImportError::Missing(_))));
}
