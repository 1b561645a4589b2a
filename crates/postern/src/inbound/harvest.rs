//! Directory-harvest protection: unknown local recipients (550 5.1.1) are
//! counted per client address (IPv6: per `limits.ipv6_prefix` network)
//! within a window, across connections; past `harvest_delay_after` each
//! further one is answered late (a growing tarpit), past
//! `harvest_drop_after` the client gets 421 4.7.0 and is disconnected.
//! Counted in the cluster's shared store when one is configured, in memory
//! otherwise (and when the store is unreachable).
//!
//! May touch: the shared counters (`crate::counters`). No RFCs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postern_wire::{Enhanced, Reply};

use crate::counters::SharedCounters;

/// Entries kept in memory at most: past it, expired ones are pruned and,
/// if that is not enough, the map starts afresh (a harvester then starts
/// from zero, which is better than unbounded memory).
const MAX_ENTRIES: usize = 50_000;

/// What to do about one more unknown recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HarvestAction {
    /// Answer 550 5.1.1 at once.
    Refuse,
    /// Wait this long, then answer 550 5.1.1.
    Delay(Duration),
    /// Answer 421 4.7.0 and disconnect.
    Drop,
}

/// The limits (`[inbound.rdns] harvest_*`).
#[derive(Debug, Clone, Copy)]
pub struct HarvestLimits {
    /// Unknown recipients answered at once (0: never delayed).
    pub delay_after: u32,
    /// Unknown recipients after which the client is dropped (0: never).
    pub drop_after: u32,
    /// The first delay, and the step it grows by.
    pub step: Duration,
    /// The longest delay.
    pub max: Duration,
}

/// The action for the `count`-th unknown recipient (counting from 1). Pure.
pub fn action(count: u64, l: &HarvestLimits) -> HarvestAction {
    if l.drop_after > 0 && count >= u64::from(l.drop_after) {
        return HarvestAction::Drop;
    }
    if l.delay_after > 0 && count > u64::from(l.delay_after) {
        let n = u32::try_from(count - u64::from(l.delay_after)).unwrap_or(u32::MAX);
        return HarvestAction::Delay(l.step.saturating_mul(n).min(l.max));
    }
    HarvestAction::Refuse
}

/// `421 4.7.0 Too many unknown recipients`.
pub fn drop_reply() -> Reply {
    Reply::new(421, Enhanced(4, 7, 0), "Too many unknown recipients, closing connection")
}

/// The counter key of a client.
pub fn key(ip: IpAddr, ipv6_prefix: u8) -> String {
    format!("harvest:{}", crate::auth::client_key(ip, ipv6_prefix))
}

/// Unknown-recipient counts kept in memory, per key, in fixed windows.
#[derive(Debug, Default)]
pub struct HarvestCounts {
    local: Mutex<HashMap<String, (Instant, u64)>>,
}

impl HarvestCounts {
    /// Counts one more unknown recipient for `key` and returns the count
    /// in the current window (the shared store's when it answers).
    pub async fn add(&self, shared: Option<&dyn SharedCounters>, key: &str, window: Duration) -> u64 {
        if let Some(store) = shared {
            if let Some(n) = store.add(key, 1, window).await {
                return n;
            }
        }
        self.add_local(key, window, Instant::now())
    }

    fn add_local(&self, key: &str, window: Duration, now: Instant) -> u64 {
        let mut map = match self.local.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let e = map.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        let l = HarvestLimits { delay_after: 5, drop_after: 20, step: Duration::from_secs(1), max: Duration::from_secs(10) };
        let off = HarvestLimits { delay_after: 0, drop_after: 0, ..l };
        let table: &[(u64, &HarvestLimits, HarvestAction)] = &[
            (1, &l, HarvestAction::Refuse),
            (5, &l, HarvestAction::Refuse),
            (6, &l, HarvestAction::Delay(Duration::from_secs(1))),
            (8, &l, HarvestAction::Delay(Duration::from_secs(3))),
            (19, &l, HarvestAction::Delay(Duration::from_secs(10))),
            (20, &l, HarvestAction::Drop),
            (500, &l, HarvestAction::Drop),
            (500, &off, HarvestAction::Refuse),
        ];
        for (n, lim, want) in table {
            assert_eq!(action(*n, lim), *want, "{n}");
        }
    }

    #[test]
    fn windows_and_keys() {
        let c = HarvestCounts::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        assert_eq!(c.add_local("k", w, t0), 1);
        assert_eq!(c.add_local("k", w, t0 + Duration::from_secs(30)), 2);
        assert_eq!(c.add_local("other", w, t0), 1);
        assert_eq!(c.add_local("k", w, t0 + Duration::from_secs(61)), 1);
        let a = key("2001:db8:1:2:3::1".parse().unwrap(), 64);
        assert_eq!(a, key("2001:db8:1:2:ffff::9".parse().unwrap(), 64));
        assert_ne!(key("192.0.2.1".parse().unwrap(), 64), key("192.0.2.2".parse().unwrap(), 64));
    }
}
