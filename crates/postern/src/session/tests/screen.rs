//! The connection screen in a session: pregreet (paused clock), the
//! pipelining test, and DNSBL verdicts at connect and RCPT with a table
//! instead of DNS.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Harness;
use crate::inbound::dnsbl::{Answer, DnsblResolver, DnsblService, LookupFuture};
use crate::services::Services;

/// Answers from a table: name → A records; anything else NXDOMAIN.
struct Fake(Vec<(&'static str, Ipv4Addr)>);

impl DnsblResolver for Fake {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        let addrs: Vec<Ipv4Addr> = self.0.iter().filter(|(n, _)| *n == name).map(|(_, a)| *a).collect();
        Box::pin(async move {
            if addrs.is_empty() {
                (Answer::NotListed, Duration::from_secs(60))
            } else {
                (Answer::Listed(addrs), Duration::from_secs(60))
            }
        })
    }
}

async fn with_fake_dns(extra: &str) -> Harness {
    let mut h = Harness::new(extra).await;
    let fake = Fake(vec![
        ("2.100.51.198.bl.example.", Ipv4Addr::new(127, 0, 0, 2)),
        ("3.100.51.198.bl.example.", Ipv4Addr::new(127, 0, 0, 2)),
        ("3.100.51.198.wl.example.", Ipv4Addr::new(127, 0, 9, 0)),
    ]);
    h.services = Arc::new(Services { dnsbl: Arc::new(DnsblService::with_resolver(Arc::new(fake))), ..Default::default() });
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

const PREGREET: &str = "[inbound.pregreet]\ngreet_delay = \"6s\"\nexempt_networks = []\n";

#[tokio::test(start_paused = true)]
async fn a_client_that_talks_first_is_refused() {
    let h = Harness::new(PREGREET).await;
    let mut c = h.connect_from("smtp", ip("198.51.100.7")).await;
    c.send("EHLO bot.example").await;
    c.expect("554 5.5.1 Protocol error: client [198.51.100.7] talked before the greeting").await;
    // Then only QUIT (the pipelined EHLO got 503 too).
    c.expect("503 ").await;
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("503 ").await;
    c.send("QUIT").await;
    c.expect("221 ").await;
    assert!(h.log_has("result=pregreet"));
    // Not remembered as passed: the next connection waits again.
    let mut c = h.connect_from("smtp", ip("198.51.100.7")).await;
    let t0 = Instant::now();
    c.expect("220 ").await;
    assert!(t0.elapsed() >= Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_patient_client_passes_and_is_not_delayed_again() {
    let h = Harness::new(PREGREET).await;
    let t0 = Instant::now();
    let mut c = h.connect_from("smtp", ip("198.51.100.8")).await;
    c.expect("220 mx.test ESMTP").await;
    assert!(t0.elapsed() >= Duration::from_secs(6), "{:?}", t0.elapsed());
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("QUIT").await;
    c.expect("221 ").await;
    assert!(h.log_has("result=pass"));
    let t1 = Instant::now();
    let mut c = h.connect_from("smtp", ip("198.51.100.8")).await;
    c.expect("220 mx.test ESMTP").await;
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
    // Loopback is exempt by default: no wait.
    let h = Harness::new("[inbound.pregreet]\ngreet_delay = \"6s\"\n").await;
    let t2 = Instant::now();
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    assert!(t2.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn drop_action_closes_with_421() {
    let h = Harness::new(&format!("{PREGREET}action = \"drop\"\n")).await;
    let mut c = h.connect_from("smtp", ip("198.51.100.9")).await;
    c.send("EHLO bot.example").await;
    c.expect("421 4.7.0 Protocol error").await;
}

#[tokio::test]
async fn pipelining_without_pipelining_is_refused() {
    let h = Harness::new("[inbound.pregreet]\npipelining = \"reject\"\nexempt_networks = []\n").await;
    let mut c = h.connect_from("smtp", ip("198.51.100.10")).await;
    c.expect("220 ").await;
    c.send("EHLO bot.example\r\nMAIL FROM:<a@b.example>").await;
    c.expect("554 5.5.1 Protocol error: client [198.51.100.10] sent commands before the reply").await;
    c.expect("503 ").await;
    assert!(h.log_has("result=pipelining"));
    // After EHLO, pipelining is allowed (RFC 2920).
    let mut c = h.connect_from("smtp", ip("198.51.100.11")).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>").await;
    c.expect("250 ").await;
    c.expect("250 ").await;
    // After HELO it is not.
    let mut c = h.connect_from("smtp", ip("198.51.100.12")).await;
    c.expect("220 ").await;
    c.send("HELO client.example").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
    c.expect("250 ").await;
    c.expect("554 5.5.1").await;
}

const DNSBL: &str = "[inbound.dnsbl]\nlists = [\"bl.example*2\", \"wl.example*-5\"]\nexempt_networks = []\n";

async fn rcpt_reply(h: &Harness, from: &str) -> String {
    let mut c = h.connect_from("smtp", ip(from)).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<a@b.example>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<alice@mx.test>").await;
    let mut r = String::new();
    while r.is_empty() || r.as_bytes().get(3) == Some(&b'-') {
        r = c.expect("").await;
    }
    r
}

#[tokio::test]
async fn dnsbl_at_rcpt_names_the_list_and_the_allow_list_wins() {
    let h = with_fake_dns(DNSBL).await;
    assert_eq!(rcpt_reply(&h, "198.51.100.2").await, "554 5.7.1 Service unavailable; client [198.51.100.2] blocked using bl.example");
    assert!(h.log_has("rule=dnsbl"));
    // Listed by bl.example (2) and wl.example (-5): score -3, accepted.
    assert!(rcpt_reply(&h, "198.51.100.3").await.starts_with("250 "));
    // Unlisted.
    assert!(rcpt_reply(&h, "198.51.100.4").await.starts_with("250 "));
    // tempfail: 450.
    let h = with_fake_dns(&format!("{DNSBL}action = \"tempfail\"\n")).await;
    assert!(rcpt_reply(&h, "198.51.100.2").await.starts_with("450 4.7.1 Service unavailable"));
    // Loopback is exempt by default.
    let h = with_fake_dns("[inbound.dnsbl]\nlists = [\"bl.example\"]\n").await;
    assert!(rcpt_reply(&h, "127.0.0.1").await.starts_with("250 "));
}

#[tokio::test]
async fn dnsbl_at_connect_refuses_the_greeting() {
    let h = with_fake_dns(&format!("{DNSBL}stage = \"connect\"\n")).await;
    let mut c = h.connect_from("smtp", ip("198.51.100.2")).await;
    c.expect("554 5.7.1 Service unavailable; client [198.51.100.2] blocked using bl.example").await;
    c.send("EHLO client.example").await;
    c.expect("503 ").await;
    c.send("QUIT").await;
    c.expect("221 ").await;
    assert!(h.log_has("verdict=listed"));
    let mut c = h.connect_from("smtp", ip("198.51.100.3")).await;
    c.expect("220 ").await;
}

#[tokio::test(start_paused = true)]
async fn an_allowlisted_client_is_not_delayed() {
    let cfg = format!("{DNSBL}allowlist_threshold = -1\n{PREGREET}");
    let h = with_fake_dns(&cfg).await;
    let t0 = Instant::now();
    let mut c = h.connect_from("smtp", ip("198.51.100.3")).await;
    c.expect("220 ").await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    let mut c = h.connect_from("smtp", ip("198.51.100.4")).await;
    c.expect("220 ").await;
    assert!(t0.elapsed() >= Duration::from_secs(6));
}
