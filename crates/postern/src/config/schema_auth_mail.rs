//! The `[mail_auth]` table: native verification of incoming mail (SPF,
//! DKIM, DMARC, ARC) on smtp-role listeners, the `Authentication-Results:`
//! header and the DMARC policy switches.
//!
//! May touch: nothing (types only). RFCs: 7208, 6376, 7489, 8617, 8601.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// Verification of incoming mail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuth {
    /// Check SPF, DKIM, DMARC and ARC on mail arriving on smtp-role
    /// listeners and add an `Authentication-Results:` header. Clients in
    /// `relay.networks`, authenticated clients, clients with a verified
    /// certificate and submission listeners are not checked (they are ours).
    /// Default true.
    pub verify: bool,
    /// The authserv-id of our `Authentication-Results:` headers; incoming
    /// headers carrying it are removed as forged. Default: the host name.
    pub authserv_id: Option<String>,
    /// Refuse mail that fails DMARC of a From domain publishing `p=reject`
    /// with 550 5.7.1 (and answer 451 4.7.1 when a temporary DNS error
    /// leaves such a verdict open). When false, `p=reject` is treated as
    /// `p=quarantine`. Default true.
    pub dmarc_reject: bool,
    /// What happens to mail failing DMARC of a From domain publishing
    /// `p=quarantine`: "hold" (queued on hold, `postern queue release`
    /// delivers it), "header" (delivered with an `X-Postern-Quarantine:`
    /// header) or "none" (the result is only in `Authentication-Results:`).
    /// Default "header".
    pub dmarc_quarantine: DmarcQuarantine,
    /// Time limit of one DNS query of these checks (the name servers are
    /// `mx.nameservers`). Default "5s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub dns_timeout: Duration,
}

impl Default for MailAuth {
    fn default() -> Self {
        MailAuth {
            verify: true,
            authserv_id: None,
            dmarc_reject: true,
            dmarc_quarantine: DmarcQuarantine::Header,
            dns_timeout: Duration::from_secs(5),
        }
    }
}

/// `mail_auth.dmarc_quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcQuarantine {
    /// Queue on hold, like a milter's quarantine.
    Hold,
    /// Deliver with an `X-Postern-Quarantine:` header.
    #[default]
    Header,
    /// Only the `Authentication-Results:` header says so.
    None,
}
