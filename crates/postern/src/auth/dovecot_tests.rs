//! The Dovecot auth codec and mechanism policy, with tables.

use super::*;

use crate::config::Role;

#[test]
fn escaping_round_trips() {
    let cases =
        [("plain", "plain"), ("a\tb", "a\u{1}tb"), ("cr\rlf\n", "cr\u{1}rlf\u{1}n"), ("one\u{1}", "one\u{1}1"), ("nul\0", "nul\u{1}0")];
    for (raw, escaped) in cases {
        assert_eq!(escape(raw), escaped, "{raw:?}");
        assert_eq!(unescape(escaped), raw, "{escaped:?}");
    }
    // A dangling escape character is dropped, an unknown one kept.
    assert_eq!(unescape("x\u{1}"), "x");
    assert_eq!(unescape("x\u{1}q"), "xq");
}

#[test]
fn server_lines() {
    let mech = |name: &str, plaintext, anonymous, private| ServerLine::Mech(MechInfo { name: name.into(), plaintext, anonymous, private });
    let cases: Vec<(&str, ServerLine)> = vec![
        ("VERSION\t1\t2", ServerLine::Version(1, 2)),
        ("MECH\tPLAIN\tplaintext", mech("PLAIN", true, false, false)),
        ("MECH\tlogin\tplaintext", mech("LOGIN", true, false, false)),
        ("MECH\tANONYMOUS\tanonymous", mech("ANONYMOUS", false, true, false)),
        ("MECH\tSCRAM-SHA-256\tmutual-auth\tdictionary", mech("SCRAM-SHA-256", false, false, false)),
        ("MECH\tEXTERNAL\tprivate", mech("EXTERNAL", false, false, true)),
        ("SPID\t1234", ServerLine::Other),
        ("COOKIE\tabcdef", ServerLine::Other),
        ("DONE", ServerLine::Done),
        ("CONT\t7\t", ServerLine::Cont(7, String::new())),
        ("CONT\t7\tcj1hYmM=", ServerLine::Cont(7, "cj1hYmM=".into())),
        ("OK\t3\tuser=alice", ServerLine::Ok(3, Params(vec![("user".into(), Some("alice".into()))]))),
        (
            "FAIL\t3\tuser=bob\ttemp\treason=a\u{1}tb",
            ServerLine::Fail(
                3,
                Params(vec![("user".into(), Some("bob".into())), ("temp".into(), None), ("reason".into(), Some("a\tb".into()))]),
            ),
        ),
        ("OK\t3\tuser=alice\r", ServerLine::Ok(3, Params(vec![("user".into(), Some("alice".into()))]))),
    ];
    for (line, want) in cases {
        assert_eq!(parse_line(line).expect(line), want, "{line:?}");
    }
    for bad in ["VERSION", "VERSION\tx\t1", "MECH", "MECH\t", "CONT", "CONT\tx\tabc", "OK", "FAIL\t-1"] {
        assert!(parse_line(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn params() {
    let p = |l: &str| match parse_line(l).expect(l) {
        ServerLine::Ok(_, p) | ServerLine::Fail(_, p) => p,
        other => panic!("{other:?}"),
    };
    let cases = [
        // line, user, temporary, nologin, reason
        ("FAIL\t1", None, false, false, None),
        ("FAIL\t1\tuser=bob", Some("bob"), false, false, None),
        ("FAIL\t1\ttemp", None, true, false, None),
        ("FAIL\t1\tcode=temp_fail\treason=db down", None, true, false, Some("db down")),
        ("FAIL\t1\tuser=\treason=x", None, false, false, Some("x")),
        ("OK\t1\tuser=carol\tnologin\treason=disabled", Some("carol"), false, true, Some("disabled")),
        // A value named temp is not the flag.
        ("FAIL\t1\ttemp=no", None, false, false, None),
    ];
    for (line, user, temp, nologin, reason) in cases {
        let p = p(line);
        assert_eq!((p.user(), p.temporary(), p.nologin(), p.reason()), (user, temp, nologin, reason), "{line:?}");
    }
    assert_eq!(p("OK\t1\tuser=a\tresp=dj1hYmM=").resp(), Some("dj1hYmM="));
    assert_eq!(p("OK\t1\tuser=a\tresp=").resp(), None);
}

#[test]
fn auth_request_lines() {
    let base = AuthStart {
        mechanism: "PLAIN".into(),
        secured: false,
        local: "127.0.0.1:25".parse().unwrap(),
        remote: "192.0.2.7:40000".parse().unwrap(),
        initial: None,
        cert_username: None,
    };
    assert_eq!(base.encode(1), "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.7\tlport=25\trport=40000\n");
    let tls = AuthStart {
        secured: true,
        remote: "[::ffff:192.0.2.7]:4".parse().unwrap(),
        initial: Some("AGFsaWNlAHB3".into()),
        cert_username: Some("al\tice".into()),
        ..base.clone()
    };
    assert_eq!(
        tls.encode(9),
        "AUTH\t9\tPLAIN\tservice=smtp\tnologin\tsecured\tlip=127.0.0.1\trip=192.0.2.7\tlport=25\trport=4\tresp=AGFsaWNlAHB3\tvalid-client-cert\tcert_username=al\u{1}tice\n"
    );
    let empty = AuthStart { initial: Some(String::new()), ..base };
    assert!(empty.encode(2).ends_with("\trport=40000\tresp=\n"));
    assert_eq!(cont_line(4, "YWJj"), "CONT\t4\tYWJj\n");
    assert_eq!(handshake(77), "VERSION\t1\t2\nCPID\t77\n");
}

#[test]
fn usable_mechanisms_table() {
    let m = |name: &str, plaintext: bool| MechInfo { name: name.into(), plaintext, anonymous: false, private: false };
    let mut offered =
        vec![m("PLAIN", true), m("LOGIN", true), m("SCRAM-SHA-256", false), m("SCRAM-SHA-256-PLUS", false), m("CRAM-MD5", false)];
    offered.push(MechInfo { name: "ANONYMOUS".into(), plaintext: false, anonymous: true, private: false });
    offered.push(MechInfo { name: "EXTERNAL".into(), plaintext: false, anonymous: false, private: false });
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let far: IpAddr = "192.0.2.1".parse().unwrap();
    let l = Listener::new("127.0.0.1:25".parse().unwrap(), Role::Smtp);
    let plain_lo = Auth { plaintext_networks: vec!["127.0.0.0/8".parse().unwrap()], ..Auth::default() };
    let with_all = Auth {
        mechanisms: ["CRAM-MD5", "EXTERNAL", "SCRAM-SHA-256", "PLAIN", "LOGIN", "DIGEST-MD5"].iter().map(|n| n.parse().unwrap()).collect(),
        ..Auth::default()
    };
    use Mechanism::*;
    let cases: Vec<(&Auth, bool, IpAddr, bool, Vec<Mechanism>)> = vec![
        // Before TLS, far away: nothing.
        (&plain_lo, false, far, false, vec![]),
        // Before TLS from a plaintext network: no plaintext mechanisms.
        (&plain_lo, false, lo, false, vec![ScramSha256]),
        // Under TLS: the configured order, never -PLUS.
        (&plain_lo, true, far, false, vec![ScramSha256, Plain, Login]),
        // CRAM-MD5 only when configured; EXTERNAL only with a verified
        // certificate; DIGEST-MD5 not offered by Dovecot.
        (&with_all, true, far, false, vec![CramMd5, ScramSha256, Plain, Login]),
        (&with_all, true, far, true, vec![CramMd5, External, ScramSha256, Plain, Login]),
    ];
    for (i, (auth, tls, ip, cert, want)) in cases.into_iter().enumerate() {
        assert_eq!(usable(&offered, auth, &l, tls, ip, cert), want, "case {i}");
    }
    // Dovecot offers nothing postern knows: nothing.
    assert!(usable(&[m("OTP", false), m("GSSAPI", false)], &plain_lo, &l, true, far, false).is_empty());
    // A private mechanism is never offered.
    let private = [MechInfo { name: "PLAIN".into(), plaintext: true, anonymous: false, private: true }];
    assert!(usable(&private, &plain_lo, &l, true, far, false).is_empty());
}
