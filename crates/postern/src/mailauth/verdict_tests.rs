//! Tables for `verdict.rs`: the header, forged-header removal, the policy
//! decision.

use super::*;
use crate::config::MailAuth;

fn results(dmarc: Outcome, policy: Option<Policy>, pct: u8) -> Results {
    Results {
        spf: Outcome::Pass,
        spf_identity: SpfIdentity::MailFrom("a@b.example".into()),
        dkim: vec![DkimSignature { result: Outcome::Pass, domain: "b.example".into(), selector: "s1".into(), b: "abcd1234".into() }],
        dmarc,
        from_domain: "b.example".into(),
        policy,
        pct,
        arc: Outcome::None,
    }
}

#[test]
fn header_format() {
    let r = results(Outcome::Pass, Some(Policy::Reject), 100);
    let h = r.header("mx.example");
    assert_eq!(
        h,
        "Authentication-Results: mx.example;\r\n\tspf=pass smtp.mailfrom=a@b.example;\r\n\tdkim=pass header.d=b.example header.s=s1 header.b=abcd1234;\r\n\tdmarc=pass header.from=b.example policy.dmarc=reject;\r\n\tarc=none\r\n"
    );
    assert_eq!(r.log_field(), "spf:pass,dkim:pass,dmarc:pass,arc:none");
}

#[test]
fn header_null_sender_no_signature_no_from() {
    let r = Results {
        spf: Outcome::SoftFail,
        spf_identity: SpfIdentity::Helo("client.example".into()),
        dkim: vec![],
        dmarc: Outcome::None,
        from_domain: String::new(),
        policy: None,
        pct: 100,
        arc: Outcome::None,
    };
    assert_eq!(
        r.header("mx"),
        "Authentication-Results: mx;\r\n\tspf=softfail smtp.helo=client.example;\r\n\tdkim=none;\r\n\tdmarc=none;\r\n\tarc=none\r\n"
    );
    assert_eq!(r.log_field(), "spf:softfail,dkim:none,dmarc:none,arc:none");
}

#[test]
fn header_values_cannot_inject() {
    let mut r = results(Outcome::Pass, None, 100);
    r.spf_identity = SpfIdentity::MailFrom("\"a b\"@x\r\nX-Evil: 1".into());
    let h = r.header("mx");
    assert!(!h.contains("\r\nX-Evil"), "{h}");
    assert!(h.contains("smtp.mailfrom=\"\\\"a b\\\"@xX-Evil: 1\""), "{h}");
}

#[test]
fn dkim_summary_prefers_pass() {
    let mut r = results(Outcome::Pass, None, 100);
    r.dkim.insert(0, DkimSignature { result: Outcome::Fail, domain: "x".into(), selector: "y".into(), b: String::new() });
    assert_eq!(r.dkim_summary(), Outcome::Pass);
    r.dkim.pop();
    assert_eq!(r.dkim_summary(), Outcome::Fail);
    r.dkim.clear();
    assert_eq!(r.dkim_summary(), Outcome::None);
}

#[test]
fn forged_results_removed_others_kept() {
    let text = b"Received: from x\r\nAuthentication-Results: MX.example; spf=pass\r\n\tsmtp.mailfrom=a@b\r\nAuthentication-Results: other.example; dkim=pass\r\nAuthentication-Results: (comment) mx.example;\r\n dkim=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example; in the body\r\n";
    let out = strip_forged(text, "mx.example").expect("removed");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Received: from x\r\nAuthentication-Results: other.example; dkim=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example; in the body\r\n"
    );
    assert_eq!(strip_forged(b"Subject: x\r\n\r\nbody\r\n", "mx.example"), None);
    // A longer id that starts with ours is not ours.
    assert_eq!(strip_forged(b"Authentication-Results: mx.example.org; x\r\n\r\n", "mx.example"), None);
}

#[test]
fn outcome_keywords_round_trip() {
    for k in ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"] {
        assert_eq!(Outcome::parse(k).map(Outcome::as_str), Some(k));
    }
    assert_eq!(Outcome::parse("bogus"), None);
}

/// The decision table: DMARC result × published policy × pct sample ×
/// switches.
#[test]
fn policy_table() {
    use DmarcQuarantine as Q;
    #[derive(Debug, PartialEq)]
    enum Want {
        Accept,
        Header,
        Hold,
        Reject,
        Temp,
    }
    type Case = (Outcome, Option<Policy>, u8, u8, bool, Q, Want);
    let cases: &[Case] = &[
        // dmarc, policy, pct, sample, dmarc_reject, quarantine, want
        (Outcome::Pass, Some(Policy::Reject), 100, 0, true, Q::Hold, Want::Accept),
        (Outcome::None, None, 100, 0, true, Q::Hold, Want::Accept),
        (Outcome::PermError, None, 100, 0, true, Q::Hold, Want::Accept),
        (Outcome::Fail, Some(Policy::None), 100, 0, true, Q::Hold, Want::Accept),
        (Outcome::Fail, Some(Policy::Quarantine), 100, 0, true, Q::Hold, Want::Hold),
        (Outcome::Fail, Some(Policy::Quarantine), 100, 0, true, Q::Header, Want::Header),
        (Outcome::Fail, Some(Policy::Quarantine), 100, 0, true, Q::None, Want::Accept),
        (Outcome::Fail, Some(Policy::Reject), 100, 0, true, Q::Hold, Want::Reject),
        (Outcome::Fail, Some(Policy::Reject), 100, 99, true, Q::Header, Want::Reject),
        (Outcome::Fail, Some(Policy::Reject), 100, 0, false, Q::Hold, Want::Hold),
        (Outcome::Fail, Some(Policy::Reject), 100, 0, false, Q::Header, Want::Header),
        // pct: outside the sample, one step milder (RFC 7489 §6.6.4).
        (Outcome::Fail, Some(Policy::Reject), 50, 49, true, Q::Hold, Want::Reject),
        (Outcome::Fail, Some(Policy::Reject), 50, 50, true, Q::Hold, Want::Hold),
        (Outcome::Fail, Some(Policy::Quarantine), 0, 0, true, Q::Hold, Want::Accept),
        // temperror: 451 only when a reject could follow.
        (Outcome::TempError, None, 100, 0, true, Q::Hold, Want::Temp),
        (Outcome::TempError, Some(Policy::Reject), 100, 0, true, Q::Hold, Want::Temp),
        (Outcome::TempError, Some(Policy::Reject), 100, 0, false, Q::Hold, Want::Accept),
        (Outcome::TempError, None, 100, 0, false, Q::Hold, Want::Accept),
        (Outcome::TempError, Some(Policy::None), 100, 0, true, Q::Hold, Want::Accept),
        (Outcome::TempError, Some(Policy::Quarantine), 100, 0, true, Q::Hold, Want::Accept),
    ];
    for (i, (dmarc, policy, pct, sample, reject, q, want)) in cases.iter().enumerate() {
        let cfg = MailAuth { dmarc_reject: *reject, dmarc_quarantine: *q, ..MailAuth::default() };
        let got = match decide(&cfg, &results(*dmarc, *policy, *pct), *sample) {
            Action::Accept => Want::Accept,
            Action::Header(_) => Want::Header,
            Action::Hold(_) => Want::Hold,
            Action::Reject(r) => {
                assert_eq!(r.to_wire(), "550 5.7.1 Message rejected by the DMARC policy of the From domain\r\n");
                Want::Reject
            }
            Action::TempFail(r) => {
                assert!(r.to_wire().starts_with("451 4.7.1 "));
                Want::Temp
            }
        };
        assert_eq!(&got, want, "case {i}: {:?}", cases[i]);
    }
}

#[test]
fn organizational_domains() {
    use super::super::verify::organizational_domain as org;
    assert_eq!(org("mail.b.example.com"), "example.com");
    assert_eq!(org("a.b.example.co.uk"), "example.co.uk");
    assert_eq!(org("example.com"), "example.com");
}
