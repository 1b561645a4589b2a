//! Stand-ins for the shared store in tests: one in memory (several
//! throttles or sessions sharing it are several nodes), one that is always
//! unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::counters::SharedCounters;
use crate::directory::BoxFuture;

/// The shared store in memory (no expiry: tests are shorter than windows).
#[derive(Debug, Default)]
pub struct MemoryCounters {
    values: Mutex<HashMap<String, u64>>,
}

impl MemoryCounters {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, u64>) -> T) -> T {
        match self.values.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The keys stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.with(|m| m.keys().cloned().collect());
        k.sort();
        k
    }
}

impl SharedCounters for MemoryCounters {
    fn add<'a>(&'a self, key: &'a str, n: u64, _window: Duration) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            Some(self.with(|m| {
                let v = m.entry(key.to_string()).or_insert(0);
                *v += n;
                *v
            }))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move { Some(self.with(|m| m.get(key).copied().unwrap_or(0))) })
    }

    fn set_flag<'a>(&'a self, key: &'a str, _ttl: Duration) -> BoxFuture<'a, Option<()>> {
        Box::pin(async move {
            self.with(|m| m.insert(key.to_string(), 1));
            Some(())
        })
    }

    fn flag<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move { Some(self.with(|m| m.contains_key(key))) })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<()>> {
        Box::pin(async move {
            self.with(|m| m.remove(key));
            Some(())
        })
    }
}

/// A store that never answers (Redis down).
#[derive(Debug, Default)]
pub struct DownCounters;

impl SharedCounters for DownCounters {
    fn add<'a>(&'a self, _key: &'a str, _n: u64, _window: Duration) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { None })
    }

    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { None })
    }

    fn set_flag<'a>(&'a self, _key: &'a str, _ttl: Duration) -> BoxFuture<'a, Option<()>> {
        Box::pin(async { None })
    }

    fn flag<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async { None })
    }

    fn clear<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<()>> {
        Box::pin(async { None })
    }
}
