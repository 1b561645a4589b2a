//! The AUTH brute-force throttle: progressive delays first, an address ban
//! only at a much higher count, and no lock-outs of the right password.
//!
//! - Per client address (IPv6: per `auth.ipv6_prefix` network): past
//!   `delay_after` failures in `failure_window`, failure replies wait 1 s,
//!   2 s, 4 s, ... up to `max_failure_delay` (Dovecot's auth penalty); at
//!   `max_failures_per_ip` the address is banned for `ban_time`, unless it
//!   is in `ban_exempt_networks` (fail2ban's `ignoreip`).
//! - Per user: past `max_failures_per_user` failures, attempts for that user
//!   from addresses that never logged in as that user wait before the
//!   password is checked. Never a refusal.
//! - Remembered logins: an address where a user logged in within
//!   `login_memory` is never slowed down for that user, nor refused by an
//!   address ban.
//!
//! - Several nodes (`[cluster] redis`): the session asks the shared store
//!   first and hands its answers in as [`SharedFacts`]; failures counted on
//!   any node, bans set by any node and logins remembered by any node then
//!   count here too. Without answers (no store, or it is down) the local
//!   maps decide alone.
//!
//! Every map is bounded (`throttle_max_entries`, least recently used
//! dropped first). Pure over the instant it is given (tokio's `Instant`,
//! so tests run on a paused clock); no I/O.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Auth;

/// The longest authentication identity taken from a client, in octets.
/// A longer one fails the exchange (501 5.5.2) and counts as a failure of
/// the address only.
pub const MAX_AUTHCID: usize = 255;

/// What the throttle says about an AUTH attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Go ahead after waiting this long.
    Delay(Duration),
    /// The address is banned until the ban ends.
    Banned,
}

/// What the cluster's shared store said about an attempt (see
/// `crate::cluster::throttle`); `None`: not asked, or unreachable, and the
/// local counters decide alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedFacts {
    /// A node banned the address.
    pub banned: Option<bool>,
    /// Somebody logged in from the address within `login_memory`, on any node.
    pub someone_logged_in: Option<bool>,
    /// This user logged in from the address within `login_memory`, on any node.
    pub user_logged_in: Option<bool>,
    /// The user's failures in the window, on every node.
    pub user_failures: Option<u64>,
}

/// The key an address is counted under: IPv4 (IPv4-mapped IPv6 unmapped)
/// as is, IPv6 masked to `prefix` bits (at most 128).
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(prefix.min(128));
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

/// 0 up to `after` failures, then 1 s, doubling, at most `max`.
fn progressive(n: u32, after: u32, max: Duration) -> Duration {
    if n <= after {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (n - after - 1).min(32)).min(max)
}

/// Recent failures of one address or one user.
#[derive(Debug)]
struct Failures {
    times: VecDeque<Instant>,
    banned_until: Option<Instant>,
    last: Instant,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures { times: VecDeque::new(), banned_until: None, last: now }
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while self.times.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            self.times.pop_front();
        }
        if self.banned_until.is_some_and(|b| b <= now) {
            self.banned_until = None;
            self.times.clear();
        }
    }

    fn push(&mut self, now: Instant, keep: usize) {
        self.times.push_back(now);
        while self.times.len() > keep {
            self.times.pop_front();
        }
        self.last = now;
    }

    fn count(&self) -> u32 {
        u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    fn stale(&self, now: Instant, window: Duration) -> bool {
        self.banned_until.is_none_or(|b| b <= now) && now.saturating_duration_since(self.last) >= window
    }
}

/// A ban another node set, for an address this node may ban.
fn shared_ban(ip: IpAddr, cfg: &Auth, shared: &SharedFacts) -> bool {
    shared.banned == Some(true) && !cfg.ban_exempt_networks.iter().any(|c| c.contains(ip))
}

/// Makes room for one more entry: drops stale entries, then, if still
/// full, the least recently used eighth.
fn make_room<K: Hash + Eq, V>(map: &mut HashMap<K, V>, cap: usize, last: impl Fn(&V) -> Instant, stale: impl Fn(&V) -> bool) {
    let cap = cap.max(1);
    if map.len() < cap {
        return;
    }
    map.retain(|_, v| !stale(v));
    if map.len() < cap {
        return;
    }
    let drop = (map.len() + 1 - cap + cap / 8).min(map.len());
    let mut times: Vec<Instant> = map.values().map(&last).collect();
    let (_, nth, _) = times.select_nth_unstable(drop - 1);
    let threshold = *nth;
    map.retain(|_, v| last(v) > threshold);
}

#[derive(Debug, Default)]
struct Maps {
    addrs: HashMap<IpAddr, Failures>,
    users: HashMap<String, Failures>,
    /// (user, address key) -> last successful login.
    logins: HashMap<(String, IpAddr), Instant>,
    /// address key -> last successful login of anyone.
    login_addrs: HashMap<IpAddr, Instant>,
}

impl Maps {
    fn knows(&self, user: &str, key: IpAddr, now: Instant, cfg: &Auth) -> bool {
        self.logins.get(&(user.to_string(), key)).is_some_and(|t| now.saturating_duration_since(*t) < cfg.login_memory)
    }

    fn banned(&mut self, key: IpAddr, now: Instant, cfg: &Auth) -> bool {
        let Some(f) = self.addrs.get_mut(&key) else { return false };
        f.prune(now, cfg.failure_window);
        f.banned_until.is_some()
    }
}

/// Failure counters per client address and per user, and remembered logins.
#[derive(Debug, Default)]
pub struct Throttle {
    maps: Mutex<Maps>,
}

impl Throttle {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        match self.maps.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// At the AUTH command, before the user is known: `Banned` if the
    /// address is banned and nobody logged in from it within `login_memory`.
    pub fn check_address(&self, ip: IpAddr, now: Instant, cfg: &Auth) -> Verdict {
        self.check_address_with(ip, now, cfg, &SharedFacts::default())
    }

    /// [`Throttle::check_address`] with what the shared store said: a ban
    /// set by another node counts (unless the address is exempt), and so
    /// does a login remembered by another node.
    pub fn check_address_with(&self, ip: IpAddr, now: Instant, cfg: &Auth, shared: &SharedFacts) -> Verdict {
        let key = client_key(ip, cfg.ipv6_prefix);
        let mut m = self.maps();
        if !m.banned(key, now, cfg) && !shared_ban(ip, cfg, shared) {
            return Verdict::Allow;
        }
        let someone = m.login_addrs.get(&key).is_some_and(|t| now.saturating_duration_since(*t) < cfg.login_memory)
            || shared.someone_logged_in == Some(true);
        if someone {
            Verdict::Allow
        } else {
            Verdict::Banned
        }
    }

    /// Once the user is known, before the password is checked. An address
    /// where this user logged in before: always `Allow`. Otherwise `Banned`
    /// while the address is banned, or a `Delay` once the user has more
    /// than `max_failures_per_user` recent failures.
    pub fn check_user(&self, ip: IpAddr, user: &str, now: Instant, cfg: &Auth) -> Verdict {
        self.check_user_with(ip, user, now, cfg, &SharedFacts::default())
    }

    /// [`Throttle::check_user`] with what the shared store said: the
    /// user's failures on every node, bans and logins of every node.
    pub fn check_user_with(&self, ip: IpAddr, user: &str, now: Instant, cfg: &Auth, shared: &SharedFacts) -> Verdict {
        let key = client_key(ip, cfg.ipv6_prefix);
        let mut m = self.maps();
        if m.knows(user, key, now, cfg) || shared.user_logged_in == Some(true) {
            return Verdict::Allow;
        }
        if m.banned(key, now, cfg) || shared_ban(ip, cfg, shared) {
            return Verdict::Banned;
        }
        let local = match m.users.get_mut(user) {
            Some(f) => {
                f.prune(now, cfg.failure_window);
                f.count()
            }
            None => 0,
        };
        let everywhere = u32::try_from(shared.user_failures.unwrap_or(0)).unwrap_or(u32::MAX);
        let d = progressive(local.max(everywhere).saturating_add(1), cfg.max_failures_per_user, cfg.max_failure_delay);
        if d.is_zero() {
            Verdict::Allow
        } else {
            Verdict::Delay(d)
        }
    }

    /// Records a failure; returns how long to delay the reply and whether
    /// this failure started a ban of the address.
    pub fn fail(&self, ip: IpAddr, user: Option<&str>, now: Instant, cfg: &Auth) -> (Duration, bool) {
        self.fail_with(ip, user, now, cfg, None)
    }

    /// [`Throttle::fail`] where `everywhere` is the address's failure count
    /// on every node, this one included (the shared store's answer): the
    /// delay and the ban go by the larger of it and the local count.
    pub fn fail_with(&self, ip: IpAddr, user: Option<&str>, now: Instant, cfg: &Auth, everywhere: Option<u64>) -> (Duration, bool) {
        let key = client_key(ip, cfg.ipv6_prefix);
        let keep = cfg.max_failures_per_ip.max(cfg.max_failures_per_user).max(cfg.delay_after).saturating_add(64) as usize;
        let cap = cfg.throttle_max_entries;
        let window = cfg.failure_window;
        let mut m = self.maps();
        if !m.addrs.contains_key(&key) {
            make_room(&mut m.addrs, cap, |f| f.last, |f| f.stale(now, window));
        }
        let f = m.addrs.entry(key).or_insert_with(|| Failures::new(now));
        f.prune(now, window);
        f.push(now, keep);
        let n = f.count().max(u32::try_from(everywhere.unwrap_or(0)).unwrap_or(u32::MAX));
        let mut banned = false;
        let exempt = cfg.ban_exempt_networks.iter().any(|c| c.contains(ip));
        if !exempt && n >= cfg.max_failures_per_ip && f.banned_until.is_none() {
            f.banned_until = Some(now + cfg.ban_time);
            banned = true;
        }
        if let Some(u) = user.filter(|u| u.len() <= MAX_AUTHCID) {
            if !m.users.contains_key(u) {
                make_room(&mut m.users, cap, |f| f.last, |f| f.stale(now, window));
            }
            let f = m.users.entry(u.to_string()).or_insert_with(|| Failures::new(now));
            f.prune(now, window);
            f.push(now, keep);
        }
        (progressive(n, cfg.delay_after, cfg.max_failure_delay), banned)
    }

    /// Records a successful login of `user` from `ip`.
    pub fn succeed(&self, ip: IpAddr, user: &str, now: Instant, cfg: &Auth) {
        let key = client_key(ip, cfg.ipv6_prefix);
        let cap = cfg.throttle_max_entries;
        let memory = cfg.login_memory;
        let mut m = self.maps();
        let pair = (user.to_string(), key);
        if !m.logins.contains_key(&pair) {
            make_room(&mut m.logins, cap, |t| *t, |t| now.saturating_duration_since(*t) >= memory);
        }
        m.logins.insert(pair, now);
        if !m.login_addrs.contains_key(&key) {
            make_room(&mut m.login_addrs, cap, |t| *t, |t| now.saturating_duration_since(*t) >= memory);
        }
        m.login_addrs.insert(key, now);
    }

    /// Entries in the maps (addresses, users, logins), for tests.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        let m = self.maps();
        (m.addrs.len(), m.users.len(), m.logins.len())
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
