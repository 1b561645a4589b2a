//! Single-flight password checks: concurrent checks of the same user,
//! stored hash and password wait for the one already running and share its
//! answer instead of each running argon2.
//!
//! May touch: nothing (memory only). No RFC.
//!
//! Why: at the start of a burst (a client that logs in for every message,
//! twenty at once) the verified cache is still empty, and every login would
//! pay argon2 (19 MiB, tens of milliseconds), one CPU at a time: the last
//! one waited for all the others. Identical inputs give identical results,
//! so sharing leaks nothing: a different password (or user, or stored hash)
//! is a different key and runs its own check. Nothing is kept once the
//! check ends: a failure is never remembered (the next attempt pays again),
//! a success only through the verified cache.
//!
//! Waiters hold no thread: they await a `tokio::sync::watch` channel. The
//! running check owns the map entry through a [`Leader`] guard that removes
//! it when the check ends, panics or is cancelled; waiters of a check that
//! ended without an answer try again (one of them leads the next run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Checks in flight at most (distinct keys); beyond that a check runs on
/// its own, unshared. The map only holds checks that are running or
/// waiting for a CPU, so this is never reached in practice.
const MAX_IN_FLIGHT: usize = 4096;

/// The key of one check: an HMAC tag over user, stored hash and password.
pub(super) type Key = [u8; 32];

/// One running check's answer: `None` until it is known.
type Answer = watch::Sender<Option<bool>>;

/// The checks in flight, by key.
#[derive(Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<Key, (u64, Answer)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// What a check does: run it (and answer the others), wait for the one
/// running, or run alone (the map is full).
pub(super) enum Join {
    /// Run the check; the guard answers the waiters.
    Lead(Leader),
    /// Wait for the running check.
    Follow(watch::Receiver<Option<bool>>),
    /// Run the check, unshared.
    Alone,
}

/// The running check's hold on its map entry. Dropping it without
/// [`Leader::finish`] (a panic, a cancelled session) removes the entry
/// without an answer: the waiters then try again.
pub(super) struct Leader {
    flights: Arc<InFlight>,
    key: Key,
    id: u64,
}

impl InFlight {
    /// Joins the check for `key`: leads it when none is running.
    pub(super) fn join(self: &Arc<Self>, key: Key) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, answer)) = map.get(&key) {
            return Join::Follow(answer.subscribe());
        }
        if map.len() >= MAX_IN_FLIGHT {
            return Join::Alone;
        }
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(key, (id, watch::Sender::new(None)));
        Join::Lead(Leader { flights: self.clone(), key, id })
    }

    /// Removes the entry of check `id`, if it is still there.
    fn remove(&self, key: &Key, id: u64) -> Option<Answer> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((current, _)) if *current == id => map.remove(key).map(|(_, answer)| answer),
            _ => None,
        }
    }

    /// Checks waiting for another (all keys): for tests.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(_, a)| a.receiver_count()).sum()
    }

    /// Checks running or waiting for a CPU: for tests.
    #[cfg(test)]
    pub(super) fn running(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Leader {
    /// Gives the answer to every waiter and ends the check.
    pub(super) fn finish(self, ok: bool) {
        // The entry goes first, so that a check arriving after this one
        // ended never joins it: it finds the verified cache or runs anew.
        if let Some(answer) = self.flights.remove(&self.key, self.id) {
            answer.send_replace(Some(ok));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // After `finish` the entry is gone and this is a no-op; otherwise
        // dropping the sender closes the channel: waiters try again.
        drop(self.flights.remove(&self.key, self.id));
    }
}

/// Waits for the running check's answer; `None` if it ended without one.
pub(super) async fn wait(mut rx: watch::Receiver<Option<bool>>) -> Option<bool> {
    match rx.wait_for(Option::is_some).await {
        Ok(answer) => *answer,
        // The check was dropped without an answer (panic, cancelled).
        Err(_) => None,
    }
}
