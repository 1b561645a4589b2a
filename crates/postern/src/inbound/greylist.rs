//! Greylisting (`[inbound.greylist]`, RFC 6647, postgrey's model): the
//! first RCPT of a (client network, sender, recipient) triplet gets
//! `450 4.7.1`; a retry after `delay` and within `retry_window` passes,
//! and the triplet then passes for `pass_ttl` after its last use. A client
//! network with `auto_allow_after` passes is not greylisted any more.
//!
//! The decision is a pure function of the stored records and `now`
//! ([`decide`]). Records live in memory, bounded by `max_entries`, and are
//! written to `DATA/greylist.json` (see [`GreylistStore::snapshot_due`]) so
//! a restart does not greylist every sender again. With `[cluster] redis`
//! the state is shared through flags and counters instead; the local
//! store answers while the shared one is unreachable.
//!
//! May touch: `DATA/greylist.json` (through `crate::private_file`), the
//! shared counters. RFCs: 6647 (greylisting), 5321 §4.2.5 (450), 3463 (4.7.1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use postern_wire::{Enhanced, Reply};

use crate::config::Greylist;
use crate::counters::SharedCounters;

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "greylist.json";

/// One triplet: when it was first seen, when it last passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripletRecord {
    /// First attempt of the current round (unix ms).
    pub first: u64,
    /// Last use after it passed (unix ms); `None`: not passed yet.
    pub passed: Option<u64>,
}

/// One client network: how many triplets passed, and when last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Passes counted (triplets that passed after a delay).
    pub passes: u32,
    /// The last pass or auto-allowed use (unix ms).
    pub last: u64,
}

/// What greylisting says about one RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The client network passed `auto_allow_after` times.
    AutoAllowed,
    /// The triplet passed before, within `pass_ttl`.
    Known,
    /// A retry after `delay`, within `retry_window`: passes now.
    Passed,
    /// Deferred; `new`: first seen now (or starting over).
    Defer {
        /// How long the client still has to wait.
        wait: Duration,
        /// First attempt of a round.
        new: bool,
    },
}

impl Decision {
    /// The log's `greylist=` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::AutoAllowed => "auto-allowed",
            Decision::Known => "known",
            Decision::Passed => "passed",
            Decision::Defer { new: true, .. } => "new",
            Decision::Defer { new: false, .. } => "early",
        }
    }
}

/// The 450 a deferred recipient gets (postgrey's text).
pub fn reply(rcpt: &str, wait: Duration) -> Reply {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    Reply::new(450, Enhanced(4, 7, 1), format!("<{rcpt}>: Recipient address rejected: Greylisted, try again in {secs}s"))
}

/// The triplet's key: client network, sender and recipient, lowercased
/// (the null sender is "", and greylisted like any other).
pub fn triplet_key(network: &str, sender: &str, rcpt: &str) -> String {
    format!("{network}|{}|{}", sender.to_ascii_lowercase(), rcpt.to_ascii_lowercase())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The client network's record counts when it is recent.
fn live_client(cfg: &Greylist, c: Option<ClientRecord>, now: u64) -> Option<ClientRecord> {
    c.filter(|c| now.saturating_sub(c.last) <= ms(cfg.pass_ttl))
}

/// The decision for one attempt at `now` (unix ms) and the records after it.
pub fn decide(
    cfg: &Greylist,
    client: Option<ClientRecord>,
    triplet: Option<TripletRecord>,
    now: u64,
) -> (Decision, Option<TripletRecord>, Option<ClientRecord>) {
    let client = live_client(cfg, client, now);
    if cfg.auto_allow_after > 0 && client.is_some_and(|c| c.passes >= cfg.auto_allow_after) {
        let c = client.map(|c| ClientRecord { last: now, ..c });
        return (Decision::AutoAllowed, triplet, c);
    }
    let (delay, window) = (ms(cfg.delay), ms(cfg.retry_window));
    match triplet {
        Some(t) if t.passed.is_some_and(|p| now.saturating_sub(p) <= ms(cfg.pass_ttl)) => {
            (Decision::Known, Some(TripletRecord { passed: Some(now), ..t }), client)
        }
        Some(t) if t.passed.is_none() && now.saturating_sub(t.first) <= window => {
            let waited = now.saturating_sub(t.first);
            if waited >= delay {
                let c = ClientRecord { passes: client.map_or(0, |c| c.passes).saturating_add(1), last: now };
                (Decision::Passed, Some(TripletRecord { passed: Some(now), ..t }), Some(c))
            } else {
                (Decision::Defer { wait: Duration::from_millis(delay - waited), new: false }, Some(t), client)
            }
        }
        // Unknown, expired pass, or a retry after the window: start over.
        _ => (Decision::Defer { wait: cfg.delay, new: true }, Some(TripletRecord { first: now, passed: None }), client),
    }
}

/// The records, in memory and in the snapshot file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tables {
    version: u32,
    triplets: HashMap<String, TripletRecord>,
    clients: HashMap<String, ClientRecord>,
}

/// The node's greylist store.
#[derive(Debug, Default)]
pub struct GreylistStore {
    tables: Mutex<Tables>,
    /// `DATA/greylist.json`; `None`: memory only (tests).
    path: Option<PathBuf>,
    /// Unsaved changes: (a pass among them, when the last save was).
    save: Mutex<SaveState>,
}

#[derive(Debug, Default)]
struct SaveState {
    dirty: bool,
    pass: bool,
    last: Option<Instant>,
}

/// Unsaved changes are written at most this often...
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// ...and at most this soon after a pass (the record that matters most).
const SAVE_PASS_AFTER: Duration = Duration::from_secs(1);

impl GreylistStore {
    /// The store of the data directory `data`, with the snapshot's records
    /// when there is one (an unreadable snapshot is logged and ignored:
    /// greylisting then starts afresh, which delays mail, never loses it).
    pub fn load(data: &Path) -> GreylistStore {
        let path = data.join(SNAPSHOT_FILE);
        let tables = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Tables>(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable greylist snapshot, starting afresh: {e}", path.display());
                Tables::default()
            }),
            Err(_) => Tables::default(),
        };
        GreylistStore { tables: Mutex::new(tables), path: Some(path), save: Mutex::default() }
    }

    /// Decides for one attempt at `now` (unix ms) and records the result.
    pub fn check(&self, cfg: &Greylist, network: &str, key: &str, now: u64) -> Decision {
        let mut t = lock(&self.tables);
        let (d, triplet, client) = decide(cfg, t.clients.get(network).copied(), t.triplets.get(key).copied(), now);
        let changed = t.triplets.get(key) != triplet.as_ref() || t.clients.get(network) != client.as_ref();
        if let Some(r) = triplet {
            t.triplets.insert(key.to_string(), r);
        }
        if let Some(c) = client {
            t.clients.insert(network.to_string(), c);
        }
        prune(&mut t, cfg, now);
        drop(t);
        if changed {
            let mut s = lock(&self.save);
            s.dirty = true;
            s.pass |= d == Decision::Passed;
        }
        d
    }

    /// The snapshot to write now, if one is due: the path and the bytes.
    /// The caller writes it off the session's task
    /// (`crate::private_file::write`: temporary file, fsync, rename).
    pub fn snapshot_due(&self, now: Instant) -> Option<(PathBuf, Vec<u8>)> {
        let path = self.path.clone()?;
        let mut s = lock(&self.save);
        let since = s.last.map(|l| now.saturating_duration_since(l));
        let due = s.dirty && since.is_none_or(|d| d >= SAVE_EVERY || (s.pass && d >= SAVE_PASS_AFTER));
        if !due {
            return None;
        }
        *s = SaveState { dirty: false, pass: false, last: Some(now) };
        drop(s);
        let mut t = lock(&self.tables);
        t.version = 1;
        serde_json::to_vec(&*t).ok().map(|b| (path, b))
    }

    /// Triplets and client records held now.
    pub fn len(&self) -> (usize, usize) {
        let t = lock(&self.tables);
        (t.triplets.len(), t.clients.len())
    }

    /// The records of a triplet and its client network (`explain`).
    pub fn records(&self, network: &str, key: &str) -> (Option<TripletRecord>, Option<ClientRecord>) {
        let t = lock(&self.tables);
        (t.triplets.get(key).copied(), t.clients.get(network).copied())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Keeps at most `max_entries` of each table: records past their time go
/// first, then the oldest.
fn prune(t: &mut Tables, cfg: &Greylist, now: u64) {
    let max = cfg.max_entries.max(1);
    if t.triplets.len() > max {
        let (window, ttl) = (ms(cfg.retry_window), ms(cfg.pass_ttl));
        t.triplets.retain(|_, r| match r.passed {
            Some(p) => now.saturating_sub(p) <= ttl,
            None => now.saturating_sub(r.first) <= window,
        });
        if t.triplets.len() > max {
            let mut ages: Vec<u64> = t.triplets.values().map(|r| r.passed.unwrap_or(r.first)).collect();
            ages.sort_unstable();
            let cut = ages[t.triplets.len() - max];
            t.triplets.retain(|_, r| r.passed.unwrap_or(r.first) > cut);
        }
    }
    if t.clients.len() > max {
        let ttl = ms(cfg.pass_ttl);
        t.clients.retain(|_, c| now.saturating_sub(c.last) <= ttl);
        if t.clients.len() > max {
            let mut ages: Vec<u64> = t.clients.values().map(|c| c.last).collect();
            ages.sort_unstable();
            let cut = ages[t.clients.len() - max];
            t.clients.retain(|_, c| c.last > cut);
        }
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(ms).unwrap_or(0)
}

/// The same decision through the shared store's flags and counters:
/// `grey:pass:T` (passed, `pass_ttl`), `grey:seen:T` (first attempt,
/// `retry_window`), `grey:wait:T` (`delay`), `grey:client:NET` (passes).
/// `None`: the store did not answer (the caller decides locally).
pub async fn decide_shared(cfg: &Greylist, store: &dyn SharedCounters, network: &str, key: &str) -> Option<Decision> {
    let client = format!("grey:client:{network}");
    if cfg.auto_allow_after > 0 && store.get(&client).await? >= u64::from(cfg.auto_allow_after) {
        return Some(Decision::AutoAllowed);
    }
    let (pass, seen, wait) = (format!("grey:pass:{key}"), format!("grey:seen:{key}"), format!("grey:wait:{key}"));
    if store.flag(&pass).await? {
        store.set_flag(&pass, cfg.pass_ttl).await?;
        return Some(Decision::Known);
    }
    if store.flag(&seen).await? {
        if store.flag(&wait).await? {
            // The store keeps no first-seen time: the full delay is the bound.
            return Some(Decision::Defer { wait: cfg.delay, new: false });
        }
        store.set_flag(&pass, cfg.pass_ttl).await?;
        store.add(&client, 1, cfg.pass_ttl).await?;
        store.clear(&seen).await?;
        return Some(Decision::Passed);
    }
    store.set_flag(&seen, cfg.retry_window).await?;
    store.set_flag(&wait, cfg.delay).await?;
    Some(Decision::Defer { wait: cfg.delay, new: true })
}

/// `postern explain`: the greylist state of this client network and triplet.
pub fn explain(cfg: &Greylist, store: &GreylistStore, network: &str, key: &str, now: u64) -> String {
    let (t, c) = store.records(network, key);
    let (d, _, _) = decide(cfg, c, t, now);
    let passes = live_client(cfg, c, now).map_or(0, |c| c.passes);
    match d {
        Decision::Defer { wait, new } => {
            let what = if new { "new triplet" } else { "seen, delay not over" };
            format!(
                "would defer ({what}): {} (network {network}, {passes} passes)",
                reply(key.rsplit('|').next().unwrap_or(""), wait).summary()
            )
        }
        other => format!("would pass ({}) (network {network}, {passes} passes)", other.as_str()),
    }
}

/// `postern explain`: whether greylisting applies to this client and, if
/// so, what the records in `DATA/greylist.json` say about the triplet.
/// `identified`: the client authenticated or has a verified certificate.
pub fn explain_for(s: &crate::settings::Settings, ip: std::net::IpAddr, identified: bool, sender: &str, rcpt: &str) -> String {
    let cfg = &s.config.inbound.greylist;
    if !cfg.enabled {
        return "off".into();
    }
    if identified {
        return "exempt (authenticated or verified certificate)".into();
    }
    let relay = &s.config.relay.networks;
    if let Some(why) = crate::inbound::rate::exemption(ip, &cfg.exempt_networks, cfg.exempt_relay_networks, relay) {
        return format!("exempt ({why})");
    }
    let network = crate::inbound::rate::network(ip, cfg.ipv4_prefix, cfg.ipv6_prefix);
    let store = GreylistStore::load(&s.data_dir);
    explain(cfg, &store, &network, &triplet_key(&network, sender, rcpt), now_ms())
}

#[cfg(test)]
#[path = "greylist_tests.rs"]
mod tests;
