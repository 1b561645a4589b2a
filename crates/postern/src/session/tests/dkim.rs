//! DKIM signing in the session (issue 18 point 1): which mail is signed
//! (listener role x AUTH x From domain), that the signature is in the
//! queued text and on the `queued` line, and that a key that cannot be
//! used gives 451 4.7.0, never an unsigned 250.

use super::harness::{b64, Client, Harness};
use crate::mailauth::keys::{generate, write_new_key, NewKey};

/// A harness whose `[[dkim]]` signs mx.test with an Ed25519 key (or
/// names a key file that does not exist).
async fn harness(dir: &std::path::Path, key_present: bool) -> Harness {
    let key = dir.join("mx.test.s1.pem");
    if key_present {
        write_new_key(&key, &generate(NewKey::Ed25519).unwrap()).unwrap();
    }
    let extra = format!(
        "[auth]\nplaintext_networks = [\"127.0.0.0/8\"]\n[[dkim]]\ndomain = \"mx.test\"\nselector = \"s1\"\nkey_file = \"{}\"\n",
        key.display()
    );
    Harness::new(&extra).await
}

async fn send(h: &Harness, listener: &str, auth: bool, from: &str) -> (String, Option<String>) {
    let mut c = h.connect(listener).await;
    c.expect("220 ").await;
    if listener == "submission" {
        // Submission requires TLS before MAIL.
        c.send("EHLO client.example").await;
        c.expect_last("250 ").await;
        c.send("STARTTLS").await;
        c.expect("220 ").await;
        transaction(h, c.starttls().await, auth, from).await
    } else {
        transaction(h, c, auth, from).await
    }
}

async fn transaction<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    h: &Harness,
    mut c: Client<T>,
    auth: bool,
    from: &str,
) -> (String, Option<String>) {
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    if auth {
        c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
        c.expect("235 ").await;
    }
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send(&format!("From: A <{from}>\r\nTo: bob@mx.test\r\nSubject: t\r\n\r\nhello\r\n.")).await;
    let reply = c.expect("").await;
    let id = reply.split("queued as ").nth(1).map(|s| s.trim().to_string());
    (reply, id.map(|id| h.body(&id)))
}

#[tokio::test]
async fn which_mail_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path(), true).await;
    // (listener, AUTH, From:, signed)
    let table = [
        ("smtp", false, "alice@mx.test", false),
        ("smtp", true, "alice@mx.test", true),
        ("submission", true, "alice@mx.test", true),
        ("smtp", true, "alice@other.example", false),
    ];
    for (listener, auth, from, signed) in table {
        let (reply, body) = send(&h, listener, auth, from).await;
        assert!(reply.starts_with("250 2.0.0"), "{listener} {auth} {from}: {reply}");
        let body = body.unwrap();
        assert_eq!(body.starts_with("DKIM-Signature: "), signed, "{listener} {auth} {from}:\n{body}");
        if signed {
            assert!(body.contains("d=mx.test") && body.contains("s=s1"), "{body}");
            assert!(body.contains("\r\nReceived: from "), "the signature goes in front of our Received:\n{body}");
        }
    }
    assert!(h.log_has("dkim=s1@mx.test"));
}

#[tokio::test]
async fn an_unusable_key_refuses_with_451_instead_of_sending_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path(), false).await;
    let (reply, body) = send(&h, "smtp", true, "alice@mx.test").await;
    assert!(reply.starts_with("451 4.7.0"), "{reply}");
    assert!(body.is_none());
    // Mail that is not ours to sign is unaffected.
    let (reply, _) = send(&h, "smtp", false, "alice@mx.test").await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}
