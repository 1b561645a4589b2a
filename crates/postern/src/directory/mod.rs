//! Account directories: where passwords, local (virtual) domains,
//! mailboxes, aliases and the sender-login map come from when a site keeps
//! them outside `DATA/users.json` (PostgreSQL `[sql]`, LDAP `[ldap]`).
//!
//! One trait, [`Directory`], that every backend implements; the session,
//! `postern explain`, `postern user verify` and the `sendmail` command ask
//! it, never a backend directly. A backend answers each lookup with a value
//! or [`DirectoryError::Unavailable`] (timeout, connection refused, a query
//! error): callers turn that into a temporary reply (`451 4.3.0` at RCPT,
//! `454 4.7.0` at AUTH) and one log line, never into "no such user".
//!
//! May touch: the network (the backend's server), nothing on disk.
//!
//! Addresses given to lookups are lower-case `local@domain` (the domain
//! already in its A-label/ASCII form when it has one); domains are
//! lower-case. Virtual domains have their own namespaces:
//! `alice@a.example` and `alice@b.example` are two lookups.

pub mod authn;
pub mod cache;
pub mod facts;
pub mod hash;
pub mod ldap;
pub mod ldap_entry;
pub mod sql;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Directory>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The backend could not answer now (down, slow, a query error): a
    /// temporary condition; the caller answers 4xx and logs `reason`.
    #[error("{backend} lookup failed: {reason}")]
    Unavailable {
        /// "sql", "ldap", …
        backend: &'static str,
        /// What went wrong, for the log (never shown to the client).
        reason: String,
    },
}

/// A lookup's answer.
pub type Lookup<T> = Result<T, DirectoryError>;

/// A user's stored credentials, as a password lookup returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordEntry {
    /// The canonical login (what logs and `Authenticated` show), lower-case.
    pub user: String,
    /// The stored password in Dovecot's form: `{SCHEME}data`
    /// (`{ARGON2ID}$argon2id$…`, `{BLF-CRYPT}$2y$…`, `{SHA512-CRYPT}$6$…`,
    /// `{SHA256-CRYPT}$5$…`, `{SSHA512}base64`, `{PLAIN}text`), or a bare
    /// crypt string (`$6$…`) that names its scheme itself.
    pub hash: String,
    /// The account may not log in (Dovecot's `nologin`), with the reason
    /// to log when the backend gives one.
    pub disabled: Option<String>,
}

/// A source of accounts. Every method is one query (after the cache):
/// `Ok` with the answer, or `Err` when the backend cannot answer now.
pub trait Directory: Send + Sync + 'static {
    /// The backend's name for logs and errors: "sql", "ldap".
    fn name(&self) -> &'static str;

    /// The credentials of the user who logs in as `login` (lower-case);
    /// `None`: no such user.
    fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>>;

    /// Checks a password by the backend itself (LDAP bind-as-user), for
    /// backends that never hand out a hash. `None` (the default): the
    /// caller verifies [`Directory::password`]'s hash. `Some(future)`:
    /// `Ok(Some(user))` accepted (the canonical login), `Ok(None)` wrong
    /// login or password. Such a backend supports PLAIN and LOGIN only.
    fn verify<'a>(&'a self, _login: &'a str, _password: &'a str) -> Option<BoxFuture<'a, Lookup<Option<String>>>> {
        None
    }

    /// Is `domain` a domain whose mailboxes this directory holds (a virtual
    /// domain delivered here)?
    fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>>;

    /// Does the mailbox `address` (`local@domain`) exist?
    fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>>;

    /// The targets of the alias `address`; empty: not an alias.
    fn alias<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>>;

    /// The logins allowed to send as `sender` (`local@domain`), for
    /// `auth.sender_login_match`; empty: none listed.
    fn sender_logins<'a>(&'a self, sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>>;
}
