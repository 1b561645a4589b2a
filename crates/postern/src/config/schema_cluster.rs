//! The `[cluster]` table: what several postern nodes share (docs/scaling.md).
//! Today that is a Redis/Valkey server holding the AUTH throttle's failure
//! counts, bans and remembered logins, so a client that fails on node A
//! and then tries node B is counted once.
//!
//! May touch: nothing (types only).

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::values::{duration, show_duration};

/// Settings shared by the nodes of a cluster. Default: no shared store
/// (every node counts on its own).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// The Redis or Valkey server holding the shared counters, as a URL:
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `unix:///PATH/redis.sock`.
    /// When it cannot be reached every node falls back to its own counters
    /// (mail is never refused because of it). Default: none (local counters).
    #[serde(deserialize_with = "redis_url", serialize_with = "show_redis_url")]
    pub redis: Option<String>,
    /// Names this cluster's keys (`postern:PREFIX:...`), so that two
    /// clusters can share one Redis. Letters, digits, `-`, `_`, `.`.
    /// Default "default".
    #[serde(deserialize_with = "key_prefix")]
    pub key_prefix: String,
    /// Time limit of each request to Redis; past it the request counts as
    /// unreachable and the node uses its local counters. Default "200ms".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster { redis: None, key_prefix: "default".into(), timeout: Duration::from_millis(200) }
    }
}

/// Is `url` a Redis URL this build can use? `Err` says why not.
fn check_redis_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (redis://HOST:PORT/DB or unix:///PATH)"));
    };
    match scheme {
        "redis" | "valkey" if !rest.is_empty() => Ok(()),
        "unix" | "redis+unix" | "valkey+unix" if rest.starts_with('/') => Ok(()),
        "rediss" | "valkeys" => {
            Err("TLS to Redis (rediss://) is not supported by this build: use redis:// on a private network or a unix socket".into())
        }
        _ => Err(format!("{url:?}: expected redis://HOST:PORT/DB or unix:///PATH")),
    }
}

/// Is `prefix` usable as a key prefix?
fn check_key_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_redis_url(&s).map_err(de::Error::custom)?;
    Ok(Some(s))
}

fn key_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !check_key_prefix(&s) {
        return Err(de::Error::custom(format!("{s:?}: 1 to 64 letters, digits, '-', '_' or '.'")));
    }
    Ok(s)
}

/// The URL with its password (`redis://user:PASSWORD@host`) replaced, for
/// `config show`.
fn show_redis_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        None => s.serialize_none(),
        Some(u) => s.serialize_str(&redact_url(u)),
    }
}

/// `redis://user:secret@host/0` -> `redis://user:********@host/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (url, ok) in [
            ("redis://127.0.0.1:6379/0", true),
            ("redis://:pw@redis.example:6380", true),
            ("valkey://10.0.0.5", true),
            ("unix:///run/redis/redis.sock", true),
            ("redis+unix:///run/redis/redis.sock", true),
            ("rediss://redis.example", false),
            ("127.0.0.1:6379", false),
            ("http://x", false),
            ("unix://relative", false),
            ("redis://", false),
        ] {
            assert_eq!(check_redis_url(url).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn prefixes() {
        for (p, ok) in [("default", true), ("eu-1.mx_a", true), ("", false), ("a:b", false), ("a b", false), (&"x".repeat(65), false)] {
            assert_eq!(check_key_prefix(p), ok, "{p}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:s3cret@h:6379/0"), "redis://:********@h:6379/0");
        assert_eq!(redact_url("redis://u:s3cret@h/1"), "redis://u:********@h/1");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
    }
}
