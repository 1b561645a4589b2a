//! Tables of TLSA matching: selector × matching type, DANE-EE vs
//! DANE-TA, unusable usages, wrong data, the TA chain's name and dates.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256, Sha512};

use super::{authenticate, DaneFailure, Tlsa};

struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    other: CertificateDer<'static>,
}

/// A CA, a leaf for mx.example signed by it, and an unrelated self-signed leaf.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = CertificateParams::new(vec!["mx.example".to_string()]).unwrap().signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
    let other = CertificateParams::new(vec!["mx.example".to_string()]).unwrap().self_signed(&KeyPair::generate().unwrap()).unwrap();
    Pki { ca: ca.der().clone(), leaf: leaf.der().clone(), other: other.der().clone() }
}

fn spki(der: &[u8]) -> Vec<u8> {
    x509_parser::parse_x509_certificate(der).unwrap().1.tbs_certificate.subject_pki.raw.to_vec()
}

/// The record of `usage selector matching` for `cert`.
fn record(usage: u8, selector: u8, matching: u8, cert: &[u8]) -> Tlsa {
    let selected = if selector == 0 { cert.to_vec() } else { spki(cert) };
    let data = match matching {
        0 => selected,
        1 => Sha256::digest(&selected).to_vec(),
        _ => Sha512::digest(&selected).to_vec(),
    };
    Tlsa { usage, selector, matching, data }
}

fn names() -> Vec<String> {
    vec!["mx.example".to_string()]
}

#[test]
fn every_selector_and_matching_type() {
    let p = pki();
    for selector in [0, 1] {
        for matching in [0, 1, 2] {
            let r = record(3, selector, matching, &p.leaf);
            assert!(r.usable(), "{}", r.params());
            assert!(r.matches(&p.leaf), "{} should match", r.params());
            assert!(!r.matches(&p.other), "{} matched another certificate", r.params());
            let mut wrong = r.clone();
            let last = wrong.data.len() - 1;
            wrong.data[last] ^= 1;
            assert!(!wrong.matches(&p.leaf), "{} with wrong data matched", r.params());
        }
    }
}

#[test]
fn usable_records() {
    let ok = |u, s, m, len| Tlsa { usage: u, selector: s, matching: m, data: vec![0; len] }.usable();
    for (u, s, m, len, want) in [
        (3, 1, 1, 32, true),
        (2, 0, 1, 32, true),
        (3, 0, 2, 64, true),
        (3, 1, 0, 91, true),
        (0, 0, 1, 32, false), // PKIX-TA: not for SMTP (RFC 7672 §3.1.3)
        (1, 1, 1, 32, false), // PKIX-EE
        (4, 1, 1, 32, false), // unknown usage
        (3, 2, 1, 32, false), // unknown selector
        (3, 1, 3, 32, false), // unknown matching type
        (3, 1, 1, 31, false), // SHA-256 of the wrong length
        (3, 1, 2, 32, false), // SHA-512 of the wrong length
        (3, 1, 0, 0, false),  // empty
    ] {
        assert_eq!(ok(u, s, m, len), want, "{u} {s} {m} len {len}");
    }
}

#[test]
fn dane_ee_ignores_names_and_dates() {
    let p = pki();
    let chain = vec![p.other.clone()];
    let r = [record(3, 1, 1, &p.other)];
    // Any name, a time long after expiry: DANE-EE does not look (RFC 7672 §3.1.1).
    let far = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_000_000_000));
    assert_eq!(authenticate(&r, &chain, &["elsewhere.example".into()], far).map(Tlsa::params), Ok("3 1 1".into()));
}

#[test]
fn chains_against_records() {
    let p = pki();
    let chain = vec![p.leaf.clone(), p.ca.clone()];
    let now = UnixTime::now();
    let ee = record(3, 1, 1, &p.leaf);
    let ta = record(2, 0, 1, &p.ca);
    let pkix_ta = record(0, 0, 1, &p.ca);
    let pkix_ee = record(1, 1, 1, &p.leaf);
    let wrong_ee = record(3, 1, 1, &p.other);
    let ta_for_leaf = record(2, 0, 1, &p.leaf);
    type Want = Result<&'static str, DaneFailure>;
    type Case = (&'static str, Vec<Tlsa>, Vec<CertificateDer<'static>>, Vec<String>, Want);
    let cases: Vec<Case> = vec![
        ("EE match", vec![ee.clone()], chain.clone(), names(), Ok("3 1 1")),
        ("TA match", vec![ta.clone()], chain.clone(), names(), Ok("2 0 1")),
        ("TA + wrong EE", vec![wrong_ee.clone(), ta.clone()], chain.clone(), names(), Ok("2 0 1")),
        (
            "TA, wrong name",
            vec![ta.clone()],
            chain.clone(),
            vec!["other.example".into()],
            Err(DaneFailure::NameMismatch("other.example".into())),
        ),
        ("TA not sent", vec![ta], vec![p.leaf.clone()], names(), Err(DaneFailure::NoMatch)),
        ("TA record of the leaf itself", vec![ta_for_leaf], chain.clone(), names(), Err(DaneFailure::NoMatch)),
        ("PKIX only", vec![pkix_ta, pkix_ee], chain.clone(), names(), Err(DaneFailure::NoMatch)),
        ("wrong EE", vec![wrong_ee], chain.clone(), names(), Err(DaneFailure::NoMatch)),
        ("no certificate", vec![ee], vec![], names(), Err(DaneFailure::NoCertificate)),
    ];
    for (what, records, chain, names, want) in cases {
        let got = authenticate(&records, &chain, &names, now).map(|r| r.params());
        assert_eq!(got, want.map(str::to_string), "{what}");
    }
}

#[test]
fn ta_chain_dates_are_checked() {
    let p = pki();
    let chain = vec![p.leaf.clone(), p.ca.clone()];
    let far = UnixTime::since_unix_epoch(std::time::Duration::from_secs(70_000_000_000));
    let records = [record(2, 1, 1, &p.ca)];
    let got = authenticate(&records, &chain, &names(), far);
    assert!(matches!(got, Err(DaneFailure::Expired(_))), "{got:?}");
}

#[test]
fn presentation_form() {
    let r = Tlsa { usage: 3, selector: 1, matching: 1, data: vec![0xab, 0x01] };
    assert_eq!(r.to_string(), "3 1 1 ab01");
}
