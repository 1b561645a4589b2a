//! The `[mx]` table: direct delivery by MX records.
//!
//! May touch: nothing (types only). RFCs: 5321 §5.1 (MX), §6.3 (loops).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::OutboundTls;
use super::values::{duration, show_duration, socket_addrs};

/// Direct delivery to the Internet (MX).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mx {
    /// Name servers (`address:port`). Default: the system's (/etc/resolv.conf).
    #[serde(deserialize_with = "socket_addrs")]
    pub nameservers: Vec<SocketAddr>,
    /// The SMTP port of MX hosts. Default 25 (tests use another).
    pub port: u16,
    /// TLS to MX hosts: "none", "may" (default), "encrypt", "verify",
    /// "dane" (RFC 7672: hosts with DNSSEC-secure TLSA records must present
    /// a matching certificate, never cleartext; others as "may"; needs a
    /// validating resolver on loopback, see docs/delivery.md "DANE").
    pub tls: OutboundTls,
    /// Deliveries at once per destination domain. Default 10.
    pub domain_concurrency: usize,
    /// After every MX host of a domain failed, wait this long before trying
    /// that domain again (other domains are not held up). Default "1m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub domain_backoff: Duration,
    /// Let MX delivery connect to loopback addresses (a test network, a
    /// filter on another port). Off by default: an MX or address literal
    /// that points at loopback, at 0.0.0.0/:: or at one of our listeners is
    /// this host, and the mail bounces with 5.4.6 "loops back to myself".
    /// Our own listeners (address and port) stay refused even when on.
    /// Default false.
    pub dangerous_allow_loopback: bool,
    /// With `tls = "dane"`: trust the AD ("validated") bit from name
    /// servers that are not on loopback. Off by default: the AD bit is only
    /// as good as the path it travels, so DANE wants a validating resolver
    /// on this host (127.0.0.1, ::1). Turn on only when the path to the
    /// resolver is itself protected. Default false.
    pub dnssec_trust_remote_ad: bool,
}

impl Default for Mx {
    fn default() -> Self {
        Mx {
            nameservers: Vec::new(),
            port: 25,
            tls: OutboundTls::May,
            domain_concurrency: 10,
            domain_backoff: Duration::from_secs(60),
            dangerous_allow_loopback: false,
            dnssec_trust_remote_ad: false,
        }
    }
}

/// Why these resolvers may not be trusted for the AD bit, if they may not:
/// the answer's AD bit is only as good as the path it came over, so only
/// resolvers on this host count unless `trust_remote` (RFC 4035 §4.9.3,
/// RFC 6698 §4.1). Pure.
pub fn untrusted_resolvers(servers: &[SocketAddr], trust_remote: bool) -> Option<String> {
    if servers.is_empty() {
        return Some("no name server to ask".into());
    }
    let remote: Vec<String> = servers.iter().filter(|a| !a.ip().to_canonical().is_loopback()).map(|a| a.to_string()).collect();
    if remote.is_empty() || trust_remote {
        None
    } else {
        Some(format!(
            "mx.tls = \"dane\" trusts the DNSSEC AD bit only from a validating resolver on loopback; {} is not \
             (set mx.dnssec_trust_remote_ad = true if the path to it is trusted)",
            remote.join(", ")
        ))
    }
}
