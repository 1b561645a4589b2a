//! EXTERNAL identity mapping over real certificates made with rcgen and
//! parsed by the TLS layer's `cert_info` (issue 14 point 6: F9, F10).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::*;
use crate::tls::{cert_info, CertInfo};
use crate::users::UserRecord;

/// The CN attribute's OID, to put a second CN into a subject (rcgen's
/// `DnType::CommonName` keeps one).
const CN_OID: &[u64] = &[2, 5, 4, 3];

fn make(dn: &[(DnType, &str)], emails: &[&str]) -> CertInfo {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    for (t, v) in dn {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.subject_alt_names = emails.iter().map(|e| SanType::Rfc822Name((*e).try_into().unwrap())).collect();
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    cert_info(cert.der()).unwrap()
}

fn db() -> UserDb {
    let mut db = UserDb::default();
    db.users.insert("alice".into(), UserRecord::default());
    db.users.insert(
        "bob".into(),
        UserRecord { addresses: vec!["bob.smith@mx.test".into(), "bob@far.example".into()], ..UserRecord::default() },
    );
    db
}

fn map(how: ExternalIdentity, cert: CertInfo) -> Option<String> {
    let id = ClientCertIdentity { cert, verified: Ok("test CA".into()) };
    external_user(how, &id, &db(), |d| d == "mx.test")
}

#[test]
fn cn_mapping_takes_exactly_one_parsed_cn() {
    let custom_cn = DnType::CustomDnType(CN_OID.to_vec());
    // (subject attributes, expected CNs, expected user)
    type Case<'a> = (Vec<(DnType, &'a str)>, Vec<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![(DnType::CommonName, "Alice")], vec!["Alice"], Some("alice")),
        (vec![(DnType::OrganizationName, "Example"), (DnType::CommonName, "alice")], vec!["alice"], Some("alice")),
        // Two CNs: no mapping, whichever comes first.
        (vec![(DnType::CommonName, "alice"), (custom_cn.clone(), "bob")], vec!["alice", "bob"], None),
        (vec![(custom_cn, "alice"), (DnType::CommonName, "alice")], vec!["alice", "alice"], None),
        // "CN=" or a comma inside a value is part of that value, never a new RDN.
        (vec![(DnType::OrganizationName, "evil, CN=alice"), (DnType::CommonName, "mallory")], vec!["mallory"], None),
        (vec![(DnType::CommonName, "mallory, CN=alice")], vec!["mallory, CN=alice"], None),
        (vec![(DnType::CommonName, "CN=alice")], vec!["CN=alice"], None),
        (vec![(DnType::CommonName, "alice,bob")], vec!["alice,bob"], None),
        // No CN at all.
        (vec![(DnType::OrganizationName, "alice")], vec![], None),
    ];
    for (dn, cns, want) in cases {
        let info = make(&dn, &[]);
        assert_eq!(info.subject_cns, cns, "{}", info.subject);
        assert_eq!(map(ExternalIdentity::Cn, info.clone()).as_deref(), want, "{}", info.subject);
    }
}

#[test]
fn email_mapping_only_for_local_domains() {
    // (SAN e-mail addresses, expected user)
    for (emails, want) in [
        (vec!["alice@mx.test"], Some("alice")),
        (vec!["Alice@MX.TEST"], Some("alice")),
        (vec!["alice@evil.example"], None),
        (vec!["alice@mx.test.evil.example"], None),
        (vec!["alice@evil.example", "bob.smith@mx.test"], Some("bob")),
        // bob lists this address, but its domain is not local.
        (vec!["bob@far.example"], None),
        (vec!["bob.smith@mx.test"], Some("bob")),
        (vec!["carol@mx.test"], None),
        (vec![], None),
    ] {
        let info = make(&[(DnType::CommonName, "whoever")], &emails);
        assert_eq!(map(ExternalIdentity::Email, info).as_deref(), want, "{emails:?}");
    }
}

#[test]
fn unverified_certificates_never_map() {
    let info = make(&[(DnType::CommonName, "alice")], &["alice@mx.test"]);
    let id = ClientCertIdentity { cert: info, verified: Err("unknown issuer".into()) };
    for how in [ExternalIdentity::Cn, ExternalIdentity::Email, ExternalIdentity::Fingerprint] {
        assert_eq!(external_user(how, &id, &db(), |_| true), None);
    }
}
