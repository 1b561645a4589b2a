use std::path::Path;
use std::time::Duration;

use super::*;

fn entry(domain: &str, selector: &str, file: &Path, subdomains: bool) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: selector.into(),
        key_file: file.into(),
        algorithm: None,
        subdomains,
        headers: None,
        expire: Duration::ZERO,
    }
}

#[test]
fn ed25519_keygen_reads_back_and_makes_a_txt_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dkim/k.pem");
    write_new_key(&path, &generate(NewKey::Ed25519).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let key = read_key(&path, None).unwrap();
    assert_eq!(key.algorithm(), DkimAlgorithm::Ed25519Sha256);
    let txt = key.txt_record().unwrap();
    let p = txt.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(p).unwrap().len(), 32);
    // A second keygen to the same file is refused.
    assert!(write_new_key(&path, "x").is_err());
    // The configured algorithm must match the key.
    let e = read_key(&path, Some(DkimAlgorithm::RsaSha256)).unwrap_err().to_string();
    assert!(e.contains("k.pem") && e.contains("config says"), "{e}");
}

#[test]
fn rsa_keygen_reads_back_as_2048_bit_spki() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.pem");
    write_new_key(&path, &generate(NewKey::Rsa(2048)).unwrap()).unwrap();
    let key = read_key(&path, Some(DkimAlgorithm::RsaSha256)).unwrap();
    let txt = key.txt_record().unwrap();
    let p = txt.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
    let der = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
    // SubjectPublicKeyInfo of a 2048-bit key: 294 octets.
    assert_eq!(der.len(), 294);
    let zone = zone_line("example.org", "s1", &txt);
    assert!(zone.starts_with("s1._domainkey.example.org. IN TXT \""), "{zone}");
    let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
    assert_eq!(strings.len(), 2);
    assert!(strings.iter().all(|s| s.len() <= 255));
    assert_eq!(strings.concat(), txt);
}

#[test]
fn bad_keys_are_kept_as_failures_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let cfg = [entry("a.example", "s", Path::new("missing.pem"), false), entry("b.example", "s", &garbage, false)];
    let set = KeySet::load(&cfg, |p| dir.path().join(p));
    let errs: Vec<String> = set.entries().iter().map(|k| k.key.as_ref().unwrap_err().clone()).collect();
    assert!(errs[0].contains("missing.pem") && errs[0].contains("No such file"), "{}", errs[0]);
    assert!(errs[1].contains("garbage.pem") && errs[1].contains("no PEM private key"), "{}", errs[1]);
}

#[test]
fn domains_and_subdomains() {
    let f = Path::new("/nonexistent");
    let cfg = [
        entry("Example.ORG", "a", f, false),
        entry("example.org", "b", f, false),
        entry("example.net", "c", f, true),
        entry("sub.example.net", "d", f, false),
    ];
    let set = KeySet::load(&cfg, |p| p.to_path_buf());
    let labels = |d: &str| set.for_domain(d).iter().map(|k| k.label()).collect::<Vec<_>>().join(",");
    let table = [
        ("example.org", "a@example.org,b@example.org"),
        ("mail.example.org", ""),
        ("example.net", "c@example.net"),
        ("x.example.net", "c@example.net"),
        ("sub.example.net", "d@sub.example.net"),
        ("a.sub.example.net", "c@example.net"),
        ("badexample.net", ""),
        ("other.test", ""),
    ];
    for (domain, want) in table {
        assert_eq!(labels(domain), want, "{domain}");
    }
}
