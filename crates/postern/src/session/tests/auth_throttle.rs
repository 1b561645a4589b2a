//! The AUTH throttle as clients see it (issue 14 point 5): delays first, a
//! ban only at a much higher count, no lock-out of a local webmail's users,
//! no lock-out of a user at her usual address. On tokio's paused clock, so
//! delays and bans are measured without waiting.

use std::net::IpAddr;

use tokio::time::{Duration, Instant};

use super::harness::{b64, Harness};

const LONG_TIMEOUT: &str = "[limits]\ncommand_timeout = \"2h\"\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}")))
}

/// A ban at `max_failures_per_ip` refuses even the right password (454);
/// `ban_exempt_networks = []` takes loopback out of the exemption.
#[tokio::test]
async fn auth_throttle_bans_after_failures() {
    let h = Harness::new("[auth]\nmax_failures_per_ip = 2\ndelay_after = 100\nban_exempt_networks = []\n").await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    for _ in 0..2 {
        c.send(&plain("alice", "wrong")).await;
        c.expect("535 ").await;
    }
    c.send(&plain("alice", "secret pw")).await;
    c.expect("454 4.7.0 Too many authentication failures, try again later").await;
}

/// The default throttle on a paused clock: failure replies slow down
/// (0, 0, 1, 2, 4, 8, 15, 15 s), the right password still works after 8
/// failures; only 50 failures (here from five parallel connections of one
/// /64) ban the network, even for the right password, and the ban ends
/// after `ban_time`.
#[tokio::test(start_paused = true)]
async fn auth_throttle_on_a_paused_clock() {
    let h = Harness::new(LONG_TIMEOUT).await;
    let mut c = h.connect_tls_from("smtp", ip("192.0.2.10")).await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    for want_delay in [0, 0, 1, 2, 4, 8, 15, 15] {
        let t = Instant::now();
        c.send(&plain("alice", "wrong")).await;
        c.expect("535 5.7.8").await;
        assert_eq!(t.elapsed().as_secs(), want_delay, "delay of failure with expected {want_delay}s");
    }
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;

    // Cheap failures (malformed AUTH, no password check) from one /64.
    let mut clients = Vec::new();
    for i in 1..=5 {
        let mut c = h.connect_tls_from("smtp", ip(&format!("2001:db8:1:2::{i}"))).await;
        c.send("EHLO client.example").await;
        c.expect_last("250 ").await;
        clients.push(c);
    }
    for _ in 0..10 {
        for c in &mut clients {
            c.send("AUTH PLAIN !").await;
        }
        for c in &mut clients {
            c.expect("501 5.5.2").await;
        }
    }
    let mut c = h.connect_tls_from("smtp", ip("2001:db8:1:2::99")).await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send(&plain("alice", "secret pw")).await;
    c.expect("454 4.7.0 Too many authentication failures").await;
    tokio::time::sleep(Duration::from_secs(14 * 60)).await;
    c.send(&plain("alice", "secret pw")).await;
    c.expect("454 4.7.0").await;
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;
    assert!(h.log_has("result=ban"));
}

/// A webmail on 127.0.0.1 (loopback: exempt from bans by default): one
/// user failing 20 times slows that address's failures but locks nobody
/// out; another user logs in at once.
#[tokio::test(start_paused = true)]
async fn webmail_user_failing_20_times_does_not_lock_out_others() {
    let h = Harness::new(LONG_TIMEOUT).await;
    for _ in 0..20 {
        let mut c = h.connect_tls("submission").await;
        c.send("EHLO webmail.example").await;
        c.expect_last("250 ").await;
        c.send(&plain("bob", "mistyped")).await;
        c.expect("535 5.7.8").await;
        c.send("QUIT").await;
    }
    let mut c = h.connect_tls("submission").await;
    c.send("EHLO webmail.example").await;
    c.expect_last("250 ").await;
    let t = Instant::now();
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;
    assert_eq!(t.elapsed(), Duration::ZERO, "another user is not slowed down");
    assert!(!h.log_has("result=ban"));
}

/// An attacker's wrong passwords for alice from one address do not stop
/// alice at her usual address (she logged in from there before); from a
/// new address her right password is slowed down, never refused.
#[tokio::test(start_paused = true)]
async fn attacker_failures_do_not_lock_alice_out_of_her_usual_address() {
    let h = Harness::new(LONG_TIMEOUT).await;
    let home = ip("198.51.100.7");
    let mut c = h.connect_tls_from("submission", home).await;
    c.send("EHLO alice.example").await;
    c.expect_last("250 ").await;
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;

    let mut a = h.connect_tls_from("submission", ip("203.0.113.66")).await;
    a.send("EHLO attacker.example").await;
    a.expect_last("250 ").await;
    for _ in 0..12 {
        a.send(&plain("alice", "guess")).await;
        a.expect("535 5.7.8").await;
    }

    let mut c = h.connect_tls_from("submission", home).await;
    c.send("EHLO alice.example").await;
    c.expect_last("250 ").await;
    let t = Instant::now();
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;
    assert_eq!(t.elapsed(), Duration::ZERO, "alice is not slowed down at her usual address");

    let mut c = h.connect_tls_from("submission", ip("192.0.2.99")).await;
    c.send("EHLO alice.example").await;
    c.expect_last("250 ").await;
    let t = Instant::now();
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 2.7.0").await;
    assert!(t.elapsed() >= Duration::from_secs(1), "a new address is slowed down: {:?}", t.elapsed());
}

/// An authentication identity over 255 octets is refused as malformed
/// (501 5.5.2), before any password check.
#[tokio::test]
async fn overlong_authcid_is_refused() {
    let h = Harness::new("").await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send(&plain(&"a".repeat(256), "secret pw")).await;
    c.expect("501 5.5.2").await;
    c.send(&plain(&"a".repeat(255), "secret pw")).await;
    c.expect("535 5.7.8").await;
}
