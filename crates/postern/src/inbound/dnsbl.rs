//! DNSBL/DNSWL scoring (issue 21 item 2, postscreen's `postscreen_dnsbl_*`
//! model): every configured list is asked in parallel under one deadline,
//! the weights of the lists whose answer passes their filter are summed,
//! and the score is compared with `threshold` (refuse) and
//! `allowlist_threshold` (allow-list). Answers are cached by their DNS TTL,
//! bounded by `max_cache_ttl`. A list that fails or times out counts as not
//! listing the client (as Postfix does): a DNSBL outage must not stop
//! inbound mail, and it is logged.
//!
//! May touch: DNS (A queries under the list zones). RFCs: 5782 §2.1
//! (query names: reversed IPv4 octets, reversed IPv6 nibbles), §2.3
//! (127.0.0.0/8 answers).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::config::{Cidr, Dnsbl, DnsblSite};

/// A "not listed" answer is kept this long (bounded by `max_cache_ttl`).
const NOT_LISTED_TTL: Duration = Duration::from_secs(300);
/// Most cached answers; past it, expired ones go, then all.
const MAX_CACHE: usize = 50_000;

/// What one list said about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The A records under the query name.
    Listed(Vec<Ipv4Addr>),
    /// NXDOMAIN or no A record.
    NotListed,
    /// No answer (timeout, SERVFAIL...): counts as not listed.
    Failed(String),
}

/// A lookup in flight.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = (Answer, Duration)> + Send + 'a>>;

/// Asks DNS for the A records of a name: the answer and how long it may be
/// cached. A trait so session tests use a table instead of DNS.
pub trait DnsblResolver: Send + Sync {
    /// Looks `name` (fully qualified, trailing dot) up.
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a>;
}

/// The query name of `ip` under `zone` (RFC 5782 §2.1): reversed octets for
/// IPv4 (IPv4-mapped IPv6 too), reversed nibbles for IPv6, trailing dot.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let mut out = String::with_capacity(80);
    match ip {
        IpAddr::V4(a) => {
            for o in a.octets().iter().rev() {
                out.push_str(&format!("{o}."));
            }
        }
        IpAddr::V6(a) => {
            for b in a.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
        }
    }
    out.push_str(zone.trim_end_matches('.'));
    out.push('.');
    out
}

/// One list that counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The list's zone.
    pub domain: String,
    /// Its weight.
    pub weight: i32,
    /// The answers that passed its filter.
    pub codes: Vec<Ipv4Addr>,
}

/// The DNSBL score of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    /// Sum of the weights of `hits`.
    pub total: i32,
    /// The lists that counted, in configuration order.
    pub hits: Vec<Hit>,
    /// Lists that did not answer (zone and reason).
    pub failed: Vec<(String, String)>,
}

impl Score {
    /// The list to name in a refusal: the heaviest positive hit.
    pub fn blocking_list(&self) -> Option<&str> {
        self.hits.iter().filter(|h| h.weight > 0).max_by_key(|h| h.weight).map(|h| h.domain.as_str())
    }

    /// `zone:weight` of every hit, for the log.
    pub fn summary(&self) -> String {
        let v: Vec<String> = self.hits.iter().map(|h| format!("{}:{}", h.domain, h.weight)).collect();
        v.join(",")
    }
}

/// Scores the answers: `answers[i]` is the answer of `sites[i]`'s zone.
/// A site counts once, if one of its A records passes its filter.
pub fn score(sites: &[DnsblSite], answers: &[Answer]) -> Score {
    let mut s = Score::default();
    for (site, answer) in sites.iter().zip(answers) {
        match answer {
            Answer::Listed(addrs) => {
                let codes: Vec<Ipv4Addr> = addrs.iter().copied().filter(|a| site.matches(*a)).collect();
                if !codes.is_empty() {
                    s.total += site.weight;
                    s.hits.push(Hit { domain: site.domain.clone(), weight: site.weight, codes });
                }
            }
            Answer::NotListed => {}
            Answer::Failed(why) => s.failed.push((site.domain.clone(), why.clone())),
        }
    }
    s
}

/// What the score means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Below the threshold.
    Pass,
    /// At or below a negative `allowlist_threshold`: never refused, not delayed.
    Allowlisted,
    /// At or above `threshold`; the list to name.
    Listed(String),
}

/// The verdict for `s` under `cfg` (an allow-list score wins over any block).
pub fn verdict(cfg: &Dnsbl, s: &Score) -> Verdict {
    if cfg.allowlist_threshold < 0 && s.total <= cfg.allowlist_threshold {
        Verdict::Allowlisted
    } else if s.total >= cfg.threshold && !s.hits.is_empty() {
        Verdict::Listed(s.blocking_list().unwrap_or("dnsbl").to_string())
    } else {
        Verdict::Pass
    }
}

/// True if `ip` is never looked up: in `exempt` or in `relay` (relay.networks).
pub fn exempt(ip: IpAddr, exempt: &[Cidr], relay: &[Cidr]) -> bool {
    exempt.iter().chain(relay).any(|n| n.contains(ip))
}

/// A resolver and the name servers it was built for.
type Built = (Vec<SocketAddr>, Arc<dyn DnsblResolver>);

/// The lookup service: the resolver (rebuilt when `mx.nameservers`
/// changes) and the answer cache, shared by every session.
#[derive(Default)]
pub struct DnsblService {
    resolver: Mutex<Option<Built>>,
    fixed: Option<Arc<dyn DnsblResolver>>,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl DnsblService {
    /// A service that asks `r` instead of DNS (tests).
    pub fn with_resolver(r: Arc<dyn DnsblResolver>) -> DnsblService {
        DnsblService { fixed: Some(r), ..Default::default() }
    }

    fn resolver(&self, nameservers: &[SocketAddr]) -> Result<Arc<dyn DnsblResolver>, String> {
        if let Some(r) = &self.fixed {
            return Ok(r.clone());
        }
        let mut g = locked(&self.resolver);
        if let Some((have, r)) = g.as_ref() {
            if have == nameservers {
                return Ok(r.clone());
            }
        }
        let r: Arc<dyn DnsblResolver> = Arc::new(Hickory::new(nameservers)?);
        *g = Some((nameservers.to_vec(), r.clone()));
        Ok(r)
    }

    /// Scores `ip` against `cfg.lists`, every list in parallel, within
    /// `cfg.timeout`; cached answers are not asked again.
    pub async fn check(&self, cfg: &Dnsbl, nameservers: &[SocketAddr], ip: IpAddr) -> Score {
        if cfg.lists.is_empty() {
            return Score::default();
        }
        let names: Vec<String> = cfg.lists.iter().map(|s| query_name(ip, &s.domain)).collect();
        let mut answers: HashMap<String, Answer> = HashMap::new();
        let now = Instant::now();
        {
            let cache = locked(&self.cache);
            for n in &names {
                if let Some((until, a)) = cache.get(n) {
                    if *until > now {
                        answers.insert(n.clone(), a.clone());
                    }
                }
            }
        }
        let mut ask: Vec<String> = names.iter().filter(|n| !answers.contains_key(*n)).cloned().collect();
        ask.sort();
        ask.dedup();
        if !ask.is_empty() {
            match self.resolver(nameservers) {
                Ok(r) => self.ask(r, ask, cfg, &mut answers).await,
                Err(e) => {
                    for n in ask {
                        answers.insert(n, Answer::Failed(e.clone()));
                    }
                }
            }
        }
        let list: Vec<Answer> = names.iter().map(|n| answers.get(n).cloned().unwrap_or(Answer::Failed("timeout".into()))).collect();
        score(&cfg.lists, &list)
    }

    async fn ask(&self, r: Arc<dyn DnsblResolver>, ask: Vec<String>, cfg: &Dnsbl, answers: &mut HashMap<String, Answer>) {
        let deadline = Instant::now() + cfg.timeout;
        let mut set = tokio::task::JoinSet::new();
        for n in ask {
            let r = r.clone();
            set.spawn(async move {
                let got = tokio::time::timeout_at(deadline, r.lookup(&n)).await;
                (n, got.unwrap_or((Answer::Failed("timeout".into()), Duration::ZERO)))
            });
        }
        let mut fresh = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok((n, (a, ttl))) = done {
                if !matches!(a, Answer::Failed(_)) && !ttl.is_zero() {
                    fresh.push((n.clone(), Instant::now() + ttl.min(cfg.max_cache_ttl), a.clone()));
                }
                answers.insert(n, a);
            }
        }
        let mut cache = locked(&self.cache);
        if cache.len() + fresh.len() > MAX_CACHE {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() + fresh.len() > MAX_CACHE {
                cache.clear();
            }
        }
        for (n, until, a) in fresh {
            cache.insert(n, (until, a));
        }
    }
}

/// Lookups through hickory, against `mx.nameservers` or the system's.
struct Hickory(TokioResolver);

impl Hickory {
    fn new(nameservers: &[SocketAddr]) -> Result<Hickory, String> {
        let mut builder = super::dns::builder(nameservers)?;
        // Our own cache keeps answers by TTL; one attempt, the deadline is ours.
        builder.options_mut().cache_size = 0;
        builder.options_mut().attempts = 1;
        Ok(Hickory(builder.build()))
    }
}

impl DnsblResolver for Hickory {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            match self.0.ipv4_lookup(name).await {
                Ok(l) => {
                    let ttl = l.as_lookup().valid_until().saturating_duration_since(std::time::Instant::now());
                    (Answer::Listed(l.iter().map(|a| a.0).collect()), ttl)
                }
                Err(e) if super::dns::no_such_records(&e) => (Answer::NotListed, NOT_LISTED_TTL),
                Err(e) => (Answer::Failed(e.to_string()), Duration::ZERO),
            }
        })
    }
}

#[cfg(test)]
#[path = "dnsbl_tests.rs"]
mod tests;
