//! MAIL and RCPT (RFC 5321 §4.1.1.2-3): check → filter (milters) →
//! proceed. Sequencing (HELO first, no nested MAIL, TLS/AUTH required by
//! the listener) is the command table's; what is here needs the arguments.
//!
//! May touch: the spool's free-space figure; the milters (MAIL/RCPT
//! stages). Implements RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531
//! §3.4 (SMTPUTF8), RFC 4954 §6 (sender-login match), RFC 3461 (NOTIFY,
//! ORCPT kept for DSN), RFC 8689 §2 (REQUIRETLS only under TLS).

use postern_wire::command::{Body, MailParams, RcptParams};
use postern_wire::{codes, Mailbox, Path};

use super::filter::{mail_args, rcpt_args};
use super::{Accepted, End, Greeted, Session, Socket, State, Txn};
use crate::maillog;
use crate::milter::Verdict;
use crate::policy::{check_rcpt, Facts, RcptDecision};

impl<S: Socket> Session<S> {
    /// MAIL: check, filter (milters), proceed.
    pub(super) async fn mail(&mut self, from: Path, params: MailParams) -> Result<(), End> {
        let dir_owns = match self.directory_owns(&from).await {
            Ok(b) => b,
            Err(e) => {
                let sender = if let Path::Mailbox(m) = &from { m.to_string() } else { String::new() };
                self.directory_unavailable("MAIL", &e, &[("from", &sender)]);
                return Ok(());
            }
        };
        let Some(greeted) = self.mail_checks(&from, &params, dir_owns) else { return Ok(()) };
        if let Some(r) = self.sender_check(&from).await {
            let sender = match &from {
                Path::Mailbox(m) => m.to_string(),
                _ => String::new(),
            };
            self.reject("MAIL", r, &[("from", &sender), ("rule", "sender-domain")]);
            return Ok(());
        }
        if self.message_rate_refused(&from).await {
            return Ok(());
        }
        let mut txn = Txn { from, params, rcpts: Vec::new(), discard: false };
        if self.milters.is_some() {
            let sender = txn.sender();
            let args = mail_args(&txn.from, &txn.params);
            let macros = self.milter_macros_mail(&sender);
            if let Some(m) = self.milters.as_mut() {
                match m.mail(&args, &macros).await {
                    Verdict::Continue => {}
                    Verdict::Discard => txn.discard = true,
                    Verdict::Reject(r) => {
                        m.abort().await;
                        self.reject("MAIL", r, &[("from", &sender)]);
                        return Ok(());
                    }
                    Verdict::Close(r) => return self.milter_close("MAIL", r),
                }
            }
        }
        self.reply(codes::sender_ok());
        self.enter(State::Mail { greeted, txn });
        Ok(())
    }

    /// MAIL's own checks (the table already checked the sequence): the
    /// greeting to keep when they pass; otherwise the refusal is queued.
    /// (`dir_owns`: the account directory lists the user as an owner of `from`.)
    fn mail_checks(&mut self, from: &Path, params: &MailParams, dir_owns: bool) -> Option<Greeted> {
        let State::Ready { greeted } = &self.state else {
            // The table admits MAIL only in Ready.
            self.reply(codes::bad_sequence());
            return None;
        };
        let greeted = greeted.clone();
        let sender = match from {
            Path::Mailbox(m) => m.to_string(),
            _ => String::new(),
        };
        if let (Some(a), Path::Mailbox(m)) = (&greeted.auth, from) {
            if self.settings().config.auth.sender_login_match && !dir_owns && !self.owns_sender(a.user(), m) {
                let r = codes::sender_not_owned().with_text(format!("<{m}>: Sender address not owned by user {}", a.user()));
                self.reject("MAIL", r, &[("from", &sender), ("user", a.user())]);
                return None;
            }
        }
        let max = self.settings().config.limits.max_message_size;
        if params.size.is_some_and(|s| s > max) {
            let r = codes::too_big().with_text(format!("Message size exceeds fixed maximum message size ({max} bytes)"));
            self.reject("MAIL", r, &[("from", &sender)]);
            return None;
        }
        if params.body == Body::BinaryMime {
            self.reject("MAIL", codes::unknown_parameter().with_text("BINARYMIME is not supported"), &[("from", &sender)]);
            return None;
        }
        if !greeted.helo.extended && (params.size.is_some() || params.smtputf8 || params.requiretls || params.body != Body::SevenBit) {
            // Parameters are ESMTP only; HELO clients may not use them.
            self.reject("MAIL", codes::unknown_parameter().with_text("Parameters require EHLO"), &[("from", &sender)]);
            return None;
        }
        // RFC 8689 §2: REQUIRETLS "MUST only be specified" in a session that
        // uses TLS (and we offer it only then): refuse it in the clear.
        if params.requiretls && self.tls().is_none() {
            self.reject("MAIL", codes::requiretls_needs_tls(), &[("from", &sender)]);
            return None;
        }
        if let Some(free) = self.ctx.spool.free_space() {
            let need = self.settings().config.queue.min_free_space + params.size.unwrap_or(0);
            if free < need {
                self.reject("MAIL", codes::insufficient_storage(), &[("from", &sender)]);
                return None;
            }
        }
        Some(greeted)
    }

    /// Sender-login match: the user's listed addresses, or user@local-domain.
    fn owns_sender(&self, user: &str, m: &Mailbox) -> bool {
        let addr = m.to_string().to_ascii_lowercase();
        let db = self.ctx.users.get();
        if db.users.get(user).is_some_and(|r| r.addresses.iter().any(|a| a.eq_ignore_ascii_case(&addr))) {
            return true;
        }
        m.local.eq_ignore_ascii_case(user) && self.settings().is_local_domain(&m.domain)
    }

    /// RCPT: check (limits, then the relay policy), filter, proceed.
    pub(super) async fn rcpt(&mut self, to: Path, params: RcptParams) -> Result<(), End> {
        let State::Mail { txn, .. } = &self.state else {
            // The table admits RCPT only inside a transaction.
            self.reply(codes::bad_sequence());
            return Ok(());
        };
        let (count, smtputf8, sender) = (txn.rcpts.len(), txn.params.smtputf8, txn.sender());
        let sender_mb = match &txn.from {
            Path::Mailbox(m) => Some(m.clone()),
            _ => None,
        };
        let rcpt_text = match &to {
            Path::Mailbox(m) => m.to_string(),
            Path::Postmaster => "Postmaster".to_string(),
            Path::Null => String::new(),
        };
        if let Path::Mailbox(m) = &to {
            if m.is_utf8() && !smtputf8 {
                self.reject("RCPT", codes::utf8_needs_smtputf8(), &[("to", &rcpt_text)]);
                return Ok(());
            }
        }
        if count >= self.settings().config.limits.max_recipients {
            self.reject("RCPT", codes::too_many_recipients(), &[("from", &sender), ("to", &rcpt_text)]);
            return Ok(());
        }
        if let Some((r, rule)) = self.delayed_refusal() {
            self.reject("RCPT", r, &[("from", &sender), ("to", &rcpt_text), ("rule", rule)]);
            return Ok(());
        }
        if self.screen_rcpt(&sender, &rcpt_text).await {
            return Ok(());
        }
        if self.recipient_rate_refused(&sender, &rcpt_text).await {
            return Ok(());
        }
        let dir_facts = match self.directory_facts(&to).await {
            Ok(f) => f,
            Err(e) => {
                self.directory_unavailable("RCPT", &e, &[("from", &sender), ("to", &rcpt_text)]);
                return Ok(());
            }
        };
        let db = self.ctx.users.get();
        let facts = Facts {
            listener: self.ctx.listener.label(),
            client_ip: self.conn.peer.ip(),
            tls: self.tls().is_some(),
            authenticated: self.auth(),
            cert: self.tls().and_then(|t| t.client_cert.as_ref()),
            sender: sender_mb.as_ref(),
            rcpt: &to,
            user_db: Some(&db),
            client_resolve: self.client_resolve(),
            directory: dir_facts.as_ref(),
        };
        let decision = check_rcpt(self.settings(), &facts);
        let client = self.client_text();
        match decision {
            RcptDecision::Accept { targets, rule, origin, action } => {
                if self.greylisted(&sender, &rcpt_text).await {
                    return Ok(());
                }
                if self.milters.is_some() {
                    let args = rcpt_args(&rcpt_text, &params);
                    let macros = self.milter_macros_rcpt(&to);
                    let verdict = match self.milters.as_mut() {
                        Some(m) => m.rcpt(&args, &macros).await,
                        None => Verdict::Continue,
                    };
                    match verdict {
                        Verdict::Continue => {}
                        Verdict::Discard => {
                            if let State::Mail { txn, .. } = &mut self.state {
                                txn.discard = true;
                            }
                        }
                        Verdict::Reject(r) => {
                            self.reject("RCPT", r, &[("from", &sender), ("to", &rcpt_text), ("rule", "milter")]);
                            return Ok(());
                        }
                        Verdict::Close(r) => return self.milter_close("RCPT", r),
                    }
                }
                let act = action.as_str();
                maillog::rcpt(&[
                    ("client", &client),
                    ("from", &sender),
                    ("to", &rcpt_text),
                    ("result", act),
                    ("rule", &rule),
                    ("origin", &origin),
                ]);
                if let State::Mail { txn, .. } = &mut self.state {
                    txn.rcpts.push(Accepted { original: rcpt_text, targets, params });
                }
                self.reply(codes::recipient_ok());
            }
            RcptDecision::Reject { reply, rule, origin } => {
                if matches!(rule.as_str(), "local-unknown" | "directory-unknown") {
                    self.harvest_unknown().await?;
                }
                self.reject("RCPT", reply, &[("from", &sender), ("to", &rcpt_text), ("rule", &rule), ("origin", &origin)]);
            }
        }
        Ok(())
    }
}
