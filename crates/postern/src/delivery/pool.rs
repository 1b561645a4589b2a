//! SMTP next hops with a pool of idle connections: the smarthost
//! (`relay.smarthost*`), `[[route]] transport = "smtp"` next hops, and the
//! per-address pools of MX delivery (`mx.rs`).
//!
//! May touch: outbound TCP or unix-domain sockets to the configured peers;
//! reads the smarthost password file and CA files when built.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::smtp::{deliver_on, Conn, ConnError, Dest, AUTH_ORDER};
use super::{Attempt, BoxFuture, Message, Outcome, SetupError, Transport};
use crate::config::{Endpoint, OutboundTls};
use crate::settings::Settings;
use crate::tls::ClientTls;

/// An idle pooled connection older than this is closed, not reused.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per destination (the queue runs up to
/// `queue.concurrency` deliveries at once; keep enough to reuse them all).
const MAX_IDLE: usize = 64;

/// CA files for "verify" when none are configured: the system bundle and the built-in CA.
pub(super) fn default_cas(s: &Settings) -> Vec<PathBuf> {
    [PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE), s.data_dir.join("ca/ca.crt")].into_iter().filter(|p| p.exists()).collect()
}

/// The TLS server name for an endpoint.
pub(super) fn host_of(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Tcp(h, _) => h.clone(),
        Endpoint::Unix(_) => "localhost".into(),
    }
}

/// SMTP to a next hop, reusing idle connections.
pub struct Smarthost {
    dest: Dest,
    idle: Mutex<Vec<(Instant, Conn)>>,
}

/// Where and how a `[[route]]` SMTP next hop is reached: STARTTLS when
/// offered, no AUTH. `postern check smarthost ROUTE` connects with the same.
pub fn route_dest(s: &Settings, endpoint: Endpoint) -> Result<Dest, SetupError> {
    let tls = ClientTls::build(OutboundTls::May, &default_cas(s), None).map_err(|e| SetupError::RouteTls(e.to_string()))?;
    let server_name = host_of(&endpoint);
    Ok(Dest {
        endpoint,
        lmtp: false,
        helo: s.hostname.clone(),
        tls: Some(Arc::new(tls)),
        implicit_tls: false,
        server_name,
        credentials: None,
        auth_plaintext: false,
        auth_order: AUTH_ORDER,
    })
}

/// Where and how the smarthost is reached, from `relay.smarthost*` (loads
/// TLS material and the password file). `postern check smarthost` connects
/// with the same.
pub fn smarthost_dest(s: &Settings) -> Result<Dest, SetupError> {
    let r = &s.config.relay;
    let endpoint = r.smarthost.clone().ok_or(SetupError::SmarthostNotConfigured)?;
    let setup = |e: String| SetupError::SmarthostSetup(e);
    let policy = if r.smarthost_implicit_tls && r.smarthost_tls == OutboundTls::None { OutboundTls::Encrypt } else { r.smarthost_tls };
    let tls = if policy == OutboundTls::None {
        None
    } else {
        let mut cas: Vec<PathBuf> = r.smarthost_ca_files.iter().map(|p| s.resolve(p)).collect();
        if cas.is_empty() {
            cas = default_cas(s);
        }
        let cert = match (&r.smarthost_client_certificate, &r.smarthost_client_key) {
            (Some(c), Some(k)) => Some((s.resolve(c), s.resolve(k))),
            _ => None,
        };
        let t = ClientTls::build(policy, &cas, cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).map_err(|e| setup(e.to_string()))?;
        Some(Arc::new(t))
    };
    let server_name = r.smarthost_server_name.clone().unwrap_or_else(|| host_of(&endpoint));
    let credentials = match (&r.smarthost_username, &r.smarthost_password_file) {
        (Some(u), Some(f)) => {
            let f = s.resolve(f);
            let text = std::fs::read_to_string(&f).map_err(|e| setup(format!("relay.smarthost_password_file {}: {e}", f.display())))?;
            let pw = text.lines().next().unwrap_or("").to_string();
            if pw.is_empty() {
                return Err(setup(format!("relay.smarthost_password_file {}: empty", f.display())));
            }
            Some((u.clone(), pw))
        }
        _ => None,
    };
    Ok(Dest {
        endpoint,
        lmtp: false,
        helo: s.hostname.clone(),
        tls,
        implicit_tls: r.smarthost_implicit_tls,
        server_name,
        credentials,
        auth_plaintext: r.smarthost_auth_plaintext,
        auth_order: AUTH_ORDER,
    })
}

impl Smarthost {
    /// A smarthost transport with an empty pool.
    pub fn new(dest: Dest) -> Smarthost {
        Smarthost { dest, idle: Mutex::new(Vec::new()) }
    }

    /// An SMTP next hop from a `[[route]]`: STARTTLS when offered, no AUTH.
    pub fn for_route(s: &Settings, endpoint: Endpoint) -> Result<Smarthost, SetupError> {
        Ok(Smarthost::new(route_dest(s, endpoint)?))
    }

    /// Builds the transport from `relay.smarthost*` settings (loads TLS material).
    pub fn from_settings(s: &Settings) -> Result<Smarthost, SetupError> {
        Ok(Smarthost::new(smarthost_dest(s)?))
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((since, c)) = idle.pop() {
            if since.elapsed() < POOL_IDLE {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, c: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((Instant::now(), c));
            }
        }
    }

    /// Delivers, or returns `Err` when no session could be opened
    /// (connection refused, timeout, 4xx/5xx greeting): MX delivery then
    /// tries the next host.
    pub async fn try_deliver(&self, msg: &Message, rcpts: &[String]) -> Result<Attempt, ConnError> {
        // A reused connection may have been closed by the peer; on a
        // connection-level error retry once on a fresh one.
        if let Some(mut c) = self.take_idle() {
            if let Ok(o) = deliver_on(&mut c, msg, rcpts).await {
                self.put_idle(c);
                return Ok(o);
            }
        }
        let mut c = Conn::open_for(&self.dest, msg).await?;
        match deliver_on(&mut c, msg, rcpts).await {
            Ok(o) => {
                self.put_idle(c);
                Ok(o)
            }
            Err(o) => Ok(o),
        }
    }
}

impl Transport for Smarthost {
    fn name(&self) -> String {
        format!("smtp:{}", self.dest.endpoint)
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match self.try_deliver(msg, rcpts).await {
                Ok(a) => a,
                Err(e) => Attempt::all(Outcome::Deferred(e.reply()), rcpts.len(), None),
            }
        })
    }
}
