//! Client-certificate modes (issue 14 point 6, F5): where a verified
//! certificate is required for a client (`client_certificates =
//! "required"` or `require_client_certificates_from`), MAIL over plaintext
//! is refused `530 5.7.0`, and a handshake without a certificate fails.

use super::harness::Harness;

const PARTNERS: &str = r#"
[[listener]]
name = "partners"
address = "127.0.0.1:0"
role = "smtp"
require_client_certificates_from = ["192.0.2.0/24"]
[[listener]]
name = "strict"
address = "127.0.0.1:0"
role = "smtp"
client_certificates = "required"
"#;

#[tokio::test]
async fn required_certificate_refuses_plaintext_mail() {
    let h = Harness::with_ca(PARTNERS).await;
    for (listener, peer) in [("partners", [192, 0, 2, 9]), ("strict", [203, 0, 113, 1])] {
        let mut c = h.connect_from(listener, peer.into()).await;
        c.expect("220 ").await;
        c.send("EHLO client.example").await;
        c.expect_last("250 ").await;
        c.send("MAIL FROM:<a@far.example>").await;
        c.expect("530 5.7.0 Must issue a STARTTLS command first").await;
        c.send("QUIT").await;
        c.expect("221 ").await;
    }
    // Clients outside the required networks are not affected.
    let mut c = h.connect_from("partners", [203, 0, 113, 1].into()).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@far.example>").await;
    c.expect("250 2.1.0").await;
}

#[tokio::test]
async fn required_certificate_refuses_a_handshake_without_one() {
    let h = Harness::with_ca(PARTNERS).await;
    let mut c = h.connect_from("partners", [192, 0, 2, 9].into()).await;
    c.expect("220 ").await;
    c.send("STARTTLS").await;
    c.expect("220 2.0.0").await;
    let refused = match c.try_starttls().await {
        Err(_) => true,
        Ok(mut c) => c.send_finds_closed("EHLO client.example").await,
    };
    assert!(refused, "a required-mode handshake without a certificate went through");
}
