//! AUTH (RFC 4954): drives a SASL step machine from `postern-wire` over the
//! connection, answers its questions from the user database, and applies
//! the brute-force throttle. Which mechanisms are usable is `crate::auth`'s
//! pure policy; sequencing (after EHLO, outside a transaction, once) is
//! the command table's.
//!
//! May touch: the user database (read), the throttle (and its shared
//! counters, `crate::cluster::throttle`, when `[cluster] redis` is set). Implements RFC 4954
//! §4 (exchange, `*` cancel, 12288-octet lines), §6 (reply codes), RFC 4422.

use std::time::Duration;

use tokio::time::Instant;

use postern_wire::line::{scan_line, LineScan};
use postern_wire::sasl::{self, Exchange, Mechanism, Need, Provide, SaslError, Step};
use postern_wire::{codes, Reply};

use super::{End, Session, Socket, State};
use crate::auth::{self as authpolicy, Authenticated, Verdict as ThrottleVerdict};
use crate::cluster::throttle as shared;
use crate::config::{Auth, AuthBackend, BanAction};
use crate::maillog;

impl<S: Socket> Session<S> {
    /// Mechanisms this connection may use now (TLS, client network,
    /// verified certificate).
    pub(super) fn usable_mechanisms(&self) -> Vec<Mechanism> {
        let verified = self.verified_cert();
        if self.settings().config.auth.backend == AuthBackend::Dovecot {
            return self.dovecot_mechanisms(verified);
        }
        let mut m = authpolicy::usable_mechanisms(
            &self.settings().config.auth,
            &self.ctx.listener,
            self.tls().is_some(),
            self.conn.peer.ip(),
            verified,
        );
        if self.auth_by_directory() {
            m.retain(super::directory::directory_can_serve);
        }
        m
    }

    /// Reads one line during an AUTH exchange (RFC 4954 §4: up to 12288 octets).
    pub(super) async fn auth_line(&mut self) -> Result<String, End> {
        let deadline = self.deadline(self.settings().config.limits.command_timeout);
        loop {
            match scan_line(&self.rbuf, 12288) {
                LineScan::Line { end, next } => {
                    let line = String::from_utf8_lossy(&self.rbuf[..end]).into_owned();
                    self.rbuf.drain(..next);
                    return Ok(line);
                }
                LineScan::TooLong => return self.close_with(codes::auth_line_too_long()).map(|_| String::new()),
                LineScan::Partial => self.fill(deadline, true).await?,
            }
        }
    }

    /// Answers what a SASL machine needs from the user database.
    async fn sasl_lookup(&self, need: Need) -> Provide {
        let db = self.ctx.users.get();
        match need {
            Need::CheckPassword { authcid, password } => {
                // argon2 is deliberately slow: the verified cache, else off
                // the async threads, a few at a time, concurrent identical
                // checks sharing one run.
                let ttl = self.settings().config.auth.verified_cache_ttl;
                Provide::PasswordOk(self.ctx.users.check_password(db, &authcid, &password, ttl).await)
            }
            Need::Secret { authcid } => Provide::Secret(db.plain(&authcid)),
            Need::Scram { authcid, hash } => Provide::Scram(db.scram(&authcid, hash)),
        }
    }

    /// AUTH (RFC 4954): choose the mechanism, run the exchange, record the
    /// identity in the state.
    pub(super) async fn auth_command(&mut self, mechanism: String, initial: Option<String>) -> Result<(), End> {
        let cfg = self.settings().config.auth.clone();
        if let Some(done) = self.dovecot_precheck(&mechanism).await {
            return done;
        }
        let configured = authpolicy::listener_mechanisms(&cfg, &self.ctx.listener);
        let usable = self.usable_mechanisms();
        let mech = Mechanism::parse(&mechanism);
        let client = self.client_text();
        let Some(mech) = mech.filter(|m| usable.contains(m)) else {
            let r = if mech.is_some_and(|m| configured.contains(&m)) && self.tls().is_none() {
                codes::encryption_required()
            } else {
                codes::auth_unknown_mechanism()
            };
            maillog::auth(&[("client", &client), ("mechanism", &mechanism), ("result", "refused"), ("reply", &r.summary())]);
            self.reply(r);
            return Ok(());
        };
        let store = self.ctx.services.counters.clone();
        let facts = shared::address_facts(store.as_deref(), self.conn.peer.ip(), &cfg).await;
        if self.ctx.throttle.check_address_with(self.conn.peer.ip(), Instant::now(), &cfg, &facts) == ThrottleVerdict::Banned {
            maillog::auth(&[("client", &client), ("mechanism", mech.name()), ("result", "banned")]);
            return self.banned(cfg.ban_action);
        }
        if cfg.backend == AuthBackend::Dovecot {
            return self.auth_dovecot(mech, initial, &cfg).await;
        }
        let initial = match initial.as_deref().map(sasl::decode_response) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return self.auth_failed(mech, None, &e, &cfg, Duration::ZERO).await,
        };
        let external = match (self.tls(), mech) {
            (Some(t), Mechanism::External) => {
                let settings = self.settings();
                t.client_cert.as_ref().and_then(|c| {
                    authpolicy::external_user(cfg.external_identity, c, &self.ctx.users.get(), |d| settings.is_local_domain(d))
                })
            }
            _ => None,
        };
        let bindings = self.tls().map(|t| t.bindings.clone()).unwrap_or_default();
        let mut ex = Exchange::new(mech, &self.settings().hostname, bindings, usable.contains(&Mechanism::ScramSha256Plus), external);
        let mut user: Option<String> = None;
        // The directory's canonical login, when it checked the password.
        let mut canonical: Option<String> = None;
        // Time already spent in the per-user slow-down: the failure delay
        // only makes up the rest, so one attempt waits max_failure_delay at most.
        let mut waited = Duration::ZERO;
        let mut step = ex.start(initial);
        loop {
            step = match step {
                Step::Challenge(c) => {
                    self.reply(Reply::plain(334, vec![sasl::encode_challenge(&c).into()]));
                    let line = self.auth_line().await?;
                    match sasl::decode_response(&line) {
                        Ok(d) => ex.respond(&d),
                        Err(e) => Step::Fail(e),
                    }
                }
                Step::Need(need) => {
                    let who = match &need {
                        Need::CheckPassword { authcid, .. } | Need::Secret { authcid } | Need::Scram { authcid, .. } => {
                            authcid.to_ascii_lowercase()
                        }
                    };
                    if who.len() > authpolicy::MAX_AUTHCID {
                        let e = SaslError::Malformed("authentication identity too long");
                        return self.auth_failed(mech, None, &e, &cfg, waited).await;
                    }
                    user = Some(who.clone());
                    let facts = shared::user_facts(store.as_deref(), self.conn.peer.ip(), &who, &cfg).await;
                    match self.ctx.throttle.check_user_with(self.conn.peer.ip(), &who, Instant::now(), &cfg, &facts) {
                        ThrottleVerdict::Allow => {}
                        ThrottleVerdict::Delay(d) => {
                            let _ = self.flush().await;
                            tokio::time::sleep(d).await;
                            waited += d;
                        }
                        ThrottleVerdict::Banned => {
                            maillog::auth(&[("client", &client), ("mechanism", mech.name()), ("user", &who), ("result", "banned")]);
                            return self.banned(cfg.ban_action);
                        }
                    }
                    let p = match &need {
                        Need::CheckPassword { authcid, password } if self.auth_by_directory() => {
                            match self.directory_password(authcid, password).await {
                                Ok((p, c)) => {
                                    canonical = c;
                                    p
                                }
                                Err(e) => return self.auth_unavailable(mech, &who, &e),
                            }
                        }
                        _ => self.sasl_lookup(need).await,
                    };
                    ex.provide(p)
                }
                Step::Success(success) => {
                    if let Some(d) = success.final_data() {
                        // RFC 4954 §4: additional data goes in a 334; the client answers empty.
                        self.reply(Reply::plain(334, vec![sasl::encode_challenge(d).into()]));
                        let line = self.auth_line().await?;
                        if !matches!(sasl::decode_response(&line).as_deref(), Ok([])) {
                            return self
                                .auth_failed(
                                    mech,
                                    Some(success.authcid()),
                                    &SaslError::Malformed("expected an empty response"),
                                    &cfg,
                                    waited,
                                )
                                .await;
                        }
                    }
                    let identity = Authenticated::from_directory(&success, mech, canonical.as_deref());
                    self.ctx.throttle.succeed(self.conn.peer.ip(), identity.user(), Instant::now(), &cfg);
                    shared::record_login(store.as_deref(), self.conn.peer.ip(), identity.user(), &cfg).await;
                    maillog::auth(&[("client", &client), ("mechanism", mech.name()), ("user", identity.user()), ("result", "ok")]);
                    if let State::Ready { greeted } = &mut self.state {
                        greeted.auth = Some(identity);
                    }
                    self.reply(codes::auth_ok());
                    return Ok(());
                }
                Step::Fail(e) => return self.auth_failed(mech, user.as_deref(), &e, &cfg, waited).await,
            };
        }
    }

    /// The throttle's ban: refuse (454) or close (421).
    fn banned(&mut self, action: BanAction) -> Result<(), End> {
        match action {
            BanAction::Refuse => {
                self.reply(codes::auth_banned());
                Ok(())
            }
            BanAction::Disconnect => self.close_with(codes::auth_banned_closing()),
        }
    }

    /// A failed exchange: log (stable format for fail2ban), count, delay
    /// (less what the attempt already `waited`), reply.
    async fn auth_failed(&mut self, mech: Mechanism, user: Option<&str>, e: &SaslError, cfg: &Auth, waited: Duration) -> Result<(), End> {
        self.auth_failed_because(mech, user, e, &e.to_string(), cfg, waited).await
    }

    /// [`Self::auth_failed`] with the `reason` to log (the backend's words).
    pub(super) async fn auth_failed_because(
        &mut self,
        mech: Mechanism,
        user: Option<&str>,
        e: &SaslError,
        reason: &str,
        cfg: &Auth,
        waited: Duration,
    ) -> Result<(), End> {
        let client = self.client_text();
        let ip = self.conn.peer.ip().to_string();
        let reply = match e {
            SaslError::Cancelled => codes::auth_cancelled(),
            SaslError::Malformed(_) => codes::auth_malformed(),
            _ => codes::auth_invalid(),
        };
        maillog::auth(&[
            ("client", &client),
            ("ip", &ip),
            ("mechanism", mech.name()),
            ("user", user.unwrap_or("")),
            ("result", "fail"),
            ("reason", reason),
        ]);
        if *e != SaslError::Cancelled {
            let store = self.ctx.services.counters.clone();
            let everywhere = shared::record_failure(store.as_deref(), self.conn.peer.ip(), user, cfg).await;
            let (delay, banned) = self.ctx.throttle.fail_with(self.conn.peer.ip(), user, Instant::now(), cfg, everywhere);
            if banned {
                shared::record_ban(store.as_deref(), self.conn.peer.ip(), cfg).await;
            }
            let delay = delay.saturating_sub(waited);
            if banned {
                let secs = cfg.ban_time.as_secs().to_string();
                maillog::auth(&[("client", &client), ("ip", &ip), ("user", user.unwrap_or("")), ("result", "ban"), ("seconds", &secs)]);
            }
            if !delay.is_zero() {
                let _ = self.flush().await;
                tokio::time::sleep(delay).await;
            }
            if banned && cfg.ban_action == BanAction::Disconnect {
                self.reply(reply);
                return self.close_with(codes::auth_banned_closing());
            }
        }
        self.reply(reply);
        Ok(())
    }
}
