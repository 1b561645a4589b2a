//! Unit tests of `policy`.

use super::*;
use crate::config::Config;
use crate::settings::Source;
use crate::tls::CertInfo;

const RULES: &str = r#"
hostname = "mx.example"
[[listener]]
address = "127.0.0.1:25"
[[listener]]
name = "gateway"
address = "127.0.0.1:26"
[local]
domains = ["example.org", "localhost"]
users = ["alice", "Bob"]
[relay]
networks = ["192.0.2.0/24"]
domains = ["backup.example"]

[[rule]]
name = "block-spammer"
client = ["198.51.100.66/32"]
action = "reject"
message = "You are blocked"

[[rule]]
name = "satellites-by-subject"
listener = ["gateway"]
cert_subject = "CN=*.sat.example"
action = "relay"

[[rule]]
name = "pinned"
cert_sha256 = ["AA:BB"]
action = "relay"

[[rule]]
name = "partner-ca"
cert_ca = "CN=Partner CA"
cert_san = ["DNS:mx.partner.example"]
action = "relay"

[[rule]]
name = "only-bob"
users = ["bob"]
action = "relay"

[[rule]]
name = "no-auth-for-carol"
users = ["carol"]
action = "tempfail"
message = "Carol is suspended"

[[rule]]
name = "newsletter"
sender = ["@news.example"]
rcpt = ["other"]
tls = false
action = "reject"
message = "Newsletters need TLS"
"#;

fn settings(text: &str) -> Settings {
    let cfg = Config::parse(text, "t.toml").unwrap();
    let mut s = Settings::from_config(cfg, &Source { config: None, data_dir: Some("/nonexistent".into()) }).unwrap();
    s.aliases = crate::aliases::Aliases::parse("team: alice, bob, carol@else.example\n", "a").unwrap();
    s
}

fn path(s: &str) -> Path {
    postern_wire::address::parse_path(s, true, true, true).unwrap().0
}

fn cert(subject: &str, issuer: &str, anchor: Result<&str, &str>, sans: &[&str], sha: &str) -> ClientCertIdentity {
    ClientCertIdentity {
        cert: CertInfo {
            subject: subject.into(),
            issuer: issuer.into(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            sha256: sha.into(),
            spki_sha256: format!("spki-{sha}"),
            not_after: 0,
            subject_cns: subject.split(',').filter_map(|r| r.trim().strip_prefix("CN=")).map(String::from).collect(),
            subject_dn: crate::dn::Dn::parse(subject).unwrap(),
            issuer_dn: crate::dn::Dn::parse(issuer).unwrap(),
        },
        verified: anchor.map(String::from).map_err(String::from),
    }
}

struct Case {
    listener: &'static str,
    ip: &'static str,
    tls: bool,
    user: Option<&'static str>,
    cert: Option<ClientCertIdentity>,
    from: Option<&'static str>,
    rcpt: &'static str,
    want: &'static str,
    rule: &'static str,
}

fn case(ip: &'static str, rcpt: &'static str, want: &'static str, rule: &'static str) -> Case {
    Case { listener: "smtp", ip, tls: false, user: None, cert: None, from: Some("<s@sender.example>"), rcpt, want, rule }
}

#[test]
fn table() {
    let s = settings(RULES);
    let mut db = UserDb::default();
    db.users.insert("dbuser".into(), Default::default());
    let ours = |cn: &str| cert(cn, "CN=postern CA", Ok("CN=postern CA"), &[], "11");
    let cases = vec![
        case("203.0.113.1", "<alice@example.org>", "250", "local-domains"),
        case("203.0.113.1", "<ALICE@Example.ORG>", "250", "local-domains"),
        case("203.0.113.1", "<Postmaster>", "250", "local-domains"),
        case("203.0.113.1", "<team@example.org>", "250", "local-domains"),
        case("203.0.113.1", "<dbuser@example.org>", "250", "local-domains"),
        case("203.0.113.1", "<mallory@example.org>", "550 5.1.1", "local-unknown"),
        case("203.0.113.1", "<x@backup.example>", "250", "relay-domains"),
        case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay"),
        case("203.0.113.1", "<x@mx.example>", "550 5.7.1", "no-relay"),
        case("192.0.2.7", "<x@far.example>", "250", "relay-networks"),
        case("198.51.100.66", "<alice@example.org>", "550 5.7.1", "block-spammer"),
        case("198.51.100.66", "<x@far.example>", "550 5.7.1", "block-spammer"),
        Case { user: Some("alice"), ..case("203.0.113.1", "<x@far.example>", "250", "authenticated") },
        Case { user: Some("bob"), ..case("203.0.113.1", "<x@far.example>", "250", "only-bob") },
        Case { user: Some("carol"), ..case("203.0.113.1", "<x@far.example>", "450 4.7.1", "no-auth-for-carol") },
        Case { tls: true, cert: Some(ours("CN=alice")), ..case("203.0.113.1", "<x@far.example>", "250", "trusted-certificate") },
        Case {
            tls: true,
            cert: Some(cert("CN=alice", "CN=postern CA", Err("bad signature"), &[], "22")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=self", "CN=self", Err("unknown issuer"), &[], "33")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=old", "CN=postern CA", Err("certificate expired"), &[], "44")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case {
            tls: true,
            listener: "gateway",
            cert: Some(ours("CN=one.sat.example")),
            ..case("203.0.113.1", "<x@far.example>", "250", "satellites-by-subject")
        },
        Case { tls: true, cert: Some(ours("CN=one.sat.example")), ..case("203.0.113.1", "<x@far.example>", "250", "trusted-certificate") },
        Case {
            tls: true,
            listener: "gateway",
            cert: Some(cert("CN=one.sat.example", "CN=one.sat.example", Err("unknown issuer"), &[], "55")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=pin", "CN=pin", Err("unknown issuer"), &[], "aabb")),
            ..case("203.0.113.1", "<x@far.example>", "250", "pinned")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=pin", "CN=pin", Err("unknown issuer"), &[], "aabc")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=mx", "CN=Partner CA", Ok("CN=Partner CA"), &["DNS:mx.partner.example"], "66")),
            ..case("203.0.113.1", "<x@far.example>", "250", "partner-ca")
        },
        Case {
            tls: true,
            cert: Some(cert("CN=mx", "CN=Partner CA", Err("unknown issuer"), &["DNS:mx.partner.example"], "77")),
            ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay")
        },
        Case { from: Some("<promo@news.example>"), ..case("192.0.2.7", "<x@far.example>", "550 5.7.1", "newsletter") },
        Case { from: Some("<promo@news.example>"), tls: true, ..case("192.0.2.7", "<x@far.example>", "250", "relay-networks") },
        Case { from: Some("<promo@news.example>"), ..case("192.0.2.7", "<alice@example.org>", "250", "local-domains") },
        Case { from: None, ..case("203.0.113.1", "<alice@example.org>", "250", "local-domains") },
        Case { from: None, ..case("203.0.113.1", "<x@far.example>", "550 5.7.1", "no-relay") },
    ];
    for (i, c) in cases.iter().enumerate() {
        let who = c.user.map(Authenticated::dangerous_assume);
        let rcpt = path(c.rcpt);
        let sender = c.from.and_then(|f| match path(f) {
            Path::Mailbox(m) => Some(m),
            _ => None,
        });
        let f = Facts {
            listener: c.listener,
            client_ip: c.ip.parse().unwrap(),
            tls: c.tls,
            authenticated: who.as_ref(),
            cert: c.cert.as_ref(),
            sender: sender.as_ref(),
            rcpt: &rcpt,
            user_db: Some(&db),
            client_resolve: None,
            directory: None,
        };
        let d = check_rcpt(&s, &f);
        let code = match &d {
            RcptDecision::Accept { .. } => "250".to_string(),
            RcptDecision::Reject { reply, .. } => reply.to_wire(),
        };
        assert!(code.starts_with(c.want), "case {i} ({} {}): got {code} by {}", c.ip, c.rcpt, d.rule());
        assert_eq!(d.rule(), c.rule, "case {i} ({} {})", c.ip, c.rcpt);
    }
}

#[test]
fn origins_name_file_lines_and_messages() {
    let s = settings(RULES);
    let rcpt = path("<x@far.example>");
    let f = Facts {
        listener: "smtp",
        client_ip: "198.51.100.66".parse().unwrap(),
        tls: false,
        authenticated: None,
        cert: None,
        sender: None,
        rcpt: &rcpt,
        user_db: None,
        client_resolve: None,
        directory: None,
    };
    match check_rcpt(&s, &f) {
        RcptDecision::Reject { reply, origin, .. } => {
            assert_eq!(origin, "config:15");
            assert_eq!(reply.to_wire(), "550 5.7.1 <x@far.example>: You are blocked\r\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_relay_detection_and_globs() {
    assert!(!is_open_relay(&settings(RULES), "smtp"));
    let open = settings("[[rule]]\naction = \"relay\"\n");
    assert!(is_open_relay(&open, "smtp"));
    let closed = settings("[[rule]]\nrcpt = [\"local\"]\naction = \"relay\"\n");
    assert!(!is_open_relay(&closed, "smtp"));
    assert!(glob("CN=*.sat.example", "cn=a.sat.example"));
    assert!(!glob("CN=*.sat.example", "CN=a.sat.example.evil"));
    assert!(glob("*@example.org", "x@example.org"));
    assert!(glob("CN=a*b*c", "CN=aXXbYYc"));
}

/// F10 over real certificates (rcgen, parsed by the TLS layer): a CN whose
/// value holds ", O=Partner" is not an O attribute, and a `*` never spans
/// RDNs; the genuine DN matches.
#[test]
fn dn_criteria_match_parsed_rdns_of_real_certificates() {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
    let make = |dn: &[(DnType, &str)]| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        ClientCertIdentity { cert: crate::tls::cert_info(cert.der()).unwrap(), verified: Ok("CN=Partner CA".into()) }
    };
    let s = settings(RULES);
    let rcpt = path("<x@far.example>");
    let check = |pattern: &str, id: &ClientCertIdentity| {
        let rule = Rule { cert_subject: Some(pattern.into()), action: Some(RuleAction::Relay), ..Rule::default() };
        let f = Facts {
            listener: "smtp",
            client_ip: "203.0.113.1".parse().unwrap(),
            tls: true,
            authenticated: None,
            cert: Some(id),
            sender: None,
            rcpt: &rcpt,
            user_db: None,
            client_resolve: None,
            directory: None,
        };
        matches(&rule, &f, classify(&s, &rcpt))
    };
    let genuine = make(&[(DnType::CommonName, "mx"), (DnType::OrganizationName, "Partner")]);
    let forged = make(&[(DnType::CommonName, "mallory, O=Partner")]);
    let forged_tight = make(&[(DnType::CommonName, "mallory,O=Partner")]);
    let spanning = make(&[(DnType::CommonName, "evil"), (DnType::OrganizationalUnitName, "a.sat.example")]);
    assert_eq!(genuine.cert.subject, "CN=mx, O=Partner");
    assert_eq!(forged.cert.subject, r"CN=mallory\, O\=Partner", "the log string is escaped");
    assert!(check("CN=*, O=Partner", &genuine));
    assert!(check("cn=MX,o=partner", &genuine));
    assert!(!check("CN=*, O=Partner", &forged));
    assert!(!check("CN=*,O=Partner", &forged_tight));
    assert!(!check("CN=*.sat.example", &spanning));
    assert!(check("CN=evil, OU=*.sat.example", &spanning));
}

/// F15: `config check` warns when configured client CAs meet the built-in
/// `trusted-certificate` rule on a listener that asks for certificates.
#[test]
fn trusted_certificate_warning_when_client_cas_meet_the_built_in_rule() {
    let listener = "[[listener]]\naddress = \"127.0.0.1:25\"\nclient_certificates = \"optional\"\n";
    let cas = "[tls]\nclient_ca_files = [\"/etc/ssl/partner-ca.pem\"]\n";
    let warn = |text: &str| trusted_certificate_warning(&Config::parse(text, "t.toml").unwrap());
    let w = warn(&format!("{listener}{cas}")).expect("warning");
    assert!(w.contains("/etc/ssl/partner-ca.pem"), "{w}");
    assert!(w.contains("relay.default_rules = false") && w.contains("cert_subject, cert_san or cert_sha256"), "{w}");
    // Narrowed: no built-in rules.
    assert_eq!(warn(&format!("{listener}{cas}[relay]\ndefault_rules = false\n")), None);
    // No configured CA (the built-in CA is the operator's own), or no
    // listener that asks for a certificate: nothing to warn about.
    assert_eq!(warn(listener), None);
    assert_eq!(warn(&format!("{listener}[tls]\nclient_ca_files = []\n")), None);
    assert_eq!(warn(&format!("[[listener]]\naddress = \"127.0.0.1:25\"\n{cas}")), None);
    let by_network = "[[listener]]\naddress = \"127.0.0.1:25\"\nrequest_client_certificates_from = [\"10.0.0.0/8\"]\n";
    assert!(warn(&format!("{by_network}{cas}")).is_some());
}

#[test]
fn subdomain_sender_patterns() {
    for (domain, parent, want) in [
        ("a.example.org", "example.org", true),
        ("A.B.Example.ORG", "example.org", true),
        ("example.org", "example.org", false),
        ("badexample.org", "example.org", false),
        ("org", "example.org", false),
        ("", "example.org", false),
    ] {
        assert_eq!(super::is_subdomain(domain, parent), want, "{domain} under {parent}");
    }
}
