use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn sites(list: &[&str]) -> Vec<DnsblSite> {
    list.iter().map(|s| s.parse().expect("site")).collect()
}

#[test]
fn query_names() {
    let cases: &[(&str, &str, &str)] = &[
        ("127.0.0.2", "zen.example", "2.0.0.127.zen.example."),
        ("192.0.2.99", "bl.example.", "99.2.0.192.bl.example."),
        ("::ffff:192.0.2.1", "bl.example", "1.2.0.192.bl.example."),
        ("2001:db8::567:89ab", "bl.example", "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."),
    ];
    for (ip, zone, want) in cases {
        assert_eq!(query_name(ip.parse().expect("ip"), zone), *want);
    }
}

#[test]
fn scores_and_verdicts() {
    let l = sites(&["zen.example=127.0.0.[2..11]*3", "bl.example*2", "wl.example=127.0.[0..255].0*-5"]);
    let a = |s: &str| s.parse::<Ipv4Addr>().expect("a");
    let listed = |v: &[&str]| Answer::Listed(v.iter().map(|s| a(s)).collect());
    let no = Answer::NotListed;
    let mut cfg = Dnsbl { lists: l.clone(), threshold: 3, allowlist_threshold: -1, ..Default::default() };
    // (answers, total, verdict)
    let cases: Vec<(Vec<Answer>, i32, Verdict)> = vec![
        (vec![no.clone(), no.clone(), no.clone()], 0, Verdict::Pass),
        (vec![listed(&["127.0.0.2"]), no.clone(), no.clone()], 3, Verdict::Listed("zen.example".into())),
        // The filter: 127.0.0.12 is not in [2..11].
        (vec![listed(&["127.0.0.12"]), no.clone(), no.clone()], 0, Verdict::Pass),
        // Two records of one list count once.
        (vec![listed(&["127.0.0.2", "127.0.0.4"]), listed(&["127.0.0.2"]), no.clone()], 5, Verdict::Listed("zen.example".into())),
        (vec![no.clone(), listed(&["127.0.0.2"]), no.clone()], 2, Verdict::Pass),
        // The allow list wins: 3 + 2 - 5 = 0 would pass; alone -5 is allow-listed.
        (vec![listed(&["127.0.0.2"]), listed(&["127.0.0.2"]), listed(&["127.0.9.0"])], 0, Verdict::Pass),
        (vec![no.clone(), no.clone(), listed(&["127.0.9.0"])], -5, Verdict::Allowlisted),
        (vec![Answer::Failed("timeout".into()), no.clone(), no.clone()], 0, Verdict::Pass),
    ];
    for (i, (answers, total, want)) in cases.iter().enumerate() {
        let s = score(&l, answers);
        assert_eq!(s.total, *total, "case {i}");
        assert_eq!(verdict(&cfg, &s), *want, "case {i}");
    }
    // allowlist_threshold 0 is off: a score of -5 just passes.
    cfg.allowlist_threshold = 0;
    let s = score(&l, &[no.clone(), no.clone(), listed(&["127.0.9.0"])]);
    assert_eq!(verdict(&cfg, &s), Verdict::Pass);
    let s = score(&l, &[Answer::Failed("x".into()), no.clone(), no]);
    assert_eq!(s.failed, vec![("zen.example".to_string(), "x".to_string())]);
}

#[test]
fn exemptions() {
    let lo = Dnsbl::default().exempt_networks;
    let relay: Vec<Cidr> = vec!["192.0.2.0/24".parse().expect("cidr")];
    let cases: &[(&str, bool)] = &[("127.0.0.2", true), ("::1", true), ("192.0.2.7", true), ("198.51.100.1", false)];
    for (ip, want) in cases {
        assert_eq!(exempt(ip.parse().expect("ip"), &lo, &relay), *want, "{ip}");
    }
}

/// A table of names and a count of lookups made.
pub(crate) struct Table {
    pub(crate) entries: Vec<(String, Answer, Duration)>,
    pub(crate) asked: AtomicUsize,
    pub(crate) delay: Duration,
}

impl DnsblResolver for Table {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let hit = self.entries.iter().find(|(n, _, _)| n == name);
            hit.map(|(_, a, t)| (a.clone(), *t)).unwrap_or((Answer::NotListed, Duration::from_secs(60)))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn parallel_one_deadline_and_cache() {
    let table = Arc::new(Table {
        entries: vec![("2.0.0.127.bl.example.".into(), Answer::Listed(vec![Ipv4Addr::new(127, 0, 0, 2)]), Duration::from_secs(30))],
        asked: AtomicUsize::new(0),
        delay: Duration::from_millis(900),
    });
    let svc = DnsblService::with_resolver(table.clone());
    let cfg = Dnsbl { lists: sites(&["bl.example*2", "other.example"]), timeout: Duration::from_secs(1), ..Default::default() };
    let ip: IpAddr = "127.0.0.2".parse().expect("ip");
    let t0 = Instant::now();
    let s = svc.check(&cfg, &[], ip).await;
    // Both lists in parallel: 0.9 s, not 1.8 s.
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(s.total, 2);
    assert_eq!(table.asked.load(Ordering::Relaxed), 2);
    // Cached: no new lookup, no wait.
    let t1 = Instant::now();
    assert_eq!(svc.check(&cfg, &[], ip).await.total, 2);
    assert_eq!(t1.elapsed(), Duration::ZERO);
    assert_eq!(table.asked.load(Ordering::Relaxed), 2);
    // After the TTL (30 s) the listed answer is asked again.
    tokio::time::advance(Duration::from_secs(31)).await;
    svc.check(&cfg, &[], ip).await;
    assert_eq!(table.asked.load(Ordering::Relaxed), 3);
    // A slow list misses the deadline and counts as not listed.
    let slow = Arc::new(Table { entries: vec![], asked: AtomicUsize::new(0), delay: Duration::from_secs(5) });
    let svc = DnsblService::with_resolver(slow);
    let t2 = Instant::now();
    let s = svc.check(&cfg, &[], ip).await;
    assert_eq!(t2.elapsed(), Duration::from_secs(1));
    assert_eq!((s.total, s.failed.len()), (0, 2));
}
