//! Tables for the rate limits: networks, fixed windows, eviction, which
//! limits count an event, the replies, the shared store and its fallback.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::directory::BoxFuture;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn limit(key: RateKey, what: RateWhat, max: u64, secs: u64) -> RateLimit {
    RateLimit { key, what, max, per: Duration::from_secs(secs) }
}

#[test]
fn networks_aggregate_by_prefix() {
    let table = [
        ("192.0.2.77", 32, 64, "192.0.2.77/32"),
        ("192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("::ffff:192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6/128"),
        ("192.0.2.77", 0, 64, "0.0.0.0/0"),
    ];
    for (a, v4, v6, want) in table {
        assert_eq!(network(ip(a), v4, v6), want, "{a} /{v4} /{v6}");
    }
}

#[test]
fn exemptions() {
    let cfg = RateLimits::default();
    let relay: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
    assert_eq!(exemption(ip("127.0.0.3"), &cfg.exempt_networks, true, &relay), Some("exempt_networks"));
    assert_eq!(exemption(ip("10.1.2.3"), &cfg.exempt_networks, true, &relay), Some("relay.networks"));
    assert_eq!(exemption(ip("10.1.2.3"), &cfg.exempt_networks, false, &relay), None);
    assert_eq!(exemption(ip("192.0.2.1"), &cfg.exempt_networks, true, &relay), None);
}

#[test]
fn fixed_windows_start_over_when_they_end() {
    let t0 = Instant::now();
    let len = Duration::from_secs(60);
    let s = Duration::from_secs;
    // (previous window, events, at, expected count, expected start)
    let w0 = Window { start: t0, len, count: 3 };
    let table = [
        (None, 1, t0, 1, t0),
        (Some(w0), 1, t0 + s(10), 4, t0),
        (Some(w0), 2, t0 + s(59), 5, t0),
        (Some(w0), 1, t0 + s(60), 1, t0 + s(60)),
        (Some(w0), 1, t0 + s(3600), 1, t0 + s(3600)),
    ];
    for (prev, n, at, count, start) in table {
        let w = Window::bump(prev, n, len, at);
        assert_eq!((w.count, w.start), (count, start), "{prev:?} +{n}");
    }
}

#[test]
fn local_counters_are_bounded() {
    let c = RateCounters::default();
    let t0 = Instant::now();
    let len = Duration::from_secs(60);
    for i in 0..100u64 {
        c.add(&format!("k{i}"), 1, len, t0 + Duration::from_millis(i), 16);
        assert!(c.len() <= 16, "{} counters", c.len());
    }
    // The newest survive, the oldest went.
    assert_eq!(c.add("k99", 1, len, t0 + Duration::from_millis(200), 16), 2);
    assert_eq!(c.add("k0", 1, len, t0 + Duration::from_millis(200), 16), 1);
    // Expired counters go first: after the window all are expired.
    let mut i = 0;
    while c.len() < 16 {
        i += 1;
        c.add(&format!("fill{i}"), 1, len, t0 + Duration::from_millis(300), 16);
    }
    c.add("new", 1, len, t0 + Duration::from_secs(120), 16);
    assert_eq!(c.len(), 1);
}

#[test]
fn which_limits_count_an_event() {
    let cfg = RateLimits {
        limit: vec![
            limit(RateKey::Client, RateWhat::Connections, 10, 60),
            limit(RateKey::Client, RateWhat::Messages, 5, 60),
            limit(RateKey::User, RateWhat::Messages, 50, 3600),
            limit(RateKey::Sender, RateWhat::Messages, 20, 3600),
            limit(RateKey::Sender, RateWhat::Recipients, 100, 3600),
        ],
        ipv4_prefix: 24,
        ..RateLimits::default()
    };
    let counters = |what, user, sender| -> Vec<String> {
        applicable(&cfg, &Event { what, ip: ip("192.0.2.9"), user, sender }).into_iter().map(|a| a.counter).collect()
    };
    assert_eq!(counters(RateWhat::Connections, None, None), ["rate:client:connections:60:192.0.2.0/24"]);
    assert_eq!(counters(RateWhat::Messages, None, Some("")), ["rate:client:messages:60:192.0.2.0/24"]);
    assert_eq!(
        counters(RateWhat::Messages, Some("Alice"), Some("A@Example.org")),
        ["rate:client:messages:60:192.0.2.0/24", "rate:user:messages:3600:alice", "rate:sender:messages:3600:a@example.org"]
    );
    assert_eq!(counters(RateWhat::Recipients, None, None), Vec::<String>::new());
    assert_eq!(counters(RateWhat::Recipients, None, Some("a@example.org")), ["rate:sender:recipients:3600:a@example.org"]);
}

#[test]
fn replies_name_the_limit() {
    let ex = |what, key, subject: &str| Exceeded { limit: limit(key, what, 3, 60), subject: subject.into(), count: 4 };
    let table = [
        (ex(RateWhat::Connections, RateKey::Client, "[192.0.2.9]"), "421 4.7.0 Too many connections from [192.0.2.9] (limit 3 per 1m)"),
        (ex(RateWhat::Messages, RateKey::Client, "[192.0.2.9]"), "450 4.7.1 Error: too many messages from [192.0.2.9] (limit 3 per 1m)"),
        (ex(RateWhat::Messages, RateKey::User, "user alice"), "450 4.7.1 Error: too many messages from user alice (limit 3 per 1m)"),
        (
            ex(RateWhat::Recipients, RateKey::Sender, "<a@b.example>"),
            "452 4.5.3 Error: too many recipients from <a@b.example> (limit 3 per 1m)",
        ),
    ];
    for (e, want) in table {
        assert_eq!(e.reply().summary(), want);
    }
    assert_eq!(ex(RateWhat::Messages, RateKey::Sender, "<a@b>").log_text(), "sender messages 3/1m");
}

/// A shared store: a map, or unreachable.
struct Store {
    up: bool,
    adds: Mutex<Vec<String>>,
}

impl SharedCounters for Store {
    fn add<'a>(&'a self, key: &'a str, n: u64, _window: Duration) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let mut adds = self.adds.lock().expect("lock");
            adds.push(key.to_string());
            let total = adds.iter().filter(|k| *k == key).count() as u64 * n;
            self.up.then_some(total)
        })
    }
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { None })
    }
    fn set_flag<'a>(&'a self, _key: &'a str, _ttl: Duration) -> BoxFuture<'a, Option<()>> {
        Box::pin(async { None })
    }
    fn flag<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async { None })
    }
    fn clear<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<()>> {
        Box::pin(async { None })
    }
}

#[tokio::test(start_paused = true)]
async fn counts_locally_shared_or_falling_back() {
    let cfg = RateLimits { limit: vec![limit(RateKey::Client, RateWhat::Messages, 2, 3)], ..RateLimits::default() };
    let ev = Event { what: RateWhat::Messages, ip: ip("192.0.2.9"), user: None, sender: None };
    for up in [None, Some(true), Some(false)] {
        let local = RateCounters::default();
        let store = up.map(|up| Store { up, adds: Mutex::new(Vec::new()) });
        let shared = store.as_ref().map(|s| s as &dyn SharedCounters);
        assert_eq!(count(&cfg, &local, shared, &ev).await, None);
        assert_eq!(count(&cfg, &local, shared, &ev).await, None);
        let over = count(&cfg, &local, shared, &ev).await.expect("third message is over");
        assert_eq!((over.count, over.subject.as_str()), (3, "[192.0.2.9]"));
        // The shared store counts when it answers; local counters otherwise.
        assert_eq!(local.is_empty(), up == Some(true), "store {up:?}");
        if up != Some(true) {
            // Served again after the window (tokio's paused clock).
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(count(&cfg, &local, shared, &ev).await, None);
        }
    }
}

#[test]
fn explain_lines() {
    let cfg = RateLimits { limit: vec![limit(RateKey::Sender, RateWhat::Recipients, 100, 3600)], ..RateLimits::default() };
    assert_eq!(explain(&cfg, &[], ip("127.0.0.1"), None, Some("a@b")), ["client exempt (exempt_networks)"]);
    assert_eq!(explain(&cfg, &[], ip("192.0.2.1"), None, Some("a@b")), ["recipients 100 per 1h (<a@b>)"]);
    assert_eq!(explain(&RateLimits::default(), &[], ip("192.0.2.1"), None, None), ["no limits configured"]);
}

#[test]
fn config_errors_name_file_line_and_key() {
    let text =
        "[inbound.rate]\nipv4_prefix = 33\n[[inbound.rate.limit]]\nkey = \"sender\"\nwhat = \"connections\"\nmax = 5\nper = \"1m\"\n";
    let err = crate::config::Config::parse(text, "f.toml").expect_err("invalid").to_string();
    assert!(err.contains("f.toml:2:") && err.contains("inbound.rate.ipv4_prefix") && err.contains("between 1 and 32"), "{err}");
    assert!(err.contains("f.toml:4:") && err.contains("per client only"), "{err}");
    let ok = "[inbound.greylist]\nenabled = true\ndelay = \"1s\"\n[[inbound.rate.limit]]\nkey = \"user\"\nwhat = \"recipients\"\nmax = 5\nper = \"1h\"\n";
    let c = crate::config::Config::parse(ok, "f.toml").expect("valid");
    assert_eq!(c.inbound.greylist.delay, Duration::from_secs(1));
    assert_eq!(c.inbound.rate.limit[0].per, Duration::from_secs(3600));
    assert_eq!(c.inbound.rate.ipv4_prefix, 32);
}
