//! The session's rate limits and greylisting (`[inbound.rate]`,
//! `[inbound.greylist]`, docs/inbound-rate.md): one call at connect, at
//! MAIL and at RCPT; the verdicts are `inbound::rate` and
//! `inbound::greylist`'s.
//!
//! May touch: the shared counters and the greylist store of
//! `Context::services` (`DATA/greylist.json` through
//! `crate::private_file`, written off the session's task). RFCs: 5321
//! §3.8/§4.2.5 (421, 450, 452), 6647 (greylisting).

use std::sync::Mutex;

use tokio::time::Instant;

use postern_wire::Path;

use super::{Session, Socket, State, SHUTDOWN_WRITE_GRACE};
use crate::config::RateWhat;
use crate::inbound::greylist::{self, Decision};
use crate::inbound::rate::{self, Event, Exceeded};
use crate::maillog;

/// One snapshot write at a time.
static WRITING: Mutex<()> = Mutex::new(());

impl<S: Socket> Session<S> {
    /// Counts `what` against the rate limits; the first one exceeded.
    async fn over_rate(&self, what: RateWhat, sender: Option<&str>) -> Option<Exceeded> {
        let cfg = &self.settings().config.inbound.rate;
        if cfg.limit.iter().all(|l| l.what != what) {
            return None;
        }
        let ip = self.conn.peer.ip();
        if rate::exemption(ip, &cfg.exempt_networks, cfg.exempt_relay_networks, &self.settings().config.relay.networks).is_some() {
            return None;
        }
        let ev = Event { what, ip, user: self.auth().map(|a| a.user()), sender };
        let services = &self.ctx.services;
        rate::count(cfg, &services.rate, services.counters.as_deref(), &ev).await
    }

    /// At connect: a client over its connection rate gets `421 4.7.0` and
    /// the session ends here (reply, disconnect log line). True if so.
    pub(super) async fn connection_rate_refused(&mut self) -> bool {
        let Some(over) = self.over_rate(RateWhat::Connections, None).await else { return false };
        let limit = over.log_text();
        self.reject("CONNECT", over.reply(), &[("limit", &limit)]);
        self.enter(State::Closed);
        let _ = self.flush().await;
        let _ = tokio::time::timeout(SHUTDOWN_WRITE_GRACE, tokio::io::AsyncWriteExt::shutdown(&mut self.io)).await;
        let client = self.client_text();
        maillog::disconnect(&[("client", &client), ("messages", "0"), ("errors", "1"), ("reason", "connection rate")]);
        true
    }

    /// At MAIL: a client, user or sender over its message rate gets
    /// `450 4.7.1`. True if refused.
    pub(super) async fn message_rate_refused(&mut self, from: &Path) -> bool {
        let sender = match from {
            Path::Mailbox(m) => m.to_string(),
            _ => String::new(),
        };
        let Some(over) = self.over_rate(RateWhat::Messages, Some(&sender)).await else { return false };
        let limit = over.log_text();
        self.reject("MAIL", over.reply(), &[("from", &sender), ("limit", &limit)]);
        true
    }

    /// At RCPT: a client, user or sender over its recipient rate gets
    /// `452 4.5.3`. True if refused.
    pub(super) async fn recipient_rate_refused(&mut self, sender: &str, rcpt: &str) -> bool {
        let Some(over) = self.over_rate(RateWhat::Recipients, Some(sender)).await else { return false };
        let limit = over.log_text();
        self.reject("RCPT", over.reply(), &[("from", sender), ("to", rcpt), ("limit", &limit)]);
        true
    }

    /// At RCPT, once the relay policy accepted the recipient: greylisting.
    /// Authenticated clients, clients with a verified certificate and the
    /// exempt networks are never greylisted. True if deferred.
    pub(super) async fn greylisted(&mut self, sender: &str, rcpt: &str) -> bool {
        let cfg = &self.settings().config.inbound.greylist;
        let ip = self.conn.peer.ip();
        let relay = &self.settings().config.relay.networks;
        if !cfg.enabled
            || self.auth().is_some()
            || self.verified_cert()
            || rate::exemption(ip, &cfg.exempt_networks, cfg.exempt_relay_networks, relay).is_some()
        {
            return false;
        }
        let network = rate::network(ip, cfg.ipv4_prefix, cfg.ipv6_prefix);
        let key = greylist::triplet_key(&network, sender, rcpt);
        let services = self.ctx.services.clone();
        let shared = match services.counters.as_deref() {
            Some(store) => greylist::decide_shared(cfg, store, &network, &key).await,
            None => None,
        };
        let decision = match shared {
            Some(d) => d,
            None => services.greylist.check(cfg, &network, &key, greylist::now_ms()),
        };
        if let Some((path, bytes)) = services.greylist.snapshot_due(Instant::now()) {
            tokio::task::spawn_blocking(move || {
                let _one = WRITING.lock();
                if let Err(e) = crate::private_file::write(&path, "tmp", &bytes) {
                    tracing::warn!("{}: cannot write the greylist snapshot: {e}", path.display());
                }
            });
        }
        let Decision::Defer { wait, .. } = decision else {
            tracing::debug!(peer = %self.conn.peer, "greylist {}: {key}", decision.as_str());
            return false;
        };
        self.reject("RCPT", greylist::reply(rcpt, wait), &[("from", sender), ("to", rcpt), ("greylist", decision.as_str())]);
        true
    }
}
