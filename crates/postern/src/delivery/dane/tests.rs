//! Tables of the per-host DANE decision, the TLS-report result types and
//! the resolver trust rule.

use std::net::SocketAddr;

use super::dns::{DnsFailure, Secured};
use super::*;
use crate::config::Endpoint;
use crate::tls::dane::DaneFailure;

fn rec(usage: u8) -> Tlsa {
    Tlsa { usage, selector: 1, matching: 1, data: vec![7; 32] }
}

fn failure(servfail: bool) -> DnsFailure {
    DnsFailure { question: "_25._tcp.mx.example. TLSA".into(), reason: "SERVFAIL".into(), servfail }
}

#[test]
fn tlsa_answers() {
    let secure = |records: Vec<Tlsa>| Ok(Secured { records, secure: true });
    let insecure = |records: Vec<Tlsa>| Ok(Secured { records, secure: false });
    type Answer = Result<Secured<Tlsa>, DnsFailure>;
    let cases: Vec<(&str, Answer, HostTls)> = vec![
        ("no records (secure denial)", secure(vec![]), HostTls::Opportunistic),
        ("no records (insecure)", insecure(vec![]), HostTls::Opportunistic),
        ("insecure records are ignored", insecure(vec![rec(3)]), HostTls::Opportunistic),
        ("DANE-EE", secure(vec![rec(3)]), HostTls::Dane(vec![rec(3)])),
        ("DANE-TA", secure(vec![rec(2)]), HostTls::Dane(vec![rec(2)])),
        ("unusable ones are dropped", secure(vec![rec(0), rec(3), rec(1)]), HostTls::Dane(vec![rec(3)])),
        ("only PKIX: encrypt", secure(vec![rec(0), rec(1)]), HostTls::Encrypt(vec![rec(0), rec(1)])),
        ("bogus (SERVFAIL)", Err(failure(true)), HostTls::Defer { failure: FailureType::DnssecInvalid, reason: failure(true).to_string() }),
        ("timeout", Err(failure(false)), HostTls::Defer { failure: FailureType::ValidationFailure, reason: failure(false).to_string() }),
    ];
    for (what, answer, want) in cases {
        assert_eq!(from_tlsa(answer), want, "{what}");
    }
}

#[test]
fn pools_follow_the_records() {
    assert_eq!(HostTls::Opportunistic.pool_key(), "may");
    let a = HostTls::Dane(vec![rec(3)]).pool_key();
    let b = HostTls::Dane(vec![rec(2)]).pool_key();
    assert!(a.starts_with("dane:") && a != b);
    assert!(!HostTls::Opportunistic.reported() && HostTls::Encrypt(vec![]).reported());
}

#[test]
fn report_result_types() {
    let ep = Endpoint::Tcp("127.0.0.1".into(), 25);
    let hs = || ConnError::Handshake { ep: ep.clone(), reason: "x".into() };
    let cases: Vec<(ConnError, Option<DaneFailure>, Option<FailureType>)> = vec![
        (ConnError::NoStartTls(ep.clone()), None, Some(FailureType::StarttlsNotSupported)),
        (ConnError::StartTlsRefused { ep: ep.clone(), reply: "454".into() }, None, Some(FailureType::StarttlsNotSupported)),
        (hs(), Some(DaneFailure::NoMatch), Some(FailureType::ValidationFailure)),
        (hs(), Some(DaneFailure::NameMismatch("mx".into())), Some(FailureType::CertificateHostMismatch)),
        (hs(), Some(DaneFailure::Expired("x".into())), Some(FailureType::CertificateExpired)),
        (hs(), None, Some(FailureType::ValidationFailure)),
        (ConnError::Connect { ep: ep.clone(), reason: "refused".into() }, None, None),
        (ConnError::Greeting { ep: ep.clone(), reply: "554".into() }, None, None),
    ];
    for (e, dane, want) in cases {
        assert_eq!(failure_of(&e, dane.clone()), want, "{e} / {dane:?}");
    }
}

#[test]
fn only_loopback_resolvers_are_trusted() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(untrusted_resolvers(&[a("127.0.0.1:53"), a("[::1]:53")], false), None);
    assert_eq!(untrusted_resolvers(&[a("127.0.0.53:53")], false), None);
    let why = untrusted_resolvers(&[a("127.0.0.1:53"), a("192.0.2.1:53")], false).unwrap();
    assert!(why.contains("192.0.2.1:53") && why.contains("dnssec_trust_remote_ad"), "{why}");
    assert_eq!(untrusted_resolvers(&[a("192.0.2.1:53")], true), None);
    assert!(untrusted_resolvers(&[], true).is_some());
}
