//! `[inbound.rdns]` in the session, with a table for the DNS: the client's
//! name in `Received:` and the log, the `rdns` rule criterion, HELO and
//! sender refusals at RCPT (default) or at once, directory-harvest drop.

use std::net::IpAddr;
use std::sync::Arc;

use super::harness::Harness;
use crate::inbound::dns::{DnsTemp, TableDns};
use crate::inbound::rdns_service::RdnsService;
use crate::services::Services;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 192.0.2.7 ↔ mail.client.example (confirmed); 192.0.2.8 → forged.example
/// (whose A is elsewhere); 192.0.2.9 no PTR; ok.example has an MX,
/// a-only.example an A, temp.example fails, nothing else exists.
fn dns() -> TableDns {
    TableDns {
        ptr: vec![(ip("192.0.2.7"), Ok(vec!["mail.client.example.".into()])), (ip("192.0.2.8"), Ok(vec!["forged.example".into()]))],
        addrs: vec![
            ("mail.client.example".into(), Ok(vec![ip("192.0.2.7")])),
            ("forged.example".into(), Ok(vec![ip("203.0.113.1")])),
            ("a-only.example".into(), Ok(vec![ip("203.0.113.2")])),
        ],
        mx: vec![("ok.example".into(), Ok(vec!["mx.ok.example".into()])), ("temp.example".into(), Err(DnsTemp("SERVFAIL".into())))],
    }
}

async fn harness(extra: &str) -> Harness {
    let mut h = Harness::new(extra).await;
    h.services = Arc::new(Services { rdns: Some(Arc::new(RdnsService::with_dns(Arc::new(dns())))), ..Services::default() });
    h
}

#[tokio::test]
async fn a_confirmed_name_is_in_received_and_the_log() {
    let h = harness("").await;
    let mut c = h.connect_from("smtp", ip("192.0.2.7")).await;
    c.expect("220 ").await;
    c.send("EHLO helo.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("250 ").await;
    c.send("DATA").await;
    c.expect("354 ").await;
    c.send("Subject: t\r\n\r\nhi\r\n.").await;
    let r = c.expect("250 2.0.0 Ok: queued as ").await;
    let id = r.split("queued as ").nth(1).unwrap_or_default().to_string();
    assert!(h.body(&id).contains("\nReceived: from helo.client.example (mail.client.example [192.0.2.7])"), "{}", h.body(&id));
    assert!(h.log_has("client=mail.client.example[192.0.2.7]:"));
    assert!(h.log_has("rdns=ok"));
}

#[tokio::test]
async fn the_rdns_rule_criterion() {
    let h = harness(
        "[[rule]]\nname = \"need-rdns\"\nrdns = [\"fail\", \"forged\", \"temp\"]\naction = \"reject\"\nmessage = \"no reverse DNS\"\n",
    )
    .await;
    for (client, want) in [("192.0.2.7", "250 "), ("192.0.2.8", "550 5.7.1 <alice@mx.test>: no reverse DNS"), ("192.0.2.9", "550 5.7.1")] {
        let mut c = h.connect_from("smtp", ip(client)).await;
        c.expect("220 ").await;
        c.send("EHLO x.client.example").await;
        c.expect_last("250 ").await;
        c.send("MAIL FROM:<a@ok.example>").await;
        c.expect("250 ").await;
        c.send("RCPT TO:<alice@mx.test>").await;
        c.expect(want).await;
    }
    assert!(h.log_has("rdns=forged ptr=forged.example"));
    assert!(h.log_has("rdns=fail"));
}

#[tokio::test]
async fn helo_refusals_wait_for_rcpt_by_default() {
    let h = harness("[inbound.rdns]\nhelo_require_fqdn = true\nhelo_reject_own_name = true\n").await;
    let mut c = h.connect_from("smtp", ip("192.0.2.9")).await;
    c.expect("220 ").await;
    c.send("EHLO localhost").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("550 5.7.1 <localhost>: Helo command rejected: you are not me").await;
    c.send("EHLO mx.test").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("550 5.7.1 <mx.test>: Helo command rejected: you are not me").await;
    c.send("EHLO good.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("250 ").await;
    assert!(h.log_has("rule=helo"));
}

#[tokio::test]
async fn helo_refusal_at_once_and_exemptions() {
    let h = harness("[inbound.rdns]\nhelo_require_fqdn = true\nreject_at = \"command\"\nexempt_networks = [\"198.51.100.0/24\"]\n").await;
    let mut c = h.connect_from("smtp", ip("192.0.2.9")).await;
    c.expect("220 ").await;
    c.send("EHLO workstation").await;
    c.expect("550 5.7.1 <workstation>: Helo command rejected: need fully-qualified hostname").await;
    c.send("EHLO [192.0.2.9]").await;
    c.expect_last("250 ").await;
    c.send("HELO [192.0.2.10]").await;
    c.expect("550 5.7.1 <[192.0.2.10]>: Helo command rejected: address literal is not your address").await;
    let mut c = h.connect_from("smtp", ip("198.51.100.4")).await;
    c.expect("220 ").await;
    c.send("EHLO workstation").await;
    c.expect_last("250 ").await;
    // Submission is never checked (its clients authenticate).
    let mut c = h.connect_from("submission", ip("192.0.2.9")).await;
    c.expect("220 ").await;
    c.send("EHLO workstation").await;
    c.expect_last("250 ").await;
}

#[tokio::test]
async fn sender_domain_check() {
    let h = harness("[inbound.rdns]\nsender_domain_check = true\nreject_at = \"command\"\n").await;
    let mut c = h.connect_from("smtp", ip("192.0.2.7")).await;
    c.expect("220 ").await;
    c.send("EHLO mail.client.example").await;
    c.expect_last("250 ").await;
    for (from, want) in [
        ("a@nx.example", "550 5.1.8 <a@nx.example>: Sender address rejected: Domain not found"),
        ("a@temp.example", "450 4.1.8 <a@temp.example>: Sender address rejected: Domain not found (temporary DNS failure)"),
    ] {
        c.send(&format!("MAIL FROM:<{from}>")).await;
        c.expect(want).await;
    }
    for from in ["a@ok.example", "a@a-only.example", ""] {
        c.send(&format!("MAIL FROM:<{from}>")).await;
        c.expect("250 ").await;
        c.send("RSET").await;
        c.expect("250 ").await;
    }
    // At RCPT (the default) the refusal comes with each recipient.
    let h = harness("[inbound.rdns]\nsender_domain_check = true\n").await;
    let mut c = h.connect_from("smtp", ip("192.0.2.7")).await;
    c.expect("220 ").await;
    c.send("EHLO mail.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@nx.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("550 5.1.8 <a@nx.example>").await;
    assert!(h.log_has("rule=sender-domain"));
}

#[tokio::test]
async fn a_harvester_is_slowed_then_dropped_across_connections() {
    let h = harness(
        "[inbound.rdns]\nharvest_delay_after = 2\nharvest_drop_after = 5\nharvest_delay = \"10ms\"\nharvest_max_delay = \"20ms\"\n",
    )
    .await;
    let mut c = h.connect_from("smtp", ip("192.0.2.9")).await;
    c.expect("220 ").await;
    c.send("EHLO x.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    for i in 1..=4 {
        c.send(&format!("RCPT TO:<nobody{i}@mx.test>")).await;
        c.expect("550 5.1.1").await;
    }
    // Known recipients are not counted.
    c.send("RCPT TO:<alice@mx.test>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<nobody5@mx.test>").await;
    c.expect("421 4.7.0 Too many unknown recipients").await;
    // The count outlives the connection.
    let mut c = h.connect_from("smtp", ip("192.0.2.9")).await;
    c.expect("220 ").await;
    c.send("EHLO x.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<nobody6@mx.test>").await;
    c.expect("421 4.7.0").await;
    // Another client is unaffected.
    let mut c = h.connect_from("smtp", ip("192.0.2.7")).await;
    c.expect("220 ").await;
    c.send("EHLO x.client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@ok.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<nobody@mx.test>").await;
    c.expect("550 5.1.1").await;
    assert!(h.log_has("too many unknown recipients"));
}
