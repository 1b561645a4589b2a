//! The `[ldap]` table: an LDAP account directory (docs/directory.md),
//! and its load-time checks (URL, filters, the auth mode's keys).
//!
//! May touch: nothing (types and pure checks). RFCs: 4516 (LDAP URLs),
//! 4515 (filters), 4514 (DNs), 4513 (binds, StartTLS).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// How `[ldap]` checks a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LdapAuth {
    /// Search the user's entry with `user_filter` (as the service account),
    /// then bind as that entry's DN with the password, on a connection of
    /// its own.
    #[default]
    SearchBind,
    /// Bind as the DN made from `bind_dn_template` with the password; no
    /// search needed (nor a service account for logins).
    BindAsUser,
}

/// The LDAP directory. Present (`[ldap]` in the file): postern asks this
/// server for passwords, virtual domains, mailboxes, aliases and sender
/// logins. Absent (default): no LDAP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ldap {
    /// The server: `ldap://host[:port]` or `ldaps://host[:port]` (TLS from
    /// the first byte). Required.
    pub url: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4513 §3) before
    /// anything else is sent; the server certificate is verified. Default false.
    pub starttls: bool,
    /// PEM files of the CAs that verify the server certificate (ldaps:// and
    /// StartTLS), relative to the data directory. Default: the system's
    /// roots (/etc/ssl/certs/ca-certificates.crt).
    pub ca_files: Vec<PathBuf>,
    /// The service account searches bind as. Default: none (anonymous
    /// searches).
    pub bind_dn: Option<String>,
    /// File whose first line is `bind_dn`'s password, relative to the data
    /// directory; read at each (re)connection. Required with `bind_dn`.
    pub bind_password_file: Option<PathBuf>,
    /// Where searches start (subtree scope), e.g. "dc=example,dc=org".
    /// Default "" (the server's root: set it).
    pub base: String,
    /// Time limit of one lookup: connecting, TLS, binding and the search
    /// together. Default "5s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
    /// How long an answer is reused before asking the server again. Default "60s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub cache_ttl: Duration,
    /// How long "no such entry" is reused. Default "10s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub negative_cache_ttl: Duration,
    /// "search_bind" (default: find the user with `user_filter`, then bind
    /// as its DN with the password) or "bind_as_user" (bind as
    /// `bind_dn_template`).
    pub auth: LdapAuth,
    /// The DN a login binds as with `auth = "bind_as_user"`, with the
    /// placeholders `%u` `%s` `%l` `%d` (values escaped per RFC 4514), e.g.
    /// "uid=%u,ou=people,dc=example,dc=org". Default: none.
    pub bind_dn_template: Option<String>,
    /// Finds the entry of the user logging in (`%u`: the login).
    /// Default "(&(objectClass=inetOrgPerson)(uid=%u))".
    pub user_filter: String,
    /// Finds a virtual domain (`%d`, `%s`: the domain); any entry found:
    /// the domain is ours. Default: none (the directory holds no domains).
    pub domain_filter: Option<String>,
    /// Finds a mailbox (`%s`: the address, `%l` its local part, `%d` its
    /// domain). Default "(&(objectClass=inetOrgPerson)(mail=%s))".
    pub mailbox_filter: String,
    /// Finds the entries an alias address (`%s`, `%l`, `%d`) leads to; their
    /// `alias_attribute` values are the targets. Default: none (no aliases).
    pub alias_filter: Option<String>,
    /// The attribute holding an alias's target addresses. Default "mail".
    pub alias_attribute: String,
    /// Finds the entries allowed to send as an address (`%s`, `%l`, `%d`);
    /// their `login_attribute` values are the logins. Default: none.
    pub sender_login_filter: Option<String>,
    /// The attribute that holds a login (sender logins; also the canonical
    /// login after a password check). Default "uid".
    pub login_attribute: String,
    /// The attribute holding the password (read, when the service account
    /// may, by `password()` lookups; binds never need it). Default "userPassword".
    pub hash_attribute: String,
}

impl Default for Ldap {
    fn default() -> Self {
        Ldap {
            url: None,
            starttls: false,
            ca_files: Vec::new(),
            bind_dn: None,
            bind_password_file: None,
            base: String::new(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            negative_cache_ttl: Duration::from_secs(10),
            auth: LdapAuth::SearchBind,
            bind_dn_template: None,
            user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))".into(),
            domain_filter: None,
            mailbox_filter: "(&(objectClass=inetOrgPerson)(mail=%s))".into(),
            alias_filter: None,
            alias_attribute: "mail".into(),
            sender_login_filter: None,
            login_attribute: "uid".into(),
            hash_attribute: "userPassword".into(),
        }
    }
}

impl Ldap {
    /// The filter templates, with their keys.
    pub fn filters(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("user_filter", self.user_filter.as_str()), ("mailbox_filter", self.mailbox_filter.as_str())];
        for (k, f) in [
            ("domain_filter", &self.domain_filter),
            ("alias_filter", &self.alias_filter),
            ("sender_login_filter", &self.sender_login_filter),
        ] {
            if let Some(f) = f {
                out.push((k, f.as_str()));
            }
        }
        out
    }
}

/// A problem in `[ldap]`: the key (below `ldap.`) and what is wrong.
pub(super) fn check(l: &Ldap, sql_configured: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if sql_configured {
        out.push(("url", "[ldap] and [sql] are both set: postern uses one account directory; remove one".to_string()));
    }
    match l.url.as_deref() {
        None => out.push(("url", "required in [ldap] (ldap://host or ldaps://host)".to_string())),
        Some(u) => {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://"))
                || u.len() <= "ldap://".len() + usize::from(lower.starts_with("ldaps"))
            {
                out.push(("url", format!("{u:?} is not an ldap:// or ldaps:// URL with a host")));
            } else if l.starttls && lower.starts_with("ldaps://") {
                out.push(("starttls", "StartTLS needs an ldap:// URL (ldaps:// is TLS already)".to_string()));
            }
        }
    }
    if l.bind_dn.is_some() != l.bind_password_file.is_some() {
        let (k, other) = if l.bind_dn.is_some() { ("bind_dn", "bind_password_file") } else { ("bind_password_file", "bind_dn") };
        out.push((k, format!("goes together with `ldap.{other}`, which is missing")));
    }
    if l.auth == LdapAuth::BindAsUser {
        match &l.bind_dn_template {
            None => out.push(("bind_dn_template", "required when ldap.auth = \"bind_as_user\"".to_string())),
            Some(t) => {
                if let Err(e) = super::ldap_template::check_template(t) {
                    out.push(("bind_dn_template", e));
                }
            }
        }
    }
    for (k, f) in l.filters() {
        if let Err(e) = super::ldap_template::check_filter(f) {
            out.push((k, e));
        }
    }
    for (k, a) in [("alias_attribute", &l.alias_attribute), ("login_attribute", &l.login_attribute), ("hash_attribute", &l.hash_attribute)]
    {
        if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.') {
            out.push((k, format!("{a:?} is not an attribute name")));
        }
    }
    if l.timeout.is_zero() {
        out.push(("timeout", "must be more than 0s".to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn problems(toml: &str) -> String {
        match Config::parse(toml, "f.toml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn load_checks_name_the_key() {
        let table: &[(&str, &str)] = &[
            ("[ldap]\nurl = \"ldap://127.0.0.1\"\n", ""),
            ("[ldap]\nbase = \"dc=x\"\n", "key `ldap.url`: required in [ldap]"),
            ("[ldap]\nurl = \"http://x\"\n", "key `ldap.url`: \"http://x\" is not an ldap:// or ldaps:// URL"),
            ("[ldap]\nurl = \"ldaps://x\"\nstarttls = true\n", "key `ldap.starttls`: StartTLS needs an ldap:// URL"),
            (
                "[ldap]\nurl = \"ldap://x\"\nauth = \"bind_as_user\"\n",
                "key `ldap.bind_dn_template`: required when ldap.auth = \"bind_as_user\"",
            ),
            ("[ldap]\nurl = \"ldap://x\"\nauth = \"bind_as_user\"\nbind_dn_template = \"uid=%x\"\n", "unknown placeholder %x"),
            ("[ldap]\nurl = \"ldap://x\"\nbind_dn = \"cn=svc\"\n", "key `ldap.bind_dn`: goes together with `ldap.bind_password_file`"),
            (
                "[ldap]\nurl = \"ldap://x\"\nuser_filter = \"(uid=%u\"\n",
                "f.toml:3:15: key `ldap.user_filter`: \"(uid=%u\" is not an LDAP filter",
            ),
            ("[ldap]\nurl = \"ldap://x\"\nalias_filter = \"(mail=*)\"\n", "key `ldap.alias_filter`: \"(mail=*)\" has no placeholder"),
            ("[ldap]\nurl = \"ldap://x\"\nlogin_attribute = \"u id\"\n", "key `ldap.login_attribute`: \"u id\" is not an attribute name"),
            ("[ldap]\nurl = \"ldap://x\"\ntimeout = \"0s\"\n", "key `ldap.timeout`: must be more than 0s"),
            ("[ldap]\nurl = \"ldap://x\"\nauth = \"kerberos\"\n", "key `ldap.auth`: unknown variant"),
            ("[ldap]\nurl = \"ldap://x\"\nbogus = 1\n", "key `ldap.bogus`: unknown field"),
            ("[auth]\nbackend = \"ldap\"\n", "key `auth.backend`: \"ldap\" needs an [ldap] table"),
        ];
        for (toml, want) in table {
            let got = problems(toml);
            if want.is_empty() {
                assert_eq!(got, "", "{toml}");
            } else {
                assert!(got.contains(want), "{toml}\nwant {want}\ngot  {got}");
            }
        }
    }

    #[test]
    fn sql_and_ldap_together_is_refused() {
        let l = Ldap { url: Some("ldap://x".into()), ..Ldap::default() };
        assert!(check(&l, false).is_empty());
        assert!(check(&l, true).iter().any(|(k, e)| *k == "url" && e.contains("[ldap] and [sql] are both set")));
    }

    #[test]
    fn defaults_and_show() {
        let c = Config::parse("[ldap]\nurl = \"ldap://x\"\n", "f.toml").unwrap();
        let l = c.ldap.as_ref().unwrap();
        assert_eq!(
            (l.timeout, l.cache_ttl, l.negative_cache_ttl),
            (Duration::from_secs(5), Duration::from_secs(60), Duration::from_secs(10))
        );
        assert_eq!(l.auth, LdapAuth::SearchBind);
        let shown = toml::to_string(&super::super::show::table(&c)).unwrap();
        assert!(shown.contains("timeout = \"5s\"") && shown.contains("auth = \"search_bind\""), "{shown}");
        assert!(Config::parse("", "f.toml").unwrap().ldap.is_none());
    }
}
