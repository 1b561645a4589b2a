//! Unit tests of the config: defaults, the example, error positions, value
//! parsers, and that one load reports every problem.
//!
//! May touch: nothing.

use std::time::Duration;

use super::*;

#[test]
fn empty_is_default() {
    let c = Config::parse("", "x.toml").unwrap();
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
    assert_eq!(c.listeners[1].role, Role::Submissions);
    assert!(c.listeners[2].tls_required() && !c.listeners[0].tls_required());
    assert_eq!(c.limits.max_line_length, 1000);
    assert_eq!(c.queue.max_lifetime, Duration::from_secs(432000));
    assert!(c.relay.networks[0].contains("127.0.0.9".parse().unwrap()));
    assert!(c.relay.networks[1].contains("::1".parse().unwrap()));
    assert!(!c.relay.networks[0].contains("10.0.0.1".parse().unwrap()));
}

#[test]
fn default_is_the_empty_file() {
    let parsed: Config = toml::from_str("").unwrap();
    assert_eq!(format!("{:?}", Config::default()), format!("{parsed:?}"));
}

#[test]
fn example_parses_and_covers_every_key() {
    let c = Config::parse(EXAMPLE, "example.toml").unwrap();
    assert_eq!(c.local.users, vec!["alice".to_string(), "bob".to_string()]);
    for key in [
        "hostname",
        "data_dir",
        "user",
        "[[listener]]",
        "address",
        "role",
        "[limits]",
        "max_message_size",
        "max_recipients",
        "max_line_length",
        "command_timeout",
        "data_timeout",
        "max_errors",
        "max_connections",
        "max_connections_per_ip",
        "bare_newline",
        "shutdown_timeout",
        "[local]",
        "domains",
        "users",
        "aliases",
        "delivery",
        "maildir_root",
        "lmtp",
        "[relay]",
        "networks",
        "smarthost",
        "[queue]",
        "retry_min",
        "retry_max",
        "max_lifetime",
        "concurrency",
        "min_free_space",
        "[log]",
        "mail_log",
        "require_tls",
        "client_certificates",
        "request_client_certificates_from",
        "require_client_certificates_from",
        "never_request_client_certificates_from",
        "[tls]",
        "lmtp_tls",
        "certificate",
        "key",
        "client_ca_files",
        "crl_files",
        "smarthost_tls",
        "smarthost_implicit_tls",
        "smarthost_ca_files",
        "smarthost_server_name",
        "smarthost_client_certificate",
        "smarthost_client_key",
        "[auth]",
        "mechanisms",
        "plaintext_networks",
        "broken_auth_line",
        "sender_login_match",
        "external_identity",
        "max_failures_per_ip",
        "max_failures_per_user",
        "verified_cache_ttl",
        "delay_after",
        "failure_window",
        "ban_time",
        "ban_action",
        "ipv6_prefix",
        "ban_exempt_networks",
        "max_failure_delay",
        "login_memory",
        "throttle_max_entries",
        "smarthost_username",
        "smarthost_password_file",
        "smarthost_auth_plaintext",
        "auth_mechanisms",
        "default_rules",
        "[mx]",
        "delay_warning",
        "nameservers",
        "domain_concurrency",
        "domain_backoff",
        "[[rule]]",
        "action",
        "message",
        "listener",
        "client",
        "client_file",
        "tls",
        "authenticated",
        "users",
        "cert_verified",
        "cert_ca",
        "cert_issuer",
        "cert_subject",
        "cert_san",
        "cert_sha256",
        "cert_spki_sha256",
        "sender",
        "rcpt",
        "[[route]]",
        "transport",
        "next_hop",
        "[[milter]]",
        "milters",
        "sync",
        "sendmail_milters",
        "socket",
        "default_action",
        "connect_timeout",
        "command_timeout",
        "eom_timeout",
        "[metrics]",
        "rdns",
        "[inbound.rdns]",
        "helo_require_fqdn",
        "sender_domain_check",
        "harvest_drop_after",
    ] {
        assert!(EXAMPLE.contains(key), "example.toml does not mention {key}");
    }
}

#[test]
fn errors_name_file_line_and_key() {
    let table: &[(&str, &str)] = &[
        ("[limits]\nmax_errors = \"x\"\n", "f.toml:2:14: key `limits.max_errors`: invalid type"),
        ("[limits]\nbogus = 1\n", "f.toml:2:1: key `limits.bogus`: unknown field `bogus`"),
        ("[relay]\nnetworks = [\"10.0.0.0/33\"]\n", "f.toml:2:13: key `relay.networks`: bad prefix length \"33\""),
        ("[queue]\nretry_min = \"soon\"\n", "f.toml:2:13: key `queue.retry_min`: bad duration"),
        ("[local]\nlmtp = \"nohost\"\n", "f.toml:2:8: key `local.lmtp`: expected host:port"),
        ("whatever = 1\n", "f.toml:1:1: key `whatever`: unknown field"),
        ("[[listener]]\naddress = \"1.2.3.4\"\n", "f.toml:2:11: key `listener.address`: invalid socket address"),
        ("[local]\ndelivery = \"lmtp\"\n", "f.toml:2:12: key `local.lmtp`: required"),
        ("[[milter]]\nname = \"a\"\nsocket = \"8891\"\n", "f.toml:3:10: key `milter.socket`: milter socket \"8891\": expected"),
        (
            "[[milter]]\nname = \"a\"\nsocket = \"unix:/x\"\ndefault_action = \"drop\"\n",
            "f.toml:4:18: key `milter.default_action`: unknown variant",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nmilters = [\"dkim\"]\n",
            "f.toml:3:12: key `listener.milters`: listener \"smtp\": no [[milter]] named \"dkim\"",
        ),
    ];
    for (text, want) in table {
        let got = Config::parse(text, "f.toml").unwrap_err().to_string();
        assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn endpoints() {
    assert_eq!("h:25".parse::<Endpoint>(), Ok(Endpoint::Tcp("h".into(), 25)));
    assert_eq!("[::1]:24".parse::<Endpoint>(), Ok(Endpoint::Tcp("::1".into(), 24)));
    assert_eq!("unix:/run/x".parse::<Endpoint>(), Ok(Endpoint::Unix("/run/x".into())));
    assert!("unix:rel".parse::<Endpoint>().is_err());
    assert!("h:99999".parse::<Endpoint>().is_err());
}

#[test]
fn milter_sockets() {
    let tcp = |h: &str, p| Ok(MilterSocket(Endpoint::Tcp(h.into(), p)));
    assert_eq!("inet:127.0.0.1:8891".parse::<MilterSocket>(), tcp("127.0.0.1", 8891));
    assert_eq!("inet:8891@localhost".parse::<MilterSocket>(), tcp("localhost", 8891));
    assert_eq!("inet6:[::1]:8891".parse::<MilterSocket>(), tcp("::1", 8891));
    assert_eq!("unix:/run/m.sock".parse::<MilterSocket>(), Ok(MilterSocket(Endpoint::Unix("/run/m.sock".into()))));
    assert_eq!("local:/run/m.sock".parse::<MilterSocket>(), Ok(MilterSocket(Endpoint::Unix("/run/m.sock".into()))));
    for bad in ["8891", "inet:host", "inet:@h", "unix:rel", "inet::25"] {
        assert!(bad.parse::<MilterSocket>().is_err(), "{bad}");
    }
}

#[test]
fn configuration_doc_embeds_the_example() {
    let doc = include_str!("../../../../docs/configuration.md");
    assert!(doc.contains(EXAMPLE), "docs/configuration.md must embed example.toml verbatim");
}

#[test]
fn cert_mode_by_network() {
    let c = Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:25\"\nclient_certificates = \"optional\"\n\
         never_request_client_certificates_from = [\"10.1.0.0/16\"]\n\
         require_client_certificates_from = [\"10.0.0.0/8\"]\n\
         request_client_certificates_from = [\"192.0.2.0/24\"]\n",
        "t",
    )
    .unwrap();
    let l = &c.listeners[0];
    let table = [
        ("10.1.2.3", ClientCertMode::None),
        ("10.2.3.4", ClientCertMode::Required),
        ("192.0.2.9", ClientCertMode::Optional),
        ("198.51.100.1", ClientCertMode::Optional),
        ("::ffff:10.9.9.9", ClientCertMode::Required),
    ];
    for (ip, want) in table {
        assert_eq!(l.cert_mode_for(ip.parse().unwrap()), want, "{ip}");
    }
}

/// The problems of a config, one line each.
fn problems(text: &str) -> Vec<String> {
    Config::parse(text, "f.toml").unwrap_err().to_string().lines().map(str::to_string).collect()
}

#[test]
fn every_problem_is_reported_at_once() {
    // Each case: a config and the start of each line of the error, in file order.
    let table: &[(&str, &[&str])] = &[
        (
            // a value error, a validation error, a serde error: three lines.
            "[relay]\nnetworks = [\"10.0.0.0/33\"]\n[[listener]]\naddress = \"127.0.0.1:25\"\nmilters = [\"dkim\"]\n[limits]\nbogus = 1\n",
            &[
                "f.toml:2:13: key `relay.networks`: bad prefix length \"33\"",
                "f.toml:5:12: key `listener.milters`: listener \"smtp\": no [[milter]] named \"dkim\"",
                "f.toml:7:1: key `limits.bogus`: unknown field `bogus`",
            ],
        ),
        (
            // two bad sockets, a bad duration, a duplicate name, an unknown mechanism.
            "[[milter]]\nname = \"a\"\nsocket = \"8891\"\n[[milter]]\nname = \"a\"\nsocket = \"inet:host\"\nconnect_timeout = \"soon\"\n[auth]\nmechanisms = [\"PLAIN\", \"NTLM\"]\n",
            &[
                "f.toml:3:10: key `milter.socket`: milter socket \"8891\": expected",
                "f.toml:5:8: key `milter.name`: \"a\" is defined twice",
                "f.toml:6:10: key `milter.socket`: milter socket \"inet:host\"",
                "f.toml:7:19: key `milter.connect_timeout`: bad duration \"soon\"",
                "f.toml:9:24: key `auth.mechanisms`: unknown mechanism \"NTLM\"",
            ],
        ),
        (
            // wrong types and unknown enum values in several tables.
            "[limits]\nmax_errors = \"x\"\nbare_newline = \"keep\"\n[queue]\nsync = \"never\"\nretry_min = \"2h\"\n[[route]]\ndomains = [\"x.example\"]\ntransport = \"lmtp\"\n",
            &[
                "f.toml:2:14: key `limits.max_errors`: invalid type",
                "f.toml:3:16: key `limits.bare_newline`: unknown variant `keep`",
                "f.toml:5:8: key `queue.sync`: unknown variant `never`",
                "f.toml:6:13: key `queue.retry_min`: must not exceed queue.retry_max",
                "f.toml:9:13: key `route.next_hop`: required for transport \"lmtp\"",
            ],
        ),
        (
            // listener mechanisms are typed too; domains and users are checked.
            "[[listener]]\naddress = \"127.0.0.1:25\"\nauth_mechanisms = [\"plain\", \"PLAN\"]\n[local]\ndomains = [\"ok.example\", \"bad..example\"]\nusers = [\"al ice\"]\n",
            &[
                "f.toml:3:29: key `listener.auth_mechanisms`: unknown mechanism \"PLAN\"",
                "f.toml:5:26: key `local.domains`: bad domain \"bad..example\"",
                "f.toml:6:10: key `local.users`: \"al ice\" is not a valid mailbox name",
            ],
        ),
        (
            // a wrong value is reported once: no echo from the check of its pair.
            "[tls]\ncertificate = 5\nkey = \"k.pem\"\n[[listener]]\naddress = \"1.2.3.4\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n",
            &[
                "f.toml:2:15: key `tls.certificate`: invalid type",
                "f.toml:5:11: key `listener.address`: invalid socket address syntax \"1.2.3.4\"",
                "f.toml:9:11: key `listener.address`: 127.0.0.1:25 is bound by another listener too",
            ],
        ),
        (
            // a table without a required key.
            "[[milter]]\nname = \"a\"\n[[rule]]\naction = \"accept\"\n[[rule]]\nname = \"x\"\n",
            &["f.toml:1:1: key `milter`: missing field `socket`"],
        ),
        (
            "[[rule]]\nname = \"x\"\n[[rule]]\naction = \"relay\"\ncert_sha256 = [\"AB:CD\", \"sha256/xyz\"]\n",
            &["f.toml:1:1: key `rule`: [[rule]] needs `action`", "f.toml:5:25: key `rule.cert_sha256`: \"sha256/xyz\" is not a hex SHA-256"],
        ),
        (
            "[[rule]]\naction = \"relay\"\ncert_subject = \"CN=x, host\"\ncert_issuer = \"CN=a\\\\\"\n",
            &["f.toml:3:16: key `rule.cert_subject`: \"host\" is not type=value", "f.toml:4:15: key `rule.cert_issuer`: bad escape in"],
        ),
    ];
    for (text, want) in table {
        let got = problems(text);
        assert_eq!(got.len(), want.len(), "{text:?}\n got: {got:#?}\nwant: {want:#?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(g.starts_with(w), "{text:?}\n got: {g}\nwant: {w}");
        }
    }
}

#[test]
fn syntax_errors_stop_at_the_first() {
    let e = Config::parse("[limits]\nmax_errors = \n[relay]\nnetworks = [\"x\"]\n", "f.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax(_)), "{e:?}");
    assert_eq!(e.problems().len(), 1);
    assert!(e.to_string().starts_with("f.toml:2:"), "{e}");
}

#[test]
fn mechanisms_are_typed() {
    let c = Config::parse("[auth]\nmechanisms = [\"EXTERNAL\", \"CRAM-MD5\"]\n", "t").unwrap();
    let want = [postern_wire::sasl::Mechanism::External, postern_wire::sasl::Mechanism::CramMd5];
    assert_eq!(c.auth.mechanisms.iter().map(|m| m.0).collect::<Vec<_>>(), want);
    assert_eq!(Config::default().auth.mechanisms.len(), 4);
}

#[test]
fn more_checks_join_the_list() {
    let text = "[[rule]]\naction = \"reject\"\nclient_file = \"nope.txt\"\n[limits]\nmax_line_length = 100\n";
    let e = Config::parse_checked(text, "f.toml", |c| {
        let at = KeyPath::root().key("rule").index(0).key("client_file");
        vec![c.problem_at(&at, "rule.client_file", ProblemKind::Toml("cannot read nope.txt".into()))]
    })
    .unwrap_err();
    let got = e.to_string();
    assert_eq!(got, "f.toml:3:15: key `rule.client_file`: cannot read nope.txt\nf.toml:5:19: key `limits.max_line_length`: must be at least 512 (RFC 5321 §4.5.3.1)");
}

#[test]
fn slot_limits_are_checked() {
    let e = Config::parse("[limits]\nipv6_prefix = 129\nmax_junk_commands = 0\n", "f.toml").unwrap_err();
    let got = e.to_string();
    assert!(got.contains("f.toml:2:15: key `limits.ipv6_prefix`: must be between 1 and 128"), "{got}");
    assert!(got.contains("key `limits.max_junk_commands`: must be at least 1"), "{got}");
    let d = Config::default().limits;
    assert_eq!((d.write_timeout.as_secs(), d.session_lifetime.as_secs(), d.max_junk_commands, d.ipv6_prefix), (300, 3600, 100, 64));
    assert_eq!(Config::default().queue.attempt_timeout.as_secs(), 1800);
}
