//! Rate limits and greylisting at their reply points (connect, MAIL,
//! RCPT), in-process from clients outside loopback, on tokio's paused
//! clock where a window has to end.

use std::net::IpAddr;

use tokio::time::Duration;

use super::harness::Harness;

const RATE: &str = r#"
[inbound.rate]
ipv4_prefix = 24
[[inbound.rate.limit]]
key = "client"
what = "connections"
max = 2
per = "1m"
[[inbound.rate.limit]]
key = "client"
what = "messages"
max = 2
per = "3s"
[[inbound.rate.limit]]
key = "sender"
what = "recipients"
max = 3
per = "1h"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test(start_paused = true)]
async fn connection_rate_per_network_at_connect() {
    let h = Harness::new(RATE).await;
    for _ in 0..2 {
        let mut c = h.connect_from("smtp", ip("192.0.2.10")).await;
        c.expect("220 ").await;
    }
    // Same /24: the third connection is over the limit.
    let mut c = h.connect_from("smtp", ip("192.0.2.11")).await;
    c.expect("421 4.7.0 Too many connections from [192.0.2.11] (limit 2 per 1m)").await;
    assert!(h.log_has("limit=\"client connections 2/1m\""));
    // Another network is counted apart; loopback is exempt.
    h.connect_from("smtp", ip("198.51.100.1")).await.expect("220 ").await;
    for _ in 0..3 {
        h.connect("smtp").await.expect("220 ").await;
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    h.connect_from("smtp", ip("192.0.2.11")).await.expect("220 ").await;
}

#[tokio::test(start_paused = true)]
async fn message_rate_at_mail_and_served_after_the_window() {
    let h = Harness::new(RATE).await;
    let mut c = h.connect_from("smtp", ip("192.0.2.10")).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    for _ in 0..2 {
        c.send("MAIL FROM:<a@b.example>\r\nRSET").await;
        c.expect("250 2.1.0").await;
        c.expect("250 2.0.0").await;
    }
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("450 4.7.1 Error: too many messages from [192.0.2.10] (limit 2 per 3s)").await;
    assert!(h.log_has("limit=\"client messages 2/3s\""));
    tokio::time::advance(Duration::from_secs(3)).await;
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("250 2.1.0").await;
}

#[tokio::test]
async fn recipient_rate_per_sender_at_rcpt() {
    let h = Harness::new(RATE).await;
    let mut c = h.connect_from("smtp", ip("192.0.2.10")).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("250 2.1.0").await;
    // Counted whether accepted or not, as Postfix counts them.
    c.send("RCPT TO:<alice@mx.test>\r\nRCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<bob@mx.test>").await;
    c.expect("250 2.1.5").await;
    c.expect("5").await;
    c.expect("250 2.1.5").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("452 4.5.3 Error: too many recipients from <a@b.example> (limit 3 per 1h)").await;
    // The null sender is not counted per sender.
    c.send("RSET\r\nMAIL FROM:<>").await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.1.0").await;
    for _ in 0..4 {
        c.send("RCPT TO:<alice@mx.test>").await;
        c.expect("250 2.1.5").await;
    }
}

const GREY: &str = r#"
[inbound.greylist]
enabled = true
delay = "1m"
"#;

#[tokio::test]
async fn greylisting_defers_the_first_attempt_of_a_triplet() {
    let h = Harness::new(GREY).await;
    let mut c = h.connect_from("smtp", ip("192.0.2.10")).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>").await;
    c.expect("250 2.1.0").await;
    let r = c.expect("450 4.7.1 <alice@mx.test>: Recipient address rejected: Greylisted, try again in ").await;
    assert!(r.ends_with("s"), "{r}");
    assert!(h.log_has("greylist=new"));
    // Too early from the same /24: still deferred; unknown recipients are refused as before.
    let mut c2 = h.connect_from("smtp", ip("192.0.2.99")).await;
    c2.expect("220 ").await;
    c2.send("EHLO client.example\r\nMAIL FROM:<A@B.example>\r\nRCPT TO:<alice@mx.test>\r\nRCPT TO:<x@elsewhere.example>").await;
    c2.expect_last("250 ").await;
    c2.expect("250 2.1.0").await;
    c2.expect("450 4.7.1").await;
    c2.expect("550 5.7.1").await;
    assert!(h.log_has("greylist=early"));
    // The null sender is greylisted too.
    c2.send("RSET\r\nMAIL FROM:<>\r\nRCPT TO:<alice@mx.test>").await;
    c2.expect("250 2.0.0").await;
    c2.expect("250 2.1.0").await;
    c2.expect("450 4.7.1").await;
}

#[tokio::test]
async fn greylisting_exempts_loopback_and_authenticated_clients() {
    let h = Harness::new(GREY).await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>").await;
    c.expect_last("250 ").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    let mut c = h.connect_tls_from("submission", ip("192.0.2.10")).await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send(&format!("AUTH PLAIN {}", super::b64("\0alice\0secret pw"))).await;
    c.expect("235 ").await;
    c.send("MAIL FROM:<alice@mx.test>\r\nRCPT TO:<bob@mx.test>").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
}
