//! The policy cache (RFC 8461 §5.1): in memory and in `DATA/mta-sts/`, one
//! JSON file per domain (written to a temporary file, synced, renamed), so
//! a restart keeps the policies. A cached policy that has not expired is
//! used when the TXT record is missing or the fetch fails: that is what
//! defeats an attacker who strips the TXT record or blocks the HTTPS fetch.
//! [`decide`] is the pure decision of what to do for one delivery.
//!
//! May touch: `DATA/mta-sts/` (read at start, write and remove files).
//! RFCs: 8461 §5.1, §10.2.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::policy::{self, Policy};
use super::txt::TxtError;

/// A policy as cached: what the TXT record said, when it was fetched and
/// until when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The policy domain (A-label).
    pub domain: String,
    /// The TXT record's `id` the policy was fetched under.
    pub id: String,
    /// Fetched at (Unix seconds).
    pub fetched: u64,
    /// Valid until (Unix seconds): `fetched + max_age`.
    pub expires: u64,
    /// The parsed policy.
    pub policy: Policy,
}

impl Cached {
    /// Builds the entry for a policy fetched `now` under `id`.
    pub fn new(domain: &str, id: &str, now: u64, policy: Policy) -> Cached {
        Cached { domain: domain.to_string(), id: id.to_string(), fetched: now, expires: now + policy.max_age, policy }
    }

    /// Still valid at `now`?
    pub fn fresh(&self, now: u64) -> bool {
        now < self.expires
    }

    /// Past half its lifetime: refetch (keeping this one if that fails),
    /// so a policy in use does not lapse while its `id` stays the same.
    fn due_for_refresh(&self, now: u64) -> bool {
        now >= self.fetched + (self.expires - self.fetched) / 2
    }
}

/// What to do for one delivery, from the TXT answer and the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the cached policy.
    UseCached(Arc<Cached>),
    /// Fetch the policy for TXT `id`; on failure apply `fallback` if any.
    Fetch {
        /// The TXT record's id.
        id: String,
        /// The unexpired cached policy, if any.
        fallback: Option<Arc<Cached>>,
    },
    /// Deliver as without MTA-STS.
    NoPolicy,
}

/// The decision (RFC 8461 §5.1), pure: `failed` is true when a fetch
/// under this TXT id failed within the backoff.
pub fn decide(cached: Option<&Arc<Cached>>, txt: &Result<String, TxtError>, now: u64, failed: bool) -> Step {
    let fresh = cached.filter(|c| c.fresh(now)).cloned();
    match txt {
        // No usable TXT record (absent, several, malformed, DNS failure):
        // "not by itself sufficient to remove a cached policy" (§3.1, §5.1).
        Err(_) => fresh.map_or(Step::NoPolicy, Step::UseCached),
        Ok(id) => match fresh {
            Some(c) if failed => Step::UseCached(c),
            Some(c) if c.id == *id && !c.due_for_refresh(now) => Step::UseCached(c),
            fallback if !failed => Step::Fetch { id: id.clone(), fallback },
            _ => Step::NoPolicy,
        },
    }
}

/// The in-memory map, bounded to `cap` domains.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<String, Arc<Cached>>,
    /// Domain → (TXT id, Unix time until which not to fetch again).
    failed: HashMap<String, (String, u64)>,
    cap: usize,
}

impl Cache {
    /// An empty cache of at most `cap` domains.
    pub fn new(cap: usize) -> Cache {
        Cache { map: HashMap::new(), failed: HashMap::new(), cap: cap.max(1) }
    }

    /// The entry of `domain`.
    pub fn get(&self, domain: &str) -> Option<&Arc<Cached>> {
        self.map.get(domain)
    }

    /// Did a fetch under `id` fail recently?
    pub fn failed_recently(&self, domain: &str, id: &str, now: u64) -> bool {
        self.failed.get(domain).is_some_and(|(i, until)| i == id && now < *until)
    }

    /// Remembers a failed fetch until `until`.
    pub fn mark_failed(&mut self, domain: &str, id: &str, until: u64, now: u64) {
        if self.failed.len() >= self.cap {
            self.failed.retain(|_, (_, u)| *u > now);
            if self.failed.len() >= self.cap {
                self.failed.clear();
            }
        }
        self.failed.insert(domain.to_string(), (id.to_string(), until));
    }

    /// Inserts (or replaces) an entry; returns the domains evicted to stay
    /// within the cap (expired ones first, then those expiring soonest).
    pub fn insert(&mut self, c: Arc<Cached>, now: u64) -> Vec<String> {
        self.failed.remove(&c.domain);
        let mut evicted = Vec::new();
        if !self.map.contains_key(&c.domain) && self.map.len() >= self.cap {
            let expired: Vec<String> = self.map.values().filter(|e| !e.fresh(now)).map(|e| e.domain.clone()).collect();
            for d in expired {
                self.map.remove(&d);
                evicted.push(d);
            }
            while self.map.len() >= self.cap {
                let Some(d) = self.map.values().min_by_key(|e| e.expires).map(|e| e.domain.clone()) else { break };
                self.map.remove(&d);
                evicted.push(d);
            }
        }
        self.map.insert(c.domain.clone(), c);
        evicted
    }

    /// Number of domains cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The file format of `DATA/mta-sts/DOMAIN.json` (version 1).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    domain: String,
    id: String,
    fetched: u64,
    expires: u64,
    /// The policy body's lines, parsed again on load.
    policy: Vec<String>,
}

/// Why the cache directory could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StoreError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// `DATA/mta-sts/`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Is `domain` safe as a file name (an A-label domain: letters, digits,
/// '-', '.', no leading dot)?
fn safe_name(domain: &str) -> bool {
    !domain.is_empty()
        && !domain.starts_with('.')
        && domain.len() <= 253
        && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Store {
    /// The store in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    fn path(&self, domain: &str) -> Option<PathBuf> {
        safe_name(domain).then(|| self.dir.join(format!("{domain}.json")))
    }

    /// Every unexpired policy on disk (expired or unreadable files are
    /// removed), at most `cap`.
    pub fn load(&self, now: u64, cap: usize) -> Vec<Cached> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match read(&path) {
                Some(c) if c.fresh(now) && self.path(&c.domain).as_deref() == Some(path.as_path()) => out.push(c),
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.expires));
        out.truncate(cap);
        out
    }

    /// Writes one entry: temporary file, fsync, rename over the old one.
    pub fn save(&self, c: &Cached) -> Result<(), StoreError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError { path, source }
        };
        let Some(path) = self.path(&c.domain) else { return Ok(()) };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let file = File {
            version: 1,
            domain: c.domain.clone(),
            id: c.id.clone(),
            fetched: c.fetched,
            expires: c.expires,
            policy: c.policy.lines.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| StoreError { path: path.clone(), source: e.into() })?;
        let tmp = self.dir.join(format!(".{}.tmp", c.domain));
        let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(&text).map_err(err(&tmp))?;
        // The rename must not publish a file whose data is not on disk.
        f.sync_all().map_err(err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(err(&path))
    }

    /// One domain's policy from disk, expired or not (read only).
    pub fn read(&self, domain: &str) -> Option<Cached> {
        read(&self.path(domain)?).filter(|c| c.domain == domain)
    }

    /// Removes a domain's file (evicted from the cache).
    pub fn remove(&self, domain: &str) {
        if let Some(p) = self.path(domain) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read(path: &Path) -> Option<Cached> {
    let f: File = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if f.version != 1 || f.expires < f.fetched {
        return None;
    }
    let policy = policy::parse(&f.policy.join("\n")).ok()?;
    Some(Cached { domain: f.domain, id: f.id, fetched: f.fetched, expires: f.expires, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domain: &str, id: &str, fetched: u64, max_age: u64) -> Arc<Cached> {
        let text = format!("version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: {max_age}\n");
        Arc::new(Cached::new(domain, id, fetched, policy::parse(&text).expect("policy")))
    }

    #[test]
    fn decisions() {
        let c = entry("example.com", "A1", 1000, 1000); // expires 2000, refresh from 1500
        let id = |s: &str| -> Result<String, TxtError> { Ok(s.to_string()) };
        let gone: Result<String, TxtError> = Err(TxtError::Absent);
        let dns: Result<String, TxtError> = Err(TxtError::Dns("SERVFAIL".into()));
        let fetch = |i: &str, fb: Option<&Arc<Cached>>| Step::Fetch { id: i.into(), fallback: fb.cloned() };
        type Case<'a> = (Option<&'a Arc<Cached>>, Result<String, TxtError>, u64, bool, Step);
        let table: Vec<Case> = vec![
            // Nothing cached.
            (None, gone.clone(), 1100, false, Step::NoPolicy),
            (None, id("A1"), 1100, false, fetch("A1", None)),
            (None, id("A1"), 1100, true, Step::NoPolicy),
            // Same id, fresh: use it; half-way: refetch with it as fallback.
            (Some(&c), id("A1"), 1100, false, Step::UseCached(c.clone())),
            (Some(&c), id("A1"), 1600, false, fetch("A1", Some(&c))),
            (Some(&c), id("A1"), 1600, true, Step::UseCached(c.clone())),
            // The id changed: refetch, the old policy as fallback.
            (Some(&c), id("B2"), 1100, false, fetch("B2", Some(&c))),
            (Some(&c), id("B2"), 1100, true, Step::UseCached(c.clone())),
            // TXT stripped or DNS down: the cached policy still applies...
            (Some(&c), gone.clone(), 1999, false, Step::UseCached(c.clone())),
            (Some(&c), dns, 1100, false, Step::UseCached(c.clone())),
            // ...until it expires.
            (Some(&c), gone, 2000, false, Step::NoPolicy),
            (Some(&c), id("A1"), 2000, false, fetch("A1", None)),
        ];
        for (i, (cached, txt, now, failed, want)) in table.into_iter().enumerate() {
            assert_eq!(decide(cached, &txt, now, failed), want, "case {i}");
        }
    }

    #[test]
    fn bounded_and_failures() {
        let mut cache = Cache::new(2);
        assert!(cache.insert(entry("a.example", "1", 0, 100), 10).is_empty());
        assert!(cache.insert(entry("b.example", "1", 0, 50), 10).is_empty());
        // Full: the one expiring soonest goes.
        assert_eq!(cache.insert(entry("c.example", "1", 0, 200), 10), vec!["b.example".to_string()]);
        // Replacing an entry evicts nothing.
        assert!(cache.insert(entry("c.example", "2", 0, 200), 10).is_empty());
        assert_eq!(cache.len(), 2);
        // Expired entries go first.
        assert_eq!(cache.insert(entry("d.example", "1", 0, 300), 150), vec!["a.example".to_string()]);
        cache.mark_failed("e.example", "7", 500, 100);
        assert!(cache.failed_recently("e.example", "7", 499));
        assert!(!cache.failed_recently("e.example", "8", 499), "a new id is fetched at once");
        assert!(!cache.failed_recently("e.example", "7", 500));
    }

    #[test]
    fn persisted_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path().join("mta-sts"));
        assert!(store.load(0, 10).is_empty(), "no directory yet");
        let c = entry("example.com", "A1", 1000, 1000);
        store.save(&c).expect("save");
        store.save(&entry("old.example", "X", 0, 10)).expect("save");
        std::fs::write(dir.path().join("mta-sts/junk.json"), "{").expect("junk");
        // A file whose name is not its domain is not trusted.
        std::fs::copy(dir.path().join("mta-sts/example.com.json"), dir.path().join("mta-sts/other.example.json")).expect("copy");
        let loaded = store.load(1500, 10);
        assert_eq!(loaded, vec![(*c).clone()]);
        assert!(!dir.path().join("mta-sts/old.example.json").exists(), "expired files are removed");
        assert!(!dir.path().join("mta-sts/junk.json").exists());
        assert!(!dir.path().join("mta-sts/other.example.json").exists());
        // Names that are not domains never become paths.
        assert!(store.path("../x").is_none() && store.path("a/b").is_none() && store.path("").is_none());
        store.remove("example.com");
        assert!(store.load(1500, 10).is_empty());
    }
}
