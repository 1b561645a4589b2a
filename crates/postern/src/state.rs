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
}

impl Shared {
    /// State for `settings` loaded from `source`, with TLS material loaded.
    pub fn new(settings: Settings, source: Source, tls: ServerTls) -> Shared {
        let users = Arc::new(UserStore::new(&settings.data_dir));
        Shared {
            settings: SettingsHandle::new(settings),
            source,
            tls: RwLock::new(Some(Arc::new(tls))),
            users,
            throttle: Arc::new(Throttle::default()),
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
                match self.tls.write() {
                    Ok(mut g) => *g = Some(Arc::new(new)),
                    Err(p) => *p.into_inner() = Some(Arc::new(new)),
                }
                true
            }
            Err(e) => {
                maillog::tls(&[("reload", "error"), ("error", &e.to_string()), ("action", "keeping old certificate")]);
                false
            }
        }
    }

    /// Reloads the configuration; an invalid one is logged and the old stays.
    pub fn reload(&self) -> bool {
        match Settings::load(&self.source) {
            Ok(new) => {
                let old = self.settings();
                if new.config.listeners.len() != old.config.listeners.len()
                    || new.config.listeners.iter().zip(&old.config.listeners).any(|(a, b)| a.address != b.address)
                {
                    maillog::reload(&[("warning", "listener changes need a restart")]);
                }
                if new.data_dir != old.data_dir {
                    maillog::reload(&[("warning", "data_dir changes need a restart; keeping the old one")]);
                }
                let mut new = new;
                new.data_dir = old.data_dir.clone();
                self.settings.replace(new);
                maillog::reload(&[("result", "ok")]);
                self.reload_tls();
                true
            }
            Err(e) => {
                maillog::reload(&[("result", "error"), ("error", &e.to_string()), ("action", "keeping old config")]);
                false
            }
        }
    }
}
