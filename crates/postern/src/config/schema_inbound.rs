//! The `[inbound]` table: defences an MX applies at the SMTP level before
//! any milter runs (docs/inbound.md). Each defence is a sub-table owned by
//! its module's schema file; all are off by default.
//!
//! May touch: nothing (types only).

use serde::{Deserialize, Serialize};

use super::schema_inbound_dnsbl::{Dnsbl, Pregreet};
use super::schema_inbound_rate::{Greylist, RateLimits};

/// Inbound defences. Default: every one off.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inbound {
    /// Reverse DNS of the client, HELO and sender checks, harvest
    /// protection (`[inbound.rdns]`).
    pub rdns: super::schema_inbound_rdns::InboundRdns,
    /// DNS block/allow lists with weights (`[inbound.dnsbl]`). Default: no lists.
    pub dnsbl: Dnsbl,
    /// The pre-greeting test (`[inbound.pregreet]`). Default: off.
    pub pregreet: Pregreet,
    /// Rate limits per client network, user and sender (`[inbound.rate]`).
    /// Default: no limits.
    pub rate: RateLimits,
    /// Greylisting at RCPT (`[inbound.greylist]`). Default off.
    pub greylist: Greylist,
}
