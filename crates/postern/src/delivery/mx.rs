//! Direct delivery to the Internet: MX routing over DNS (RFC 5321 §5.1).
//!
//! May touch: DNS (hickory-resolver: the system configuration, or the
//! configured `mx.nameservers`), outbound TCP to port `mx.port`; the list
//! of this host's interface addresses (getifaddrs) once, when a listener is
//! a wildcard.
//!
//! MX records by preference, random order among equal preferences; no MX →
//! the domain's own A/AAAA (implicit MX); a null MX (RFC 7505: one MX `.`
//! of preference 0) → immediate 556 5.1.10; NXDOMAIN → 550 5.1.2. Each MX
//! host's addresses are tried in turn (IPv6 and IPv4); a connection failure
//! or a 4xx/5xx greeting moves on to the next. When every host fails, the
//! domain is put on a short backoff so a dead domain is not hammered and
//! its queue does not hold up other domains; at most `mx.domain_concurrency`
//! deliveries run per domain at once.
//!
//! Loops (RFC 5321 §6.3; Postfix "loops back to myself"): an address that
//! is this host — loopback, 0.0.0.0 or ::, or one of our listeners — is never
//! connected to ([`Myself`]); when every address of every MX host is this
//! host, the recipients fail at once with 5.4.6 instead of circling.
//! `mx.dangerous_allow_loopback` lets tests use loopback sinks; our own
//! listeners stay refused. A `[[route]]` or smarthost that names such a next
//! hop is explicit and is not checked.
//!
//! [`MxDelivery`] is a [`Transport`]: used for non-local domains when no
//! smarthost is set, and for `[[route]] transport = "mx"` domains.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;

use postern_wire::Enhanced;

use super::pool::Smarthost;
use super::reply::made;
use super::smtp::{Dest, AUTH_ORDER};
use super::tlsrpt::{Discard, TlsReports};
use super::{Attempt, BoxFuture, DeliveryReply, Message, Outcome, Transport};
use crate::config::Endpoint;
use crate::settings::Settings;
use crate::tls::ClientTls;

/// Why MX delivery could not be set up, or a domain could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum MxError {
    /// The system resolver configuration could not be read.
    #[error("DNS configuration: {0}")]
    DnsConfig(String),
    /// The outbound TLS configuration could not be built.
    #[error("{0}")]
    Tls(String),
    /// The MX lookup failed (not NXDOMAIN: a server failure or timeout).
    #[error("DNS lookup of MX {domain}: {reason}")]
    MxLookup {
        /// The domain.
        domain: String,
        /// The resolver's error.
        reason: String,
    },
    /// The address lookup of an MX host failed.
    #[error("DNS lookup of {host}: {reason}")]
    HostLookup {
        /// The MX host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// Every host failed recently; the domain is left alone for `mx.domain_backoff`.
    #[error("{domain} is backing off after: {why}")]
    BackingOff {
        /// The domain.
        domain: String,
        /// The last error of the failed attempt.
        why: String,
    },
    /// The per-domain semaphore is closed.
    #[error("shutting down")]
    ShuttingDown,
    /// No address of any MX host took a session.
    #[error("no MX host of {domain} reachable; last: {last}")]
    Unreachable {
        /// The domain.
        domain: String,
        /// The last host's error.
        last: String,
    },
}

impl MxError {
    /// The reply recorded for the recipients (deferred).
    pub fn reply(&self) -> DeliveryReply {
        let status = match self {
            MxError::DnsConfig(_) | MxError::Tls(_) => Enhanced(4, 3, 5),
            MxError::MxLookup { .. } => Enhanced(4, 4, 3),
            MxError::ShuttingDown => Enhanced(4, 3, 0),
            MxError::HostLookup { .. } | MxError::BackingOff { .. } | MxError::Unreachable { .. } => Enhanced(4, 4, 1),
        };
        DeliveryReply::status_only(status, self.to_string())
    }
}

/// Where mail for a domain can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// MX hosts (or the domain itself), in the order to try.
    Try(Vec<String>),
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
    /// The domain does not exist.
    NoDomain,
}

/// What this host listens on, for loop detection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Myself {
    /// The listeners' `address:port`s.
    pub listeners: Vec<SocketAddr>,
    /// `mx.dangerous_allow_loopback`.
    pub allow_loopback: bool,
    /// This host's interface addresses, when a listener is a wildcard
    /// (`0.0.0.0`, `::`): each is us, on any port.
    pub interfaces: Vec<IpAddr>,
}

impl Myself {
    /// From the configured listeners.
    pub fn from_settings(s: &Settings) -> Myself {
        let listeners: Vec<SocketAddr> = s.config.listeners.iter().map(|l| l.address).collect();
        let wildcard = listeners.iter().any(|l| l.ip().is_unspecified());
        let interfaces = if wildcard { interface_addrs() } else { Vec::new() };
        Myself { listeners, allow_loopback: s.config.mx.dangerous_allow_loopback, interfaces }
    }

    /// Would a connection to `ip:port` reach this host? Pure.
    pub fn is_me(&self, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical(); // ::ffff:127.0.0.1 is 127.0.0.1
        if ip.is_unspecified() {
            return true; // connecting to 0.0.0.0 or :: reaches this host
        }
        let listener = self.listeners.iter().any(|l| {
            let lip = l.ip().to_canonical();
            if lip.is_unspecified() {
                // A wildcard listener answers on loopback too.
                ip.is_loopback() && l.port() == port
            } else {
                // Our own address is us on any port; on loopback only the
                // listener's port is (tests run sinks on other ports).
                lip == ip && (l.port() == port || !ip.is_loopback())
            }
        });
        let interface = !ip.is_loopback() && self.interfaces.contains(&ip);
        listener || interface || (ip.is_loopback() && !self.allow_loopback)
    }
}

/// This host's interface addresses (empty if they cannot be read).
fn interface_addrs() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| a.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())).or_else(|| a.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip()))))
        .map(|ip| ip.to_canonical())
        .collect()
}

/// Where to connect for a domain, once its MX hosts are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `(host, address)` pairs to try, in order.
    Try(Vec<(String, IpAddr)>),
    /// Every address found is this host: a mail loop (permanent, 5.4.6).
    LoopsBack,
    /// No address to try; the last lookup error (deferred).
    Nothing(String),
}

/// Drops the addresses that are this host from the resolved MX hosts (in
/// order; `Err` is a failed lookup). Only when every address is this host
/// and no lookup failed is it a loop: a host that failed to resolve may be
/// elsewhere. Pure.
pub fn plan(resolved: Vec<(String, Result<Vec<IpAddr>, String>)>, port: u16, me: &Myself) -> Plan {
    let (mut targets, mut mine, mut last) = (Vec::new(), false, None);
    for (host, addrs) in resolved {
        match addrs {
            Ok(addrs) => {
                for ip in addrs {
                    if me.is_me(ip, port) {
                        mine = true;
                    } else {
                        targets.push((host.clone(), ip));
                    }
                }
            }
            Err(e) => last = Some(e),
        }
    }
    match (targets.is_empty(), mine, last) {
        (false, _, _) => Plan::Try(targets),
        (true, true, None) => Plan::LoopsBack,
        (true, _, last) => Plan::Nothing(last.unwrap_or_else(|| "no MX host".into())),
    }
}

/// The resolver.
pub struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// System configuration, or these name servers (UDP and TCP).
    pub fn new(nameservers: &[SocketAddr]) -> Result<MxResolver, MxError> {
        let builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| MxError::DnsConfig(e.to_string()))?
        } else {
            let mut group = Vec::new();
            for a in nameservers {
                group.push(NameServerConfig::new(*a, Protocol::Udp));
                group.push(NameServerConfig::new(*a, Protocol::Tcp));
            }
            let cfg = ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group));
            TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default())
        };
        let mut builder = builder;
        // Mail routing must follow DNS, not /etc/hosts; and keep answers fresh.
        builder.options_mut().use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        builder.options_mut().cache_size = 256;
        // Both families for MX hosts (the default asks AAAA only when there
        // is no A record): an IPv6 address is another way in when the IPv4
        // ones refuse. `addrs` puts IPv4 first, as before.
        builder.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        Ok(MxResolver { resolver: builder.build() })
    }

    /// MX hosts of a domain, best first (random among equal preferences).
    pub async fn hosts(&self, domain: &str) -> Result<Hosts, MxError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> =
                    lookup.iter().map(|m| (m.preference(), m.exchange().to_utf8().trim_end_matches('.').to_string())).collect();
                if mx.len() == 1 && mx[0].1.is_empty() {
                    return Ok(Hosts::NullMx);
                }
                mx.retain(|(_, h)| !h.is_empty());
                Ok(Hosts::Try(order(mx, rand::random::<u64>())))
            }
            Err(e) if e.is_nx_domain() => Ok(Hosts::NoDomain),
            Err(e) if e.is_no_records_found() => Ok(Hosts::Try(vec![domain.to_string()])), // implicit MX
            Err(e) => Err(MxError::MxLookup { domain: domain.to_string(), reason: e.to_string() }),
        }
    }

    /// Addresses of a host, IPv6 and IPv4.
    pub async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, MxError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        self.resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map(|l| {
                let mut ips: Vec<IpAddr> = l.iter().collect();
                ips.sort_by_key(|ip| ip.is_ipv6()); // stable: IPv4 first, DNS order within a family
                ips
            })
            .map_err(|e| MxError::HostLookup { host: host.to_string(), reason: e.to_string() })
    }
}

/// Sorts by preference; equal preferences are shuffled with `seed` (pure, tested).
pub fn order(mut mx: Vec<(u16, String)>, seed: u64) -> Vec<String> {
    let mut state = seed | 1;
    let mut keyed: Vec<(u16, u64, String)> = mx
        .drain(..)
        .map(|(p, h)| {
            // xorshift: a cheap deterministic shuffle key per entry
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (p, state, h)
        })
        .collect();
    keyed.sort();
    let mut seen = Vec::new();
    for (_, _, h) in keyed {
        if !seen.contains(&h) {
            seen.push(h);
        }
    }
    seen
}

/// Most entries in each per-domain (or per-host) map of [`MxDelivery`]:
/// past it, entries not in use are pruned, so mail to ever new domains
/// cannot grow them without bound (review, info notes of F14).
const MAX_MAP_ENTRIES: usize = 10_000;

/// Keeps `map` below `cap` entries before an insert: drops the entries
/// `idle` says nobody uses. Entries in use stay (they are bounded by the
/// deliveries under way).
fn prune_idle<V>(map: &mut HashMap<String, V>, cap: usize, idle: impl Fn(&V) -> bool) {
    if map.len() >= cap {
        map.retain(|_, v| !idle(v));
    }
}

/// Records a dead domain in `dead` (at most `cap` entries): expired entries
/// go first, then, if it is still full, the one that expires soonest.
fn mark_dead(dead: &mut HashMap<String, (Instant, String)>, cap: usize, domain: &str, until: Instant, why: String) {
    if !dead.contains_key(domain) {
        let now = Instant::now();
        prune_idle(dead, cap, |(t, _)| *t <= now);
        if dead.len() >= cap {
            if let Some(k) = dead.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone()) {
                dead.remove(&k);
            }
        }
    }
    dead.insert(domain.to_string(), (until, why));
}

/// MX delivery state shared by all attempts.
pub struct MxDelivery {
    resolver: MxResolver,
    port: u16,
    helo: String,
    tls: Option<Arc<ClientTls>>,
    concurrency: usize,
    backoff: Duration,
    me: Myself,
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    dead: Mutex<HashMap<String, (Instant, String)>>,
    pools: Mutex<HashMap<String, Arc<Smarthost>>>,
    /// Where TLS session results go (RFC 8460); [`Discard`] when TLS
    /// reporting is off.
    pub reports: Arc<dyn TlsReports>,
}

impl MxDelivery {
    /// Builds it from settings.
    pub fn new(s: &Settings) -> Result<MxDelivery, MxError> {
        let m = &s.config.mx;
        let tls = if m.tls == crate::config::OutboundTls::None {
            None
        } else {
            let cas: Vec<std::path::PathBuf> =
                [std::path::PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE)].into_iter().filter(|p| p.exists()).collect();
            Some(Arc::new(ClientTls::build(m.tls, &cas, None).map_err(|e| MxError::Tls(e.to_string()))?))
        };
        Ok(MxDelivery {
            resolver: MxResolver::new(&m.nameservers)?,
            port: m.port,
            helo: s.hostname.clone(),
            tls,
            concurrency: m.domain_concurrency,
            backoff: m.domain_backoff,
            me: Myself::from_settings(s),
            per_domain: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            reports: Arc::new(Discard),
        })
    }

    fn pool(&self, ip: IpAddr, host: &str) -> Arc<Smarthost> {
        let key = format!("{ip}|{host}");
        let mut pools = match self.pools.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // A pool only the map holds has no delivery under way.
        prune_idle(&mut pools, MAX_MAP_ENTRIES, |p| Arc::strong_count(p) == 1);
        pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Smarthost::new(Dest {
                    endpoint: Endpoint::Tcp(ip.to_string(), self.port),
                    lmtp: false,
                    helo: self.helo.clone(),
                    tls: self.tls.clone(),
                    implicit_tls: false,
                    server_name: host.to_string(),
                    credentials: None,
                    auth_plaintext: false,
                    auth_order: AUTH_ORDER,
                }))
            })
            .clone()
    }

    /// Delivers to recipients that all share `domain`. Returns the attempt
    /// and the host that took it (for `relay=`).
    pub async fn deliver_domain(&self, domain: &str, msg: &Message, rcpts: &[String]) -> (String, Attempt) {
        let n = rcpts.len();
        let defer = |e: MxError| Attempt::all(Outcome::Deferred(e.reply()), n, None);
        if let Some((until, why)) = self.dead.lock().ok().and_then(|d| d.get(domain).cloned()) {
            if Instant::now() < until {
                return (format!("mx:{domain}"), defer(MxError::BackingOff { domain: domain.to_string(), why }));
            }
        }
        let sem = {
            let mut m = match self.per_domain.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !m.contains_key(domain) {
                prune_idle(&mut m, MAX_MAP_ENTRIES, |s| Arc::strong_count(s) == 1);
            }
            m.entry(domain.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.concurrency))).clone()
        };
        let Ok(_permit) = sem.acquire_owned().await else { return (format!("mx:{domain}"), defer(MxError::ShuttingDown)) };
        // Domain literals ([192.0.2.1]) go straight to the address.
        let hosts = if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            Ok(Hosts::Try(vec![lit.trim_start_matches("ipv6:").to_string()]))
        } else {
            match super::idna::to_ascii(domain) {
                // DNS speaks A-labels (RFC 5891): bücher.example → xn--bcher-kva.example.
                Ok(ascii) => self.resolver.hosts(&ascii).await,
                Err(_) => Ok(Hosts::NoDomain),
            }
        };
        let hosts = match hosts {
            Ok(Hosts::Try(h)) => h,
            Ok(Hosts::NullMx) => {
                let o = Outcome::Failed(made::null_mx(domain));
                return (format!("mx:{domain}"), Attempt::all(o, n, None));
            }
            Ok(Hosts::NoDomain) => {
                let o = Outcome::Failed(made::no_such_domain(domain));
                return (format!("mx:{domain}"), Attempt::all(o, n, None));
            }
            Err(e) => return (format!("mx:{domain}"), defer(e)),
        };
        let mut resolved = Vec::with_capacity(hosts.len());
        for host in hosts {
            let addrs = match host.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => self.resolver.addrs(&host).await.map_err(|e| e.to_string()),
            };
            resolved.push((host, addrs));
        }
        let last = match plan(resolved, self.port, &self.me) {
            Plan::Try(targets) => {
                let mut last = String::from("no MX host");
                for (host, ip) in targets {
                    let r = self.pool(ip, &host).try_deliver(msg, rcpts).await;
                    // RFC 8460: one session result per attempt (no DANE/MTA-STS policy here).
                    super::tlsrpt::classify::record_no_policy(&*self.reports, domain, &host, ip, self.tls.is_some(), &r);
                    match r {
                        Ok(a) => {
                            if let Ok(mut d) = self.dead.lock() {
                                d.remove(domain);
                            }
                            return (format!("mx:{host}[{ip}]:{}", self.port), a);
                        }
                        Err(e) => last = format!("{host}[{ip}]: {}", e.reply()),
                    }
                }
                last
            }
            Plan::LoopsBack => {
                let o = Outcome::Failed(made::loops_back(domain));
                return (format!("mx:{domain}"), Attempt::all(o, n, None));
            }
            Plan::Nothing(last) => last,
        };
        if let Ok(mut d) = self.dead.lock() {
            mark_dead(&mut d, MAX_MAP_ENTRIES, domain, Instant::now() + self.backoff, last.clone());
        }
        (format!("mx:{domain}"), defer(MxError::Unreachable { domain: domain.to_string(), last }))
    }
}

impl Transport for MxDelivery {
    fn name(&self) -> String {
        "mx".into()
    }

    /// Delivers domain by domain (a `[[route]]` may list several); the
    /// attempt's `relay` names the host of each, comma-separated.
    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut domains: Vec<(String, Vec<usize>)> = Vec::new();
            for (i, r) in rcpts.iter().enumerate() {
                let d = r.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
                match domains.iter_mut().find(|(x, _)| *x == d) {
                    Some((_, v)) => v.push(i),
                    None => domains.push((d, vec![i])),
                }
            }
            let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
            let (mut relays, mut tls, mut dsn) = (Vec::new(), None, true);
            for (domain, idx) in domains {
                let sub: Vec<String> = idx.iter().map(|&i| rcpts[i].clone()).collect();
                let (relay, a) = self.deliver_domain(&domain, msg, &sub).await;
                relays.push(relay);
                tls = tls.or(a.tls);
                dsn &= a.dsn;
                for (&i, o) in idx.iter().zip(a.outcomes) {
                    outcomes[i] = Some(o);
                }
            }
            let outcomes = outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred(made::no_outcome()))).collect();
            Attempt { outcomes, tls, dsn, relay: Some(relays.join(",")) }
        })
    }
}

#[cfg(test)]
mod tests;
