//! The typed configuration: one source of truth, validated once at load.
//!
//! May touch: the config file (read only). Every field has a doc comment with
//! its meaning and default; `deny_unknown_fields` everywhere; errors name the
//! file, line, column and key, and a load reports every problem it finds,
//! not only the first. The commented example (`postern config example`,
//! `example.toml`) is tested to parse and to mention every key.
//!
//! Layout: `schema.rs`, `schema_auth.rs`, `schema_listener.rs`, `schema_misc.rs`, `schema_mx.rs`, `schema_mta_sts.rs` and `schema_dkim.rs` (the serde types),
//! `values.rs` (values with their own syntax: `Cidr`, `Endpoint`,
//! `MilterSocket`, durations, mechanism names), `load.rs` (TOML to `Config`,
//! problem positions), `validate.rs` (cross-field checks), `error.rs`.

mod error;
pub mod ldap_template;
mod load;
mod schema;
mod schema_auth;
mod schema_auth_mail;
mod schema_cluster;
mod schema_dkim;
mod schema_inbound;
mod schema_inbound_dnsbl;
mod schema_inbound_rate;
mod schema_inbound_rdns;
mod schema_ldap;
mod schema_listener;
mod schema_misc;
mod schema_mta_sts;
mod schema_mx;
mod schema_route;
mod schema_rule_auth;
pub mod schema_sql;
mod schema_tls_rpt;
pub mod show;
mod suggest;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_check;
mod validate;
mod validate_route;
mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Position, Problem, ProblemKind};
pub use load::KeyPath;
pub use schema::{
    BareNewline, Limits, Local, LocalDelivery, Milter, MilterDefault, OutboundTls, Queue, RcptClass, Relay, Route, RouteTransport, Rule,
    RuleAction, Tls,
};
pub use schema_auth::{Auth, AuthBackend, BanAction, ExternalIdentity};
pub use schema_auth_mail::{DmarcQuarantine, MailAuth};
pub use schema_cluster::{redact_url, Cluster};
pub use schema_dkim::{DkimAlgorithm, DkimKey};
pub use schema_inbound::Inbound;
pub use schema_inbound_dnsbl::{Dnsbl, DnsblSite, DnsblStage, PipeliningAction, Pregreet, PregreetAction, ScreenAction};
pub use schema_inbound_rate::{Greylist, RateKey, RateLimit, RateLimits, RateWhat};
pub use schema_inbound_rdns::{InboundRdns, RejectAt, Resolve};
pub use schema_ldap::{Ldap, LdapAuth};
pub use schema_listener::{ClientCertMode, Listener, Role};
pub use schema_misc::{Log, LogFormat, Metrics, SyncMode};
pub use schema_mta_sts::MtaSts;
pub use schema_mx::{untrusted_resolvers, Mx};
pub use schema_route::{tls_name, HopOrigin, Outbound};
pub use schema_rule_auth::AuthResult;
pub use schema_sql::Sql;
pub use schema_tls_rpt::TlsRpt;
pub use validate::ValidationError;
pub use values::{format_size, parse_size, AuthMechanism, Cidr, Endpoint, MilterSocket, ValueError};

/// The commented example configuration, printed by `postern config example`.
pub const EXAMPLE: &str = include_str!("example.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name this server uses in its greeting, EHLO, `Received:` and
    /// bounces. Default: the machine's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Directory for all state (queue, mailboxes, generated keys). Default
    /// `./postern-data`; `--data-dir` and `POSTERN_DATA_DIR` override it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// When started as root: the user to switch to after binding the
    /// listeners. Default: none (postern warns when it keeps running as root).
    #[serde(default)]
    pub user: Option<String>,
    /// Listening sockets. Default: one `smtp` listener on 127.0.0.1:2525.
    #[serde(default = "schema_listener::default_listeners", rename = "listener")]
    pub listeners: Vec<Listener>,
    /// Limits on what clients control.
    #[serde(default)]
    pub limits: Limits,
    /// Local domains and local delivery.
    #[serde(default)]
    pub local: Local,
    /// Who may relay, and where relayed mail goes.
    #[serde(default)]
    pub relay: Relay,
    /// Queue timing.
    #[serde(default)]
    pub queue: Queue,
    /// Server TLS: certificate, key, client-certificate CAs.
    #[serde(default)]
    pub tls: Tls,
    /// SMTP AUTH (SASL).
    #[serde(default)]
    pub auth: Auth,
    /// Relay rules, first match wins (then the built-in defaults).
    #[serde(default, rename = "rule")]
    pub rules: Vec<toml::Spanned<Rule>>,
    /// Direct MX delivery (when no smarthost is set).
    #[serde(default)]
    pub mx: Mx,
    /// MTA-STS (RFC 8461) for MX delivery.
    #[serde(default)]
    pub mta_sts: MtaSts,
    /// SMTP TLS reporting (RFC 8460) for MX delivery.
    #[serde(default)]
    pub tls_rpt: TlsRpt,
    /// Per-domain routes (transport map).
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// 1-based config line of each rule (filled at parse time).
    #[serde(skip)]
    pub rule_lines: Vec<usize>,
    /// The operator's mail log.
    #[serde(default)]
    pub log: Log,
    /// Mail filters (milters), referred to by name from `listener.milters`.
    #[serde(default, rename = "milter")]
    pub milters: Vec<Milter>,
    /// The Prometheus metrics endpoint; off unless `address` is set.
    #[serde(default)]
    pub metrics: Metrics,
    /// Verification of incoming mail (SPF, DKIM, DMARC, ARC).
    #[serde(default)]
    pub mail_auth: MailAuth,
    /// DKIM signing keys (`[[dkim]]`), per sender domain. Default: none
    /// (nothing is signed).
    #[serde(default, rename = "dkim")]
    pub dkim: Vec<DkimKey>,
    /// Inbound defences at the SMTP level (reverse DNS, DNSBL, pregreet,
    /// rate limits, greylisting). Default: all off.
    #[serde(default)]
    pub inbound: Inbound,
    /// The LDAP account directory (`[ldap]`, docs/directory.md).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<Ldap>,
    /// What several nodes share (`[cluster] redis`, docs/scaling.md).
    /// Default: nothing (every node on its own).
    #[serde(default)]
    pub cluster: Cluster,
    /// The PostgreSQL account directory (`[sql]`, docs/directory.md).
    /// Default: none.
    #[serde(default)]
    pub sql: Option<Sql>,
    /// The file and text this config was loaded from (to place problems
    /// found later, e.g. in files it names).
    #[serde(skip)]
    origin: load::Origin,
}

impl Default for Config {
    /// What the empty file parses to (every field has a default; a test
    /// checks the two agree).
    fn default() -> Self {
        Config {
            hostname: None,
            data_dir: None,
            user: None,
            listeners: schema_listener::default_listeners(),
            limits: Limits::default(),
            local: Local::default(),
            relay: Relay::default(),
            queue: Queue::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            rules: Vec::new(),
            mx: Mx::default(),
            mta_sts: MtaSts::default(),
            tls_rpt: TlsRpt::default(),
            routes: Vec::new(),
            rule_lines: Vec::new(),
            log: Log::default(),
            milters: Vec::new(),
            metrics: Metrics::default(),
            mail_auth: MailAuth::default(),
            dkim: Vec::new(),
            inbound: Inbound::default(),
            ldap: None,
            cluster: Cluster::default(),
            sql: None,
            origin: load::Origin::default(),
        }
    }
}

impl Config {
    /// Parses a config from text; `file` names it in errors. Every problem
    /// found is in the error.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        load::parse(text, file, |_| Vec::new())
    }

    /// Like [`Config::parse`], then runs `more` (checks that need more than
    /// the text, e.g. files relative to the data directory) on a config
    /// that parsed, and reports its problems with the others.
    pub fn parse_checked(text: &str, file: &str, more: impl FnOnce(&mut Config) -> Vec<Problem>) -> Result<Config, ConfigError> {
        load::parse(text, file, more)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_checked(path, |_| Vec::new())
    }

    /// Reads a config file and parses it with [`Config::parse_checked`].
    pub fn load_checked(path: &Path, more: impl FnOnce(&mut Config) -> Vec<Problem>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        load::parse(&text, &file, more)
    }

    /// A problem about the key at `at` (placed at that key in the file this
    /// config came from, or at its nearest ancestor there); `key` is the key
    /// the message names.
    pub fn problem_at(&self, at: &KeyPath, key: &str, kind: ProblemKind) -> Problem {
        let file = if self.origin.file.is_empty() { "(default config)" } else { &self.origin.file };
        let origin = load::Origin { file: file.to_string(), text: self.origin.text.clone() };
        origin.problem(at, key.to_string(), kind)
    }

    /// The `[[milter]]` entries for a list of names, in that order (names
    /// were checked at load).
    pub fn milters_named(&self, names: &[String]) -> Vec<Arc<Milter>> {
        names.iter().filter_map(|n| self.milters.iter().find(|m| &m.name == n)).map(|m| Arc::new(m.clone())).collect()
    }
}
