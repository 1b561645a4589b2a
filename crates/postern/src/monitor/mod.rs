//! What the daemon reports about itself: the facts behind the Prometheus
//! endpoint ([`http`]) and `postern status` ([`status`]): queue counts by
//! state, the oldest message, certificate expiry, listeners up or down.
//! The counters themselves live in `metrics` (fed by the mail log).
//!
//! May touch: the metrics listening socket, `DATA/queue` (reads envelopes
//! through `spool`), certificate files and `DATA/ca/index.json` (reads).

pub mod http;
pub mod status;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::{Ca, Kind};
use crate::config::Listener;
use crate::metrics::Snapshot;
use crate::settings::Settings;
use crate::spool::{Place, RcptStatus, Spool};
use crate::state::Shared;
use crate::tls;

pub use status::{CertStatus, ListenerStatus, QueueStatus, Status};

/// A scrape within this long of the last one reuses its queue reading, so
/// several scrapers (or a fast one) cost one spool scan.
const QUEUE_CACHE: Duration = Duration::from_secs(2);

/// One listener and whether its accept loop is running.
struct ListenerState {
    name: String,
    role: &'static str,
    address: SocketAddr,
    up: AtomicBool,
}

/// The daemon's view of itself, shared by the metrics endpoint and the
/// control socket's `status` command.
pub struct Monitor {
    shared: Arc<Shared>,
    spool: Spool,
    started: SystemTime,
    listeners: Vec<ListenerState>,
    metrics_address: Option<SocketAddr>,
    queue_cache: Mutex<Option<(Instant, QueueStatus)>>,
}

/// Binds the metrics endpoint, if `[metrics] address` is set. Called before
/// privileges are dropped, like the SMTP listeners.
pub async fn bind(settings: &Settings) -> Result<Option<TcpListener>, (SocketAddr, std::io::Error)> {
    match settings.config.metrics.address {
        Some(addr) => TcpListener::bind(addr).await.map(Some).map_err(|e| (addr, e)),
        None => Ok(None),
    }
}

/// Builds the monitor over the bound listeners and starts the metrics
/// endpoint on `metrics` (if bound) until shutdown.
pub fn start(
    shared: Arc<Shared>,
    spool: Spool,
    bound: &[(TcpListener, Listener)],
    metrics: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Arc<Monitor> {
    let listed: Vec<_> = bound.iter().map(|(sock, l)| (sock.local_addr().unwrap_or(l.address), l)).collect();
    let metrics_address = metrics.as_ref().and_then(|s| s.local_addr().ok());
    let monitor = Arc::new(Monitor::new(shared, spool, &listed, metrics_address));
    if let (Some(sock), Some(addr)) = (metrics, metrics_address) {
        crate::maillog::start(&[("metrics", &addr.to_string())]);
        tokio::spawn(http::serve(sock, monitor.clone(), shutdown));
    }
    monitor
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Monitor {
    /// A monitor over the bound listeners (`(address, config)`, in config
    /// order) and the bound metrics address.
    pub fn new(shared: Arc<Shared>, spool: Spool, listeners: &[(SocketAddr, &Listener)], metrics_address: Option<SocketAddr>) -> Monitor {
        let listeners = listeners
            .iter()
            .map(|(address, l)| ListenerState {
                name: l.name.clone().unwrap_or_else(|| l.role.name().to_string()),
                role: l.role.name(),
                address: *address,
                up: AtomicBool::new(false),
            })
            .collect();
        Monitor { shared, spool, started: SystemTime::now(), listeners, metrics_address, queue_cache: Mutex::new(None) }
    }

    /// Runs the accept loop `fut` of listener `index`, marking it up while it
    /// runs (a panic or an exit marks it down).
    pub fn track<F: Future<Output = ()>>(self: &Arc<Self>, index: usize, fut: F) -> impl Future<Output = ()> {
        struct Down(Arc<Monitor>, usize);
        impl Drop for Down {
            fn drop(&mut self) {
                if let Some(l) = self.0.listeners.get(self.1) {
                    l.up.store(false, Ordering::Relaxed);
                }
            }
        }
        let me = self.clone();
        async move {
            if let Some(l) = me.listeners.get(index) {
                l.up.store(true, Ordering::Relaxed);
            }
            let _down = Down(me, index);
            fut.await;
        }
    }

    /// Queue counts by state and the oldest message (cached for [`QUEUE_CACHE`]).
    pub fn queue(&self) -> QueueStatus {
        if let Ok(cache) = self.queue_cache.lock() {
            if let Some((_, q)) = cache.as_ref().filter(|(at, _)| at.elapsed() < QUEUE_CACHE) {
                return q.clone();
            }
        }
        let q = queue_status(&self.spool, unix(SystemTime::now()));
        if let Ok(mut cache) = self.queue_cache.lock() {
            *cache = Some((Instant::now(), q.clone()));
        }
        q
    }

    /// Every certificate whose expiry matters: the server certificate in
    /// use, the outbound client certificate, the built-in CA and the client
    /// certificates it issued (not revoked, not yet expired).
    pub fn certificates(&self) -> Vec<CertStatus> {
        let settings = self.shared.settings();
        let mut out = Vec::new();
        if let Some(server) = self.shared.tls() {
            let (path, _) = tls::files::server_paths(&settings);
            out.push(CertStatus::from_der("server", &path.display().to_string(), &server.server_cert));
        }
        if let Some(p) = &settings.config.relay.smarthost_client_certificate {
            out.push(CertStatus::from_file("client", &settings.resolve(p)));
        }
        out.extend(ca_certificates(&settings.data_dir, unix(SystemTime::now())));
        out
    }

    /// The full status report for `postern status`.
    pub fn status(&self) -> Status {
        let settings = self.shared.settings();
        let now = unix(SystemTime::now());
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: unix(self.started),
            uptime_seconds: self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            config_file: self.shared.source.config.as_ref().map(|p| p.display().to_string()),
            data_dir: settings.data_dir.display().to_string(),
            hostname: settings.hostname.clone(),
            metrics_address: self.metrics_address.map(|a| a.to_string()),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    name: l.name.clone(),
                    role: l.role.to_string(),
                    address: l.address.to_string(),
                    up: l.up.load(Ordering::Relaxed),
                })
                .collect(),
            queue: self.queue(),
            certificates: self
                .certificates()
                .into_iter()
                .filter(|c| c.kind != "ca_issued" || c.not_after.is_some_and(|t| t - now < status::CA_ISSUED_WINDOW_DAYS * 86400))
                .collect(),
        }
    }

    /// The metrics page (see `metrics::render`).
    pub fn scrape(&self, openmetrics: bool) -> String {
        let q = self.queue();
        let certificates =
            self.certificates().into_iter().filter_map(|c| c.not_after.map(|t| (c.kind.clone(), c.name.clone(), t))).collect();
        let snap = Snapshot {
            queue_messages: [q.active, q.deferred, q.hold],
            queue_bytes: [q.active_bytes, q.deferred_bytes, q.hold_bytes],
            oldest_age_seconds: q.oldest_age_seconds.unwrap_or(0),
            corrupt: q.corrupt,
            certificates,
        };
        crate::metrics::render(&snap, openmetrics)
    }
}

/// Reads the queue: a message in `active/` is `deferred` once a pending
/// recipient has been tried (Postfix's deferred queue), else `active`.
/// Held messages do not count for the oldest age: holding is deliberate.
pub fn queue_status(spool: &Spool, now: i64) -> QueueStatus {
    let mut q = QueueStatus::default();
    let listing = match spool.list() {
        Ok(l) => l,
        Err(e) => {
            q.error = Some(e.to_string());
            return q;
        }
    };
    q.corrupt = listing.corrupt.len() as u64;
    let mut oldest: Option<u64> = None;
    for (env, place) in &listing.envelopes {
        let (count, bytes) = match place {
            Place::Hold => (&mut q.hold, &mut q.hold_bytes),
            Place::Active if env.recipients.iter().any(|r| r.status == RcptStatus::Pending && r.attempts > 0) => {
                (&mut q.deferred, &mut q.deferred_bytes)
            }
            Place::Active => (&mut q.active, &mut q.active_bytes),
        };
        *count += 1;
        *bytes += env.size;
        if *place == Place::Active {
            oldest = Some(oldest.map_or(env.created, |o| o.min(env.created)));
        }
    }
    q.oldest_age_seconds = oldest.map(|c| u64::try_from(now).unwrap_or(0).saturating_sub(c));
    q
}

/// The CA certificate and the client certificates it issued that are not
/// revoked and not yet expired (`DATA/ca/index.json`); none without a CA.
fn ca_certificates(data_dir: &Path, now: i64) -> Vec<CertStatus> {
    let ca = Ca::new(data_dir);
    let mut out = Vec::new();
    if ca.cert_path().exists() {
        out.push(CertStatus::from_file("ca", &ca.cert_path()));
    }
    if let Ok(issued) = ca.list() {
        for i in issued.iter().filter(|i| i.kind == Kind::Client && i.revoked.is_none()) {
            let not_after = chrono::DateTime::parse_from_rfc3339(&i.not_after).map(|t| t.timestamp()).ok();
            if not_after.is_some_and(|t| t <= now) {
                continue;
            }
            out.push(CertStatus::new("ca_issued", &i.name, &i.subject, not_after, now));
        }
    }
    out
}
