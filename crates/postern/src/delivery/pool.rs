//! SMTP next hops with a pool of idle connections: the smarthost
//! (`relay.smarthost*`) and `[[route]] transport = "smtp"` next hops, both
//! from one [`Outbound`] (`hops.rs` tries a route's hops in order), and the
//! per-address pools of MX delivery (`mx.rs`).
//!
//! May touch: outbound TCP or unix-domain sockets to the configured peers;
//! reads the password file, client certificate and CA files of the
//! smarthost or route when built.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::smtp::{deliver_on, Conn, ConnError, Dest, AUTH_ORDER};
use super::{Attempt, BoxFuture, Message, Outcome, SetupError, Transport};
use crate::config::{Endpoint, HopOrigin, Outbound, OutboundTls};
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

/// Where and how an arbitrary SMTP next hop is reached with no route of
/// its own (`postern queue move`): STARTTLS when offered, no certificate,
/// no AUTH.
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
        recipient_policy: false,
    })
}

/// Where and how each next hop of `o` (the smarthost or an smtp route) is
/// reached, in order: loads the TLS material and the password file once.
/// Delivery and `postern check smarthost` connect with the same.
pub fn outbound_dests(s: &Settings, o: &Outbound) -> Result<Vec<Dest>, SetupError> {
    let setup = |e: String| match o.origin {
        HopOrigin::Smarthost => SetupError::SmarthostSetup(e),
        HopOrigin::Route(_) => SetupError::RouteTls(format!("{}: {e}", o.label())),
    };
    let policy = o.effective_tls();
    let tls = if policy == OutboundTls::None {
        None
    } else {
        let mut cas: Vec<PathBuf> = o.ca_files.iter().map(|p| s.resolve(p)).collect();
        if cas.is_empty() {
            cas = default_cas(s);
        }
        let cert = o.client_certificate.as_ref().map(|(c, k)| (s.resolve(c), s.resolve(k)));
        let t = ClientTls::build(policy, &cas, cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).map_err(|e| setup(e.to_string()))?;
        Some(Arc::new(t))
    };
    let credentials = match &o.credentials {
        Some((u, f)) => {
            let f = s.resolve(f);
            let key = o.key("password_file");
            let text = std::fs::read_to_string(&f).map_err(|e| setup(format!("{key} {}: {e}", f.display())))?;
            let pw = text.lines().next().unwrap_or("").to_string();
            if pw.is_empty() {
                return Err(setup(format!("{key} {}: empty", f.display())));
            }
            Some((u.clone(), pw))
        }
        None => None,
    };
    Ok(o.hops
        .iter()
        .map(|endpoint| Dest {
            endpoint: endpoint.clone(),
            lmtp: false,
            helo: s.hostname.clone(),
            tls: tls.clone(),
            implicit_tls: o.implicit_tls,
            server_name: o.server_name.clone().unwrap_or_else(|| host_of(endpoint)),
            credentials: credentials.clone(),
            auth_plaintext: o.auth_plaintext,
            auth_order: AUTH_ORDER,
            recipient_policy: false,
        })
        .collect())
}

/// Where and how the smarthost is reached, from `relay.smarthost*` (loads
/// TLS material and the password file). `postern check smarthost` connects
/// with the same.
pub fn smarthost_dest(s: &Settings) -> Result<Dest, SetupError> {
    let o = Outbound::smarthost(&s.config.relay).ok_or(SetupError::SmarthostNotConfigured)?;
    outbound_dests(s, &o)?.into_iter().next().ok_or(SetupError::SmarthostNotConfigured)
}

impl Smarthost {
    /// A smarthost transport with an empty pool.
    pub fn new(dest: Dest) -> Smarthost {
        Smarthost { dest, idle: Mutex::new(Vec::new()) }
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
