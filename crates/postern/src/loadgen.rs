//! `postern bench`: an SMTP load generator for `bench/run` (workload W3 and
//! latency figures). It speaks to any SMTP server — postern or Postfix —
//! with the same code the smarthost client uses (`delivery::client`), so
//! both systems get the same client.
//!
//! May touch: the network (one server address). Every loop is bounded by
//! the message count and a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Endpoint, OutboundTls};
use crate::delivery::smtp::{Conn, Dest};
use crate::delivery::{Dsn, Message, Outcome};
use crate::spool::QueueId;
use crate::tls::{ClientTls, TlsError};

/// Why a run could not start or finish (a refused message is not an
/// error: it is counted in [`Report::failed`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The STARTTLS client configuration could not be built.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A client task panicked or was cancelled.
    #[error("{0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// What to send, and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server.
    pub server: Endpoint,
    /// Messages in total.
    pub messages: usize,
    /// Parallel clients.
    pub concurrency: usize,
    /// Message size in octets (headers included).
    pub size: usize,
    /// STARTTLS before MAIL (certificates are not checked).
    pub starttls: bool,
    /// AUTH PLAIN as (user, password).
    pub auth: Option<(String, String)>,
    /// Keep each client's connection for its next message instead of a
    /// new connection per message.
    pub reuse: bool,
    /// Envelope sender and recipient.
    pub from: String,
    /// See `from`.
    pub to: String,
    /// Stop starting new messages after this long.
    pub deadline: Duration,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Messages the server accepted (250 after the data).
    pub accepted: usize,
    /// Messages refused or lost to an error.
    pub failed: usize,
    /// Wall time from the first connection to the last reply, seconds.
    pub seconds: f64,
    /// Accepted messages per second.
    pub rate: f64,
    /// Median time per message (connect, TLS, AUTH, transaction), milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of the same, milliseconds.
    pub p99_ms: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// A message of about `size` octets: a few headers and 76-column lines.
fn message_text(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: postern bench\r\nMessage-ID: <bench@bench.test>\r\n\r\n").into_bytes();
    let line = [b'x'; 76];
    while m.len() < size {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Value at quantile `q` (0..=1) of sorted durations, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Runs the plan.
pub async fn run(plan: Plan) -> Result<Report, LoadgenError> {
    let tls = if plan.starttls {
        let mut t = ClientTls::build(OutboundTls::Encrypt, &[], None)?;
        // Every message pays a full handshake, as a fleet of distinct
        // clients would: no session resumption.
        let mut cfg = (*t.config).clone();
        cfg.resumption = rustls::client::Resumption::disabled();
        t.config = Arc::new(cfg);
        Some(Arc::new(t))
    } else {
        None
    };
    let server_name = match &plan.server {
        Endpoint::Tcp(h, _) => h.clone(),
        Endpoint::Unix(_) => "localhost".into(),
    };
    let dest = Arc::new(Dest {
        endpoint: plan.server.clone(),
        lmtp: false,
        helo: "bench.test".into(),
        tls,
        implicit_tls: false,
        server_name,
        credentials: plan.auth.clone(),
        // A load generator on loopback against test servers with
        // self-signed certificates: PLAIN over unverified TLS is the
        // workload (W3). Without STARTTLS the password is never sent.
        auth_plaintext: plan.starttls,
        // W3 measures AUTH PLAIN on both systems.
        auth_order: &["PLAIN"],
        recipient_policy: false,
    });
    let msg = Arc::new(Message {
        id: QueueId::generate(),
        sender: plan.from.clone(),
        body: Arc::new(message_text(plan.size, &plan.from, &plan.to)),
        eight_bit: false,
        smtputf8: false,
        dsn: Dsn::default(),
        requiretls: false,
        tls_required_no: false,
    });
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let stop_at = start + plan.deadline;
    let mut workers = Vec::new();
    for _ in 0..plan.concurrency.max(1) {
        let (dest, msg, next, plan) = (dest.clone(), msg.clone(), next.clone(), plan.clone());
        workers.push(tokio::spawn(async move {
            let rcpts = vec![plan.to.clone()];
            let mut times = Vec::new();
            let mut failed = 0;
            let mut first_error = None;
            let mut conn: Option<Conn> = None;
            while next.fetch_add(1, Ordering::Relaxed) < plan.messages && Instant::now() < stop_at {
                let t0 = Instant::now();
                let c = match conn.take() {
                    Some(c) => Ok(c),
                    None => Conn::open(&dest).await,
                };
                let result = match c {
                    Err(e) => Err(e.reply().to_string()),
                    Ok(mut c) => match c.transaction(&msg, &rcpts).await {
                        Ok(o) if matches!(o.first(), Some(Outcome::Delivered(_))) => {
                            if plan.reuse {
                                conn = Some(c);
                            } else {
                                c.quit().await;
                            }
                            Ok(())
                        }
                        Ok(o) => Err(format!("{:?}", o.first())),
                        Err(e) => Err(e.reply().to_string()),
                    },
                };
                match result {
                    Ok(()) => times.push(t0.elapsed()),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(c) = conn {
                c.quit().await;
            }
            (times, failed, first_error)
        }));
    }
    let mut times = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for w in workers {
        let (t, f, e) = w.await?;
        times.extend(t);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    times.sort();
    Ok(Report {
        accepted: times.len(),
        failed,
        seconds,
        rate: times.len() as f64 / seconds.max(1e-9),
        p50_ms: quantile_ms(&times, 0.50),
        p99_ms: quantile_ms(&times, 0.99),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_sizes() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&d, 0.5), 51.0);
        assert_eq!(quantile_ms(&d, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        let m = message_text(4096, "a@b", "c@d");
        assert!(m.len() >= 4096 - 78 && m.len() <= 4096 + 78, "{}", m.len());
        assert!(m.ends_with(b"\r\n"));
    }
}
