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
    /// TLS to MX hosts: "none", "may" (default), "encrypt", "verify".
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
        }
    }
}
