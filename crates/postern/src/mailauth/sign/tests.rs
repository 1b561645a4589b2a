use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::DkimKey;
use crate::mailauth::keys::{generate, write_new_key, NewKey};

const MSG: &[u8] = b"Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n\
From: Alice <alice@Example.ORG>\r\n\
To: bob@example.net\r\n\
Subject: hi\r\n\
 there\r\n\
X-Other: 1\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
\r\n\
From: not a header\r\n\
body\r\n";

#[test]
fn which_mail_is_signed() {
    // (role, authenticated, certificate relay) -> signed
    let table = [
        (Some(Role::Smtp), false, false, false),
        (Some(Role::Smtp), true, false, true),
        (Some(Role::Smtp), false, true, true),
        (Some(Role::Submission), false, false, true),
        (Some(Role::Submission), true, false, true),
        (Some(Role::Submissions), false, false, true),
        (None, false, false, true),
    ];
    for (role, authenticated, cert_relay, want) in table {
        let o = Origin { role, authenticated, cert_relay };
        assert_eq!(should_sign(&o), want, "{o:?}");
    }
}

#[test]
fn signing_domain_is_the_from_domain() {
    let table: [(&[u8], &str, Option<&str>); 7] = [
        (MSG, "x@other.test", Some("example.org")),
        (b"From: bob@b.test\r\n\r\nx", "", Some("b.test")),
        (b"from:  \"A, B\" <a@c.test> (comment)\r\n\r\n", "", Some("c.test")),
        (b"From: a@d.test, b@e.test\r\n\r\n", "", Some("d.test")),
        (b"Subject: no from\r\n\r\n", "env@f.test", Some("f.test")),
        (b"Subject: no from\r\n\r\n", "", None),
        (b"From: undisclosed\r\n\r\n", "env@g.test", None),
    ];
    for (text, env, want) in table {
        assert_eq!(signing_domain(text, env).as_deref(), want, "{}", String::from_utf8_lossy(text));
    }
}

#[test]
fn header_selection() {
    assert_eq!(signed_headers(MSG, None), ["From", "Subject", "Date", "To", "From"]);
    let over = ["subject".to_string(), "x-other".to_string(), "reply-to".to_string()];
    assert_eq!(signed_headers(MSG, Some(&over)), ["From", "subject", "x-other", "From"]);
}

fn key_set(dir: &Path, kinds: &[(NewKey, &str)], expire: u64) -> KeySet {
    let cfg: Vec<DkimKey> = kinds
        .iter()
        .map(|(kind, sel)| {
            let path = dir.join(format!("{sel}.pem"));
            write_new_key(&path, &generate(*kind).unwrap()).unwrap();
            DkimKey {
                domain: "example.org".into(),
                selector: sel.to_string(),
                key_file: path,
                algorithm: None,
                subdomains: false,
                headers: None,
                expire: Duration::from_secs(expire),
            }
        })
        .collect();
    KeySet::load(&cfg, |p| p.to_path_buf())
}

#[test]
fn dual_signing_makes_two_relaxed_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_set(dir.path(), &[(NewKey::Ed25519, "ed"), (NewKey::Ed25519, "ed2")], 3600);
    let s = sign(&keys, MSG, "").unwrap().unwrap();
    assert_eq!(s.labels, ["ed@example.org", "ed2@example.org"]);
    assert_eq!(s.header.matches("DKIM-Signature:").count(), 2);
    let flat = s.header.replace("\r\n", "").replace([' ', '\t'], "");
    for tag in ["a=ed25519-sha256", "c=relaxed/relaxed", "d=example.org", "s=ed;", "t="] {
        assert!(flat.contains(tag), "{tag} in {flat}");
    }
    let h = flat.split("h=").nth(1).unwrap().split(';').next().unwrap();
    let mut h: Vec<&str> = h.split(':').collect();
    h.sort();
    assert_eq!(h, ["Date", "From", "From", "Subject", "To"]);
    let t: u64 = flat.split("t=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let x: u64 = flat.split("x=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert_eq!(x - t, 3600);
    assert!(s.header.ends_with("\r\n"));
    // No entry for the domain: not signed, no error.
    assert_eq!(sign(&keys, b"From: a@other.test\r\n\r\nx", "").unwrap(), None);
}

#[test]
fn a_missing_key_is_an_error_not_an_unsigned_message() {
    let cfg = [DkimKey {
        domain: "example.org".into(),
        selector: "gone".into(),
        key_file: "/nonexistent/gone.pem".into(),
        algorithm: None,
        subdomains: false,
        headers: None,
        expire: Duration::ZERO,
    }];
    let keys = KeySet::load(&cfg, |p| p.to_path_buf());
    let e = sign(&keys, MSG, "").unwrap_err().to_string();
    assert!(e.contains("gone@example.org") && e.contains("gone.pem"), "{e}");
}
