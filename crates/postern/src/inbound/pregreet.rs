//! The pre-greeting test (issue 21 item 3, postscreen's pregreet and
//! pipelining tests, in-process): before the 220 the server waits
//! `greet_delay`; an SMTP client must wait for the greeting (RFC 5321
//! §3.1, §4.3.1), so one that talks first is a bot. Clients that waited are
//! remembered for `pass_ttl` in a bounded in-memory cache and not delayed
//! again. The pipelining test: RFC 2920 §3.1 lets a client send commands
//! without waiting only after EHLO advertised PIPELINING, and never past
//! EHLO itself; a client that does is counted.
//!
//! May touch: nothing (memory only). RFCs: 5321 §3.1, 2920 §3.1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Cidr, Pregreet};

/// Clients that passed the test, with the time their pass ends.
#[derive(Debug, Default)]
pub struct PassCache {
    passed: Mutex<HashMap<IpAddr, Instant>>,
}

impl PassCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        match self.passed.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// True if `ip` passed within its `pass_ttl`.
    pub fn passed(&self, ip: IpAddr) -> bool {
        self.map().get(&ip).is_some_and(|until| *until > Instant::now())
    }

    /// Remembers that `ip` passed, for `ttl`; at most `max` clients (expired
    /// ones go first, then the ones closest to expiry).
    pub fn pass(&self, ip: IpAddr, ttl: Duration, max: usize) {
        let mut m = self.map();
        let now = Instant::now();
        if m.len() >= max && !m.contains_key(&ip) {
            m.retain(|_, until| *until > now);
            while m.len() >= max.max(1) {
                let Some(oldest) = m.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) else { break };
                m.remove(&oldest);
            }
        }
        if max > 0 {
            m.insert(ip, now + ttl);
        }
    }

    /// Forgets `ip` (it failed a later test).
    pub fn forget(&self, ip: IpAddr) {
        self.map().remove(&ip);
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the test does with a client at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Greet at once: test off, exempt network, allow-listed, or passed before.
    Greet(&'static str),
    /// Wait `greet_delay` first, watching the socket.
    Wait(Duration),
}

/// The plan for `ip` (pure but for the cache answer passed in).
pub fn plan(cfg: &Pregreet, ip: IpAddr, relay: &[Cidr], passed: bool, allowlisted: bool) -> Plan {
    if cfg.greet_delay.is_zero() {
        Plan::Greet("off")
    } else if cfg.exempt_networks.iter().chain(relay).any(|n| n.contains(ip)) {
        Plan::Greet("exempt")
    } else if allowlisted {
        Plan::Greet("allowlisted")
    } else if passed {
        Plan::Greet("cached")
    } else {
        Plan::Wait(cfg.greet_delay)
    }
}

/// True if a command was pipelined where RFC 2920 does not allow it:
/// `more_input` (octets after the current command already arrived) with
/// HELO/EHLO (`at_helo`) or after a HELO (`extended` false).
pub fn pipelined_illegally(at_helo: bool, extended: bool, more_input: bool) -> bool {
    more_input && (at_helo || !extended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let on = Pregreet { greet_delay: Duration::from_secs(6), ..Default::default() };
        let relay: Vec<Cidr> = vec!["192.0.2.0/24".parse().expect("cidr")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cases: &[(&Pregreet, &str, bool, bool, Plan)] = &[
            (&Pregreet::default(), "198.51.100.1", false, false, Plan::Greet("off")),
            (&on, "127.0.0.2", false, false, Plan::Greet("exempt")),
            (&on, "192.0.2.9", false, false, Plan::Greet("exempt")),
            (&on, "198.51.100.1", false, true, Plan::Greet("allowlisted")),
            (&on, "198.51.100.1", true, false, Plan::Greet("cached")),
            (&on, "198.51.100.1", false, false, Plan::Wait(Duration::from_secs(6))),
        ];
        for (cfg, addr, passed, allow, want) in cases {
            assert_eq!(plan(cfg, ip(addr), &relay, *passed, *allow), *want, "{addr}");
        }
    }

    #[test]
    fn pipelining_rule() {
        // (at_helo, extended, more_input, illegal)
        let cases = [
            (true, true, true, true),
            (true, false, true, true),
            (true, true, false, false),
            (false, true, true, false),
            (false, false, true, true),
            (false, false, false, false),
        ];
        for (h, e, m, want) in cases {
            assert_eq!(pipelined_illegally(h, e, m), want, "{h} {e} {m}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cache_expires_and_is_bounded() {
        let c = PassCache::default();
        let a: IpAddr = "198.51.100.1".parse().expect("ip");
        c.pass(a, Duration::from_secs(10), 2);
        assert!(c.passed(a));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!c.passed(a));
        for i in 0..5u8 {
            c.pass(IpAddr::from([198, 51, 100, i]), Duration::from_secs(100 + u64::from(i)), 2);
        }
        assert_eq!(c.len(), 2);
        assert!(c.passed(IpAddr::from([198, 51, 100, 4])));
        c.forget(IpAddr::from([198, 51, 100, 4]));
        assert!(!c.passed(IpAddr::from([198, 51, 100, 4])));
    }
}
