//! Rate limits (`[inbound.rate]`, docs/inbound-rate.md): Postfix anvil's
//! connection, message and recipient rates per client network, plus per
//! authenticated user and per sender as policy daemons add them.
//!
//! Counting uses fixed windows: a counter starts at its first event, lasts
//! `per`, and starts over at 0 after it (anvil's model, and what the
//! shared store's `add` does, so both count alike). Counters live in
//! memory, bounded by `max_entries`; with `[cluster] redis` they are the
//! shared ones, and the local ones answer while the store is unreachable.
//!
//! May touch: the shared counters (`crate::counters`). RFCs: 5321 §3.8 and
//! §4.2.5 (421 at connect), §4.5.3.1.10 (452 for recipients), 3463 (4.7.0,
//! 4.7.1, 4.5.3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use postern_wire::{codes, Enhanced, Reply};

use crate::config::{Cidr, RateKey, RateLimit, RateLimits, RateWhat};
use crate::counters::SharedCounters;

/// The network `ip` is counted in, as text: `192.0.2.0/24`, `2001:db8::/64`
/// (IPv4-mapped IPv6 counts as IPv4).
pub fn network(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let p = v4_prefix.min(32);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            format!("{}/{p}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let p = v6_prefix.min(128);
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            format!("{}/{p}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Why a client is exempt, if it is: `exempt_networks` or `relay.networks`.
pub fn exemption(ip: IpAddr, exempt: &[Cidr], relay_exempt: bool, relay: &[Cidr]) -> Option<&'static str> {
    if exempt.iter().any(|c| c.contains(ip)) {
        Some("exempt_networks")
    } else if relay_exempt && relay.iter().any(|c| c.contains(ip)) {
        Some("relay.networks")
    } else {
        None
    }
}

/// One fixed window of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the window started (its first event).
    pub start: Instant,
    /// How long it lasts.
    pub len: Duration,
    /// Events in it.
    pub count: u64,
}

impl Window {
    /// The window after `n` more events at `now`: the same window while it
    /// lasts, a new one from `now` after it ended.
    pub fn bump(this: Option<Window>, n: u64, len: Duration, now: Instant) -> Window {
        match this {
            Some(w) if now < w.start + w.len => Window { count: w.count.saturating_add(n), ..w },
            _ => Window { start: now, len, count: n },
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.start + self.len
    }
}

/// The local counters, shared by every session of this node.
#[derive(Debug, Default)]
pub struct RateCounters {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateCounters {
    /// Adds `n` to `key` (window `len`) at `now`; returns the new count.
    /// Holds at most `max_entries` counters: expired ones are dropped
    /// first, then the oldest eighth.
    pub fn add(&self, key: &str, n: u64, len: Duration, now: Instant, max_entries: usize) -> u64 {
        let mut map = match self.windows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !map.contains_key(key) && map.len() >= max_entries.max(1) {
            map.retain(|_, w| !w.expired(now));
            if map.len() >= max_entries.max(1) {
                let mut starts: Vec<Instant> = map.values().map(|w| w.start).collect();
                starts.sort();
                let cut = starts[(starts.len() / 8).min(starts.len() - 1)];
                map.retain(|_, w| w.start > cut);
            }
        }
        let w = Window::bump(map.get(key).copied(), n, len, now);
        map.insert(key.to_string(), w);
        w.count
    }

    /// The counters held now.
    pub fn len(&self) -> usize {
        self.windows.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One event to count: who it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub what: RateWhat,
    /// The client's address.
    pub ip: IpAddr,
    /// The SMTP AUTH identity, if any.
    pub user: Option<&'a str>,
    /// The envelope sender; `None` or "" for the null sender.
    pub sender: Option<&'a str>,
}

/// A limit that applies to an event: the limit, the counter's key, and
/// what is counted (for the reply and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applies<'c> {
    /// The limit.
    pub limit: &'c RateLimit,
    /// The counter: `rate:KEY:WHAT:SECONDS:SUBJECT`.
    pub counter: String,
    /// Who is counted, as the reply names it: `[ip]`, `user NAME`, `<addr>`.
    pub subject: String,
}

/// The limits of `cfg` that count `ev` (a client in an exempt network
/// is the caller's business).
pub fn applicable<'c>(cfg: &'c RateLimits, ev: &Event<'_>) -> Vec<Applies<'c>> {
    let mut out = Vec::new();
    for limit in cfg.limit.iter().filter(|l| l.what == ev.what) {
        let (id, subject) = match limit.key {
            RateKey::Client => (network(ev.ip, cfg.ipv4_prefix, cfg.ipv6_prefix), format!("[{}]", ev.ip)),
            RateKey::User => match ev.user {
                Some(u) => (u.to_ascii_lowercase(), format!("user {u}")),
                None => continue,
            },
            RateKey::Sender => match ev.sender.filter(|s| !s.is_empty()) {
                Some(s) => (s.to_ascii_lowercase(), format!("<{s}>")),
                None => continue,
            },
        };
        let counter = format!("rate:{}:{}:{}:{id}", key_name(limit.key), what_name(limit.what), limit.per.as_secs());
        out.push(Applies { limit, counter, subject });
    }
    out
}

/// A limit that an event went over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit.
    pub limit: RateLimit,
    /// Who is counted (`[ip]`, `user NAME`, `<addr>`).
    pub subject: String,
    /// The count including this event.
    pub count: u64,
}

impl Exceeded {
    /// The limit as the log's `limit=` field: `client messages 5/1m`.
    pub fn log_text(&self) -> String {
        format!("{} {} {}/{}", key_name(self.limit.key), what_name(self.limit.what), self.limit.max, per_text(self.limit.per))
    }

    /// The reply, naming the limit. Connections: 421 4.7.0 (RFC 5321 §3.8:
    /// the server closes; 4.7.0 is a policy refusal). Messages: 450 4.7.1
    /// (Postfix's reply; 4.7.1 "not authorized" as policy, 450 as a
    /// transient refusal of the command). Recipients: 452 4.5.3 (RFC 5321
    /// §4.5.3.1.10 names 452 for too many recipients, RFC 3463 4.5.3).
    pub fn reply(&self) -> Reply {
        let limit = format!("(limit {} per {})", self.limit.max, per_text(self.limit.per));
        match self.limit.what {
            RateWhat::Connections => codes::too_many_connections().with_text(format!("Too many connections from {} {limit}", self.subject)),
            RateWhat::Messages => Reply::new(450, Enhanced(4, 7, 1), format!("Error: too many messages from {} {limit}", self.subject)),
            RateWhat::Recipients => {
                codes::too_many_recipients().with_text(format!("Error: too many recipients from {} {limit}", self.subject))
            }
        }
    }
}

/// Counts `ev` against every limit that applies; the first one it went
/// over, if any. Shared counters are used when given and reachable.
pub async fn count(cfg: &RateLimits, local: &RateCounters, shared: Option<&dyn SharedCounters>, ev: &Event<'_>) -> Option<Exceeded> {
    let mut over = None;
    for a in applicable(cfg, ev) {
        let remote = match shared {
            Some(s) => s.add(&a.counter, 1, a.limit.per).await,
            None => None,
        };
        let n = match remote {
            Some(n) => n,
            None => local.add(&a.counter, 1, a.limit.per, Instant::now(), cfg.max_entries),
        };
        if n > a.limit.max && over.is_none() {
            over = Some(Exceeded { limit: a.limit.clone(), subject: a.subject, count: n });
        }
    }
    over
}

/// `postern explain`: the limits that would count this client, user and
/// sender, one line each.
pub fn explain(cfg: &RateLimits, relay: &[Cidr], ip: IpAddr, user: Option<&str>, sender: Option<&str>) -> Vec<String> {
    if cfg.limit.is_empty() {
        return vec!["no limits configured".into()];
    }
    if let Some(why) = exemption(ip, &cfg.exempt_networks, cfg.exempt_relay_networks, relay) {
        return vec![format!("client exempt ({why})")];
    }
    let mut out = Vec::new();
    for what in [RateWhat::Connections, RateWhat::Messages, RateWhat::Recipients] {
        for a in applicable(cfg, &Event { what, ip, user, sender }) {
            out.push(format!("{} {} per {} ({})", what_name(what), a.limit.max, per_text(a.limit.per), a.subject));
        }
    }
    if out.is_empty() {
        out.push("no limit counts this client".into());
    }
    out
}

fn per_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn key_name(k: RateKey) -> &'static str {
    match k {
        RateKey::Client => "client",
        RateKey::User => "user",
        RateKey::Sender => "sender",
    }
}

fn what_name(w: RateWhat) -> &'static str {
    match w {
        RateWhat::Connections => "connections",
        RateWhat::Messages => "messages",
        RateWhat::Recipients => "recipients",
    }
}

#[cfg(test)]
#[path = "rate_tests.rs"]
mod tests;
