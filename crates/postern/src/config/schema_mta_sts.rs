//! The `[mta_sts]` table: MTA Strict Transport Security for MX delivery.
//!
//! May touch: nothing (types only). RFCs: 8461 (MTA-STS).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// MTA-STS (RFC 8461) for direct MX delivery: a recipient domain that
/// publishes `_mta-sts.DOMAIN` TXT and a policy at
/// `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` says which MX hosts
/// are its own and whether they must be reached over verified TLS.
/// Smarthost and `[[route]] transport = "smtp"` next hops are not affected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaSts {
    /// Look up and apply MTA-STS policies when delivering by MX. Default
    /// true (as in mox and Stalwart; Postfix needs a separate policy
    /// daemon). Off: MX delivery uses `mx.tls` for every domain.
    pub enabled: bool,
    /// CA certificates (PEM) trusted for the policy host's HTTPS
    /// certificate and for the MX hosts' certificates under a policy.
    /// Default: the system bundle `/etc/ssl/certs/ca-certificates.crt`
    /// (without it and without this key, MTA-STS is off and the daemon
    /// logs why).
    pub ca_files: Vec<PathBuf>,
    /// Longest wait for the policy: connect, TLS and the whole HTTPS
    /// answer. Default "10s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub fetch_timeout: Duration,
    /// After a policy fetch failed, do not fetch that domain's policy
    /// (same TXT id) again for this long; its cached policy, if any, is
    /// used meanwhile. Default "5m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub fetch_failure_backoff: Duration,
    /// Most domains whose policy is kept (memory and `DATA/mta-sts/`);
    /// past it, the policy that expires soonest is dropped. Default 10000.
    pub max_policies: usize,
    /// The HTTPS port of `mta-sts.DOMAIN`. Default 443; only test set-ups
    /// change it (RFC 8461 allows no other port).
    pub https_port: u16,
}

impl Default for MtaSts {
    fn default() -> Self {
        MtaSts {
            enabled: true,
            ca_files: Vec::new(),
            fetch_timeout: Duration::from_secs(10),
            fetch_failure_backoff: Duration::from_secs(300),
            max_policies: 10_000,
            https_port: 443,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_values_and_errors() {
        assert_eq!(Config::parse("", "t.toml").expect("empty").mta_sts, MtaSts::default());
        let c = Config::parse("[mta_sts]\nenabled = false\nca_files = [\"ca.pem\"]\nfetch_timeout = \"3s\"\nhttps_port = 8443\n", "t.toml")
            .expect("parses");
        assert!(!c.mta_sts.enabled);
        assert_eq!(c.mta_sts.fetch_timeout, Duration::from_secs(3));
        assert_eq!((c.mta_sts.https_port, c.mta_sts.ca_files.len()), (8443, 1));
        let e = Config::parse("[mta_sts]\nmax_policies = 0\n", "t.toml").expect_err("zero").to_string();
        assert!(e.contains("t.toml:2") && e.contains("mta_sts.max_policies"), "{e}");
        let e = Config::parse("[mta_sts]\nfetch_timeut = \"1s\"\n", "t.toml").expect_err("unknown").to_string();
        assert!(e.contains("fetch_timeut"), "{e}");
    }
}
