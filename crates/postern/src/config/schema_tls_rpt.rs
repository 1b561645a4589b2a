//! The `[tls_rpt]` table: SMTP TLS reporting (RFC 8460), the daily
//! aggregate reports postern mails to the domains it delivered to.
//!
//! May touch: nothing (types only). RFCs: 8460.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// TLS reporting (docs/delivery.md "TLS reporting").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsRpt {
    /// Count the outcome of every TLS negotiation of MX delivery per
    /// recipient domain and, once a day, mail an aggregate report to each
    /// domain that asks for one (a `_smtp._tls` TXT record). Off by
    /// default: a report tells a third party which of your servers sent it
    /// how much mail, so sending them is a choice the operator makes.
    /// Default false.
    pub enabled: bool,
    /// The report's `From:` and envelope sender; its domain is the
    /// "submitter". Undeliverable reports bounce to it. Default:
    /// `postmaster@` the host name.
    pub from: Option<String>,
    /// The report's `organization-name`. Default: the host name.
    pub organization_name: Option<String>,
    /// The report's `contact-info`. Default: the `from` address.
    pub contact_info: Option<String>,
    /// How often the day's counts are written to `DATA/tlsrpt/` (also at
    /// shutdown and at the day's end), so a restart keeps them. Default "5m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub save_interval: Duration,
    /// Most policy domains counted per day; sessions to further domains
    /// that day are not counted (bounded memory). Default 10000.
    pub max_domains: usize,
}

impl Default for TlsRpt {
    fn default() -> Self {
        TlsRpt {
            enabled: false,
            from: None,
            organization_name: None,
            contact_info: None,
            save_interval: Duration::from_secs(300),
            max_domains: 10_000,
        }
    }
}
