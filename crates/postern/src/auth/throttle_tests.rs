use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn progressive_delays_table() {
    let max = secs(15);
    // (failures so far, delay_after, expected delay)
    for (n, after, want) in
        [(0, 2, 0), (1, 2, 0), (2, 2, 0), (3, 2, 1), (4, 2, 2), (5, 2, 4), (6, 2, 8), (7, 2, 15), (500, 2, 15), (1, 0, 1)]
    {
        assert_eq!(progressive(n, after, max), secs(want), "n={n} after={after}");
    }
}

#[test]
fn ipv6_counted_per_prefix() {
    // (address, prefix, key)
    for (a, p, k) in [
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::"),
        ("2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
        ("2001:db8:1:2:3:4:5:6", 200, "2001:db8:1:2:3:4:5:6"),
        ("2001:db8:1:2:3:4:5:6", 0, "::"),
        ("192.0.2.7", 64, "192.0.2.7"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),
    ] {
        assert_eq!(client_key(ip(a), p), ip(k), "{a}/{p}");
    }
    // Failures from two addresses of one /64 add up to one ban.
    let cfg = Auth { max_failures_per_ip: 4, ..Auth::default() };
    let t = Throttle::default();
    let t0 = Instant::now();
    for i in 0..4 {
        t.fail(ip(&format!("2001:db8::{i}")), None, t0, &cfg);
    }
    assert_eq!(t.check_address(ip("2001:db8::ffff"), t0, &cfg), Verdict::Banned);
    assert_eq!(t.check_address(ip("2001:db8:0:1::1"), t0, &cfg), Verdict::Allow);
}

#[test]
fn delays_first_ban_only_at_the_limit_then_released() {
    let cfg = Auth::default();
    let t = Throttle::default();
    let a = ip("192.0.2.1");
    let t0 = Instant::now();
    let mut delays = Vec::new();
    for i in 1..=cfg.max_failures_per_ip {
        let (d, banned) = t.fail(a, Some("alice"), t0, &cfg);
        delays.push(d.as_secs());
        assert_eq!(banned, i == cfg.max_failures_per_ip, "ban only at failure {}", cfg.max_failures_per_ip);
        if i < cfg.max_failures_per_ip {
            assert_eq!(t.check_address(a, t0, &cfg), Verdict::Allow);
        }
    }
    assert_eq!(&delays[..8], &[0, 0, 1, 2, 4, 8, 15, 15]);
    assert_eq!(t.check_address(a, t0, &cfg), Verdict::Banned);
    assert_eq!(t.check_user(a, "bob", t0, &cfg), Verdict::Banned);
    assert_eq!(t.check_address(ip("192.0.2.2"), t0, &cfg), Verdict::Allow);
    assert_eq!(t.check_address(a, t0 + cfg.ban_time, &cfg), Verdict::Allow);
    // Failures outside the window do not count.
    let b = ip("203.0.113.1");
    t.fail(b, None, t0, &cfg);
    t.fail(b, None, t0, &cfg);
    assert_eq!(t.fail(b, None, t0 + cfg.failure_window, &cfg).0, Duration::ZERO);
}

#[test]
fn exempt_networks_are_delayed_never_banned() {
    let cfg = Auth { max_failures_per_ip: 5, ..Auth::default() };
    let t = Throttle::default();
    let t0 = Instant::now();
    for (addr, exempt) in [("127.0.0.1", true), ("::1", true), ("::ffff:127.0.0.2", true), ("192.0.2.9", false)] {
        let mut last = Duration::ZERO;
        let mut any_ban = false;
        for _ in 0..20 {
            let (d, b) = t.fail(ip(addr), Some("carol"), t0, &cfg);
            last = d;
            any_ban |= b;
        }
        assert_eq!(last, secs(15), "{addr} still delayed");
        assert_eq!(any_ban, !exempt, "{addr}");
        let want = if exempt { Verdict::Allow } else { Verdict::Banned };
        assert_eq!(t.check_address(ip(addr), t0, &cfg), want, "{addr}");
    }
}

#[test]
fn user_counter_slows_strangers_never_known_addresses() {
    let cfg = Auth::default();
    let t = Throttle::default();
    let t0 = Instant::now();
    let home = ip("198.51.100.7");
    t.succeed(home, "alice", t0, &cfg);
    // A distributed attack: one failure each from many addresses.
    for i in 0..cfg.max_failures_per_user {
        t.fail(ip(&format!("203.0.113.{i}")), Some("alice"), t0, &cfg);
    }
    assert_eq!(t.check_user(ip("203.0.113.200"), "alice", t0, &cfg), Verdict::Delay(secs(1)));
    assert_eq!(t.check_user(home, "alice", t0, &cfg), Verdict::Allow);
    assert_eq!(t.check_user(ip("203.0.113.200"), "bob", t0, &cfg), Verdict::Allow);
    for _ in 0..10 {
        t.fail(ip("203.0.113.250"), Some("alice"), t0, &cfg);
    }
    assert_eq!(t.check_user(ip("203.0.113.201"), "alice", t0, &cfg), Verdict::Delay(cfg.max_failure_delay));
    // Her home address is banned by someone else's failures: still not refused for her.
    let cfg2 = Auth { max_failures_per_ip: 3, ..Auth::default() };
    for _ in 0..3 {
        t.fail(home, Some("mallory"), t0, &cfg2);
    }
    assert_eq!(t.check_user(home, "mallory", t0, &cfg2), Verdict::Banned);
    assert_eq!(t.check_address(home, t0, &cfg2), Verdict::Allow);
    assert_eq!(t.check_user(home, "alice", t0, &cfg2), Verdict::Allow);
    // Remembered logins are forgotten after login_memory.
    let cfg3 = Auth { login_memory: secs(60), ..cfg2 };
    assert_eq!(t.check_user(home, "alice", t0 + secs(59), &cfg3), Verdict::Allow);
    assert_eq!(t.check_user(home, "alice", t0 + secs(60), &cfg3), Verdict::Banned);
}

#[test]
fn maps_are_bounded() {
    let cfg = Auth { throttle_max_entries: 64, ..Auth::default() };
    let t = Throttle::default();
    let t0 = Instant::now();
    for i in 0..1000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        t.fail(a, Some(&format!("user{i}")), now, &cfg);
        t.succeed(a, &format!("user{i}"), now, &cfg);
    }
    let (a, u, l) = t.sizes();
    assert!(a <= 64 && u <= 64 && l <= 64, "{a} {u} {l}");
    // The newest entries survive.
    let last = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 999));
    assert!(t.maps().logins.contains_key(&("user999".to_string(), last)));
    assert!(t.maps().addrs.contains_key(&last));
    // An over-long authcid is never stored.
    t.fail(ip("192.0.2.1"), Some(&"x".repeat(MAX_AUTHCID + 1)), t0 + secs(2), &cfg);
    assert!(!t.maps().users.contains_key(&"x".repeat(MAX_AUTHCID + 1)));
}
