//! Unit tests of `mx`.

use super::*;

#[test]
fn preference_order_and_shuffle() {
    let mx = vec![(20, "b".to_string()), (10, "a1".to_string()), (10, "a2".to_string()), (30, "c".to_string())];
    let mut firsts = std::collections::HashSet::new();
    for seed in 0..64 {
        let o = order(mx.clone(), seed);
        assert_eq!(o.len(), 4);
        assert!(o[0].starts_with('a') && o[1].starts_with('a'));
        assert_eq!(&o[2..], &["b".to_string(), "c".to_string()]);
        firsts.insert(o[0].clone());
    }
    assert_eq!(firsts.len(), 2, "equal preferences must be shuffled");
}

#[test]
fn per_domain_maps_are_pruned() {
    let mut m: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let busy = Arc::new(Semaphore::new(1));
    m.insert("busy.example".into(), busy.clone());
    for i in 0..100 {
        prune_idle(&mut m, 10, |s| Arc::strong_count(s) == 1);
        m.insert(format!("d{i}.example"), Arc::new(Semaphore::new(1)));
        assert!(m.len() <= 10, "{} entries", m.len());
    }
    assert!(m.contains_key("busy.example"), "an entry in use was dropped");
    drop(busy);
}

#[test]
fn dead_domains_are_capped() {
    let mut dead = HashMap::new();
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    mark_dead(&mut dead, 3, "expired.example", now - Duration::from_secs(1), "x".into());
    for i in 0..50 {
        mark_dead(&mut dead, 3, &format!("d{i}.example"), later + Duration::from_secs(i), "x".into());
        assert!(dead.len() <= 3);
    }
    assert!(!dead.contains_key("expired.example"));
    // The newest stay; a domain already there is updated in place.
    assert!(dead.contains_key("d49.example") && dead.contains_key("d48.example"));
    mark_dead(&mut dead, 3, "d49.example", later, "y".into());
    assert_eq!(dead.len(), 3);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn which_addresses_are_me() {
    let strict = Myself {
        listeners: vec!["0.0.0.0:25".parse().unwrap(), "192.0.2.10:587".parse().unwrap()],
        allow_loopback: false,
        interfaces: vec![ip("127.0.0.1"), ip("198.51.100.3"), ip("2001:db8::3")],
    };
    let tests = Myself { listeners: vec!["127.0.0.1:2525".parse().unwrap()], allow_loopback: true, interfaces: vec![] };
    let cases = [
        (&strict, "127.0.0.1", 25, true),
        (&strict, "127.0.0.2", 2525, true),
        (&strict, "::1", 25, true),
        (&strict, "::ffff:127.0.0.1", 25, true),
        (&strict, "0.0.0.0", 25, true),
        (&strict, "::", 25, true),
        (&strict, "192.0.2.10", 25, true),
        (&strict, "192.0.2.11", 25, false),
        (&strict, "10.0.0.5", 25, false),
        (&strict, "2001:db8::1", 25, false),
        (&strict, "198.51.100.3", 25, true),
        (&strict, "198.51.100.3", 2525, true),
        (&strict, "::ffff:198.51.100.3", 25, true),
        (&strict, "2001:db8::3", 25, true),
        (&tests, "127.0.0.1", 2525, true),
        (&tests, "127.0.0.1", 25, false),
        (&tests, "127.0.0.2", 2525, false),
        (&tests, "0.0.0.0", 2525, true),
    ];
    for (me, addr, port, want) in cases {
        assert_eq!(me.is_me(ip(addr), port), want, "{addr}:{port} allow_loopback={}", me.allow_loopback);
    }
}

#[test]
fn interface_addresses_are_read() {
    assert!(interface_addrs().iter().any(|a| a.is_loopback()), "getifaddrs lists no loopback address");
}

#[test]
fn plans_over_fake_resolutions() {
    let me = Myself { listeners: vec!["0.0.0.0:25".parse().unwrap()], ..Myself::default() };
    let r = |h: &str, a: &[&str]| (h.to_string(), Ok(a.iter().map(|s| ip(s)).collect()));
    let fail = |h: &str| (h.to_string(), Err(format!("DNS lookup of {h}: timeout")));
    // Every MX host is this host: a loop, permanent.
    assert_eq!(plan(vec![r("mx1", &["127.0.0.1", "::1"]), r("mx2", &["0.0.0.0"])], 25, &me), Plan::LoopsBack);
    assert_eq!(plan(vec![r("127.0.0.1", &["127.0.0.1"])], 25, &me), Plan::LoopsBack);
    // Some are elsewhere: only those are tried, in order.
    assert_eq!(
        plan(vec![r("mx1", &["127.0.0.1"]), r("mx2", &["192.0.2.1", "::1", "2001:db8::2"])], 25, &me),
        Plan::Try(vec![("mx2".into(), ip("192.0.2.1")), ("mx2".into(), ip("2001:db8::2"))])
    );
    // A failed lookup might be elsewhere: deferred, not a loop.
    assert_eq!(plan(vec![r("mx1", &["127.0.0.1"]), fail("mx2")], 25, &me), Plan::Nothing("DNS lookup of mx2: timeout".into()));
    assert_eq!(plan(vec![], 25, &me), Plan::Nothing("no MX host".into()));
    assert_eq!(plan(vec![r("mx1", &[])], 25, &me), Plan::Nothing("no MX host".into()));
}

/// Only NXDOMAIN and NODATA are answers to an MX query: a SERVFAIL or
/// REFUSED once became an implicit MX (delivery to the domain's A record).
#[test]
fn failed_mx_lookups_are_temporary() {
    use hickory_resolver::proto::op::{Query, ResponseCode};
    use hickory_resolver::proto::rr::{Name, RecordType};
    use hickory_resolver::proto::ProtoError;
    let answered = |code| -> hickory_resolver::ResolveError {
        let q = Box::new(Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::MX));
        ProtoError::nx_error(q, None, None, None, code, false, None).into()
    };
    for (code, want) in [
        (ResponseCode::NXDomain, Some(NoMx::NoDomain)),
        (ResponseCode::NoError, Some(NoMx::Implicit)),
        (ResponseCode::ServFail, None),
        (ResponseCode::Refused, None),
        (ResponseCode::NotImp, None),
        (ResponseCode::FormErr, None),
    ] {
        assert_eq!(no_mx(&answered(code)), want, "{code:?}");
    }
}
