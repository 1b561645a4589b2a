//! HELO and EHLO (RFC 5321 §4.1.1.1): the greeting exchange and the EHLO
//! keyword list.
//!
//! May touch: the milters (HELO stage). Implements RFC 5321 §4.1.1.1 and
//! §4.1.4 (EHLO resets the transaction), RFC 3207 §4.2 (no STARTTLS once
//! TLS is active), RFC 4954 §3 (AUTH keyword), RFC 8689 §2 (REQUIRETLS,
//! offered only under TLS).

use std::borrow::Cow;

use postern_wire::Reply;

use super::{End, Greeted, Helo, Session, Socket, State};
use crate::maillog;
use crate::milter::Verdict;

impl<S: Socket> Session<S> {
    /// HELO/EHLO: filter (milters), then proceed. An AUTH identity survives
    /// a new EHLO (only STARTTLS resets it).
    pub(super) async fn helo(&mut self, name: String, extended: bool) -> Result<(), End> {
        let client = self.client_text();
        maillog::helo(&[("client", &client), ("helo", &name)]);
        if self.screen_pipelining(if extended { "EHLO" } else { "HELO" }, true) {
            return Ok(());
        }
        if self.milters.is_some() {
            let macros = self.milter_macros_helo();
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
                match m.helo(&name, &macros).await {
                    Verdict::Continue | Verdict::Discard => {}
                    Verdict::Reject(r) => {
                        // RFC 5321 §4.1.4: the transaction is gone either way.
                        self.end_transaction();
                        self.reject("HELO", r, &[("helo", &name)]);
                        return Ok(());
                    }
                    Verdict::Close(r) => return self.milter_close("HELO", r),
                }
            }
        }
        if let Some(r) = self.helo_check(&name).await {
            self.end_transaction();
            self.reject("HELO", r, &[("helo", &name)]);
            return Ok(());
        }
        if extended {
            self.dovecot_learn().await;
            let lines = self.ehlo_lines();
            self.reply(Reply::plain(250, lines));
        } else {
            let text = format!("{} Hello [{}]", self.settings().hostname, self.conn.peer.ip());
            self.reply(Reply::plain(250, vec![text.into()]));
        }
        let auth = self.auth().cloned();
        self.enter(State::Ready { greeted: Greeted { helo: Helo { name, extended }, auth } });
        Ok(())
    }

    /// The EHLO keyword list.
    fn ehlo_lines(&self) -> Vec<Cow<'static, str>> {
        let s = self.settings();
        let mut lines: Vec<Cow<'static, str>> = vec![
            format!("{} Hello [{}]", s.hostname, self.conn.peer.ip()).into(),
            "PIPELINING".into(),
            format!("SIZE {}", s.config.limits.max_message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        // RFC 3207 §4.2: STARTTLS is not offered once TLS is active.
        if self.tls().is_none() && self.ctx.tls.is_some() {
            lines.insert(1, "STARTTLS".into());
        }
        // RFC 8689 §2: the MAIL option is only for a session that uses TLS,
        // so the keyword is offered only then (STARTTLS or implicit TLS).
        if self.tls().is_some() {
            lines.push("REQUIRETLS".into());
        }
        let mechs = self.usable_mechanisms();
        if self.auth().is_none() && !mechs.is_empty() {
            let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")).into());
            if s.config.auth.broken_auth_line {
                lines.push(format!("AUTH={}", names.join(" ")).into());
            }
        }
        lines
    }
}
