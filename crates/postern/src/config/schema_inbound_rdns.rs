//! The `[inbound.rdns]` table: reverse DNS of the client (FCrDNS), HELO
//! checks, the sender-domain check and directory-harvest protection
//! (docs/inbound-rdns.md). Everything that refuses mail is off by default.
//!
//! May touch: nothing (types only). RFCs: 1912 §2.1 (PTR and A agree),
//! 5321 §4.1.1.1 (HELO name), §4.1.3 (address literals).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration, Cidr};

/// Reverse DNS, HELO and sender checks, harvest protection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundRdns {
    /// Look up every client's name: PTR, then forward confirmation
    /// (FCrDNS: one of the PTR names must resolve back to the client's
    /// address). The name goes into `Received:`, the mail log
    /// (`client=name[ip]:port`), the milter macros `{client_name}`,
    /// `{client_ptr}`, `{client_resolve}` and the `[[rule]]` criterion
    /// `rdns`. 127.0.0.1 and ::1 are never looked up. Uses `[mx]
    /// nameservers`. Default true (it only delays the greeting of a
    /// remote client, by at most `timeout`).
    pub lookup: bool,
    /// Deadline of the whole lookup (PTR and all forward queries); past
    /// it the result is "temp". Default "5s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
    /// Refuse a HELO/EHLO name that is not a fully qualified domain name
    /// (no dot, not a valid host name) or an address literal that is not
    /// the client's address. Default false.
    pub helo_require_fqdn: bool,
    /// Refuse a HELO/EHLO name that is our own `hostname` or an address
    /// literal of one of our listener addresses. Default false.
    pub helo_reject_own_name: bool,
    /// Refuse a HELO/EHLO name that has no A/AAAA record (450 when the DNS
    /// fails). Default false.
    pub helo_require_resolve: bool,
    /// Refuse a sender whose domain has no MX, A or AAAA record (550 5.1.8;
    /// 450 4.1.8 when the DNS fails). The null sender is not checked.
    /// Default false.
    pub sender_domain_check: bool,
    /// When HELO and sender refusals are given: "rcpt" (default: at each
    /// RCPT, so the log shows sender and recipients, like Postfix's
    /// `smtpd_delay_reject`) or "command" (in reply to HELO/EHLO or MAIL).
    pub reject_at: RejectAt,
    /// Unknown local recipients (550 5.1.1) one client may try within
    /// `harvest_window` before each further one is delayed
    /// (`harvest_delay`, growing). 0: never delayed. Default 0.
    pub harvest_delay_after: u32,
    /// Unknown local recipients within `harvest_window` after which the
    /// client gets 421 4.7.0 and is disconnected (and again at once while
    /// the count lasts). 0: never dropped. Default 0.
    pub harvest_drop_after: u32,
    /// The window in which unknown recipients of one client are counted,
    /// across connections (IPv6: per `limits.ipv6_prefix` network). Counted
    /// in `[cluster]`'s shared store when one is configured. Default "1h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub harvest_window: Duration,
    /// The delay of the first delayed unknown recipient; each further one
    /// waits this much longer. Default "1s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub harvest_delay: Duration,
    /// The longest delay of one unknown recipient. Default "10s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub harvest_max_delay: Duration,
    /// Clients none of these checks apply to (HELO, sender, harvest), in
    /// addition to 127.0.0.1 and ::1, `relay.networks` (loopback by
    /// default), submission listeners, authenticated clients and clients
    /// with a CA-verified certificate. Default [].
    pub exempt_networks: Vec<Cidr>,
}

/// When a HELO or sender refusal is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectAt {
    /// At each RCPT (the default).
    Rcpt,
    /// In reply to the command itself (HELO/EHLO, MAIL).
    Command,
}

impl Default for InboundRdns {
    fn default() -> Self {
        InboundRdns {
            lookup: true,
            timeout: Duration::from_secs(5),
            helo_require_fqdn: false,
            helo_reject_own_name: false,
            helo_require_resolve: false,
            sender_domain_check: false,
            reject_at: RejectAt::Rcpt,
            harvest_delay_after: 0,
            harvest_drop_after: 0,
            harvest_window: Duration::from_secs(3600),
            harvest_delay: Duration::from_secs(1),
            harvest_max_delay: Duration::from_secs(10),
            exempt_networks: Vec::new(),
        }
    }
}

/// The `rdns` criterion of a `[[rule]]`: sendmail's `{client_resolve}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolve {
    /// The PTR name resolves back to the client's address.
    Ok,
    /// No PTR record.
    Fail,
    /// PTR names, none of which resolves back to the client's address.
    Forged,
    /// The DNS failed or timed out.
    Temp,
}

impl Resolve {
    /// sendmail's `{client_resolve}` value.
    pub fn macro_value(self) -> &'static str {
        match self {
            Resolve::Ok => "OK",
            Resolve::Fail => "FAIL",
            Resolve::Forged => "FORGED",
            Resolve::Temp => "TEMP",
        }
    }

    /// The config word (`ok`, `fail`, `forged`, `temp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resolve::Ok => "ok",
            Resolve::Fail => "fail",
            Resolve::Forged => "forged",
            Resolve::Temp => "temp",
        }
    }
}
