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
//! DANE (RFC 7672, `mx.tls = "dane"`): the MX RRset's DNSSEC status, then
//! per host the TLS it must get ([`super::dane::HostTls`], decided in
//! `mx/dane_host.rs` by `MxDelivery::host_tls`); a host that fails DANE is
//! deferred and the next one tried, never in cleartext.
//!
//! [`MxDelivery`] is a [`Transport`]: used for non-local domains when no
//! smarthost is set, and for `[[route]] transport = "mx"` domains.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use postern_wire::Enhanced;

use super::dane::dns::SecureDns;
use super::dane::HostTls;
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
    /// DANE applied and no host passed it (or its DNSSEC lookups failed).
    #[error("no MX host of {domain} passed DANE; last: {last}")]
    Dane {
        /// The domain.
        domain: String,
        /// The last host's failure.
        last: String,
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
            MxError::Dane { .. } => Enhanced(4, 7, 5),
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

/// A connection pool to one MX address and the TLS config it uses.
type Pool = (Arc<Smarthost>, Option<Arc<ClientTls>>);

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
    pools: Mutex<HashMap<String, Pool>>,
    /// `mx.tls = "dane"`: the validating resolvers and the "encrypt"
    /// config for hosts whose TLSA records are all unusable.
    dane: Option<(SecureDns, Arc<ClientTls>)>,
    /// Where TLS session results go (RFC 8460); [`Discard`] when TLS
    /// reporting is off.
    pub reports: Arc<dyn TlsReports>,
    /// MTA-STS (RFC 8461, `delivery/mta_sts`); `None` when `[mta_sts]` is off.
    mta_sts: Option<super::mta_sts::MtaSts>,
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
            // "dane" hosts without (secure) TLSA records get "may".
            let policy = if m.tls == crate::config::OutboundTls::Dane { crate::config::OutboundTls::May } else { m.tls };
            Some(Arc::new(ClientTls::build(policy, &cas, None).map_err(|e| MxError::Tls(e.to_string()))?))
        };
        let dane = if m.tls == crate::config::OutboundTls::Dane { Some(dane_host::setup(m)?) } else { None };
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
            dane,
            reports: Arc::new(Discard),
            mta_sts: super::mta_sts::MtaSts::new(s).map_err(MxError::Tls)?,
        })
    }

    /// The connection pool for `host` at `ip` with the TLS `verdict`
    /// demands (one pool per TLSA RRset, so changed records get new
    /// connections), and that TLS config. `sts`: the MTA-STS client for
    /// a host under a policy, used only where DANE does not decide
    /// (RFC 8461 §2: DANE takes precedence).
    fn pool(&self, ip: IpAddr, host: &str, verdict: &HostTls, sts: Option<super::mta_sts::HostTls>) -> Result<Pool, MxError> {
        // DANE decides where it authenticates (secure usable TLSA) or defers;
        // with only unusable records it authenticates nothing, so an
        // MTA-STS policy still applies (review: else `encrypt` would win).
        let sts = if matches!(verdict, HostTls::Dane(_) | HostTls::Defer { .. }) { None } else { sts };
        let key = format!("{ip}|{host}|{}|{}", verdict.pool_key(), sts.as_ref().map_or("", |t| t.tag));
        let mut pools = match self.pools.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(p) = pools.get(&key) {
            return Ok(p.clone());
        }
        // A pool only the map holds has no delivery under way.
        prune_idle(&mut pools, MAX_MAP_ENTRIES, |p| Arc::strong_count(&p.0) == 1);
        let tls = match sts {
            Some(s) => Some(s.tls),
            None => self.tls_for(host, verdict)?,
        };
        let pool = Arc::new(Smarthost::new(Dest {
            endpoint: Endpoint::Tcp(ip.to_string(), self.port),
            lmtp: false,
            helo: self.helo.clone(),
            tls: tls.clone(),
            implicit_tls: false,
            server_name: host.to_string(),
            credentials: None,
            auth_plaintext: false,
            auth_order: AUTH_ORDER,
            recipient_policy: true,
        }));
        pools.insert(key, (pool.clone(), tls.clone()));
        Ok((pool, tls))
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
        let mut ascii_domain = None;
        let hosts = if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            Ok(Hosts::Try(vec![lit.trim_start_matches("ipv6:").to_string()]))
        } else {
            match super::idna::to_ascii(domain) {
                // DNS speaks A-labels (RFC 5891): bücher.example → xn--bcher-kva.example.
                Ok(ascii) => {
                    let h = self.resolver.hosts(&ascii).await;
                    ascii_domain = Some(ascii);
                    h
                }
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
        // RFC 7672 §2.2.1: DANE only below a secure MX RRset (or a secure
        // denial of one, for the implicit MX).
        let mx_secure = match &ascii_domain {
            Some(ascii) => match self.mx_secure(ascii).await {
                Ok(s) => s,
                Err(e) => return (format!("mx:{domain}"), defer(e)),
            },
            None => false,
        };
        // ---- MTA-STS (RFC 8461, delivery/mta_sts): an `enforce` policy drops
        // the MX hosts it does not list and gives the others a verifying TLS
        // client; `sts.record` reports each session (RFC 8460). ----
        let (hosts, sts) = match &self.mta_sts {
            Some(m) => match m.apply(domain, hosts, self.reports.clone()).await {
                Ok(x) => x,
                Err(reply) => return (format!("mx:{domain}"), Attempt::all(Outcome::Deferred(reply), n, None)),
            },
            None => (hosts, super::mta_sts::Applied::none()),
        };
        // ---- end MTA-STS ----
        let mut resolved = Vec::with_capacity(hosts.len());
        for host in hosts {
            let addrs = match host.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => self.resolver.addrs(&host).await.map_err(|e| e.to_string()),
            };
            resolved.push((host, addrs));
        }
        let mut dane_failed = false;
        let last = match plan(resolved, self.port, &self.me) {
            Plan::Try(targets) => {
                let mut last = String::from("no MX host");
                let mut verdicts: HashMap<String, HostTls> = HashMap::new();
                for (host, ip) in targets {
                    let verdict = match verdicts.get(&host) {
                        Some(v) => v.clone(),
                        None => {
                            let v = self.host_tls(&host, mx_secure).await;
                            verdicts.insert(host.clone(), v.clone());
                            v
                        }
                    };
                    // Reports and logs name the policy domain in A-label form (RFC 8460 §4.4).
                    let report_domain = ascii_domain.as_deref().unwrap_or(domain);
                    match self.try_host(report_domain, &host, ip, (&verdict, mx_secure), &sts, msg, rcpts).await {
                        Ok(a) => {
                            if let Ok(mut d) = self.dead.lock() {
                                d.remove(domain);
                            }
                            return (format!("mx:{host}[{ip}]:{}", self.port), a);
                        }
                        Err((why, dane)) => {
                            last = format!("{host}[{ip}]: {why}");
                            dane_failed = dane;
                        }
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
        let e = if dane_failed {
            MxError::Dane { domain: domain.to_string(), last }
        } else {
            MxError::Unreachable { domain: domain.to_string(), last }
        };
        (format!("mx:{domain}"), defer(e))
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

mod dane_host;
mod resolve;
pub use self::resolve::{no_mx, order, MxResolver, NoMx};
#[cfg(test)]
mod tests;
