//! The `[inbound.rate]` and `[inbound.greylist]` tables: anvil-like rate
//! limits per client network, authenticated user and sender, and
//! greylisting of (client network, sender, recipient) triplets
//! (docs/inbound-rate.md). Both off by default.
//!
//! May touch: nothing (types only). RFCs: 5321 §4.2.5/§4.5.3.1.10 (the
//! 4yz replies), 6647 (greylisting).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration, Cidr};

/// What a rate limit counts per: `client` (the client's network, see
/// `ipv4_prefix`/`ipv6_prefix`), `user` (the SMTP AUTH identity) or
/// `sender` (the MAIL FROM address; the null sender is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateKey {
    /// The client's network.
    Client,
    /// The authenticated user (clients without AUTH are not counted).
    User,
    /// The envelope sender.
    Sender,
}

/// What a rate limit counts: `connections` (key `client` only, refused at
/// connect), `messages` (MAIL commands) or `recipients` (RCPT commands,
/// accepted or not, as Postfix counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateWhat {
    /// New connections.
    Connections,
    /// MAIL FROM commands.
    Messages,
    /// RCPT TO commands.
    Recipients,
}

/// One `[[inbound.rate.limit]]`: at most `max` events of kind `what` per
/// `key` in a window of `per`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// "client", "user" or "sender". Required.
    pub key: RateKey,
    /// "connections", "messages" or "recipients". Required.
    pub what: RateWhat,
    /// Events allowed per window; the next one gets a 4yz reply. Required.
    pub max: u64,
    /// The window (fixed: it starts at the first event and the count
    /// restarts when it ends). Required, e.g. "1m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub per: Duration,
}

/// `[inbound.rate]`: rate limits (Postfix anvil's
/// smtpd_client_*_rate_limit, plus per user and per sender).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// The limits, `[[inbound.rate.limit]]` tables. Default none (off).
    pub limit: Vec<RateLimit>,
    /// IPv4 clients are counted per network of this prefix length (32:
    /// per address, as Postfix anvil does; 24 aggregates a /24). Default 32.
    pub ipv4_prefix: u8,
    /// IPv6 clients are counted per network of this prefix length (one
    /// site usually holds a whole /64). Default 64.
    pub ipv6_prefix: u8,
    /// Clients never limited (Postfix smtpd_client_event_limit_exceptions).
    /// Default loopback: ["127.0.0.0/8", "::1/128"].
    pub exempt_networks: Vec<Cidr>,
    /// Clients in `relay.networks` are never limited either. Default true.
    pub exempt_relay_networks: bool,
    /// Counters kept in memory at most; when full, expired counters go
    /// first, then the oldest. Default 100000.
    pub max_entries: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            limit: Vec::new(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            exempt_networks: Cidr::loopback(),
            exempt_relay_networks: true,
            max_entries: 100_000,
        }
    }
}

/// `[inbound.greylist]`: a recipient of a (client network, sender,
/// recipient) triplet not seen before gets `450 4.7.1` until the client
/// retries after `delay` (postgrey's model, RFC 6647).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Greylist {
    /// Greylist at RCPT. Default false.
    pub enabled: bool,
    /// How long a new triplet is deferred. Default "5m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub delay: Duration,
    /// A retry later than this after the first attempt starts over.
    /// Default "2d".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub retry_window: Duration,
    /// A triplet that passed is not greylisted again for this long after
    /// its last use. Default "35d".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub pass_ttl: Duration,
    /// A client network whose triplets passed this many times is not
    /// greylisted any more (for `pass_ttl`); 0: never auto-allow. Default 5.
    pub auto_allow_after: u32,
    /// IPv4 clients are grouped per network of this prefix length (a
    /// sender's outgoing pool often retries from another address). Default 24.
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped per network of this prefix length. Default 64.
    pub ipv6_prefix: u8,
    /// Clients never greylisted (authenticated clients and clients with a
    /// verified certificate never are). Default loopback.
    pub exempt_networks: Vec<Cidr>,
    /// Clients in `relay.networks` are never greylisted. Default true.
    pub exempt_relay_networks: bool,
    /// Triplets and client records kept at most (memory and
    /// `DATA/greylist.json`); when full, the oldest go. Default 100000.
    pub max_entries: usize,
}

impl Default for Greylist {
    fn default() -> Self {
        Greylist {
            enabled: false,
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86400),
            pass_ttl: Duration::from_secs(35 * 86400),
            auto_allow_after: 5,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            exempt_networks: Cidr::loopback(),
            exempt_relay_networks: true,
            max_entries: 100_000,
        }
    }
}
