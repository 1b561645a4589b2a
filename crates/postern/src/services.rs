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

use crate::counters::SharedCounters;
use crate::directory::Directory;
use crate::settings::Settings;

/// The services a session may use. Cheap to clone (handles only).
#[derive(Clone, Default)]
pub struct Services {
    /// The account directory (`[sql]` or `[ldap]`), cached; `None`: only
    /// `users.json`, `local.domains` and the aliases file.
    pub directory: Option<Arc<dyn Directory>>,
    /// Counters shared between nodes (`[cluster] redis`); `None`: local only.
    pub counters: Option<Arc<dyn SharedCounters>>,
}

impl Services {
    /// The services `settings` configure. Never fails: a backend that cannot
    /// be reached now is reached later (its lookups answer "unavailable",
    /// which sessions turn into 4xx replies).
    pub fn new(settings: &Settings) -> Services {
        let mut services = Services::default();
        if let Some(sql) = &settings.config.sql {
            let inner: Arc<dyn Directory> = Arc::new(crate::directory::sql::SqlDirectory::new(sql));
            let cached = crate::directory::cache::Cached::new(inner, sql.cache_ttl, sql.negative_cache_ttl, sql.timeout);
            services.directory = Some(Arc::new(cached));
        }
        services
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("directory", &self.directory.as_ref().map(|d| d.name()))
            .field("counters", &self.counters.is_some())
            .finish()
    }
}
