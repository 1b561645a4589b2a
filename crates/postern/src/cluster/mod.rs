//! Several nodes, one set of counters: the Redis/Valkey client behind
//! [`SharedCounters`] (`[cluster] redis`), and what the AUTH throttle keeps
//! there ([`throttle`]). Queues are NOT shared (docs/scaling.md explains
//! why); a node is drained with `postern queue move`.
//!
//! Every request runs under `cluster.timeout` (default 200 ms); an error or
//! a timeout answers `None`, and callers fall back to their local counters.
//! The outage is logged once when it starts (`cluster redis=unreachable
//! action="local counters"`) and once when it ends (`cluster redis=ok`).
//! Keys are `postern:PREFIX:...` so two clusters can share one Redis.
//!
//! May touch: the network (one Redis server, RESP over TCP or a unix socket).

#[cfg(test)]
pub mod fake;
pub mod throttle;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{redact_url, Cluster};
use crate::counters::SharedCounters;
use crate::directory::BoxFuture;
use crate::maillog;

/// What the last request to the store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing asked yet.
    Unknown,
    /// The last request was answered.
    Up,
    /// The last request failed or timed out.
    Down,
}

/// What to log after a request: the transitions only, so an outage is one
/// line (and its end another), not one line per request. Pure.
pub fn transition(before: Health, answered: bool) -> (Health, Option<&'static str>) {
    match (before, answered) {
        (Health::Down, true) => (Health::Up, Some("ok")),
        (_, true) => (Health::Up, None),
        (Health::Down, false) => (Health::Down, None),
        (_, false) => (Health::Down, Some("unreachable")),
    }
}

impl Health {
    fn code(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        }
    }

    fn from_code(c: u8) -> Health {
        match c {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
}

/// The shared counters in Redis or Valkey.
pub struct RedisCounters {
    client: redis::Client,
    /// Connected on first use (and reconnected by the manager itself).
    manager: Mutex<Option<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
    health: AtomicU8,
    /// For the log: the URL without its password.
    shown: String,
}

impl RedisCounters {
    /// The store `[cluster]` describes; `None` when `redis` is not set.
    /// `Err`: the URL does not parse (config check reports it first).
    pub fn from_config(c: &Cluster) -> Result<Option<RedisCounters>, String> {
        let Some(url) = &c.redis else { return Ok(None) };
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("cluster.redis: {e}"))?;
        Ok(Some(RedisCounters {
            client,
            manager: Mutex::new(None),
            prefix: format!("postern:{}:", c.key_prefix),
            timeout: c.timeout,
            health: AtomicU8::new(Health::Unknown.code()),
            shown: redact_url(url),
        }))
    }

    /// The full key for `key`.
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn manager(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut slot = match self.manager.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let m = ConnectionManager::new_lazy_with_config(self.client.clone(), cfg)?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Runs one request under the timeout; logs outage transitions.
    async fn run<T: redis::FromRedisValue>(&self, what: &'static str, req: impl FnOnce() -> RedisRequest) -> Option<T> {
        let answer = match self.manager() {
            Err(e) => Err(e.to_string()),
            Ok(mut m) => {
                let fut = async move {
                    match req() {
                        RedisRequest::Cmd(c) => c.query_async::<T>(&mut m).await,
                        RedisRequest::Pipe(p) => p.query_async::<T>(&mut m).await,
                    }
                };
                match tokio::time::timeout(self.timeout, fut).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {}", humantime::format_duration(self.timeout))),
                }
            }
        };
        // The swap tells exactly one of several concurrent requests that
        // the state changed: that one logs.
        let after = if answer.is_ok() { Health::Up } else { Health::Down };
        let before = Health::from_code(self.health.swap(after.code(), Ordering::Relaxed));
        let (_, log) = transition(before, answer.is_ok());
        match (log, &answer) {
            (Some("ok"), _) => maillog::cluster(&[("redis", "ok"), ("server", &self.shown)]),
            (Some(_), Err(e)) => maillog::cluster(&[
                ("redis", "unreachable"),
                ("action", "local counters"),
                ("server", &self.shown),
                ("request", what),
                ("error", e),
            ]),
            _ => {}
        }
        answer.ok()
    }
}

/// A command or an atomic pipeline.
enum RedisRequest {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SharedCounters for RedisCounters {
    fn add<'a>(&'a self, key: &'a str, n: u64, window: Duration) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let k = self.key(key);
            // Created with its expiry if absent (SET NX PX), then counted:
            // one MULTI, so the window starts at the first increment and
            // a counter can never be left without an expiry.
            let (total,): (u64,) = self
                .run("add", || {
                    let mut p = redis::pipe();
                    p.atomic().cmd("SET").arg(&k).arg(0).arg("NX").arg("PX").arg(millis(window)).ignore().cmd("INCRBY").arg(&k).arg(n);
                    RedisRequest::Pipe(p)
                })
                .await?;
            Some(total)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let k = self.key(key);
            let v: Option<u64> = self.run("get", || RedisRequest::Cmd(redis::cmd("GET").arg(&k).clone())).await?;
            Some(v.unwrap_or(0))
        })
    }

    fn set_flag<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Option<()>> {
        Box::pin(async move {
            let k = self.key(key);
            let _: () =
                self.run("set_flag", || RedisRequest::Cmd(redis::cmd("SET").arg(&k).arg(1).arg("PX").arg(millis(ttl)).clone())).await?;
            Some(())
        })
    }

    fn flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            let k = self.key(key);
            let n: u64 = self.run("flag", || RedisRequest::Cmd(redis::cmd("EXISTS").arg(&k).clone())).await?;
            Some(n > 0)
        })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<()>> {
        Box::pin(async move {
            let k = self.key(key);
            let _: u64 = self.run("clear", || RedisRequest::Cmd(redis::cmd("DEL").arg(&k).clone())).await?;
            Some(())
        })
    }
}

/// The shared counters `[cluster]` configures, for [`crate::services::Services`].
/// A URL that does not parse is logged (config check refuses it before).
pub fn counters(c: &Cluster) -> Option<Arc<dyn SharedCounters>> {
    match RedisCounters::from_config(c) {
        Ok(Some(r)) => Some(Arc::new(r)),
        Ok(None) => None,
        Err(e) => {
            maillog::error(&[("error", &e), ("action", "local counters")]);
            None
        }
    }
}

#[cfg(test)]
mod tests;
