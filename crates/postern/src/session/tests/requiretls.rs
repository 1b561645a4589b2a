//! REQUIRETLS at the session (RFC 8689 §2): offered only under TLS,
//! refused in the clear, stored in the envelope when accepted; UTF-8
//! recipient domains with SMTPUTF8 (RFC 6531).

use super::harness::Harness;

/// Not offered before STARTTLS; MAIL ... REQUIRETLS in the clear is refused.
#[tokio::test]
async fn not_offered_and_refused_without_tls() {
    let h = Harness::new("").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("REQUIRETLS"), "REQUIRETLS offered before TLS: {ehlo}");
    c.send("MAIL FROM:<a@client.example> REQUIRETLS").await;
    c.expect("530 5.7.10 REQUIRETLS requires a TLS session").await;
    // The transaction did not start; a plain MAIL still works.
    c.send("MAIL FROM:<a@client.example>").await;
    c.expect("250 2.1.0").await;
    assert!(h.log_has("REQUIRETLS requires a TLS session"));
}

/// Offered after STARTTLS; accepted there and kept in the envelope;
/// given twice it is a syntax error.
#[tokio::test]
async fn offered_accepted_and_stored_under_tls() {
    let h = Harness::new("").await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.contains("250-REQUIRETLS") || ehlo.contains("250 REQUIRETLS"), "{ehlo}");
    c.send("MAIL FROM:<a@client.example> REQUIRETLS REQUIRETLS").await;
    c.expect("501 5.5.4 Bad value for parameter REQUIRETLS").await;
    c.send("MAIL FROM:<a@client.example> REQUIRETLS\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send("Subject: secret\r\n\r\nhello\r\n.").await;
    let reply = c.expect("250 ").await;
    let id = reply.split("queued as ").nth(1).expect("queue id").trim().to_string();
    assert!(h.envelope(&id).requiretls, "REQUIRETLS not stored");
    // Without the option the flag stays off.
    c.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send("Subject: plain\r\n\r\nhello\r\n.").await;
    let reply = c.expect("250 ").await;
    let id = reply.split("queued as ").nth(1).expect("queue id").trim().to_string();
    assert!(!h.envelope(&id).requiretls);
}

/// A UTF-8 recipient domain is accepted with SMTPUTF8 (and refused
/// without it); the policy sees the domain as given.
#[tokio::test]
async fn utf8_recipient_domain_with_smtputf8() {
    let h = Harness::new("[[route]]\ndomains = [\"bücher.example\"]\ntransport = \"smtp\"\nnext_hop = \"127.0.0.1:2525\"\n").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@bücher.example>\r\nRSET").await;
    c.expect("250 2.1.0").await;
    c.expect("553 5.6.7").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@client.example> SMTPUTF8\r\nRCPT TO:<alice@bücher.example>").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
}
