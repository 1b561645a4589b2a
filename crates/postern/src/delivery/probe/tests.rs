//! The verdicts of `postern check smarthost`, table-driven over what a
//! probe could have seen.

use std::time::Duration;

use postern_wire::{Enhanced, Reply};

use super::*;
use crate::delivery::DeliveryReply;

fn reply(code: u16, lines: &[&str]) -> Reply {
    Reply { code, enhanced: None, lines: lines.iter().map(|l| l.to_string().into()).collect() }
}

fn ep() -> Endpoint {
    Endpoint::Tcp("smtp.example".into(), 587)
}

/// A plaintext session that went through to the greeting, EHLO (with `ext`) and no TLS.
fn plain(ext: &[&str]) -> Facts {
    let mut lines = vec!["smtp.example"];
    lines.extend_from_slice(ext);
    Facts {
        target: "smarthost".into(),
        endpoint: ep(),
        policy: OutboundTls::May,
        implicit_tls: false,
        server_name: "smtp.example".into(),
        client_cert: None,
        user: None,
        dns: Ok(vec!["192.0.2.1".into()]),
        events: vec![
            Event::Connected { peer: "192.0.2.1:587".into(), elapsed: Duration::from_millis(12) },
            Event::Greeting(reply(220, &["smtp.example ESMTP"])),
            Event::Hello { reply: reply(250, &lines), tls: false },
        ],
        tls: None,
        open: Ok(()),
        finish: Some(Finish::Rset(Ok("250 2.0.0 OK".into()))),
    }
}

/// A STARTTLS session: plaintext EHLO, STARTTLS, handshake, EHLO inside TLS.
fn tls(requested: bool, sent: bool, verify: Result<(), String>) -> Facts {
    let mut f = plain(&["STARTTLS", "PIPELINING"]);
    f.events.push(Event::StartTls(reply(220, &["go ahead"])));
    f.events.push(Event::Tls("TLSv1.3 TLS13_AES_256_GCM_SHA384 verified".into()));
    f.events.push(Event::Hello { reply: reply(250, &["smtp.example", "PIPELINING", "AUTH PLAIN LOGIN"]), tls: true });
    f.tls = Some(TlsFacts {
        chain: vec!["[0] subject: CN=smtp.example".into()],
        verify: Some(verify),
        requested,
        acceptable_cas: if requested { vec!["CN=postern CA".into()] } else { vec![] },
        sent,
    });
    f
}

fn verdicts(r: &Report) -> Vec<(&'static str, Verdict)> {
    r.steps.iter().map(|s| (s.step, s.verdict)).collect()
}

fn at<'a>(r: &'a Report, name: &str) -> &'a Step {
    r.steps.iter().find(|s| s.step == name).expect("step")
}

#[test]
fn verdict_per_situation() {
    use Verdict::{Fail, Skip, Warn};
    const OK: Verdict = Verdict::Ok;
    let unverified = || Err("unknown issuer".to_string());
    let mut verify_policy = tls(false, false, unverified());
    verify_policy.policy = OutboundTls::Verify;
    verify_policy.events.truncate(4);
    verify_policy.open = Err(ConnError::Handshake { ep: ep(), reason: "invalid peer certificate: UnknownIssuer".into() });
    verify_policy.finish = None;
    let mut no_cert = tls(true, false, Ok(()));
    no_cert.events.truncate(5);
    no_cert.events.push(Event::Hello { reply: reply(421, &["4.7.1 No client certificate presented"]), tls: true });
    no_cert.open = Err(ConnError::HelloRefused { ep: ep(), verb: "EHLO", reply: "421 4.7.1 No client certificate presented".into() });
    no_cert.finish = None;
    let mut alert = tls(true, true, Ok(()));
    alert.client_cert = Some("CN=satellite".into());
    alert.events.truncate(5);
    alert.open = Err(ConnError::Read(std::io::Error::other("received fatal alert: UnknownCA")));
    alert.finish = None;
    let mut refused = plain(&[]);
    refused.events.truncate(0);
    refused.open = Err(ConnError::Connect { ep: ep(), reason: "Connection refused".into() });
    refused.finish = None;
    let mut no_dns = plain(&[]);
    no_dns.dns = Err("failed to lookup address information".into());
    no_dns.events.clear();
    no_dns.finish = None;
    let mut auth_ok = tls(false, false, Ok(()));
    auth_ok.user = Some("relay".into());
    auth_ok.events.push(Event::Auth { mech: "PLAIN", reply: reply(235, &["ok"]) });
    let mut auth_bad = tls(false, false, Ok(()));
    auth_bad.user = Some("relay".into());
    auth_bad.open = Err(ConnError::AuthFailed { mech: "PLAIN", ep: ep(), reply: "535 5.7.8 no".into(), permanent: true });
    auth_bad.finish = None;
    let mut sent_refused = tls(false, false, Ok(()));
    sent_refused.finish =
        Some(Finish::Sent { to: "x@y".into(), outcome: Ok(Outcome::Failed(DeliveryReply::new(554, Enhanced(5, 7, 1), "relay denied"))) });
    #[rustfmt::skip]
    let table: Vec<(&str, Facts, [Verdict; 8], i32)> = vec![
        //                                 dns  conn  ehlo  tls   cert  ccert auth  txn
        ("plain, no STARTTLS",    plain(&[]),                [OK, OK,  OK,  Warn, Skip, Skip, OK,  OK],   0),
        ("TLS verified",          tls(false, false, Ok(())), [OK, OK,  OK,  OK,   OK,   OK,   OK,  OK],   0),
        ("TLS, may, unverified",  tls(false, false, unverified()), [OK, OK, OK, OK, Warn, OK, OK, OK],    0),
        ("verify, unknown CA",    verify_policy,             [OK, OK,  OK,  OK,   Fail, Skip, Skip, Skip], 69),
        ("cert required, none",   no_cert,                   [OK, OK,  OK,  OK,   OK,   Fail, Skip, Skip], 69),
        ("cert sent, refused",    alert,                     [OK, OK,  OK,  OK,   OK,   Fail, Skip, Skip], 69),
        ("connection refused",    refused,                   [OK, Fail, Skip, Skip, Skip, Skip, Skip, Skip], 75),
        ("no DNS",                no_dns,                    [Fail, Skip, Skip, Skip, Skip, Skip, Skip, Skip], 75),
        ("trial login ok",        auth_ok,                   [OK, OK,  OK,  OK,   OK,   OK,   OK,  OK],   0),
        ("trial login refused",   auth_bad,                  [OK, OK,  OK,  OK,   OK,   OK,   Fail, Skip], 69),
        ("test message refused",  sent_refused,              [OK, OK,  OK,  OK,   OK,   OK,   OK,  Fail], 69),
    ];
    for (what, facts, want, code) in table {
        let r = Report::new(&facts);
        let want: Vec<(&str, Verdict)> = STEPS.iter().copied().zip(want).collect();
        assert_eq!(verdicts(&r), want, "{what}\n{}", r.text());
        assert_eq!(r.exit_code, code, "{what}");
        assert_eq!(r.verdict == Verdict::Ok, code == 0, "{what}");
        for s in &r.steps {
            if matches!(s.verdict, Verdict::Warn | Verdict::Fail) {
                assert!(s.fix.is_some(), "{what}: {} has no fix", s.step);
            }
        }
    }
}

#[test]
fn fail_lines_say_what_to_do() {
    let mut f = tls(false, false, Err("unknown issuer".into()));
    f.policy = OutboundTls::Verify;
    let r = Report::new(&f);
    let c = at(&r, "certificate");
    assert_eq!(c.text, "does not verify for \"smtp.example\": unknown issuer");
    assert!(c.fix.as_deref().is_some_and(|x| x.contains("relay.smarthost_ca_files")), "{c:?}");
    assert_eq!(c.details, vec!["[0] subject: CN=smtp.example".to_string()]);

    let f = tls(false, false, Err("certificate not valid for smtp.example".into()));
    let r = Report::new(&f);
    assert!(at(&r, "certificate").fix.as_deref().is_some_and(|x| x.contains("smarthost_server_name")));

    let mut f = tls(true, false, Ok(()));
    f.open = Err(ConnError::HelloRefused { ep: ep(), verb: "EHLO", reply: "421 4.7.1 No client certificate presented".into() });
    f.events.truncate(5);
    let r = Report::new(&f);
    let cc = at(&r, "client_certificate");
    assert!(cc.text.contains("acceptable CAs: CN=postern CA") && cc.text.contains("none sent") && cc.text.contains("421"), "{cc:?}");
    assert!(cc.fix.as_deref().is_some_and(|x| x.contains("postern ca issue client")));
}

#[test]
fn text_and_json_forms() {
    let mut f = tls(true, true, Ok(()));
    f.client_cert = Some("CN=satellite".into());
    f.user = Some("relay".into());
    f.events.push(Event::Auth { mech: "PLAIN", reply: reply(235, &["2.7.0 ok"]) });
    let r = Report::new(&f);
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "OK   dns: smtp.example:587 resolves to 192.0.2.1");
    assert_eq!(lines[1], "OK   connect: connected to 192.0.2.1:587 in 12 ms; greeting: 220 smtp.example ESMTP");
    assert_eq!(lines[2], "OK   ehlo: 250 smtp.example; extensions: STARTTLS, PIPELINING");
    assert_eq!(lines[3], "OK   tls: STARTTLS: TLSv1.3 TLS13_AES_256_GCM_SHA384");
    assert_eq!(lines[4], "OK   certificate: verifies for \"smtp.example\" against the configured CAs");
    assert_eq!(lines[5], "       [0] subject: CN=smtp.example");
    assert_eq!(lines[6], "OK   client_certificate: requested (acceptable CAs: CN=postern CA); sent CN=satellite; accepted");
    assert_eq!(lines[7], "OK   auth: offered: PLAIN LOGIN; trial login as relay with PLAIN: 235 2.7.0 ok");
    assert_eq!(lines[8], "OK   transaction: no test message (--send-test ADDR sends one); RSET: 250 2.0.0 OK; QUIT");
    assert_eq!(lines[9], "OK   verdict: mail for the smarthost can go to smtp.example:587");
    let j = serde_json::to_value(&r).expect("json");
    assert_eq!(j["verdict"], "OK");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["steps"].as_array().map(Vec::len), Some(8));
    assert_eq!(j["steps"][4]["details"][0], "[0] subject: CN=smtp.example");
    assert!(j["steps"][0].get("fix").is_none() && j["steps"][0].get("temporary").is_none());
}
