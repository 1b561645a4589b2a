//! LMTP (RFC 2033) delivery to a local mail store such as Dovecot: one
//! connection per attempt, one final reply per recipient (§4.2).
//!
//! May touch: the configured LMTP socket (TCP or unix-domain).

use std::sync::Arc;

use super::pool::{default_cas, host_of};
use super::smtp::{deliver_on, Conn, Dest, AUTH_ORDER};
use super::{Attempt, BoxFuture, Message, Outcome, SetupError, Transport};
use crate::config::{Endpoint, OutboundTls};
use crate::settings::Settings;
use crate::tls::ClientTls;

/// LMTP delivery to a local mail store (e.g. Dovecot).
pub struct Lmtp {
    dest: Dest,
}

impl Lmtp {
    /// Builds the LMTP transport (TLS only over TCP, per `local.lmtp_tls`).
    pub fn from_settings(s: &Settings, ep: &Endpoint) -> Result<Lmtp, SetupError> {
        let policy = if matches!(ep, Endpoint::Unix(_)) { OutboundTls::None } else { s.config.local.lmtp_tls };
        let tls = if policy == OutboundTls::None {
            None
        } else {
            Some(Arc::new(ClientTls::build(policy, &default_cas(s), None).map_err(|e| SetupError::LmtpTls(e.to_string()))?))
        };
        Ok(Lmtp {
            dest: Dest {
                endpoint: ep.clone(),
                lmtp: true,
                helo: s.hostname.clone(),
                tls,
                implicit_tls: false,
                server_name: host_of(ep),
                credentials: None,
                auth_plaintext: false,
                auth_order: AUTH_ORDER,
                recipient_policy: false,
            },
        })
    }
}

impl Transport for Lmtp {
    fn name(&self) -> String {
        format!("lmtp:{}", self.dest.endpoint)
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut conn = match Conn::open(&self.dest).await {
                Ok(c) => c,
                Err(e) => return Attempt::all(Outcome::Deferred(e.reply()), rcpts.len(), None),
            };
            let out = deliver_on(&mut conn, msg, rcpts).await;
            match out {
                Ok(o) => {
                    conn.quit().await;
                    o
                }
                Err(o) => o,
            }
        })
    }
}
