//! `postern check smarthost [ROUTE]`: connects to the smarthost (or a
//! `[[route]]` SMTP next hop) exactly as delivery does — the same
//! [`Dest`] from `pool.rs`, the same TLS config and client certificate,
//! the same credentials and timeouts, the same `Conn::open` — while
//! watching each step, then sends RSET/QUIT or one test message, and
//! judges each step in [`report`].
//!
//! May touch: outbound TCP or unix-domain sockets to the configured next
//! hop; reads the TLS material, CA files and password file the transport
//! reads. Never prints the password. RFC 5321, RFC 3207, RFC 4954.

pub mod report;

use std::sync::Arc;
use std::time::Duration;

use super::pool::{outbound_dests, smarthost_dest};
use super::smtp::{Conn, Dest, Event};
use super::{Message, SetupError};
use crate::config::{Endpoint, Outbound, OutboundTls, RouteTransport};
use crate::settings::Settings;
use crate::spool::QueueId;
use crate::tls::observe::{validity, Observation};
use crate::tls::{cert_info, ClientTls};
pub use report::{Facts, Finish, Report, TlsFacts, Verdict};

/// How long DNS may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(30);

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A `[[route]]`: one of its domains, or its number (1 = the first).
    pub route: Option<String>,
    /// Send a test message to this address.
    pub send_test: Option<String>,
    /// The test message's sender (default `postmaster@HOSTNAME`).
    pub from: Option<String>,
}

/// Why the check could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No `relay.smarthost` and no route asked for.
    #[error("relay.smarthost is not configured (and no ROUTE given); nothing to check")]
    NoSmarthost,
    /// No `[[route]]` has this domain or number.
    #[error("no [[route]] has the domain or number {0:?}")]
    UnknownRoute(String),
    /// The route does not deliver over SMTP.
    #[error("route {0:?} has transport = \"{1}\": only smtp routes have a next hop to check")]
    NotSmtp(String, &'static str),
    /// The transport could not be built (TLS material, password file).
    #[error("{0}")]
    Setup(#[from] SetupError),
    /// The observed TLS config could not be built.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The connection parameters and a description of the target.
fn destination(s: &Settings, o: &Options) -> Result<(String, Dest, Option<String>), ProbeError> {
    let Some(want) = &o.route else {
        if s.config.relay.smarthost.is_none() {
            return Err(ProbeError::NoSmarthost);
        }
        let r = &s.config.relay;
        let client_cert = r.smarthost_client_certificate.as_ref().map(|c| cert_subject(&s.resolve(c)));
        return Ok(("smarthost".to_string(), smarthost_dest(s)?, client_cert));
    };
    let lower = want.to_ascii_lowercase();
    let found = s
        .config
        .routes
        .iter()
        .enumerate()
        .find(|(i, r)| want.parse::<usize>().is_ok_and(|n| n == i + 1) || r.domains.iter().any(|d| d.to_ascii_lowercase() == lower));
    let (i, r) = found.ok_or_else(|| ProbeError::UnknownRoute(want.clone()))?;
    if r.transport != RouteTransport::Smtp {
        return Err(ProbeError::NotSmtp(want.clone(), r.transport.as_str()));
    }
    // The first next hop: the one delivery tries first, with the route's
    // own TLS, client certificate and credentials.
    let dest = outbound_dests(s, &Outbound::route(i, r))?.into_iter().next().ok_or(SetupError::NoNextHop)?;
    let client_cert = r.client_certificate.as_ref().map(|c| cert_subject(&s.resolve(c)));
    Ok((format!("route {want}"), dest, client_cert))
}

/// The subject of the first certificate in a PEM file, for the report.
fn cert_subject(path: &std::path::Path) -> String {
    let first = crate::tls::files::load_certs(path).ok().and_then(|c| c.into_iter().next());
    first.and_then(|c| cert_info(&c).ok()).map(|i| i.subject).unwrap_or_else(|| path.display().to_string())
}

/// One line per certificate of the server's chain.
fn chain_lines(chain: &[rustls::pki_types::CertificateDer<'static>]) -> Vec<String> {
    let date = |t: i64| {
        let st = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        humantime::format_rfc3339_seconds(st).to_string()
    };
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| match cert_info(der) {
            Ok(c) => {
                let valid = validity(der).map(|(a, b)| format!("{} to {}", date(a), date(b))).unwrap_or_default();
                let sans = if c.sans.is_empty() { "none".to_string() } else { c.sans.join(", ") };
                format!("[{i}] subject: {}; issuer: {}; valid {valid}; SANs: {sans}", c.subject, c.issuer)
            }
            Err(e) => format!("[{i}] unparsable certificate: {e}"),
        })
        .collect()
}

async fn resolve(ep: &Endpoint) -> Result<Vec<String>, String> {
    let Endpoint::Tcp(host, port) = ep else { return Ok(Vec::new()) };
    match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), *port))).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let mut v: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            v.dedup();
            Ok(v)
        }
    }
}

/// The test message (RFC 5322), CRLF.
fn test_message(s: &Settings, from: &str, to: &str, id: &QueueId) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: postern smarthost test from {host}\r\nDate: {date}\r\n\
         Message-ID: <{id}.check@{host}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is a test message sent by `postern check smarthost --send-test` on {host}.\r\n",
        host = s.hostname,
        date = crate::time::rfc5322_date(),
        id = id.as_str(),
    )
    .into_bytes()
}

/// Runs the check and judges it.
pub async fn check(s: &Settings, o: &Options) -> Result<Report, ProbeError> {
    let (target, mut dest, client_cert) = destination(s, o)?;
    let original: Option<Arc<ClientTls>> = dest.tls.clone();
    let mut observation: Option<Arc<Observation>> = None;
    if let Some(t) = &original {
        let (observed, seen) = t.dangerous_observed()?;
        dest.tls = Some(Arc::new(observed));
        observation = Some(seen);
    }
    let policy = original.as_ref().map(|t| t.policy).unwrap_or(OutboundTls::None);
    let dns = resolve(&dest.endpoint).await;
    let mut events: Vec<Event> = Vec::new();
    let (open, finish) = if dns.is_err() {
        (Ok(()), None)
    } else {
        match Conn::open_observed(&dest, &mut events).await {
            Err(e) => (Err(e), None),
            Ok(mut conn) => {
                let finish = match &o.send_test {
                    Some(to) => {
                        let id = QueueId::generate();
                        let from = o.from.clone().unwrap_or_else(|| format!("postmaster@{}", s.hostname));
                        let msg = Message {
                            body: Arc::new(test_message(s, &from, to, &id)),
                            id,
                            sender: from,
                            eight_bit: false,
                            smtputf8: false,
                            dsn: Default::default(),
                            requiretls: false,
                            tls_required_no: false,
                        };
                        let outcome = conn.transaction(&msg, std::slice::from_ref(to)).await;
                        let outcome =
                            outcome.map_err(|e| e.to_string()).and_then(|v| v.into_iter().next().ok_or_else(|| "no reply".to_string()));
                        Finish::Sent { to: to.clone(), outcome }
                    }
                    None => Finish::Rset(conn.rset().await.map(|r| r.summary()).map_err(|e| e.to_string())),
                };
                conn.quit().await;
                (Ok(()), Some(finish))
            }
        }
    };
    let tls = observation.map(|obs| {
        let seen = obs.seen();
        let verify = match (&original, seen.chain.is_empty()) {
            (Some(t), false) => Some(t.verify_chain(&seen.chain, &dest.server_name).map_err(|e| e.to_string())),
            _ => None,
        };
        TlsFacts {
            chain: chain_lines(&seen.chain),
            verify,
            requested: seen.cert_requested,
            acceptable_cas: seen.acceptable_cas,
            sent: seen.cert_sent,
        }
    });
    let facts = Facts {
        target,
        endpoint: dest.endpoint.clone(),
        policy,
        implicit_tls: dest.implicit_tls,
        server_name: dest.server_name.clone(),
        client_cert,
        user: dest.credentials.as_ref().map(|(u, _)| u.clone()),
        dns,
        events,
        tls,
        open,
        finish,
    };
    Ok(Report::new(&facts))
}
