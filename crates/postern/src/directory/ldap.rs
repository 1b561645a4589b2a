//! The LDAP directory (`[ldap]`, docs/directory.md): passwords are
//! checked by binding (search-then-bind or bind-as-user), domains,
//! mailboxes, aliases and sender logins by subtree searches with the
//! configured filters, every substituted value escaped (RFC 4515 / 4514,
//! `config::ldap_template`).
//!
//! Connections: searches share ONE connection, bound as the service
//! account (or anonymous). LDAP multiplexes operations by message ID
//! (RFC 4511 §4.1.1), so one connection carries concurrent searches with no
//! pool to size; after any transport error or timeout it is dropped and the
//! next lookup reconnects. A password check binds on a connection of its
//! own, closed after the bind: a bind changes the identity of the
//! connection it is made on (RFC 4513 §5), so it must never be the shared one.
//!
//! Every operation (connect, TLS, bind, search) runs under `timeout`; a
//! failure of any kind is [`DirectoryError::Unavailable`], never "no such
//! entry". Only result code 49 (invalidCredentials) on a user bind means
//! "wrong login or password".
//!
//! May touch: the network (the LDAP server); the password file and CA
//! files named in `[ldap]` (read). RFCs: 4511 (protocol), 4513 (bind,
//! StartTLS), 4515 (filters), 4514 (DNs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope};
use tokio::sync::Mutex;

use super::ldap_entry::{self, Entry};
use super::{BoxFuture, Directory, DirectoryError, Lookup, PasswordEntry};
use crate::config::ldap_template::{self, Key};
use crate::config::{Ldap as Config, LdapAuth, OutboundTls};
use crate::settings::Settings;

/// RFC 4511 §4.1.9 resultCode invalidCredentials: wrong DN or password.
const INVALID_CREDENTIALS: u32 = 49;

/// RFC 4511 §4.5.1.8: the attribute list "1.1" asks for no attributes.
const NO_ATTRIBUTES: &str = "1.1";

/// The `[ldap]` directory.
pub struct LdapDirectory {
    cfg: Config,
    url: String,
    /// `bind_password_file`, resolved against the data directory.
    password_file: Option<PathBuf>,
    /// The TLS client config (ldaps:// or StartTLS), or why it could not be
    /// built (a bad CA file: every lookup answers "unavailable" with it).
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    /// The shared search connection, when one is open.
    search_conn: Mutex<Option<ldap3::Ldap>>,
}

impl LdapDirectory {
    /// The directory `[ldap]` describes (nothing is contacted yet).
    pub fn new(cfg: &Config, settings: &Settings) -> LdapDirectory {
        let url = cfg.url.clone().unwrap_or_default();
        let tls = (cfg.starttls || url.to_ascii_lowercase().starts_with("ldaps://")).then(|| {
            let cas: Vec<PathBuf> = if cfg.ca_files.is_empty() {
                vec![PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE)]
            } else {
                cfg.ca_files.iter().map(|p| settings.resolve(p)).collect()
            };
            crate::tls::ClientTls::build(OutboundTls::Verify, &cas, None).map(|t| t.config).map_err(|e| format!("TLS setup: {e}"))
        });
        LdapDirectory {
            cfg: cfg.clone(),
            url,
            password_file: cfg.bind_password_file.as_ref().map(|p| settings.resolve(p)),
            tls,
            search_conn: Mutex::new(None),
        }
    }

    fn unavailable(&self, reason: String) -> DirectoryError {
        DirectoryError::Unavailable { backend: "ldap", reason }
    }

    /// Runs `work` under the lookup time limit; a timeout drops the shared
    /// connection (it may be stuck) so the next lookup reconnects.
    async fn limited<T>(&self, what: &str, work: impl std::future::Future<Output = Result<T, String>>) -> Lookup<T> {
        match tokio::time::timeout(self.cfg.timeout, work).await {
            Ok(r) => r.map_err(|e| self.unavailable(format!("{what}: {e}"))),
            Err(_) => {
                self.search_conn.lock().await.take();
                Err(self.unavailable(format!(
                    "{what}: no answer from {} within {}",
                    self.url,
                    humantime::format_duration(self.cfg.timeout)
                )))
            }
        }
    }

    /// A new connection (TLS as configured), its driver spawned.
    async fn connect(&self) -> Result<ldap3::Ldap, String> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.cfg.timeout).set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone()?);
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url).await.map_err(|e| format!("connect to {}: {e}", self.url))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(url, error = %e, "ldap connection ended");
            }
        });
        Ok(ldap)
    }

    /// The shared search connection, opened and bound as the service
    /// account (or left anonymous) when there is none or it closed.
    async fn search_connection(&self) -> Result<ldap3::Ldap, String> {
        let mut slot = self.search_conn.lock().await;
        if let Some(l) = slot.as_mut() {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        slot.take();
        let mut ldap = self.connect().await?;
        if let (Some(dn), Some(file)) = (&self.cfg.bind_dn, &self.password_file) {
            let text = std::fs::read_to_string(file).map_err(|e| format!("bind_password_file {}: {e}", file.display()))?;
            let password = text.lines().next().unwrap_or_default();
            let r = ldap.simple_bind(dn, password).await.map_err(|e| format!("bind as {dn}: {e}"))?;
            if r.rc != 0 {
                return Err(format!("bind as {dn} (the service account): result {} {}", r.rc, r.text));
            }
        }
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// The entries `filter` finds below `base`, with `attrs`.
    async fn search(&self, what: &str, filter: String, attrs: &[&str]) -> Lookup<Vec<Entry>> {
        let work = async {
            let mut ldap = self.search_connection().await?;
            let res = match ldap.search(&self.cfg.base, Scope::Subtree, &filter, attrs.to_vec()).await {
                Ok(r) => r,
                Err(e) => {
                    self.search_conn.lock().await.take();
                    return Err(format!("search {filter}: {e}"));
                }
            };
            let ldap3::SearchResult(entries, result) = res;
            if result.rc != 0 {
                return Err(format!("search {filter} below {:?}: result {} {}", self.cfg.base, result.rc, result.text));
            }
            Ok(entries.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).filter_map(ldap_entry::decode).collect())
        };
        self.limited(what, work).await
    }

    /// The one entry `user_filter` finds for `login`: `None` no entry; two
    /// or more is a directory problem (never a guess which one).
    async fn user_entry(&self, login: &str, attrs: &[&str]) -> Lookup<Option<Entry>> {
        let filter = ldap_template::filter(&self.cfg.user_filter, &Key::address(login));
        let mut found = self.search("user lookup", filter.clone(), attrs).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(self.unavailable(format!("user_filter {filter} matched {n} entries; a login must match one"))),
        }
    }

    /// Binds as `dn` with `password` on a connection of its own: `true`
    /// accepted, `false` invalid credentials.
    async fn bind_as(&self, dn: &str, password: &str) -> Lookup<bool> {
        let work = async {
            let mut ldap = self.connect().await?;
            let r = ldap.simple_bind(dn, password).await.map_err(|e| format!("bind as {dn}: {e}"))?;
            // Best effort: the connection closes when dropped anyway.
            let _ = ldap.unbind().await;
            match r.rc {
                0 => Ok(true),
                INVALID_CREDENTIALS => Ok(false),
                rc => Err(format!("bind as {dn}: result {rc} {}", r.text)),
            }
        };
        self.limited("password check", work).await
    }

    /// The canonical login of an entry: its `login_attribute`, else `login`.
    fn canonical(&self, entry: &Entry, login: &str) -> String {
        entry.values(&self.cfg.login_attribute).next().unwrap_or(login).to_lowercase()
    }

    async fn verify_password(&self, login: &str, password: &str) -> Lookup<Option<String>> {
        // RFC 4513 §5.1.2: a simple bind with an empty password is an
        // "unauthenticated" bind that servers answer with success.
        if login.is_empty() || password.is_empty() {
            return Ok(None);
        }
        match self.cfg.auth {
            LdapAuth::SearchBind => {
                let Some(entry) = self.user_entry(login, &[self.cfg.login_attribute.as_str()]).await? else { return Ok(None) };
                Ok(self.bind_as(&entry.dn, password).await?.then(|| self.canonical(&entry, login)))
            }
            LdapAuth::BindAsUser => {
                let template = self.cfg.bind_dn_template.as_deref().unwrap_or_default();
                let dn = ldap_template::dn(template, &Key::address(login));
                Ok(self.bind_as(&dn, password).await?.then(|| login.to_lowercase()))
            }
        }
    }

    async fn password_entry(&self, login: &str) -> Lookup<Option<PasswordEntry>> {
        let attrs = [self.cfg.hash_attribute.as_str(), self.cfg.login_attribute.as_str()];
        let Some(entry) = self.user_entry(login, &attrs).await? else { return Ok(None) };
        let hash = entry.values(&self.cfg.hash_attribute).next().map(str::to_string);
        Ok(hash.map(|hash| PasswordEntry { user: self.canonical(&entry, login), hash, disabled: None }))
    }

    async fn exists(&self, what: &str, template: Option<&str>, key: Key<'_>) -> Lookup<bool> {
        let Some(template) = template else { return Ok(false) };
        Ok(!self.search(what, ldap_template::filter(template, &key), &[NO_ATTRIBUTES]).await?.is_empty())
    }

    /// The values of `attr` in the entries `template` finds for `address`,
    /// lower-case, without duplicates (and, for aliases, without `address`
    /// itself: an alias filter that also finds the primary address must not
    /// make a loop).
    async fn values(&self, what: &str, template: Option<&str>, address: &str, attr: &str, skip_self: bool) -> Lookup<Vec<String>> {
        let Some(template) = template else { return Ok(Vec::new()) };
        let entries = self.search(what, ldap_template::filter(template, &Key::address(address)), &[attr]).await?;
        let mut out: Vec<String> = Vec::new();
        for v in entries.iter().flat_map(|e| e.values(attr)).map(str::to_lowercase) {
            let is_self = skip_self && v == address;
            if !is_self && !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The lookup time limit (for callers that wrap this directory).
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }
}

impl Directory for LdapDirectory {
    fn name(&self) -> &'static str {
        "ldap"
    }

    /// The `hash_attribute` value (`{SSHA}…`, Dovecot's form) when the
    /// account searching may read it; `None` when there is no such user or
    /// the value is not readable (slapd's default ACL): then only
    /// [`Directory::verify`] (a bind) can check the password.
    fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>> {
        Box::pin(self.password_entry(login))
    }

    fn verify<'a>(&'a self, login: &'a str, password: &'a str) -> Option<BoxFuture<'a, Lookup<Option<String>>>> {
        Some(Box::pin(self.verify_password(login, password)))
    }

    fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.exists("domain lookup", self.cfg.domain_filter.as_deref(), Key::domain(domain)))
    }

    fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.exists("mailbox lookup", Some(self.cfg.mailbox_filter.as_str()), Key::address(address)))
    }

    fn alias<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.values("alias lookup", self.cfg.alias_filter.as_deref(), address, &self.cfg.alias_attribute, true))
    }

    fn sender_logins<'a>(&'a self, sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.values("sender login lookup", self.cfg.sender_login_filter.as_deref(), sender, &self.cfg.login_attribute, false))
    }
}

#[cfg(test)]
#[path = "ldap_tests.rs"]
mod tests;
