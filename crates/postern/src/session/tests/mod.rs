//! Session tests driven in-process over `tokio::io::duplex`: the security
//! behaviours that live in the session (STARTTLS injection and reset, AUTH
//! sequencing, the submission gates, relay after AUTH), with a rustls
//! client in the test for TLS. Byte-level dialogs over TCP are in
//! `crates/postern/tests/dialogs.rs`; the relay matrix is in
//! `crates/postern/tests/policy.rs`.

mod auth_cluster;
mod auth_dovecot;
mod auth_throttle;
mod certs;
mod directory;
mod dkim;
mod harness;
mod idle_size;
mod large;
mod limits;
mod loops;
mod rate;
mod rdns;
mod requiretls;
mod screen;

use harness::{b64, Client, Harness};

/// STARTTLS injection (CVE-2011-0411 class): commands pipelined after
/// STARTTLS in plaintext must be dropped, not executed inside TLS.
#[tokio::test]
async fn starttls_discards_pipelined_plaintext() {
    let h = Harness::new("").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 DSN").await;
    c.send("STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<alice@mx.test>").await;
    c.expect("220 2.0.0 Ready to start TLS").await;
    let mut c = c.starttls().await;
    // Had the injected MAIL run, this would be "503 5.5.1 Nested MAIL command".
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("503 5.5.1 Send HELO/EHLO first").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("STARTTLS"), "STARTTLS offered again under TLS: {ehlo}");
    c.send("STARTTLS").await;
    c.expect("503 5.5.1 TLS already active").await;
    assert!(h.log_has("discarded plaintext pipelined after STARTTLS"));
}

/// RFC 3207 §4.2: STARTTLS forgets HELO and AUTH.
#[tokio::test]
async fn starttls_resets_helo_and_auth() {
    let h = Harness::new("[auth]\nplaintext_networks = [\"127.0.0.0/8\"]\n").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
    c.expect("235 2.7.0 Authentication successful").await;
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<someone@elsewhere.example>\r\nRSET").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("250 2.0.0").await;
    c.send("STARTTLS").await;
    c.expect("220 ").await;
    let mut c = c.starttls().await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.contains("AUTH "), "AUTH must be offered again after STARTTLS: {ehlo}");
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<someone@elsewhere.example>").await;
    c.expect("250 2.1.0").await;
    c.expect("550 5.7.1 <someone@elsewhere.example>: Relay access denied").await;
}

/// No AUTH before TLS (538 for a configured mechanism, not offered in EHLO).
#[tokio::test]
async fn no_auth_before_tls() {
    let h = Harness::new("").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("AUTH"), "AUTH offered before TLS: {ehlo}");
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
    c.expect("538 5.7.11 Encryption required for requested authentication mechanism").await;
    c.send("AUTH NONSENSE").await;
    c.expect("504 5.5.4 Unrecognized authentication type").await;
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<someone@elsewhere.example>").await;
    c.expect("250 2.1.0").await;
    c.expect("550 5.7.1 <someone@elsewhere.example>: Relay access denied").await;
}

/// AUTH sequencing under TLS: before EHLO, wrong password, cancel, bad
/// base64, success, twice, inside a transaction; then relay is allowed.
#[tokio::test]
async fn auth_sequencing_under_tls() {
    let h = Harness::new("").await;
    let mut c = h.connect_tls("smtp").await;
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
    c.expect("503 5.5.1 Send EHLO first").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.contains("AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN"), "{ehlo}");
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0wrong"))).await;
    c.expect("535 5.7.8 Authentication credentials invalid").await;
    c.send("AUTH LOGIN").await;
    c.expect("334 VXNlcm5hbWU6").await;
    c.send("*").await;
    c.expect("501 5.7.0 Authentication cancelled").await;
    c.send("AUTH PLAIN").await;
    c.expect("334 ").await;
    c.send("not base64!").await;
    c.expect("501 5.5.2 Malformed authentication data").await;
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("250 2.1.0").await;
    c.send("AUTH PLAIN").await;
    c.expect("503 5.5.1 AUTH not allowed during a mail transaction").await;
    c.send("RSET").await;
    c.expect("250 ").await;
    // Outlook-style LOGIN.
    c.send("AUTH LOGIN").await;
    c.expect("334 VXNlcm5hbWU6").await;
    c.send(&b64("alice")).await;
    c.expect("334 UGFzc3dvcmQ6").await;
    c.send(&b64("secret pw")).await;
    c.expect("235 2.7.0 Authentication successful").await;
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
    c.expect("503 5.5.1 Already authenticated").await;
    c.send("EHLO again.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("AUTH"), "AUTH must survive EHLO and not be offered again: {ehlo}");
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<someone@elsewhere.example>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.").await;
    c.expect("250 2.0.0 Ok: queued as ").await;
    assert!(h.log_has("result=ok"));
    assert!(h.log_has("result=fail"));
}

/// Submission: TLS first (530), then AUTH first (530), then mail.
#[tokio::test]
async fn submission_requires_tls_then_auth() {
    let h = Harness::new("").await;
    let mut c = h.connect("submission").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("530 5.7.0 Must issue a STARTTLS command first").await;
    c.send("STARTTLS").await;
    c.expect("220 ").await;
    let mut c = c.starttls().await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("530 5.7.0 Authentication required").await;
    c.send(&format!("AUTH PLAIN {}", b64("\0alice\0secret pw"))).await;
    c.expect("235 ").await;
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("250 2.1.0").await;
    assert!(h.log_has(r#"command=MAIL reply="530 5.7.0 Must issue a STARTTLS command first" from=alice@mx.test"#));
}

/// A BDAT refused by the table still has its chunk read: the octets are
/// never taken as commands.
#[tokio::test]
async fn refused_bdat_chunk_is_consumed() {
    let h = Harness::new("").await;
    let mut c: Client<_> = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP").await;
    c.expect("503 5.5.1 Need MAIL and RCPT first").await;
    c.expect("250 2.0.0 Ok").await;
}
