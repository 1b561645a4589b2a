//! The verification glue of the session (`[mail_auth]`): after DATA/BDAT
//! and the milters, before the commit and its 250, check SPF, DKIM, DMARC
//! and ARC (`crate::mailauth`), put our `Authentication-Results:` on top
//! of the draft (after removing forged ones) and apply the message-stage
//! `[[rule]]`s (`policy::message`), else the DMARC policy.
//!
//! May touch: DNS (through `mailauth`); the spool draft (one rewrite).
//! RFCs: 8601 §5 (forged results), 7489 §6.6.4 / §6.7 (policy).

use std::io::Read as _;

use postern_wire::{codes, Reply};

use super::{Greeted, Session, Socket, Txn};
use crate::config::Role;
use crate::mailauth::resolver;
use crate::mailauth::verify::{self, Action, Envelope};
use crate::policy::message::{check_message, MessageAuth};
use crate::policy::Facts;
use crate::spool::{Draft, Place};

/// Where and how a message is committed.
#[derive(Debug)]
pub(super) struct Disposition {
    /// Active or hold queue.
    pub(super) place: Place,
    /// Why it is on hold.
    pub(super) quarantine: Option<String>,
    /// The verification results for the `queued` line (`authres=`).
    pub(super) auth: Option<AuthLog>,
    /// The DKIM signatures made, for the `queued` line (`dkim=sel@domain,...`).
    pub(super) dkim: Option<String>,
}

/// What verification adds to the mail log: `authres=`, and `rule=`
/// `origin=` when a message-stage rule decided.
#[derive(Debug, Default)]
pub(super) struct AuthLog {
    /// The results (or the error).
    authres: String,
    /// The deciding message rule: name, `file:line`.
    rule: Option<(String, String)>,
}

impl AuthLog {
    fn new(authres: impl Into<String>) -> AuthLog {
        AuthLog { authres: authres.into(), rule: None }
    }

    /// The log fields.
    pub(super) fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut f = vec![("authres", self.authres.as_str())];
        if let Some((rule, origin)) = &self.rule {
            f.extend([("rule", rule.as_str()), ("origin", origin.as_str())]);
        }
        f
    }
}

/// What verification says about the message.
pub(super) enum AuthStep {
    /// Commit as decided so far; the results for the log, if checked.
    Continue(Option<AuthLog>),
    /// Commit on hold: the reason, the results.
    Hold(String, AuthLog),
    /// Refuse with this reply; the results (or the error) for the log.
    Refuse(Reply, AuthLog),
}

impl<S: Socket> Session<S> {
    /// Verifies the draft when `mail_auth.verify` applies to this client.
    pub(super) async fn mail_auth(&mut self, greeted: &Greeted, txn: &Txn, draft: &mut Draft) -> AuthStep {
        let s = self.settings();
        let cfg = &s.config.mail_auth;
        let ip = self.conn.peer.ip();
        // Mail from our own side (AUTH, a verified client certificate,
        // relay.networks, submission) is not checked: it is signed, not
        // verified.
        let cert_verified = self.tls().and_then(|t| t.client_cert.as_ref()).is_some_and(|c| c.verified.is_ok());
        let trusted = greeted.auth.is_some() || cert_verified || s.config.relay.networks.iter().any(|c| c.contains(ip));
        if !cfg.verify || !matches!(self.ctx.listener.role, Role::Smtp) || trusted {
            return AuthStep::Continue(None);
        }
        let auth = match resolver::shared(&s.config) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("mail_auth: {e}");
                return AuthStep::Refuse(codes::local_error(), AuthLog::new(e.to_string()));
            }
        };
        let mut text = Vec::with_capacity(draft.written() as usize);
        let read = match draft.reader() {
            Ok(mut f) => f.read_to_end(&mut text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = read {
            tracing::warn!("mail_auth: reading the draft: {e}");
            return AuthStep::Refuse(codes::local_error(), AuthLog::new(e));
        }
        let sender = txn.sender();
        let env = Envelope { ip, helo: &greeted.helo.name, mail_from: &sender, host: &s.hostname };
        let results = verify::verify(&auth, &env, &text).await;
        let mut log = AuthLog::new(results.log_field());
        let sample = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) % 100) as u8;
        // The first matching message-stage rule decides; else the DMARC switch.
        let from = match &txn.from {
            postern_wire::Path::Mailbox(m) => Some(m),
            _ => None,
        };
        let facts = Facts {
            listener: self.ctx.listener.label(),
            client_ip: ip,
            tls: self.tls().is_some(),
            authenticated: self.auth(),
            cert: self.tls().and_then(|t| t.client_cert.as_ref()),
            sender: from,
            rcpt: &postern_wire::Path::Null,
            user_db: None,
            client_resolve: self.client_resolve(),
            directory: None,
        };
        let [spf, dkim, dmarc, arc] = results.keywords();
        let action = match check_message(s, &facts, &MessageAuth::from_keywords(spf, dkim, dmarc, arc)) {
            Some(d) => {
                log.rule = Some((d.rule.clone(), d.origin.clone()));
                Action::from_rule(d.action, d.reply.as_ref(), d.hold_reason())
            }
            None => verify::decide(cfg, &results, sample),
        };
        let mut header = results.header(cfg.authserv_id.as_deref().unwrap_or(&s.hostname));
        match &action {
            Action::Reject(r) | Action::TempFail(r) => return AuthStep::Refuse(r.clone(), log),
            Action::Header(reason) => header.push_str(&format!("X-Postern-Quarantine: {reason}\r\n")),
            Action::Accept | Action::Hold(_) => {}
        }
        let ours = cfg.authserv_id.as_deref().unwrap_or(&s.hostname);
        let body = verify::strip_forged(&text, ours);
        let body = body.as_deref().unwrap_or(&text);
        // In the same file (one flush at the commit, as without the header).
        if let Err(e) = draft.replace(&[header.as_bytes(), body]) {
            tracing::warn!("mail_auth: {e}");
            return AuthStep::Refuse(codes::local_error(), AuthLog::new(e.to_string()));
        }
        match action {
            Action::Hold(reason) => AuthStep::Hold(reason, log),
            _ => AuthStep::Continue(Some(log)),
        }
    }
}
