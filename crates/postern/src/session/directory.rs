//! The session's use of the account directory (`[sql]`, `[ldap]`): the
//! lookups are done here, before the pure decisions, and handed to them as
//! facts. RCPT: a virtual domain's aliases and mailboxes
//! ([`crate::policy::DirectoryFacts`]); AUTH with `auth.backend = "sql"` or
//! `"ldap"`: the password check; MAIL with `auth.sender_login_match`: the
//! sender's owners. A directory that cannot answer gives `451 4.3.0` (RCPT,
//! MAIL) or `454 4.7.0` (AUTH) and a log line, never "unknown".
//!
//! May touch: the directory (through the trait).

use postern_wire::sasl::{Mechanism, Provide};
use postern_wire::{codes, Mailbox, Path};

use super::{End, Session, Socket};
use crate::config::AuthBackend;
use crate::directory::authn::{check_password, LoginCheck};
use crate::directory::DirectoryError;
use crate::maillog;
use crate::policy::DirectoryFacts;

/// Mechanisms a directory backend can serve: it checks passwords, it
/// hands out no plaintext-equivalent secrets (SCRAM, CRAM-MD5, DIGEST-MD5
/// need those).
pub(super) fn directory_can_serve(m: &Mechanism) -> bool {
    matches!(m, Mechanism::Plain | Mechanism::Login | Mechanism::External)
}

impl<S: Socket> Session<S> {
    /// Does AUTH check passwords in the directory?
    pub(super) fn auth_by_directory(&self) -> bool {
        matches!(self.settings().config.auth.backend, AuthBackend::Sql | AuthBackend::Ldap)
    }

    /// The directory's facts about a recipient outside the static local
    /// domains; `Ok(None)`: no directory, or a static local recipient.
    pub(super) async fn directory_facts(&self, rcpt: &Path) -> Result<Option<DirectoryFacts>, DirectoryError> {
        let (Some(dir), Path::Mailbox(m)) = (self.ctx.services.directory.as_ref(), rcpt) else { return Ok(None) };
        if self.settings().is_local_domain(&m.domain.to_ascii_lowercase()) {
            return Ok(None);
        }
        crate::directory::facts::rcpt_facts(dir.as_ref(), &m.local, &m.domain).await.map(Some)
    }

    /// A password check in the directory, as a SASL answer and, when
    /// accepted, the directory's canonical login; `Err`: it cannot answer now.
    pub(super) async fn directory_password(&self, authcid: &str, password: &str) -> Result<(Provide, Option<String>), DirectoryError> {
        let Some(dir) = self.ctx.services.directory.as_ref() else {
            return Err(DirectoryError::Unavailable { backend: "directory", reason: "auth.backend names no configured directory".into() });
        };
        let allow_plain = self.settings().config.sql.as_ref().is_some_and(|s| s.allow_plain_passwords);
        let login = authcid.to_ascii_lowercase();
        match check_password(dir, &login, password, allow_plain).await? {
            LoginCheck::Accepted(canonical) => Ok((Provide::PasswordOk(true), Some(canonical))),
            LoginCheck::Refused(why) => {
                tracing::debug!(user = %login, reason = %why, "directory refused the login");
                Ok((Provide::PasswordOk(false), None))
            }
        }
    }

    /// Does the directory list `user` as an owner of `sender`? `Err`: it
    /// cannot say now.
    pub(super) async fn directory_owns_sender(&self, user: &str, sender: &Mailbox) -> Result<bool, DirectoryError> {
        let Some(dir) = self.ctx.services.directory.as_ref() else { return Ok(false) };
        let addr = sender.to_string().to_ascii_lowercase();
        Ok(dir.sender_logins(&addr).await?.iter().any(|l| l.eq_ignore_ascii_case(user)))
    }

    /// The directory could not answer during AUTH: `454 4.7.0`, one log
    /// line, not counted as a failure (the client did nothing wrong).
    pub(super) fn auth_unavailable(&mut self, mech: Mechanism, user: &str, e: &DirectoryError) -> Result<(), End> {
        let client = self.client_text();
        let reason = e.to_string();
        maillog::auth(&[("client", &client), ("mechanism", mech.name()), ("user", user), ("result", "tempfail"), ("reason", &reason)]);
        self.reply(codes::auth_tempfail());
        Ok(())
    }

    /// The directory could not answer at MAIL or RCPT: `451 4.3.0` and a
    /// reject line with the reason.
    pub(super) fn directory_unavailable(&mut self, verb: &str, e: &DirectoryError, extra: &[(&str, &str)]) {
        let reason = e.to_string();
        let mut fields = extra.to_vec();
        fields.push(("reason", &reason));
        self.reject(verb, codes::directory_unavailable(), &fields);
    }
}

impl<S: Socket> Session<S> {
    /// MAIL with `auth.sender_login_match` after AUTH: does the directory
    /// list the user as an owner of `from`? `Ok(false)` when nothing asks.
    pub(super) async fn directory_owns(&self, from: &Path) -> Result<bool, DirectoryError> {
        let (super::State::Ready { greeted }, Path::Mailbox(m)) = (&self.state, from) else { return Ok(false) };
        let Some(a) = greeted.auth.as_ref() else { return Ok(false) };
        if !self.settings().config.auth.sender_login_match {
            return Ok(false);
        }
        self.directory_owns_sender(a.user(), m).await
    }
}
