//! Counters shared between nodes (`[cluster] redis`): the AUTH throttle's
//! failure counts and bans, the inbound rate limits. One trait, implemented
//! by the cluster store; callers keep their local counters and use these
//! only when a store is configured ([`crate::services::Services::counters`]).
//!
//! Every method answers `None` when the store cannot be reached: the caller
//! falls back to its local counters (and the store logs the outage once).
//! Mail is never refused because the store is down.
//!
//! May touch: nothing itself (the implementation talks to Redis/Valkey).

use std::time::Duration;

use crate::directory::BoxFuture;

/// A store of windowed counters and flags shared by every node.
pub trait SharedCounters: Send + Sync + 'static {
    /// Adds `n` to the counter `key` for a fixed window of length `window`
    /// (the counter expires `window` after its first increment) and returns
    /// the new total; `None`: the store is unreachable.
    fn add<'a>(&'a self, key: &'a str, n: u64, window: Duration) -> BoxFuture<'a, Option<u64>>;

    /// The counter `key` now (0 when absent); `None`: unreachable.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>>;

    /// Sets the flag `key` (a ban, a greylist pass) for `ttl`; `None`: unreachable.
    fn set_flag<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Option<()>>;

    /// Is the flag `key` set? `None`: unreachable.
    fn flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<bool>>;

    /// Clears the counter or flag `key` (a successful login); `None`: unreachable.
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<()>>;
}
