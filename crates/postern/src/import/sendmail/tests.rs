//! Unit tests of the sendmail importer: the m4 reader, the access map, the
//! mapping of each macro and tag, aliases, and report completeness.

use std::path::{Path, PathBuf};

use super::access::{self, AccessAction};
use super::m4;
use super::{convert, Sources};
use crate::import::Fate;

#[test]
fn m4_quotes_dnl_comments_and_nested_parens() {
    let text = "divert(-1)dnl\n# a comment with FEATURE(`x')\ndivert(0)dnl\nVERSIONID(`v')dnl\n\
                define(`confAUTH_OPTIONS', `A,p,y')dnl\nDAEMON_OPTIONS(`Port=465, Name=SSA, M=Eas')dnl\n\
                define(`X', `a `nested' (paren, comma) b')dnl\nFEATURE(access_db, `hash -T<TMPF> /etc/mail/access')\n\
                dnl FEATURE(`ignored')\nINPUT_MAIL_FILTER(`f',\n    `S=inet:8891@localhost, F=T')dnl\n";
    let calls = m4::calls(text).unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["divert", "divert", "VERSIONID", "define", "DAEMON_OPTIONS", "define", "FEATURE", "INPUT_MAIL_FILTER"]);
    assert_eq!(calls[3].args, ["confAUTH_OPTIONS", "A,p,y"]);
    assert_eq!(calls[4].args, ["Port=465, Name=SSA, M=Eas"]);
    assert_eq!(calls[4].line, 6);
    assert_eq!(calls[5].args, ["X", "a `nested' (paren, comma) b"]);
    assert_eq!(calls[6].args, ["access_db", "hash -T<TMPF> /etc/mail/access"]);
    assert_eq!(calls[7].args, ["f", "S=inet:8891@localhost, F=T"]);
    assert_eq!(calls[7].line, 10);
    assert!(m4::calls("define(`a', `b)").is_err());
    assert!(m4::calls("FEATURE(`a'").is_err());
}

#[test]
fn access_tags_values_and_dn_escapes() {
    let text = "# comment\nConnect:127.0.0.3\tRELAY\nFrom:bad@example.com  REJECT\n\
                To:x@example.org ERROR:5.7.1:\"550 Go away\"\nCERTISSUER:/C=US/O=Example+20Corp/CN=CA  SUBJECT\n\
                IPv6:2001:db8::1 OK\nConnect:10.1 ERROR:\"421 later\"\n";
    let e = access::parse(text).unwrap();
    assert_eq!(e.len(), 6);
    assert_eq!((e[0].tag.as_str(), e[0].key.as_str(), e[0].line), ("Connect", "127.0.0.3", 2));
    assert_eq!(e[0].action, AccessAction::Relay);
    assert_eq!(e[2].action, AccessAction::Error { code: 550, text: "Go away".into() });
    assert_eq!(e[3].action, AccessAction::Subject);
    assert_eq!((e[4].tag.as_str(), e[4].key.as_str()), ("", "IPv6:2001:db8::1"));
    assert_eq!(e[5].action, AccessAction::Error { code: 421, text: "later".into() });
    assert!(access::parse("Connect:1.2.3.4\n").is_err());
    for (key, net) in [
        ("127.0.0", Some("127.0.0.0/24")),
        ("10.1", Some("10.1.0.0/16")),
        ("192.0.2.7", Some("192.0.2.7/32")),
        ("IPv6:::1", Some("::1/128")),
        ("host.example", None),
        ("300.1", None),
    ] {
        assert_eq!(access::network(key).as_deref(), net, "{key}");
    }
    for (dn, want) in [
        ("/C=US/O=Example+20Corp/CN=CA", Some("C=US, O=Example Corp, CN=CA")),
        ("/CN=mallory,O=Partner", Some("CN=mallory\\,O\\=Partner")),
        ("/CN=a+2Bb", Some("CN=a\\+b")),
        ("CN=x", None),
        ("/CN=bad+zz", None),
    ] {
        assert_eq!(access::dn_pattern(dn).as_deref(), want, "{dn}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("postern-import-sm-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(mc: &str, files: &[(&str, &str)]) -> (crate::import::Imported, PathBuf) {
    let d = tmp(&format!("{:x}", mc.len() * 31 + files.len()));
    for (n, t) in files {
        std::fs::write(d.join(n), t).unwrap();
    }
    let mc = mc.replace("DIR", &d.display().to_string());
    let src = Sources {
        aliases: files.iter().any(|f| f.0 == "aliases").then(|| d.join("aliases")),
        out_dir: d.join("out"),
        ..Sources::default()
    };
    let imp = convert(Path::new("sendmail.mc"), &mc, &src, &d.join("out/postern.toml")).unwrap();
    (imp, d)
}

const SEED: &str = "divert(-1)dnl\ndivert(0)dnl\nVERSIONID(`seed')dnl\nOSTYPE(`linux')dnl\n\
define(`confDOMAIN_NAME', `mx.test')dnl\ndefine(`confCACERT_PATH', `DIR')dnl\ndefine(`confCACERT', `DIR/ca.crt')dnl\n\
define(`confSERVER_CERT', `DIR/server.crt')dnl\ndefine(`confSERVER_KEY', `DIR/server.key')dnl\n\
TRUST_AUTH_MECH(`PLAIN LOGIN')dnl\ndefine(`confAUTH_MECHANISMS', `PLAIN LOGIN CRAM-MD5')dnl\n\
define(`confDONT_BLAME_SENDMAIL', `GroupReadableSASLDBFile')dnl\nFEATURE(`no_default_msa')dnl\n\
FEATURE(`access_db', `hash -T<TMPF> DIR/access')dnl\nFEATURE(`accept_unresolvable_domains')dnl\n\
DAEMON_OPTIONS(`Port=2525, Addr=127.0.0.1, Name=MTA')dnl\nDAEMON_OPTIONS(`Port=2465, Addr=127.0.0.1, Name=SSA, M=Eas')dnl\n\
define(`confAUTH_OPTIONS', `A,p,y')dnl\ndefine(`confTLS_SRV_OPTIONS', `V')dnl\ndefine(`confMAX_MESSAGE_SIZE', `1000000')dnl\n\
INPUT_MAIL_FILTER(`dkim', `S=inet:8891@127.0.0.1, F=T, T=R:30s')dnl\nMAILER(`local')dnl\nMAILER(`smtp')dnl\n";

const ACCESS: &str = "Connect:127.0.0.3\tRELAY\nConnect:127.0.0.4\tREJECT\nConnect:127.0.0.40 OK\nFrom:bad@example.com\tREJECT\n\
CERTISSUER:/CN=Test+20CA\tSUBJECT\nCERTSUBJECT:/CN=gw.test\tRELAY\nSrv_Features:127.0.0.5 v\nTo:x@example.org REJECT\n";

#[test]
fn seed_mc_maps_every_macro() {
    let (imp, d) = run(SEED, &[("access", ACCESS), ("aliases", "postmaster: root\nalice: root\n")]);
    let c = crate::config::Config::parse(&imp.config, "t").unwrap();
    assert_eq!(c.hostname.as_deref(), Some("mx.test"));
    assert_eq!(c.local.users, ["root"]);
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].role, crate::config::Role::Submissions);
    assert_eq!(c.listeners[0].client_certificates, crate::config::ClientCertMode::None);
    assert_eq!(c.listeners[0].request_client_certificates_from.len(), 1);
    assert_eq!(c.listeners[0].milters, ["dkim"]);
    assert_eq!(c.milters[0].default_action, crate::config::MilterDefault::Tempfail);
    assert_eq!(c.limits.max_message_size, 1_000_000);
    assert!(!c.relay.default_rules);
    assert_eq!(c.tls.client_ca_files.as_ref().unwrap()[0], d.join("ca.crt"));
    let names: Vec<String> = c.rules.iter().map(|r| r.get_ref().name.clone().unwrap()).collect();
    // Most specific first: the OK exception before the broader REJECT? (Here
    // both are /32, so file order.) Then the permits, then certificates.
    assert_eq!(names, ["access-2", "access-3", "access-4", "local-and-relay-domains", "relay-networks", "authenticated", "access-6"]);
    let cert = c.rules[6].get_ref();
    assert_eq!(cert.cert_issuer.as_deref(), Some("CN=Test CA"));
    assert_eq!(cert.cert_subject.as_deref(), Some("CN=gw.test"));
    assert_eq!(c.auth.mechanisms.iter().map(|m| m.0.name()).collect::<Vec<_>>(), ["PLAIN", "LOGIN"]);
    // The unmapped restriction (To: address) is reported; every mc line has an entry.
    let r = &imp.report;
    let unmapped: Vec<_> = r.unmapped_restrictions().map(|e| e.text.clone()).collect();
    assert_eq!(unmapped, ["To:x@example.org REJECT"]);
    let mc_lines: Vec<usize> = r.entries.iter().filter(|e| e.source.file == Path::new("sendmail.mc")).map(|e| e.source.line).collect();
    for l in 1..=SEED.lines().count() {
        assert!(mc_lines.contains(&l), "mc line {l} has no report entry");
    }
    for l in 1..=ACCESS.lines().count() {
        assert!(r.entries.iter().any(|e| e.source.file == d.join("access") && e.source.line == l), "access line {l}");
    }
    // Mapped entries point into the output.
    let size = r.entries.iter().find(|e| e.text.contains("confMAX_MESSAGE_SIZE")).unwrap();
    match &size.fate {
        Fate::Mapped { at: Some(at), .. } => assert_eq!(imp.config.lines().nth(at.line - 1).unwrap(), "max_message_size = 1000000"),
        f => panic!("{f:?}"),
    }
    assert!(r.render().contains("CRAM-MD5"));
    assert_eq!(imp.aliases.as_deref(), Some("postmaster: root\nalice: root\n"));
}

#[test]
fn relay_domains_mailertable_smart_host_and_defaults() {
    let mc = "define(`confCR_FILE', `-o DIR/relay-domains')dnl\nFEATURE(`mailertable', `hash -o DIR/mailertable')dnl\n\
              SMART_HOST(`relay:[smart.test]')dnl\ndefine(`confCLIENT_CERT', `/c.crt')dnl\ndefine(`confCLIENT_KEY', `/c.key')dnl\n\
              FEATURE(`delay_checks')dnl\nFEATURE(`promiscuous_relay')dnl\n";
    let (imp, _) = run(
        mc,
        &[
            ("relay-domains", "relay.test\nbranch.test\n127.0.0.6\n# c\n"),
            ("mailertable", "branch.test esmtp:[127.0.0.1]:2600\n.sub.test smtp:x\n"),
        ],
    );
    let c = crate::config::Config::parse(&imp.config, "t").unwrap();
    assert_eq!(c.relay.domains, ["relay.test", "branch.test"]);
    assert!(c.relay.networks.iter().any(|n| n.to_string() == "127.0.0.6/32"));
    assert_eq!(c.routes[0].domains, ["branch.test"]);
    assert_eq!(c.routes[0].next_hop.as_ref().unwrap().to_string(), "127.0.0.1:2600");
    assert_eq!(c.relay.smarthost.as_ref().unwrap().to_string(), "smart.test:25");
    assert_eq!(c.relay.smarthost_client_key.as_deref(), Some(Path::new("/c.key")));
    // sendmail defaults: MTA on 25, MSA on 587 (no AUTH required), sender domains checked (delay_checks: at RCPT).
    assert_eq!(c.listeners.iter().map(|l| l.address.port()).collect::<Vec<_>>(), [25, 587]);
    assert_eq!(c.listeners[1].role, crate::config::Role::Smtp);
    assert!(c.inbound.rdns.sender_domain_check);
    assert_eq!(c.inbound.rdns.reject_at, crate::config::RejectAt::Rcpt);
    let unmapped: Vec<_> = imp.report.unmapped_restrictions().map(|e| e.text.clone()).collect();
    assert_eq!(unmapped, ["FEATURE(`promiscuous_relay')", ".sub.test smtp:x"]);
}

#[test]
fn small_mappings() {
    use super::map_mc::{daemon, map_path, smart_host};
    assert_eq!(smart_host("relay:[mail.isp.example]").as_deref(), Some("mail.isp.example:25"));
    assert_eq!(smart_host("esmtp:[10.0.0.1]:2525").as_deref(), Some("10.0.0.1:2525"));
    assert_eq!(smart_host("smtp.isp.example").as_deref(), Some("smtp.isp.example:25"));
    assert_eq!(map_path("hash -o -T<TMPF> /etc/mail/access.db").as_deref(), Some("/etc/mail/access"));
    let l = daemon("Port=submission, Name=MSA, M=Ea", 0);
    assert_eq!((l.address.as_str(), l.role, l.tls_optional), ("0.0.0.0:587", "submission", true));
    let l = daemon("Port=smtps, Family=inet6, M=sA", 3);
    assert_eq!((l.address.as_str(), l.role, l.name.as_str(), l.no_auth), ("[::]:465", "submissions", "daemon4", true));
}

#[test]
fn aliases_with_pipes_are_refused_with_their_line() {
    let d = tmp("aliases-pipe");
    std::fs::write(d.join("aliases"), "postmaster: root\nlist: |/usr/bin/list\n").unwrap();
    let src = Sources { aliases: Some(d.join("aliases")), out_dir: d.join("out"), ..Sources::default() };
    let e = convert(Path::new("m.mc"), "", &src, &d.join("out/postern.toml")).unwrap_err();
    assert!(e.contains("aliases:2"), "{e}");
}

#[test]
fn parity_tables_are_in_the_probe_format() {
    #[derive(serde::Deserialize)]
    struct Table {
        probe: Vec<crate::import::parity::Probe>,
    }
    for text in [
        include_str!("../../../../../tests/interop/parity/sendmail-seed.toml"),
        include_str!("../../../../../tests/interop/parity/sendmail-relay.toml"),
        include_str!("../../../../../tests/interop/parity/sendmail-smarthost.toml"),
    ] {
        let t: Table = toml::from_str(text).unwrap();
        assert!(t.probe.len() >= 40);
        assert!(t.probe.iter().all(|p| !p.rcpts.is_empty()));
    }
}
