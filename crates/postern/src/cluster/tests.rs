//! The shared throttle as several nodes see it: two `Throttle`s (two
//! nodes) over one in-memory store, and over a store that is down; the
//! outage log's transitions; the Redis client against an address where
//! nothing listens.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::fake::{DownCounters, MemoryCounters};
use super::throttle as shared;
use super::*;
use crate::auth::{Throttle, Verdict};
use crate::config::{Auth, Config};

fn auth(extra: &str) -> Auth {
    let text = format!("[auth]\nban_exempt_networks = []\ndelay_after = 100\n{extra}");
    Config::parse(&text, "t.toml").expect("config").auth
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One failed AUTH on a node, as the session does it.
async fn fail(node: &Throttle, store: &dyn SharedCounters, from: IpAddr, user: &str, cfg: &Auth) -> bool {
    let everywhere = shared::record_failure(Some(store), from, Some(user), cfg).await;
    let (_, banned) = node.fail_with(from, Some(user), Instant::now(), cfg, everywhere);
    if banned {
        shared::record_ban(Some(store), from, cfg).await;
    }
    banned
}

async fn at_auth(node: &Throttle, store: &dyn SharedCounters, from: IpAddr, cfg: &Auth) -> Verdict {
    let facts = shared::address_facts(Some(store), from, cfg).await;
    node.check_address_with(from, Instant::now(), cfg, &facts)
}

async fn at_user(node: &Throttle, store: &dyn SharedCounters, from: IpAddr, user: &str, cfg: &Auth) -> Verdict {
    let facts = shared::user_facts(Some(store), from, user, cfg).await;
    node.check_user_with(from, user, Instant::now(), cfg, &facts)
}

#[test]
fn outage_is_logged_at_its_transitions_only() {
    use Health::*;
    let table = [
        (Unknown, true, Up, None),
        (Unknown, false, Down, Some("unreachable")),
        (Up, true, Up, None),
        (Up, false, Down, Some("unreachable")),
        (Down, false, Down, None),
        (Down, true, Up, Some("ok")),
    ];
    for (before, answered, after, log) in table {
        assert_eq!(transition(before, answered), (after, log), "{before:?} answered={answered}");
    }
}

/// 3 failures on A and 2 on B (max 5 per address) ban the address on B,
/// and A sees the ban, even for a user who never failed.
#[tokio::test]
async fn failures_on_two_nodes_make_one_ban_seen_by_both() {
    let cfg = auth("max_failures_per_ip = 5\n");
    let store = MemoryCounters::default();
    let (a, b) = (Throttle::default(), Throttle::default());
    let from = ip("192.0.2.7");
    for _ in 0..3 {
        assert!(!fail(&a, &store, from, "alice", &cfg).await);
    }
    assert!(!fail(&b, &store, from, "alice", &cfg).await);
    assert!(fail(&b, &store, from, "alice", &cfg).await, "the 5th failure, counted on two nodes, bans");
    assert_eq!(at_auth(&a, &store, from, &cfg).await, Verdict::Banned);
    assert_eq!(at_user(&a, &store, from, "carol", &cfg).await, Verdict::Banned);
    assert_eq!(at_auth(&b, &store, from, &cfg).await, Verdict::Banned);
    // Another address is not affected.
    assert_eq!(at_auth(&a, &store, ip("192.0.2.8"), &cfg).await, Verdict::Allow);
    assert!(store.keys().contains(&"auth:ban:192.0.2.7".to_string()), "{:?}", store.keys());
}

/// The same failures with the store down: each node counts alone, no ban;
/// a node's own failures still ban locally.
#[tokio::test]
async fn store_down_means_local_counters() {
    let cfg = auth("max_failures_per_ip = 5\n");
    let store = DownCounters;
    let (a, b) = (Throttle::default(), Throttle::default());
    let from = ip("192.0.2.7");
    for _ in 0..3 {
        assert!(!fail(&a, &store, from, "alice", &cfg).await);
        assert!(!fail(&b, &store, from, "alice", &cfg).await);
    }
    assert_eq!(at_auth(&a, &store, from, &cfg).await, Verdict::Allow);
    assert_eq!(at_user(&b, &store, from, "alice", &cfg).await, Verdict::Allow);
    assert!(!fail(&a, &store, from, "alice", &cfg).await);
    assert!(fail(&a, &store, from, "alice", &cfg).await, "5 local failures still ban");
    assert_eq!(at_auth(&a, &store, from, &cfg).await, Verdict::Banned);
    assert_eq!(at_auth(&b, &store, from, &cfg).await, Verdict::Allow);
}

/// Per-user failures add up across nodes: past max_failures_per_user the
/// next attempt for that user on the other node is slowed down.
#[tokio::test]
async fn user_failures_add_up_across_nodes() {
    let cfg = auth("max_failures_per_user = 3\nmax_failures_per_ip = 100\n");
    let store = MemoryCounters::default();
    let (a, b) = (Throttle::default(), Throttle::default());
    for (i, node) in [&a, &b, &a].into_iter().enumerate() {
        fail(node, &store, ip(&format!("198.51.100.{i}")), "alice", &cfg).await;
    }
    assert_eq!(at_user(&b, &store, ip("203.0.113.9"), "alice", &cfg).await, Verdict::Delay(Duration::from_secs(1)));
    assert_eq!(at_user(&b, &store, ip("203.0.113.9"), "bob", &cfg).await, Verdict::Allow);
    let down = DownCounters;
    assert_eq!(at_user(&b, &down, ip("203.0.113.9"), "alice", &cfg).await, Verdict::Allow, "b alone saw one failure");
}

/// A login remembered on one node lets that user (and the address at the
/// AUTH command) through a ban on another node; exempt networks ignore
/// shared bans.
#[tokio::test]
async fn remembered_logins_and_exemptions_cross_nodes() {
    let cfg = auth("max_failures_per_ip = 2\n");
    let store = MemoryCounters::default();
    let (a, b) = (Throttle::default(), Throttle::default());
    let from = ip("192.0.2.20");
    shared::record_login(Some(&store), from, "alice", &cfg).await;
    a.succeed(from, "alice", Instant::now(), &cfg);
    fail(&a, &store, from, "mallory", &cfg).await;
    assert!(fail(&a, &store, from, "mallory", &cfg).await);
    assert_eq!(at_auth(&b, &store, from, &cfg).await, Verdict::Allow, "somebody logged in from there");
    assert_eq!(at_user(&b, &store, from, "alice", &cfg).await, Verdict::Allow);
    assert_eq!(at_user(&b, &store, from, "mallory", &cfg).await, Verdict::Banned);

    let mut exempt = auth("max_failures_per_ip = 2\n");
    exempt.ban_exempt_networks = vec!["192.0.2.0/24".parse().expect("cidr")];
    assert_eq!(at_user(&b, &store, from, "mallory", &exempt).await, Verdict::Allow);
}

/// Keys are namespaced by the prefix and name the masked address.
#[test]
fn key_names() {
    let cfg = auth("ipv6_prefix = 64\n");
    let k = shared::keys(ip("2001:db8:1:2:3:4:5:6"), &cfg);
    assert_eq!(k.ban, "auth:ban:2001:db8:1:2::");
    assert_eq!(k.ip_failures, "auth:fail:ip:2001:db8:1:2::");
    assert_eq!(shared::user_login_key(ip("::ffff:192.0.2.1"), "alice", &cfg), "auth:login:192.0.2.1 alice");
    let c = Config::parse("[cluster]\nredis = \"redis://127.0.0.1:1/0\"\nkey_prefix = \"eu\"\n", "t.toml").expect("config");
    let r = RedisCounters::from_config(&c.cluster).expect("url").expect("configured");
    assert_eq!(r.key("auth:ban:x"), "postern:eu:auth:ban:x");
    assert!(RedisCounters::from_config(&Config::default().cluster).expect("no url").is_none());
}

/// Nothing listens: every request answers `None` within the timeout, and
/// the outage is logged once.
#[tokio::test]
async fn unreachable_redis_answers_none_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let text = format!("[cluster]\nredis = \"redis://127.0.0.1:{port}/0\"\ntimeout = \"300ms\"\n");
    let c = Config::parse(&text, "t.toml").expect("config");
    let r = RedisCounters::from_config(&c.cluster).expect("url").expect("configured");
    let t = std::time::Instant::now();
    assert_eq!(r.add("k", 1, Duration::from_secs(60)).await, None);
    assert_eq!(r.flag("k").await, None);
    assert_eq!(r.get("k").await, None);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(Health::from_code(r.health.load(Ordering::Relaxed)), Health::Down);
}

#[test]
fn bad_cluster_config_names_the_key() {
    for (text, key) in [("[cluster]\nredis = \"rediss://h\"\n", "redis"), ("[cluster]\nkey_prefix = \"a:b\"\n", "key_prefix")] {
        let e = Config::parse(text, "t.toml").expect_err("bad").to_string();
        assert!(e.contains("t.toml") && e.contains(key), "{e}");
    }
}

#[test]
fn example_documents_the_cluster_table() {
    for key in ["[cluster]", "#redis = ", "#key_prefix = \"default\"", "#timeout = \"200ms\""] {
        assert!(crate::config::EXAMPLE.contains(key), "example.toml does not mention {key}");
    }
    let uncommented = crate::config::EXAMPLE
        .replace("#redis = ", "redis = ")
        .replace("#key_prefix", "key_prefix")
        .replace("#timeout = \"200ms\"", "timeout = \"200ms\"");
    let c = Config::parse(&uncommented, "example.toml").expect("example with [cluster] uncommented");
    assert_eq!(c.cluster.redis.as_deref(), Some("redis://127.0.0.1:6379/0"));
    let d = Config::default().cluster;
    assert_eq!((d.key_prefix.as_str(), d.timeout), (c.cluster.key_prefix.as_str(), c.cluster.timeout));
}
