//! AUTH through Dovecot (`auth.backend = "dovecot"`): the session relays
//! the client's base64 messages to Dovecot's auth server
//! (`crate::auth::dovecot`) and Dovecot's challenges back as 334 replies;
//! Dovecot decides. The throttle still counts failures and refuses banned
//! clients (`session/auth.rs` checks the ban before coming here).
//!
//! Replies: Dovecot's `OK` → 235; `FAIL` → 535 5.7.8 (counted, delayed
//! like any failure; `nologin` too, with its reason logged); `FAIL` with
//! `temp`, no answer within `auth.dovecot_timeout`, a refused or dropped
//! connection → 454 4.7.0, logged `result=tempfail`, never counted, never
//! 535, never accepted.
//!
//! May touch: the Dovecot auth socket (through the client in `Services`),
//! the throttle. RFC 4954 §4 (exchange, `*`), §6 (454, 535).

use std::time::Duration;

use tokio::time::Instant;

use postern_wire::sasl::{self, Mechanism, SaslError};
use postern_wire::{codes, Reply};

use super::{End, Session, Socket, State};
use crate::auth::dovecot::{self, Answer, AuthStart};
use crate::auth::Authenticated;
use crate::config::{Auth, AuthBackend};
use crate::maillog;

impl<S: Socket> Session<S> {
    /// The mechanisms usable now through Dovecot (see `dovecot::usable`);
    /// none while Dovecot's list is unknown.
    pub(super) fn dovecot_mechanisms(&self, verified: bool) -> Vec<Mechanism> {
        let Some(offered) = self.ctx.services.dovecot.as_ref().and_then(|d| d.mechanisms()) else { return Vec::new() };
        let s = self.settings();
        dovecot::usable(&offered, &s.config.auth, &self.ctx.listener, self.tls().is_some(), self.conn.peer.ip(), verified)
    }

    /// Before the EHLO reply: learns Dovecot's mechanism list if it is not
    /// known yet. Unreachable: EHLO offers no AUTH this time (logged).
    pub(super) async fn dovecot_learn(&mut self) {
        let Some(d) = self.ctx.services.dovecot.clone() else { return };
        if let Err(e) = d.learn_mechanisms().await {
            let client = self.client_text();
            let reason = e.to_string();
            maillog::auth(&[("client", &client), ("result", "unavailable"), ("reason", &reason)]);
        }
    }

    /// Before AUTH is decided (backend dovecot, TLS or a plaintext
    /// network): when Dovecot's mechanism list is still unknown (it was
    /// down at EHLO) and cannot be learnt now, 454 rather than "unknown
    /// mechanism". `None`: go on.
    pub(super) async fn dovecot_precheck(&mut self, mechanism: &str) -> Option<Result<(), End>> {
        let s = self.settings();
        let open = self.tls().is_some() || s.config.auth.plaintext_networks.iter().any(|n| n.contains(self.conn.peer.ip()));
        if s.config.auth.backend != AuthBackend::Dovecot || !open {
            return None;
        }
        let reason = match self.ctx.services.dovecot.clone() {
            None => "no dovecot client (auth.dovecot_socket)".to_string(),
            Some(d) => match d.learn_mechanisms().await {
                Ok(()) => return None,
                Err(e) => e.to_string(),
            },
        };
        let client = self.client_text();
        maillog::auth(&[("client", &client), ("mechanism", mechanism), ("result", "tempfail"), ("reason", &reason)]);
        self.reply(codes::auth_tempfail());
        Some(Ok(()))
    }

    /// Dovecot is unreachable, timed out or answered `FAIL ... temp`.
    fn auth_tempfail(&mut self, mech: Mechanism, user: Option<&str>, reason: &str) -> Result<(), End> {
        let client = self.client_text();
        maillog::auth(&[
            ("client", &client),
            ("mechanism", mech.name()),
            ("user", user.unwrap_or("")),
            ("result", "tempfail"),
            ("reason", reason),
        ]);
        self.reply(codes::auth_tempfail());
        Ok(())
    }

    /// AUTH with `mech` (usable, the client not banned) through Dovecot.
    pub(super) async fn auth_dovecot(&mut self, mech: Mechanism, initial: Option<String>, cfg: &Auth) -> Result<(), End> {
        let Some(dc) = self.ctx.services.dovecot.clone() else {
            return self.auth_tempfail(mech, None, "no dovecot client (auth.dovecot_socket)");
        };
        let initial = match initial.as_deref().map(sasl::decode_response) {
            None => None,
            Some(Ok(d)) => Some(sasl::encode_challenge(&d)),
            Some(Err(e)) => return self.auth_failed_because(mech, None, &e, &e.to_string(), cfg, Duration::ZERO).await,
        };
        let cert_username = match (mech, self.tls().and_then(|t| t.client_cert.as_ref())) {
            (Mechanism::External, Some(c)) if c.verified.is_ok() => match c.cert.subject_cns.as_slice() {
                [cn] if !cn.is_empty() => Some(cn.clone()),
                _ => None,
            },
            _ => None,
        };
        let req = AuthStart {
            mechanism: mech.name().to_string(),
            secured: self.tls().is_some(),
            local: self.conn.local,
            remote: self.conn.peer,
            initial,
            cert_username,
        };
        let (mut ex, mut answer) = match dc.start(&req).await {
            Ok(x) => x,
            Err(e) => return self.auth_tempfail(mech, None, &e.to_string()),
        };
        loop {
            answer = match answer {
                Answer::Cont(challenge) => {
                    // Dovecot's challenge is base64 already (RFC 4954 §4: "334 " base64).
                    self.reply(Reply::plain(334, vec![challenge.into()]));
                    let line = self.auth_line().await?;
                    // Dropping `ex` closes its connection: Dovecot forgets the request.
                    let response = match sasl::decode_response(&line) {
                        Ok(d) => sasl::encode_challenge(&d),
                        Err(e) => return self.auth_failed_because(mech, None, &e, &e.to_string(), cfg, Duration::ZERO).await,
                    };
                    match ex.respond(&response).await {
                        Ok(a) => a,
                        Err(e) => return self.auth_tempfail(mech, None, &e.to_string()),
                    }
                }
                Answer::Fail(p) => {
                    ex.finish();
                    let user = p.user().map(str::to_ascii_lowercase);
                    if p.temporary() {
                        let reason = format!("dovecot: {}", p.reason().unwrap_or("temporary failure"));
                        return self.auth_tempfail(mech, user.as_deref(), &reason);
                    }
                    let reason = match (p.nologin(), p.reason()) {
                        (true, r) => format!("nologin: {}", r.unwrap_or("login not allowed")),
                        (false, Some(r)) => format!("dovecot: {r}"),
                        (false, None) => "authentication failed".to_string(),
                    };
                    return self.auth_failed_because(mech, user.as_deref(), &SaslError::BadCredentials, &reason, cfg, Duration::ZERO).await;
                }
                Answer::Ok(p) => {
                    let Some(user) = p.user().map(str::to_string) else {
                        return self.auth_tempfail(mech, None, "dovecot: OK without user=");
                    };
                    if p.nologin() {
                        ex.finish();
                        let reason = format!("nologin: {}", p.reason().unwrap_or("login not allowed"));
                        return self.auth_failed_because(mech, Some(&user), &SaslError::BadCredentials, &reason, cfg, Duration::ZERO).await;
                    }
                    if let Some(d) = p.resp().map(str::to_string) {
                        // RFC 4954 §4: additional data in a 334; the client answers empty.
                        self.reply(Reply::plain(334, vec![d.into()]));
                        let line = self.auth_line().await?;
                        if !matches!(sasl::decode_response(&line).as_deref(), Ok([])) {
                            let e = SaslError::Malformed("expected an empty response");
                            return self.auth_failed_because(mech, Some(&user), &e, &e.to_string(), cfg, Duration::ZERO).await;
                        }
                    }
                    ex.finish();
                    return self.dovecot_ok(Authenticated::from_dovecot(&user, mech), cfg);
                }
            };
        }
    }

    /// Dovecot said OK: remember the login, log, 235.
    fn dovecot_ok(&mut self, identity: Authenticated, cfg: &Auth) -> Result<(), End> {
        let client = self.client_text();
        self.ctx.throttle.succeed(self.conn.peer.ip(), identity.user(), Instant::now(), cfg);
        maillog::auth(&[
            ("client", &client),
            ("mechanism", identity.mechanism().name()),
            ("user", identity.user()),
            ("result", "ok"),
            ("backend", "dovecot"),
        ]);
        if let State::Ready { greeted } = &mut self.state {
            greeted.auth = Some(identity);
        }
        self.reply(codes::auth_ok());
        Ok(())
    }
}
