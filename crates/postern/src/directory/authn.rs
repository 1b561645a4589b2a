//! Checking a login's password through a [`Directory`]: the backend's own
//! check ([`Directory::verify`], LDAP bind) when it has one, else its
//! stored hash ([`Directory::password`]) verified by [`super::hash`] on a
//! blocking thread (argon2 and bcrypt are deliberately slow). Shared by
//! SMTP AUTH (`auth.backend = "sql"`/`"ldap"`) and `postern user verify`.
//!
//! May touch: the directory (through the trait).

use std::sync::Arc;

use super::hash::{self, HashCheck};
use super::{Directory, Lookup};

/// The answer to a login attempt that the directory could answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// The password is right; the canonical user name.
    Accepted(String),
    /// Refused, with the reason for the log (never shown to the client).
    Refused(String),
}

/// Checks `password` for `login` (lower-case). `Err`: the directory
/// cannot answer now (the caller answers `454 4.7.0`).
pub async fn check_password(dir: &Arc<dyn Directory>, login: &str, password: &str, allow_plain: bool) -> Lookup<LoginCheck> {
    if let Some(fut) = dir.verify(login, password) {
        return Ok(match fut.await? {
            Some(user) => LoginCheck::Accepted(user),
            None => LoginCheck::Refused("wrong login or password".into()),
        });
    }
    let Some(entry) = dir.password(login).await? else {
        return Ok(LoginCheck::Refused("no such user".into()));
    };
    if let Some(why) = entry.disabled {
        return Ok(LoginCheck::Refused(format!("account disabled: {why}")));
    }
    let (stored, pw) = (entry.hash.clone(), password.to_string());
    let checked = tokio::task::spawn_blocking(move || hash::check(&stored, &pw, allow_plain)).await.unwrap_or(HashCheck::Mismatch);
    Ok(match checked {
        HashCheck::Match => LoginCheck::Accepted(entry.user),
        HashCheck::Mismatch => LoginCheck::Refused("wrong password".into()),
        HashCheck::PlainRefused => LoginCheck::Refused("stored password is plaintext and sql.allow_plain_passwords is false".into()),
        HashCheck::UnknownScheme => LoginCheck::Refused("stored password has an unknown scheme".into()),
    })
}
