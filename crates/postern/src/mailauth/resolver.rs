//! The `mail-auth` `MessageAuthenticator` built from the `[mx]` resolver
//! settings: the configured `mx.nameservers` (UDP and TCP) or the system's
//! `/etc/resolv.conf`, with `mail_auth.dns_timeout`. One authenticator is
//! shared by the daemon and rebuilt only when these settings change (a
//! reload), so its DNS cache survives between messages.
//!
//! May touch: DNS (the authenticator's lookups); /etc/resolv.conf (read).
//! No RFCs here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ProtocolConfig, ResolveHosts, ResolverConfig};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::MessageAuthenticator;

use crate::config::Config;

/// What the authenticator is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// `mx.nameservers`; empty: the system's.
    pub nameservers: Vec<SocketAddr>,
    /// `mail_auth.dns_timeout`: per query.
    pub timeout: Duration,
}

impl DnsSettings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> DnsSettings {
        DnsSettings { nameservers: config.mx.nameservers.clone(), timeout: config.mail_auth.dns_timeout }
    }
}

/// The resolver could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// `/etc/resolv.conf` could not be read or parsed.
    #[error("DNS configuration: {0}")]
    SystemConf(String),
}

/// Builds an authenticator for `dns`.
pub fn build(dns: &DnsSettings) -> Result<MessageAuthenticator, ResolverError> {
    let (config, mut opts) = if dns.nameservers.is_empty() {
        read_system_conf().map_err(|e| ResolverError::SystemConf(e.to_string()))?
    } else {
        let mut group = Vec::new();
        for a in &dns.nameservers {
            group.push(NameServerConfig::new(*a, ProtocolConfig::Udp));
            group.push(NameServerConfig::new(*a, ProtocolConfig::Tcp));
        }
        (ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group)), Default::default())
    };
    // Authentication follows DNS, never /etc/hosts (same rule as MX delivery).
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = dns.timeout;
    opts.attempts = 2;
    opts.cache_size = 1024;
    MessageAuthenticator::new(config, opts).map_err(|e| ResolverError::SystemConf(e.to_string()))
}

/// The daemon's authenticator, rebuilt when the DNS settings change.
static SHARED: Mutex<Option<(DnsSettings, Arc<MessageAuthenticator>)>> = Mutex::new(None);

/// The shared authenticator for `config` (built on first use, rebuilt after
/// a reload changed `mx.nameservers` or `mail_auth.dns_timeout`).
pub fn shared(config: &Config) -> Result<Arc<MessageAuthenticator>, ResolverError> {
    let dns = DnsSettings::of(config);
    let mut guard = match SHARED.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some((have, auth)) = guard.as_ref() {
        if *have == dns {
            return Ok(auth.clone());
        }
    }
    let auth = Arc::new(build(&dns)?);
    *guard = Some((dns, auth.clone()));
    Ok(auth)
}
