//! From a [`Route`] to a [`Transport`]: builds transports from the current
//! settings and keeps the ones worth keeping (connection pools, MX state),
//! rebuilding them when the settings they depend on change.
//!
//! May touch: reads TLS material, CA files and the password files of the
//! smarthost and routes when a transport is built. No RFCs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use postern_wire::Enhanced;

use super::hops::Hops;
use super::lmtp::Lmtp;
use super::maildir::Maildir;
use super::mx::{MxDelivery, MxError};
use super::pool::{outbound_dests, Smarthost};
use super::{DeliveryReply, Route, Transport};
use crate::config::{Outbound, RouteTransport};
use crate::settings::Settings;

/// Why no transport could be built for a route: every recipient of the
/// group is deferred with [`SetupError::reply`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A smarthost route, but `relay.smarthost` is unset.
    #[error("relay.smarthost is not configured")]
    SmarthostNotConfigured,
    /// The smarthost's TLS material or password file is unusable.
    #[error("smarthost TLS setup: {0}")]
    SmarthostSetup(String),
    /// `local.delivery = "lmtp"` without `local.lmtp`.
    #[error("local.lmtp is not configured")]
    LmtpNotConfigured,
    /// The LMTP client TLS configuration could not be built.
    #[error("LMTP TLS setup: {0}")]
    LmtpTls(String),
    /// A `[[route]]` SMTP next hop's TLS configuration could not be built.
    #[error("{0}")]
    RouteTls(String),
    /// The `[[route]]` the recipient was routed by is gone after a reload.
    #[error("route vanished after reload")]
    RouteVanished,
    /// A `[[route]]` smtp/lmtp entry without `next_hop`/`next_hops` (config validation prevents it).
    #[error("route has no next_hop")]
    NoNextHop,
    /// MX delivery could not be set up (resolver or TLS configuration).
    #[error("{0}")]
    Mx(#[from] MxError),
}

impl SetupError {
    /// The reply recorded for the recipients (deferred).
    pub fn reply(&self) -> DeliveryReply {
        let status = match self {
            SetupError::SmarthostSetup(_) | SetupError::LmtpTls(_) | SetupError::RouteTls(_) => Enhanced(4, 7, 0),
            SetupError::SmarthostNotConfigured
            | SetupError::LmtpNotConfigured
            | SetupError::RouteVanished
            | SetupError::NoNextHop
            | SetupError::Mx(_) => Enhanced(4, 3, 5),
        };
        DeliveryReply::status_only(status, self.to_string())
    }

    /// What the mail log's `relay=` says when there is no transport.
    pub fn relay(&self) -> &'static str {
        match self {
            SetupError::LmtpNotConfigured | SetupError::LmtpTls(_) => "lmtp",
            SetupError::RouteTls(_) => "smtp",
            SetupError::Mx(_) => "mx",
            SetupError::SmarthostNotConfigured | SetupError::SmarthostSetup(_) | SetupError::RouteVanished | SetupError::NoNextHop => {
                "none"
            }
        }
    }
}

/// The transports in use, rebuilt when their settings change.
#[derive(Default)]
pub struct Transports {
    /// The smarthost and `[[route]]` SMTP next hops, keyed by every
    /// setting they were built from (hops, TLS, certificate, credentials,
    /// host name): a change builds new pools.
    smtp: Mutex<HashMap<String, Arc<Hops>>>,
    /// MX delivery, keyed by the `[mx]` and `[mta_sts]` settings and host name.
    mx: Mutex<Option<(String, Arc<MxDelivery>)>>,
    /// TLS-RPT counters: outlive MX delivery rebuilds (`tlsrpt/store.rs`).
    tlsrpt: std::sync::OnceLock<Arc<super::tlsrpt::Reporter>>,
}

impl Transports {
    /// The transport for `route` under the settings `s`.
    pub fn for_route(&self, s: &Settings, route: &Route) -> Result<Arc<dyn Transport>, SetupError> {
        Ok(match route {
            Route::Maildir => Arc::new(Maildir {
                root: s.maildir_root.clone(),
                hostname: s.hostname.clone(),
                static_domains: Some(s.local_domains.clone()),
            }),
            Route::Lmtp => {
                let ep = s.config.local.lmtp.as_ref().ok_or(SetupError::LmtpNotConfigured)?;
                Arc::new(Lmtp::from_settings(s, ep)?)
            }
            Route::Smarthost => self.smtp(s, &Outbound::smarthost(&s.config.relay).ok_or(SetupError::SmarthostNotConfigured)?)?,
            Route::Mx(_) => self.mx(s)?,
            Route::Custom(i) => {
                let r = s.config.routes.get(*i).ok_or(SetupError::RouteVanished)?;
                match (r.transport, &r.next_hop) {
                    (RouteTransport::Maildir, _) => {
                        Arc::new(Maildir { root: s.maildir_root.clone(), hostname: s.hostname.clone(), static_domains: None })
                    }
                    (RouteTransport::Lmtp, Some(ep)) => Arc::new(Lmtp::from_settings(s, ep)?),
                    (RouteTransport::Smtp, _) if !r.hops().is_empty() => self.smtp(s, &Outbound::route(*i, r))?,
                    // `route()` sends mx routes to Route::Mx; kept for a reload race.
                    (RouteTransport::Mx, _) => self.mx(s)?,
                    (RouteTransport::Lmtp | RouteTransport::Smtp, _) => return Err(SetupError::NoNextHop),
                }
            }
        })
    }

    /// The next hops of the smarthost or an smtp route under the current
    /// settings; built (new pools, new TLS material) when a setting changes.
    fn smtp(&self, s: &Settings, o: &Outbound) -> Result<Arc<Hops>, SetupError> {
        let key = format!("{o:?}|{}", s.hostname);
        if let Some(t) = lock(&self.smtp).get(&key) {
            return Ok(t.clone());
        }
        let pools = outbound_dests(s, o)?.into_iter().map(|d| Arc::new(Smarthost::new(d))).collect();
        let t = Arc::new(Hops::new(pools));
        let mut map = lock(&self.smtp);
        // Reloads leave stale entries behind: drop them all now and then
        // (the live ones are rebuilt on their next use).
        if map.len() >= 256 {
            map.clear();
        }
        map.insert(key, t.clone());
        Ok(t)
    }

    /// The TLS-RPT counters (made on first use, kept for the process).
    pub fn tls_reporter(&self, s: &Settings) -> Arc<super::tlsrpt::Reporter> {
        let dir = s.data_dir.join("tlsrpt");
        self.tlsrpt.get_or_init(|| Arc::new(super::tlsrpt::Reporter::open(dir, s.config.tls_rpt.max_domains))).clone()
    }

    /// The MX delivery state for the current `[mx]` settings.
    fn mx(&self, s: &Settings) -> Result<Arc<MxDelivery>, SetupError> {
        let key = format!("{:?}|{:?}|{}|{}", s.config.mx, s.config.mta_sts, s.hostname, s.config.tls_rpt.enabled);
        let mut g = lock(&self.mx);
        if let Some((k, m)) = g.as_ref() {
            if *k == key {
                return Ok(m.clone());
            }
        }
        let mut m = MxDelivery::new(s)?;
        if s.config.tls_rpt.enabled {
            m.reports = self.tls_reporter(s);
        }
        let m = Arc::new(m);
        *g = Some((key, m.clone()));
        Ok(m)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
