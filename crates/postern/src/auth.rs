//! SMTP AUTH policy around the SASL machines: which mechanisms a
//! connection may use, the EXTERNAL identity mapping, and the brute-force
//! throttle. Pure functions and an in-memory counter; no I/O.
//!
//! Policy (stricter than sendmail's `AuthOptions=A,p,y`): nothing is
//! offered or accepted before TLS unless the client is in
//! `auth.plaintext_networks`; never anonymous; CRAM-MD5 only under TLS too;
//! -PLUS mechanisms only under TLS (they need channel bindings).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

// tokio's Instant: the same as std's in production, but it follows a
// paused test clock, so ban expiry is tested without waiting.
use tokio::time::Instant;

use postern_wire::sasl::{Mechanism, Success};

use crate::config::{Auth, ExternalIdentity, Listener};
use crate::tls::ClientCertIdentity;
use crate::users::UserDb;

/// An authenticated identity: proof that a SASL exchange succeeded. The
/// fields are private, so the relay decision (which trusts it) can only get
/// one from [`Authenticated::from_exchange`] or, for `postern explain`'s
/// what-if questions, [`Authenticated::dangerous_assume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    user: String,
    mechanism: Mechanism,
}

impl Authenticated {
    /// The identity a successful SASL exchange established: only the wire
    /// crate's SASL machines can build a [`Success`].
    pub(crate) fn from_exchange(success: &Success, mechanism: Mechanism) -> Authenticated {
        Authenticated { user: success.authcid().to_ascii_lowercase(), mechanism }
    }

    /// An identity nobody proved: only for `postern explain` and tests,
    /// which ask "what if this user had authenticated". Never on a path that
    /// handles a connection.
    pub fn dangerous_assume(user: &str) -> Authenticated {
        Authenticated { user: user.to_ascii_lowercase(), mechanism: Mechanism::Plain }
    }

    /// The user (lower-case).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The mechanism used.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
}

/// True if any listener may offer a mechanism that needs a
/// plaintext-equivalent secret (CRAM-MD5, DIGEST-MD5).
pub fn plaintext_secret_mechanisms_enabled(c: &crate::config::Config) -> bool {
    c.listeners.iter().any(|l| listener_mechanisms(&c.auth, l).iter().any(|m| m.needs_plaintext_secret()))
}

/// Mechanisms configured for a listener, in order.
pub fn listener_mechanisms(auth: &Auth, l: &Listener) -> Vec<Mechanism> {
    l.auth_mechanisms.as_ref().unwrap_or(&auth.mechanisms).iter().map(|m| m.0).collect()
}

/// Mechanisms usable right now: empty before TLS unless the client is in a
/// plaintext network; -PLUS only with TLS; EXTERNAL only with a verified
/// client certificate.
pub fn usable_mechanisms(auth: &Auth, l: &Listener, tls: bool, client: IpAddr, has_verified_cert: bool) -> Vec<Mechanism> {
    if !tls && !auth.plaintext_networks.iter().any(|n| n.contains(client)) {
        return Vec::new();
    }
    listener_mechanisms(auth, l)
        .into_iter()
        .filter(|m| tls || *m != Mechanism::ScramSha256Plus)
        .filter(|m| *m != Mechanism::External || has_verified_cert)
        .collect()
}

/// Maps a verified client certificate to a user in the database.
pub fn external_user(how: ExternalIdentity, cert: &ClientCertIdentity, db: &UserDb) -> Option<String> {
    cert.verified.as_ref().ok()?;
    let candidate = match how {
        ExternalIdentity::Cn => {
            cert.cert.subject.split(',').map(str::trim).find_map(|rdn| rdn.strip_prefix("CN=")).map(|cn| cn.to_ascii_lowercase())?
        }
        ExternalIdentity::Email => {
            let emails: Vec<String> =
                cert.cert.sans.iter().filter_map(|s| s.strip_prefix("email:")).map(|e| e.to_ascii_lowercase()).collect();
            if let Some((name, _)) = db.users.iter().find(|(_, r)| r.addresses.iter().any(|a| emails.contains(&a.to_ascii_lowercase()))) {
                name.clone()
            } else {
                emails.first()?.split('@').next()?.to_string()
            }
        }
        ExternalIdentity::Fingerprint => {
            db.users.iter().find(|(_, r)| r.certificates.iter().any(|f| f.eq_ignore_ascii_case(&cert.cert.sha256)))?.0.clone()
        }
    };
    db.users.contains_key(&candidate).then_some(candidate)
}

/// What the throttle says about an AUTH attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Banned until the ban ends.
    Banned,
}

#[derive(Debug, Default)]
struct Counter {
    failures: Vec<Instant>,
    banned_until: Option<Instant>,
}

impl Counter {
    fn prune(&mut self, now: Instant, window: Duration) {
        self.failures.retain(|t| now.duration_since(*t) < window);
        if self.banned_until.is_some_and(|b| b <= now) {
            self.banned_until = None;
            self.failures.clear();
        }
    }
}

/// Failure counters per client IP and per user.
#[derive(Debug, Default)]
pub struct Throttle {
    ips: Mutex<HashMap<IpAddr, Counter>>,
    users: Mutex<HashMap<String, Counter>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Throttle {
    /// Is this client banned?
    pub fn check_ip(&self, ip: IpAddr, now: Instant, cfg: &Auth) -> Verdict {
        let mut m = lock(&self.ips);
        let c = m.entry(ip).or_default();
        c.prune(now, cfg.failure_window);
        if c.banned_until.is_some() {
            Verdict::Banned
        } else {
            Verdict::Allow
        }
    }

    /// Is this user banned?
    pub fn check_user(&self, user: &str, now: Instant, cfg: &Auth) -> Verdict {
        let mut m = lock(&self.users);
        let Some(c) = m.get_mut(user) else { return Verdict::Allow };
        c.prune(now, cfg.failure_window);
        if c.banned_until.is_some() {
            Verdict::Banned
        } else {
            Verdict::Allow
        }
    }

    /// Records a failure; returns how long to delay the reply and whether
    /// this failure started a ban (of the IP or the user).
    pub fn fail(&self, ip: IpAddr, user: Option<&str>, now: Instant, cfg: &Auth) -> (Duration, bool) {
        let mut banned = false;
        let n_ip = {
            let mut m = lock(&self.ips);
            let c = m.entry(ip).or_default();
            c.prune(now, cfg.failure_window);
            c.failures.push(now);
            if c.failures.len() as u32 >= cfg.max_failures_per_ip && c.banned_until.is_none() {
                c.banned_until = Some(now + cfg.ban_time);
                banned = true;
            }
            c.failures.len() as u32
        };
        if let Some(u) = user {
            let mut m = lock(&self.users);
            if m.len() > 100_000 {
                m.retain(|_, c| !c.failures.is_empty() || c.banned_until.is_some());
            }
            let c = m.entry(u.to_string()).or_default();
            c.prune(now, cfg.failure_window);
            c.failures.push(now);
            if c.failures.len() as u32 >= cfg.max_failures_per_user && c.banned_until.is_none() {
                c.banned_until = Some(now + cfg.ban_time);
                banned = true;
            }
        }
        let delay = if n_ip > cfg.delay_after { Duration::from_secs(u64::from(n_ip - cfg.delay_after).min(5)) } else { Duration::ZERO };
        (delay, banned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_engages_and_releases() {
        let cfg = Auth { max_failures_per_ip: 3, max_failures_per_user: 5, delay_after: 1, ..Auth::default() };
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.fail(ip, Some("alice"), t0, &cfg), (Duration::ZERO, false));
        assert_eq!(t.fail(ip, Some("alice"), t0, &cfg), (Duration::from_secs(1), false));
        assert_eq!(t.check_ip(ip, t0, &cfg), Verdict::Allow);
        assert_eq!(t.fail(ip, Some("alice"), t0, &cfg), (Duration::from_secs(2), true));
        assert_eq!(t.check_ip(ip, t0, &cfg), Verdict::Banned);
        assert_eq!(t.check_ip("192.0.2.2".parse().unwrap(), t0, &cfg), Verdict::Allow);
        assert_eq!(t.check_ip(ip, t0 + cfg.ban_time + Duration::from_secs(1), &cfg), Verdict::Allow);
        // Per user, across addresses.
        for i in 0..5 {
            t.fail(format!("198.51.100.{i}").parse().unwrap(), Some("bob"), t0, &cfg);
        }
        assert_eq!(t.check_user("bob", t0, &cfg), Verdict::Banned);
        assert_eq!(t.check_user("carol", t0, &cfg), Verdict::Allow);
        // Failures outside the window do not count.
        let ip3: IpAddr = "203.0.113.1".parse().unwrap();
        t.fail(ip3, None, t0, &cfg);
        t.fail(ip3, None, t0, &cfg);
        let later = t0 + cfg.failure_window + Duration::from_secs(1);
        assert!(!t.fail(ip3, None, later, &cfg).1);
    }

    #[test]
    fn mechanisms_by_state() {
        let auth = Auth { plaintext_networks: vec!["127.0.0.0/8".parse().unwrap()], ..Auth::default() };
        let l = Listener::new("127.0.0.1:25".parse().unwrap(), crate::config::Role::Smtp);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(usable_mechanisms(&auth, &l, false, far, false).is_empty());
        assert_eq!(usable_mechanisms(&auth, &l, false, lo, false), vec![Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login]);
        assert_eq!(usable_mechanisms(&auth, &l, true, far, false)[0], Mechanism::ScramSha256Plus);
    }
}
