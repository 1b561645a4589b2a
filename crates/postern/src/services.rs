//! Long-lived services a session may consult beyond the settings: account
//! directories (SQL, LDAP), the Dovecot authentication client, the shared
//! cluster counters, the inbound defences' caches. Built once by the
//! server from the settings ([`Services::new`]), shared by every session
//! through [`crate::session::Context::services`]; [`Services::default`]
//! is "none configured" (tests, and a config that names none).
//!
//! May touch: nothing itself; each service says what it touches.
//!
//! Each service is one field, added by the module that owns it; a field is
//! `Option<Arc<…>>` (or a type whose `Default` is "off") so `default()`
//! stays valid.

use std::sync::Arc;

use crate::auth::dovecot::DovecotClient;
use crate::config::AuthBackend;
use crate::counters::SharedCounters;
use crate::directory::Directory;
use crate::inbound::greylist::GreylistStore;
use crate::inbound::rate::RateCounters;
use crate::settings::Settings;

/// The services a session may use. Cheap to clone (handles only).
#[derive(Clone, Default)]
pub struct Services {
    /// The account directory (`[sql]` or `[ldap]`), cached; `None`: only
    /// `users.json`, `local.domains` and the aliases file.
    pub directory: Option<Arc<dyn Directory>>,
    /// Counters shared between nodes (`[cluster] redis`); `None`: local only.
    pub counters: Option<Arc<dyn SharedCounters>>,
    /// `[inbound.rdns]`: the DNS of the rDNS/HELO/sender checks and the
    /// harvest counts; `None`: no lookups (tests that do not set one).
    pub rdns: Option<Arc<crate::inbound::rdns_service::RdnsService>>,
    /// The Dovecot auth client (`auth.backend = "dovecot"`); `None`: not
    /// configured. It connects lazily.
    pub dovecot: Option<Arc<DovecotClient>>,
    /// DNSBL lookups and their answer cache (used when `[inbound.dnsbl] lists` is set).
    pub dnsbl: Arc<crate::inbound::dnsbl::DnsblService>,
    /// Clients that passed the pregreet test (`[inbound.pregreet]`).
    pub pregreet: Arc<crate::inbound::pregreet::PassCache>,
    /// The rate limits' local counters (`[inbound.rate]`).
    pub rate: Arc<RateCounters>,
    /// The greylist records (`[inbound.greylist]`), from `DATA/greylist.json`.
    pub greylist: Arc<GreylistStore>,
}

impl Services {
    /// The services `settings` configure. Never fails: a backend that cannot
    /// be reached now is reached later (its lookups answer "unavailable",
    /// which sessions turn into 4xx replies).
    pub fn new(settings: &Settings) -> Services {
        let auth = &settings.config.auth;
        let dovecot = match (&auth.backend, &auth.dovecot_socket) {
            (AuthBackend::Dovecot, Some(s)) => Some(Arc::new(DovecotClient::new(s.0.clone(), auth.dovecot_timeout))),
            _ => None,
        };
        Services {
            directory: directory_of(settings),
            counters: crate::cluster::counters(&settings.config.cluster),
            rdns: Some(Arc::new(crate::inbound::rdns_service::RdnsService::new())),
            dovecot,
            greylist: Arc::new(GreylistStore::load(&settings.data_dir)),
            ..Services::default()
        }
    }
}

/// The `[ldap]` or `[sql]` directory (at most one is configured), cached.
fn directory_of(settings: &Settings) -> Option<Arc<dyn Directory>> {
    use crate::directory::cache::Cached;
    if let Some(sql) = &settings.config.sql {
        let inner: Arc<dyn Directory> = Arc::new(crate::directory::sql::SqlDirectory::new(sql));
        return Some(Arc::new(Cached::new(inner, sql.cache_ttl, sql.negative_cache_ttl, sql.timeout)));
    }
    if let Some(l) = &settings.config.ldap {
        let inner: Arc<dyn Directory> = Arc::new(crate::directory::ldap::LdapDirectory::new(l, settings));
        return Some(Arc::new(Cached::new(inner, l.cache_ttl, l.negative_cache_ttl, l.timeout)));
    }
    None
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("directory", &self.directory.as_ref().map(|d| d.name()))
            .field("counters", &self.counters.is_some())
            .field("rdns", &self.rdns.is_some())
            .field("dovecot", &self.dovecot)
            .field("pregreet_passed", &self.pregreet.len())
            .finish()
    }
}
