//! Shared, reloadable daemon state: the current settings, the server TLS
//! material, the user database and the AUTH throttle, plus how to reload
//! them. A leaf of the daemon: the server builds it, sessions, the
//! scheduler and the control socket get the handles they need.
//!
//! May touch: the config file and TLS files (read, on reload). No RFCs.

use std::sync::{Arc, RwLock};

use crate::auth::Throttle;
use crate::maillog;
use crate::settings::{Settings, Source};
use crate::tls::ServerTls;
use crate::users::UserStore;

/// A cheap, cloneable handle on the current settings; a reload swaps
/// what every holder sees next.
#[derive(Clone)]
pub struct SettingsHandle(Arc<RwLock<Arc<Settings>>>);

impl SettingsHandle {
    /// A handle holding `settings`.
    pub fn new(settings: Settings) -> SettingsHandle {
        SettingsHandle(Arc::new(RwLock::new(Arc::new(settings))))
    }

    /// The current settings (a snapshot: later reloads do not change it).
    pub fn current(&self) -> Arc<Settings> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs new settings.
    pub fn replace(&self, new: Settings) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(new),
            Err(p) => *p.into_inner() = Arc::new(new),
        }
    }
}

/// Shared, reloadable server state.
pub struct Shared {
    /// Current settings; sessions take a snapshot when they start.
    pub settings: SettingsHandle,
    /// Where the settings came from (for reload).
    pub source: Source,
    /// Server TLS material; `None` if it could not be loaded.
    pub tls: RwLock<Option<Arc<ServerTls>>>,
    /// The user database (re-read when the file changes).
    pub users: Arc<UserStore>,
    /// Brute-force counters.
    pub throttle: Arc<Throttle>,
    /// Directories, cluster counters, inbound-defence caches (built at start).
    pub services: Arc<crate::services::Services>,
}

impl Shared {
    /// State for `settings` loaded from `source`, with TLS material loaded.
    pub fn new(settings: Settings, source: Source, tls: ServerTls) -> Shared {
        let users = Arc::new(UserStore::new(&settings.data_dir));
        let services = Arc::new(crate::services::Services::new(&settings));
        Shared {
            settings: SettingsHandle::new(settings),
            source,
            tls: RwLock::new(Some(Arc::new(tls))),
            users,
            throttle: Arc::new(Throttle::default()),
            services,
        }
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.current()
    }

    /// The current TLS material.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        match self.tls.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reloads the TLS material; broken new files are logged and the old
    /// material stays in use. New handshakes use the new material; open
    /// sessions keep theirs.
    pub fn reload_tls(&self) -> bool {
        let settings = self.settings();
        match ServerTls::load(&settings) {
            Ok(new) => {
                maillog::tls(&[("reload", "ok"), ("fingerprint", &new.fingerprint)]);
                self.install_tls(new);
                true
            }
            Err(e) => {
                maillog::tls(&[("reload", "error"), ("error", &e.to_string()), ("action", "keeping old certificate")]);
                false
            }
        }
    }

    /// Reloads the configuration and the TLS material, and logs one
    /// `reload` line saying what happened: `result=ok changed="a.b,c.d"`
    /// (or `changed=none`), with `restart_needed="listener"` for changes
    /// only a restart applies; `result=partial tls=error error=...` when the
    /// config is in use but the TLS files could not be read (the old
    /// certificate stays); `result=error` when the config is invalid (the old
    /// one stays). Returns the control socket's answer: `ok ...`,
    /// `partial ...` or `error ...`, with the same fields.
    pub fn reload(&self) -> String {
        // A `[[dkim]]` key that does not load keeps the old config (and its keys).
        let loaded = Settings::load(&self.source).map_err(|e| e.to_string()).and_then(|s| match s.dkim.first_error() {
            Some(e) => Err(e),
            None => Ok(s),
        });
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                maillog::reload(&[("result", "error"), ("error", &e), ("action", "keeping old config")]);
                return maillog::format_event("error", &[("error", &e), ("action", "keeping old config")]);
            }
        };
        let old = self.settings();
        let changes = crate::config::show::changes(&old.config, &new.config);
        let mut new = new;
        new.data_dir = old.data_dir.clone();
        // TLS first, with the new settings, so one line reports both.
        let tls = ServerTls::load(&new);
        self.settings.replace(new);
        let changed = if changes.changed.is_empty() { "none".to_string() } else { changes.changed.join(",") };
        let restart = changes.restart_needed.join(",");
        let mut fields: Vec<(&str, String)> = Vec::new();
        let tls_error = tls.as_ref().err().map(|e| e.to_string());
        match tls {
            Ok(t) => {
                fields.push(("result", "ok".into()));
                fields.push(("changed", changed));
                if !restart.is_empty() {
                    fields.push(("restart_needed", restart));
                }
                fields.push(("certificate_sha256", t.fingerprint.clone()));
                self.install_tls(t);
            }
            Err(_) => {
                fields.push(("result", "partial".into()));
                fields.push(("changed", changed));
                if !restart.is_empty() {
                    fields.push(("restart_needed", restart));
                }
                fields.push(("tls", "error".into()));
                fields.push(("error", tls_error.unwrap_or_default()));
                fields.push(("action", "keeping old certificate".into()));
            }
        }
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        maillog::reload(&pairs);
        maillog::format_event(pairs[0].1, &pairs[1..])
    }

    fn install_tls(&self, new: ServerTls) {
        match self.tls.write() {
            Ok(mut g) => *g = Some(Arc::new(new)),
            Err(p) => *p.into_inner() = Some(Arc::new(new)),
        }
    }
}
