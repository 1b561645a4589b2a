//! [`Cached`]: any [`Directory`] behind a time limit and two TTL caches per
//! lookup kind: positive answers (a user, a domain, a non-empty alias) for
//! `ttl`, negative ones ("no such …") for `negative_ttl`. Errors are never
//! cached, so an outage ends as soon as the backend answers again. Every
//! query gets `timeout`; a slow backend is [`DirectoryError::Unavailable`].
//! The first failure after a success (and the first success after a
//! failure) writes one `directory` line to the mail log, not one per query.
//!
//! `verify()` (a backend that checks passwords itself) is never cached.
//!
//! May touch: nothing itself (the wrapped backend does).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxFuture, Directory, DirectoryError, Lookup, PasswordEntry};
use crate::maillog;

/// Entries kept per lookup kind; when full, expired entries go first, then
/// everything (a burst of distinct addresses must not grow memory).
pub const MAX_ENTRIES: usize = 10_000;

/// One lookup kind's cache.
struct Store<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Store<T> {
    fn new() -> Store<T> {
        Store { map: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &str, now: Instant) -> Option<T> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(until, _)| *until > now).map(|(_, v)| v.clone())
    }

    fn put(&self, key: &str, value: T, until: Instant, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key.to_string(), (until, value));
    }
}

/// A directory with caches, a query timeout and outage logging.
pub struct Cached {
    inner: Arc<dyn Directory>,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    down: AtomicBool,
    passwords: Store<Option<PasswordEntry>>,
    domains: Store<bool>,
    mailboxes: Store<bool>,
    aliases: Store<Vec<String>>,
    senders: Store<Vec<String>>,
}

impl Cached {
    /// Wraps `inner`: positive answers kept `ttl`, negative `negative_ttl`
    /// (zero: not cached), each query limited to `timeout`.
    pub fn new(inner: Arc<dyn Directory>, ttl: Duration, negative_ttl: Duration, timeout: Duration) -> Cached {
        Cached {
            inner,
            ttl,
            negative_ttl,
            timeout,
            down: AtomicBool::new(false),
            passwords: Store::new(),
            domains: Store::new(),
            mailboxes: Store::new(),
            aliases: Store::new(),
            senders: Store::new(),
        }
    }

    /// Runs one backend query under the timeout and records up/down transitions.
    async fn query<T>(&self, fut: impl Future<Output = Lookup<T>>) -> Lookup<T> {
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(DirectoryError::Unavailable {
                backend: self.inner.name(),
                reason: format!("no answer within {}", humantime::format_duration(self.timeout)),
            }),
        };
        match &r {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    maillog::directory(&[("backend", self.inner.name()), ("state", "available")]);
                }
            }
            Err(DirectoryError::Unavailable { reason, .. }) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    maillog::directory(&[("backend", self.inner.name()), ("state", "unavailable"), ("reason", reason)]);
                }
            }
        }
        r
    }

    /// Cache, else query and remember (positive for `ttl`, negative for `negative_ttl`).
    async fn cached<T: Clone>(
        &self,
        store: &Store<T>,
        key: &str,
        positive: impl Fn(&T) -> bool,
        fut: impl Future<Output = Lookup<T>>,
    ) -> Lookup<T> {
        if let Some(v) = store.get(key, Instant::now()) {
            return Ok(v);
        }
        let v = self.query(fut).await?;
        let ttl = if positive(&v) { self.ttl } else { self.negative_ttl };
        if !ttl.is_zero() {
            let now = Instant::now();
            store.put(key, v.clone(), now + ttl, now);
        }
        Ok(v)
    }
}

impl Directory for Cached {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>> {
        Box::pin(self.cached(&self.passwords, login, Option::is_some, self.inner.password(login)))
    }

    fn verify<'a>(&'a self, login: &'a str, password: &'a str) -> Option<BoxFuture<'a, Lookup<Option<String>>>> {
        let fut = self.inner.verify(login, password)?;
        Some(Box::pin(self.query(fut)))
    }

    fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.cached(&self.domains, domain, |b| *b, self.inner.domain(domain)))
    }

    fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.cached(&self.mailboxes, address, |b| *b, self.inner.mailbox(address)))
    }

    fn alias<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.cached(&self.aliases, address, |v: &Vec<String>| !v.is_empty(), self.inner.alias(address)))
    }

    fn sender_logins<'a>(&'a self, sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.cached(&self.senders, sender, |v: &Vec<String>| !v.is_empty(), self.inner.sender_logins(sender)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A backend that counts queries, knows `alice@a.example`, and can be
    /// switched down or slow.
    #[derive(Default)]
    struct Fake {
        queries: AtomicUsize,
        down: AtomicBool,
        slow: AtomicBool,
        alice: AtomicBool,
    }

    impl Fake {
        async fn answer<T>(&self, v: T) -> Lookup<T> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            if self.slow.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(DirectoryError::Unavailable { backend: "fake", reason: "down".into() });
            }
            Ok(v)
        }
    }

    impl Directory for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>> {
            let known = login == "alice@a.example" && self.alice.load(Ordering::SeqCst);
            Box::pin(self.answer(known.then(|| PasswordEntry { user: login.into(), hash: "{PLAIN}x".into(), disabled: None })))
        }
        fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>> {
            Box::pin(self.answer(domain == "a.example"))
        }
        fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>> {
            Box::pin(self.answer(address == "alice@a.example" && self.alice.load(Ordering::SeqCst)))
        }
        fn alias<'a>(&'a self, _address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
            Box::pin(self.answer(Vec::new()))
        }
        fn sender_logins<'a>(&'a self, _sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
            Box::pin(self.answer(vec!["alice@a.example".into()]))
        }
    }

    fn setup() -> (Arc<Fake>, Cached) {
        let fake = Arc::new(Fake::default());
        let c = Cached::new(fake.clone(), Duration::from_secs(60), Duration::from_secs(10), Duration::from_secs(5));
        (fake, c)
    }

    #[tokio::test(start_paused = true)]
    async fn positive_and_negative_ttls() {
        let (fake, c) = setup();
        fake.alice.store(true, Ordering::SeqCst);
        assert_eq!(c.domain("a.example").await, Ok(true));
        assert_eq!(c.domain("b.example").await, Ok(false));
        assert_eq!(fake.queries.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(c.domain("a.example").await, Ok(true));
        assert_eq!(c.domain("b.example").await, Ok(false));
        assert_eq!(fake.queries.load(Ordering::SeqCst), 2, "both cached");
        tokio::time::advance(Duration::from_secs(2)).await;
        c.domain("a.example").await.expect("ok");
        c.domain("b.example").await.expect("ok");
        assert_eq!(fake.queries.load(Ordering::SeqCst), 3, "negative expired after 10s, positive kept");
        tokio::time::advance(Duration::from_secs(60)).await;
        c.domain("a.example").await.expect("ok");
        assert_eq!(fake.queries.load(Ordering::SeqCst), 4, "positive expired after 60s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_user_appears_after_the_negative_ttl() {
        let (fake, c) = setup();
        assert_eq!(c.password("alice@a.example").await.map(|e| e.is_some()), Ok(false));
        fake.alice.store(true, Ordering::SeqCst);
        assert_eq!(c.password("alice@a.example").await.map(|e| e.is_some()), Ok(false), "still cached");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(c.password("alice@a.example").await.map(|e| e.is_some()), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached_and_timeouts_are_errors() {
        let (fake, c) = setup();
        fake.down.store(true, Ordering::SeqCst);
        assert!(c.mailbox("alice@a.example").await.is_err());
        assert!(c.mailbox("alice@a.example").await.is_err());
        assert_eq!(fake.queries.load(Ordering::SeqCst), 2);
        fake.down.store(false, Ordering::SeqCst);
        fake.alice.store(true, Ordering::SeqCst);
        assert_eq!(c.mailbox("alice@a.example").await, Ok(true));
        fake.slow.store(true, Ordering::SeqCst);
        let r = c.sender_logins("x@a.example").await;
        assert!(matches!(r, Err(DirectoryError::Unavailable { backend: "fake", .. })), "{r:?}");
    }

    #[test]
    fn bounded() {
        let s: Store<bool> = Store::new();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 5 {
            s.put(&format!("k{i}"), true, now + Duration::from_secs(1), now);
        }
        assert!(s.map.lock().expect("lock").len() <= MAX_ENTRIES);
    }
}
