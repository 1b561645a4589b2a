//! The typed configuration: one source of truth, validated once at load.
//!
//! May touch: the config file (read only). Every field has a doc comment with
//! its meaning and default; `deny_unknown_fields` everywhere; errors name the
//! file, line, column and key. The commented example (`postern config
//! example`, `example.toml`) is tested to parse and to mention every key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The commented example configuration, printed by `postern config example`.
pub const EXAMPLE: &str = include_str!("example.toml");

/// A configuration error, with position when it comes from a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key/value is wrong.
    #[error("{file}:{line}:{column}: {key}{message}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `key `a.b`: ` or empty when unknown.
        key: String,
        /// The problem.
        message: String,
    },
    /// A problem found after parsing (cross-field checks).
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The problem, naming the key.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default = "default_listeners", rename = "listener")]
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
}

/// What to do when a milter cannot be reached, times out or breaks the
/// protocol (Postfix `milter_default_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MilterDefault {
    /// Answer 451 4.7.1 to MAIL, RCPT, DATA and end of data (default): mail waits.
    Tempfail,
    /// Go on without this milter.
    Accept,
    /// Answer 550 5.7.1.
    Reject,
}

/// One mail filter speaking the sendmail milter protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milter {
    /// The name used in `listener.milters` and in the mail log.
    pub name: String,
    /// Where it listens: `inet:host:port` (Postfix form), `inet:port@host`
    /// (sendmail form), `inet6:...`, or `unix:/path` (`local:/path`).
    pub socket: MilterSocket,
    /// "tempfail" (default), "accept" or "reject" when the milter fails.
    #[serde(default = "default_milter_action")]
    pub default_action: MilterDefault,
    /// Time to connect and negotiate. Default "10s".
    #[serde(default = "default_milter_connect", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Time for each reply before end of message. Default "30s".
    #[serde(default = "default_milter_command", deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Time for the reply to end of message (progress replies restart it). Default "5m".
    #[serde(default = "default_milter_eom", deserialize_with = "duration")]
    pub eom_timeout: Duration,
}

fn default_milter_action() -> MilterDefault {
    MilterDefault::Tempfail
}
fn default_milter_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_milter_command() -> Duration {
    Duration::from_secs(30)
}
fn default_milter_eom() -> Duration {
    Duration::from_secs(300)
}

/// A milter's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSocket(pub Endpoint);

impl FromStr for MilterSocket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("milter socket {s:?}: expected inet:host:port, inet:port@host or unix:/path");
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return if p.starts_with('/') { Ok(MilterSocket(Endpoint::Unix(p.into()))) } else { Err(bad()) };
        }
        let rest = s.strip_prefix("inet:").or_else(|| s.strip_prefix("inet6:")).ok_or_else(bad)?;
        let (host, port) = match rest.split_once('@') {
            // sendmail: inet:8891@localhost
            Some((port, host)) => (host.to_string(), port.to_string()),
            None => {
                let (h, p) = rest.rsplit_once(':').ok_or_else(bad)?;
                (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.to_string())
            }
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(MilterSocket(Endpoint::Tcp(host, port)))
    }
}

impl<'de> Deserialize<'de> for MilterSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Take mail for a local or relay domain. Never relays: for other
    /// domains an `accept` rule does not match.
    Accept,
    /// Accept the recipient whatever its domain (permits relaying).
    Relay,
    /// Refuse with 550 5.7.1 and `message`.
    Reject,
    /// Refuse for now with 450 4.7.1 and `message`.
    Tempfail,
}

/// Recipient classes for rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptClass {
    /// A local domain (or bare `<Postmaster>`).
    Local,
    /// A relay domain (`relay.domains` or a `[[route]]` domain).
    Relay,
    /// Anything else.
    Other,
}

/// One relay rule. Every criterion given must match (lists match if any
/// element does); the first matching rule decides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for logs and `explain`.
    #[serde(default)]
    pub name: Option<String>,
    /// `accept`, `relay`, `reject` or `tempfail`.
    pub action: Option<RuleAction>,
    /// Reply text for reject/tempfail.
    #[serde(default)]
    pub message: Option<String>,
    /// Listener names (or roles) this rule applies to.
    #[serde(default)]
    pub listener: Option<Vec<String>>,
    /// Client networks (CIDR).
    #[serde(default)]
    pub client: Option<Vec<Cidr>>,
    /// A file of client networks, one CIDR per line, `#` comments.
    #[serde(default)]
    pub client_file: Option<PathBuf>,
    /// TLS present (true) or absent (false).
    #[serde(default)]
    pub tls: Option<bool>,
    /// Authenticated with SMTP AUTH (true) or not (false).
    #[serde(default)]
    pub authenticated: Option<bool>,
    /// Authenticated as one of these users.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// A client certificate verified by a configured CA (true) or none/unverified (false).
    #[serde(default)]
    pub cert_verified: Option<bool>,
    /// Verified by the CA with this subject DN (e.g. "CN=postern CA").
    #[serde(default)]
    pub cert_ca: Option<String>,
    /// Issuer DN of a verified certificate: exact, or a pattern with `*`.
    #[serde(default)]
    pub cert_issuer: Option<String>,
    /// Subject DN of a verified certificate: exact, or a pattern with `*`.
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// SANs of a verified certificate: "DNS:name", "email:addr" (`*` allowed).
    #[serde(default)]
    pub cert_san: Option<Vec<String>>,
    /// SHA-256 of the certificate (pins; verification by a CA not needed).
    #[serde(default)]
    pub cert_sha256: Option<Vec<String>>,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (pins a key).
    #[serde(default)]
    pub cert_spki_sha256: Option<Vec<String>>,
    /// Sender addresses ("a@example.org"), domains ("@example.org" or
    /// "example.org") or "<>" for the null sender.
    #[serde(default)]
    pub sender: Option<Vec<String>>,
    /// Recipient classes: "local", "relay", "other".
    #[serde(default)]
    pub rcpt: Option<Vec<RcptClass>>,
    /// Networks read from `client_file` at load time.
    #[serde(skip)]
    pub client_file_networks: Vec<Cidr>,
}

/// How mail for some domains is delivered (transport map).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The domains (lower-case match). These are also relay domains.
    pub domains: Vec<String>,
    /// "smtp" (to `next_hop`, STARTTLS when offered), "lmtp", "maildir" or "mx".
    pub transport: RouteTransport,
    /// `host:port` or `unix:/path` for smtp and lmtp.
    #[serde(default)]
    pub next_hop: Option<Endpoint>,
}

/// How a `[[route]]` delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteTransport {
    /// SMTP to `next_hop`, STARTTLS when offered.
    Smtp,
    /// LMTP to `next_hop`.
    Lmtp,
    /// Local Maildirs under `local.maildir_root`.
    Maildir,
    /// Direct MX delivery for the route's domains (`[mx]` settings).
    Mx,
}

impl RouteTransport {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteTransport::Smtp => "smtp",
            RouteTransport::Lmtp => "lmtp",
            RouteTransport::Maildir => "maildir",
            RouteTransport::Mx => "mx",
        }
    }
}

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// MTA-to-MTA SMTP, the port 25 role: STARTTLS offered.
    Smtp,
    /// Message submission (RFC 6409), the port 587 role: STARTTLS offered
    /// and required before MAIL by default.
    Submission,
    /// Submission over implicit TLS (RFC 8314), the port 465 role; `smtps`
    /// is accepted as another name.
    #[serde(alias = "smtps")]
    Submissions,
}

impl Role {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Smtp => "smtp",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
        }
    }

    /// True when TLS starts before the greeting.
    pub fn implicit_tls(self) -> bool {
        self == Role::Submissions
    }
}

/// Whether a listener asks TLS clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// No CertificateRequest at all (what Entourage-era clients need).
    None,
    /// Ask; accept any certificate or none; verification becomes a policy fact.
    Optional,
    /// The handshake fails without a certificate that verifies against `tls.client_ca_files`.
    Required,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for rules and logs. Default: the role.
    #[serde(default)]
    pub name: Option<String>,
    /// `address:port` to bind, e.g. `0.0.0.0:25` or `[::]:25`.
    pub address: SocketAddr,
    /// `smtp` (default), `submission` or `submissions` (alias `smtps`).
    #[serde(default = "default_role")]
    pub role: Role,
    /// Refuse MAIL before STARTTLS with `530 5.7.0`. Default: true for
    /// `submission`, false for `smtp` (implicit TLS is always encrypted).
    #[serde(default)]
    pub require_tls: Option<bool>,
    /// Client certificates: "none" (default), "optional" or "required".
    #[serde(default = "default_cert_mode")]
    pub client_certificates: ClientCertMode,
    /// Clients in these networks are asked for a certificate ("optional")
    /// whatever `client_certificates` says, like sendmail's `Srv_Features`.
    #[serde(default)]
    pub request_client_certificates_from: Vec<Cidr>,
    /// Clients in these networks must present a verified certificate.
    #[serde(default)]
    pub require_client_certificates_from: Vec<Cidr>,
    /// SASL mechanisms on this listener (default: `auth.mechanisms`; `[]`
    /// turns AUTH off here).
    #[serde(default)]
    pub auth_mechanisms: Option<Vec<String>>,
    /// Clients in these networks are never asked (checked first), e.g.
    /// networks with clients that break on a CertificateRequest.
    #[serde(default)]
    pub never_request_client_certificates_from: Vec<Cidr>,
    /// Milters (names of `[[milter]]` entries) every connection to this
    /// listener goes through, in order. Default: none.
    #[serde(default)]
    pub milters: Vec<String>,
}

impl Listener {
    /// A listener with defaults for everything but the address and role.
    pub fn new(address: SocketAddr, role: Role) -> Listener {
        Listener {
            name: None,
            address,
            role,
            require_tls: None,
            client_certificates: ClientCertMode::None,
            request_client_certificates_from: Vec::new(),
            require_client_certificates_from: Vec::new(),
            never_request_client_certificates_from: Vec::new(),
            auth_mechanisms: None,
            milters: Vec::new(),
        }
    }

    /// The listener's name (default: its role).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(self.role.name())
    }

    /// Must the client use TLS before MAIL?
    pub fn tls_required(&self) -> bool {
        self.require_tls.unwrap_or(self.role == Role::Submission)
    }

    /// The client-certificate mode for a client address (first match:
    /// never-request networks, required networks, requested networks, the
    /// listener's mode).
    pub fn cert_mode_for(&self, ip: IpAddr) -> ClientCertMode {
        if self.never_request_client_certificates_from.iter().any(|n| n.contains(ip)) {
            ClientCertMode::None
        } else if self.require_client_certificates_from.iter().any(|n| n.contains(ip)) {
            ClientCertMode::Required
        } else if self.request_client_certificates_from.iter().any(|n| n.contains(ip)) {
            ClientCertMode::Optional
        } else {
            self.client_certificates
        }
    }
}

fn default_cert_mode() -> ClientCertMode {
    ClientCertMode::None
}

fn default_role() -> Role {
    Role::Smtp
}

fn default_listeners() -> Vec<Listener> {
    vec![
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2525)), Role::Smtp),
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2465)), Role::Submissions),
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2587)), Role::Submission),
    ]
}

/// How to treat bare CR or LF inside DATA (SMTP smuggling defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Refuse the message with 550 5.6.0 (default).
    Reject,
    /// Accept it, storing bare CR/LF as CRLF.
    Normalize,
}

/// Limits on everything a client controls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in bytes (declared SIZE and actual). Default 26214400 (25 MiB).
    pub max_message_size: u64,
    /// Recipients per message; more get 452 4.5.3. Default 1000.
    pub max_recipients: usize,
    /// Longest command or text line including CRLF (RFC 5321 §4.5.3.1). Default 1000.
    pub max_line_length: usize,
    /// Idle time allowed while waiting for a command. Default "5m" (RFC 5321 §4.5.3.2).
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Time allowed for the whole DATA/BDAT transfer of one message. Default "10m".
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// Protocol errors before the session is closed with 421. Default 20.
    pub max_errors: u32,
    /// Concurrent connections in total. Default 200.
    pub max_connections: usize,
    /// Concurrent connections from one client IP address. Default 20.
    pub max_connections_per_ip: usize,
    /// Bare CR or LF inside DATA: "reject" (default) or "normalize".
    pub bare_newline: BareNewline,
    /// Grace period for open sessions at shutdown. Default "30s".
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_errors: 20,
            max_connections: 200,
            max_connections_per_ip: 20,
            bare_newline: BareNewline::Reject,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// How local mail is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDelivery {
    /// Maildir under `maildir_root/<user>/` (default).
    Maildir,
    /// LMTP to `lmtp` (e.g. Dovecot).
    Lmtp,
}

/// Local domains, users and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Local {
    /// Domains delivered here. Default: `localhost` and the host name.
    pub domains: Option<Vec<String>>,
    /// Mailbox names accepted besides aliases. `postmaster` is always accepted.
    pub users: Vec<String>,
    /// Path of an aliases file (`name: target, target`). Default: `DATA/aliases` if it exists.
    pub aliases: Option<PathBuf>,
    /// "maildir" (default) or "lmtp".
    pub delivery: LocalDelivery,
    /// Root of the Maildirs. Default `DATA/mail`.
    pub maildir_root: Option<PathBuf>,
    /// LMTP server: `host:port` or `unix:/path`. Required when delivery = "lmtp".
    pub lmtp: Option<Endpoint>,
    /// TLS to a TCP LMTP server: "none" (default), "may", "encrypt", "verify"
    /// (CAs: the system bundle and the built-in CA).
    pub lmtp_tls: OutboundTls,
    /// Milters (names of `[[milter]]` entries) for mail queued with the
    /// `sendmail` command, e.g. a DKIM signer (Postfix `non_smtpd_milters`).
    /// Default: none.
    pub sendmail_milters: Vec<String>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            domains: None,
            users: Vec::new(),
            aliases: None,
            delivery: LocalDelivery::Maildir,
            maildir_root: None,
            lmtp: None,
            lmtp_tls: OutboundTls::None,
            sendmail_milters: Vec::new(),
        }
    }
}

/// Relaying.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Client networks allowed to relay (like Postfix `mynetworks`). Default loopback only.
    pub networks: Vec<Cidr>,
    /// Append the built-in rules after `[[rule]]`s: local and relay domains
    /// accepted from anyone; relay.networks, authenticated users and
    /// clients with a CA-verified certificate relay. Default true.
    pub default_rules: bool,
    /// Domains we accept from anyone and forward (backup MX, gateway). Default none.
    pub domains: Vec<String>,
    /// Send all non-local mail to this host: `host:port`. Default none.
    pub smarthost: Option<Endpoint>,
    /// TLS to the smarthost: "none", "may" (default), "encrypt", "verify".
    pub smarthost_tls: OutboundTls,
    /// The smarthost speaks implicit TLS (port 465 style) instead of STARTTLS.
    pub smarthost_implicit_tls: bool,
    /// CA certificates (PEM) for "verify". Default: the system bundle
    /// `/etc/ssl/certs/ca-certificates.crt` plus the built-in CA if any.
    pub smarthost_ca_files: Vec<PathBuf>,
    /// Name to send as SNI and to verify. Default: the smarthost's host.
    pub smarthost_server_name: Option<String>,
    /// Client certificate chain (PEM) to present to the smarthost.
    pub smarthost_client_certificate: Option<PathBuf>,
    /// Key for `smarthost_client_certificate` (PEM).
    pub smarthost_client_key: Option<PathBuf>,
    /// User name for SMTP AUTH at the smarthost (PLAIN, LOGIN or
    /// SCRAM-SHA-256, whichever it offers, best first).
    pub smarthost_username: Option<String>,
    /// File holding the smarthost password (first line; keep it 0600).
    pub smarthost_password_file: Option<PathBuf>,
    /// Allow AUTH to the smarthost without TLS. Default false.
    pub smarthost_auth_plaintext: bool,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            networks: vec![Cidr::from_str("127.0.0.0/8").expect("valid"), Cidr::from_str("::1/128").expect("valid")],
            default_rules: true,
            domains: Vec::new(),
            smarthost: None,
            smarthost_tls: OutboundTls::May,
            smarthost_implicit_tls: false,
            smarthost_ca_files: Vec::new(),
            smarthost_server_name: None,
            smarthost_client_certificate: None,
            smarthost_client_key: None,
            smarthost_username: None,
            smarthost_password_file: None,
            smarthost_auth_plaintext: false,
        }
    }
}

/// Server-side TLS material. Paths are relative to the data directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Server certificate chain (PEM, leaf first). Default: `DATA/tls/server.crt`,
    /// a self-signed certificate generated on first start.
    pub certificate: Option<PathBuf>,
    /// The certificate's private key (PEM). Default `DATA/tls/server.key`.
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that verify client certificates. Default: the
    /// built-in CA (`DATA/ca/ca.crt`) when `postern ca init` has made one.
    pub client_ca_files: Option<Vec<PathBuf>>,
    /// Certificate revocation lists (PEM) honoured when verifying client
    /// certificates. Default: `DATA/ca/crl.pem` when it exists.
    pub crl_files: Option<Vec<PathBuf>>,
}

/// How EXTERNAL maps a verified client certificate to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalIdentity {
    /// The subject's common name is the user name.
    Cn,
    /// A SAN e-mail address: its local part, or a user listing it in `addresses`.
    Email,
    /// The certificate's SHA-256 is listed in the user's `certificates`.
    Fingerprint,
}

/// What to do once a client or user has failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanAction {
    /// Answer AUTH with 454 4.7.0 until the ban ends.
    Refuse,
    /// Answer 421 4.7.0 and close the connection.
    Disconnect,
}

/// SMTP AUTH settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Mechanisms offered, in order. Default ["SCRAM-SHA-256-PLUS",
    /// "SCRAM-SHA-256", "PLAIN", "LOGIN"]. Also: "CRAM-MD5" (stores a
    /// plaintext-equivalent secret), "SCRAM-SHA-1", "EXTERNAL".
    pub mechanisms: Vec<String>,
    /// Networks where AUTH is allowed before TLS (e.g. ["127.0.0.0/8"]).
    /// Default none: AUTH before TLS gets 538 5.7.11.
    pub plaintext_networks: Vec<Cidr>,
    /// Also send the old `250-AUTH=LOGIN PLAIN` line (Postfix's
    /// broken_sasl_auth_clients). Default false.
    pub broken_auth_line: bool,
    /// An authenticated user may only use MAIL FROM addresses mapped to it
    /// (its `addresses`, or name@local-domain); others get 553 5.7.1. Default false.
    pub sender_login_match: bool,
    /// EXTERNAL identity mapping: "cn" (default), "email" or "fingerprint".
    pub external_identity: ExternalIdentity,
    /// Failures from one client IP within `failure_window` before a ban. Default 5.
    pub max_failures_per_ip: u32,
    /// Failures for one user within `failure_window` before a ban. Default 10.
    pub max_failures_per_user: u32,
    /// Replies to failed AUTH are delayed (1 s per failure beyond this, at
    /// most 5 s) once a client has this many failures. Default 2.
    pub delay_after: u32,
    /// Window in which failures are counted. Default "10m".
    #[serde(deserialize_with = "duration")]
    pub failure_window: Duration,
    /// How long a ban lasts. Default "15m".
    #[serde(deserialize_with = "duration")]
    pub ban_time: Duration,
    /// "refuse" (default: 454 4.7.0 to AUTH) or "disconnect" (421 4.7.0).
    pub ban_action: BanAction,
    /// A password that verified (PLAIN, LOGIN) is remembered this long, in
    /// memory only, as a keyed hash, so a client that logs in for every
    /// message does not pay for argon2 each time (like Dovecot's auth
    /// cache). A password change takes effect at once. "0s" turns it off.
    /// Default "15m".
    #[serde(deserialize_with = "duration")]
    pub verified_cache_ttl: Duration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"].iter().map(|s| s.to_string()).collect(),
            plaintext_networks: Vec::new(),
            broken_auth_line: false,
            sender_login_match: false,
            external_identity: ExternalIdentity::Cn,
            max_failures_per_ip: 5,
            max_failures_per_user: 10,
            delay_after: 2,
            failure_window: Duration::from_secs(600),
            ban_time: Duration::from_secs(900),
            ban_action: BanAction::Refuse,
            verified_cache_ttl: Duration::from_secs(900),
        }
    }
}

/// Outbound TLS policy for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never use TLS.
    None,
    /// STARTTLS when offered, any certificate (default).
    May,
    /// TLS required, certificate not checked.
    Encrypt,
    /// TLS required and the certificate must verify for the host name.
    Verify,
}

/// Direct delivery to the Internet (MX).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mx {
    /// Name servers (`address:port`). Default: the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// The SMTP port of MX hosts. Default 25 (tests use another).
    pub port: u16,
    /// TLS to MX hosts: "none", "may" (default), "encrypt", "verify".
    pub tls: OutboundTls,
    /// Deliveries at once per destination domain. Default 10.
    pub domain_concurrency: usize,
    /// After every MX host of a domain failed, wait this long before trying
    /// that domain again (other domains are not held up). Default "1m".
    #[serde(deserialize_with = "duration")]
    pub domain_backoff: Duration,
}

impl Default for Mx {
    fn default() -> Self {
        Mx { nameservers: Vec::new(), port: 25, tls: OutboundTls::May, domain_concurrency: 10, domain_backoff: Duration::from_secs(60) }
    }
}

/// Queue timing and concurrency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// First retry delay; doubles each attempt. Default "5m".
    #[serde(deserialize_with = "duration")]
    pub retry_min: Duration,
    /// Longest retry delay. Default "1h".
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    /// After this long in the queue, undelivered recipients bounce. Default "5d".
    #[serde(deserialize_with = "duration")]
    pub max_lifetime: Duration,
    /// Warn the sender (RFC 3464 "delayed") when mail is still undelivered
    /// after this long, then again every interval. "0s" turns it off. Default "4h".
    #[serde(deserialize_with = "duration")]
    pub delay_warning: Duration,
    /// Deliveries in progress at once. Default 20.
    pub concurrency: usize,
    /// Refuse new mail with 452 4.3.1 when the queue's file system has less
    /// free space than this, in bytes. Default 104857600 (100 MiB).
    pub min_free_space: u64,
    /// How a message is made durable before its 250: "fsync" (default:
    /// fdatasync each new file, fsync the directories, directory fsyncs
    /// shared by concurrent sessions) or "syncfs" (one syncfs(2) of the
    /// queue's file system shared by all sessions: fewer device flushes;
    /// best when the queue has a file system of its own). Read at start.
    pub sync: crate::spool::SyncMode,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retry_min: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            concurrency: 20,
            min_free_space: 100 * 1024 * 1024,
            sync: crate::spool::SyncMode::Fsync,
        }
    }
}

/// The operator's mail log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Where the mail log goes: "-" for standard error (default) or a file path.
    pub mail_log: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { mail_log: "-".into() }
    }
}

/// A network endpoint: TCP `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP host and port.
    Tcp(String, u16),
    /// A unix-domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            Endpoint::Tcp(h, p) => write!(f, "{h}:{p}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return if p.starts_with('/') { Ok(Endpoint::Unix(p.into())) } else { Err("unix: path must be absolute".into()) };
        }
        let (host, port) = s.rsplit_once(':').ok_or("expected host:port or unix:/path")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        if host.is_empty() {
            return Err("empty host".into());
        }
        Ok(Endpoint::Tcp(host.to_string(), port))
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True if `ip` is inside this network (IPv4-mapped IPv6 is unmapped first).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("bad IP address {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or(format!("bad prefix length {p:?}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| de::Error::custom(format!("bad duration {s:?}: {e} (use e.g. \"30s\", \"5m\", \"5d\")")))
}

impl Default for Config {
    fn default() -> Self {
        // The embedded default is the empty file: every field has a default.
        toml::from_str("").expect("empty config is valid")
    }
}

impl Config {
    /// Parses a config from text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, file, &e))?;
        cfg.rule_lines = cfg
            .rules
            .iter()
            .map(|r| {
                // The span covers the table body; its header is the line before.
                let before = &text[..r.span().start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let header = text.lines().take(line).collect::<Vec<_>>().iter().rposition(|l| l.trim() == "[[rule]]");
                header.map(|h| h + 1).unwrap_or(line)
            })
            .collect();
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// The `[[milter]]` entries for a list of names, in that order (names
    /// were checked at load).
    pub fn milters_named(&self, names: &[String]) -> Vec<std::sync::Arc<Milter>> {
        names.iter().filter_map(|n| self.milters.iter().find(|m| &m.name == n)).map(|m| std::sync::Arc::new(m.clone())).collect()
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::parse(&text, &file)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { file: file.into(), message });
        if self.listeners.is_empty() {
            return invalid("key `listener`: at least one listener is needed".into());
        }
        if self.local.delivery == LocalDelivery::Lmtp && self.local.lmtp.is_none() {
            return invalid("key `local.lmtp`: required when local.delivery = \"lmtp\"".into());
        }
        if self.limits.max_line_length < 512 {
            return invalid("key `limits.max_line_length`: must be at least 512 (RFC 5321 §4.5.3.1)".into());
        }
        if self.limits.max_recipients < 1 || self.limits.max_connections < 1 || self.queue.concurrency < 1 {
            return invalid("keys `limits.max_recipients`, `limits.max_connections` and `queue.concurrency` must be at least 1".into());
        }
        if self.relay.smarthost_client_certificate.is_some() != self.relay.smarthost_client_key.is_some() {
            return invalid("keys `relay.smarthost_client_certificate` and `relay.smarthost_client_key` go together".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            let line = self.rule_lines.get(i).copied().unwrap_or(0);
            if r.get_ref().action.is_none() {
                return invalid(format!("line {line}: [[rule]] needs `action` (accept, relay, reject, tempfail)"));
            }
        }
        for r in &self.routes {
            let needs_hop = matches!(r.transport, RouteTransport::Smtp | RouteTransport::Lmtp);
            if needs_hop && r.next_hop.is_none() {
                return invalid(format!("key `route.next_hop`: required for transport {:?}", r.transport.as_str()));
            }
        }
        for m in &self.auth.mechanisms {
            if postern_wire::sasl::Mechanism::parse(m).is_none() {
                return invalid(format!("key `auth.mechanisms`: unknown mechanism {m:?} (PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, EXTERNAL)"));
            }
        }
        for (i, m) in self.milters.iter().enumerate() {
            if self.milters[..i].iter().any(|o| o.name == m.name) {
                return invalid(format!("key `milter.name`: {:?} is defined twice", m.name));
            }
        }
        for l in &self.listeners {
            for name in &l.milters {
                if !self.milters.iter().any(|m| &m.name == name) {
                    return invalid(format!("key `listener.milters` of listener {:?}: no [[milter]] named {name:?}", l.label()));
                }
            }
        }
        for name in &self.local.sendmail_milters {
            if !self.milters.iter().any(|m| &m.name == name) {
                return invalid(format!("key `local.sendmail_milters`: no [[milter]] named {name:?}"));
            }
        }
        if self.mx.domain_concurrency < 1 {
            return invalid("key `mx.domain_concurrency`: must be at least 1".into());
        }
        if self.relay.smarthost_username.is_some() != self.relay.smarthost_password_file.is_some() {
            return invalid("keys `relay.smarthost_username` and `relay.smarthost_password_file` go together".into());
        }
        if self.tls.certificate.is_some() != self.tls.key.is_some() {
            return invalid("keys `tls.certificate` and `tls.key` go together".into());
        }
        if self.queue.retry_min > self.queue.retry_max {
            return invalid("key `queue.retry_min`: must not exceed queue.retry_max".into());
        }
        for d in self.local.domains.iter().flatten().chain(&self.relay.domains) {
            if postern_wire::address::check_domain(d).is_err() {
                return invalid(format!("bad domain {d:?} in `local.domains` or `relay.domains`"));
            }
        }
        Ok(())
    }
}

/// Turns a toml error into file:line:column with the key named.
fn parse_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column, key) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            (line, column, key_at(text, line))
        }
        None => (0, 0, String::new()),
    };
    let message = e.message().trim().to_string();
    ConfigError::Parse { file: file.into(), line, column, key, message }
}

/// Names the key at a 1-based line: the table header above it plus the key.
fn key_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(this) = lines.get(line.saturating_sub(1)) else { return String::new() };
    let table = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let this = this.trim();
    let key = if this.starts_with('[') {
        this.trim_matches(|c| c == '[' || c == ']').trim().to_string()
    } else if let Some((k, _)) = this.split_once('=') {
        match table {
            Some(t) => format!("{t}.{}", k.trim()),
            None => k.trim().to_string(),
        }
    } else {
        return String::new();
    };
    format!("key `{key}`: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_default() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
        assert_eq!(c.listeners[1].role, Role::Submissions);
        assert!(c.listeners[2].tls_required() && !c.listeners[0].tls_required());
        assert_eq!(c.limits.max_line_length, 1000);
        assert_eq!(c.queue.max_lifetime, Duration::from_secs(432000));
        assert!(c.relay.networks[0].contains("127.0.0.9".parse().unwrap()));
        assert!(c.relay.networks[1].contains("::1".parse().unwrap()));
        assert!(!c.relay.networks[0].contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn example_parses_and_covers_every_key() {
        let c = Config::parse(EXAMPLE, "example.toml").unwrap();
        assert_eq!(c.local.users, vec!["alice".to_string(), "bob".to_string()]);
        for key in [
            "hostname", "data_dir", "user", "[[listener]]", "address", "role", "[limits]", "max_message_size",
            "max_recipients", "max_line_length", "command_timeout", "data_timeout", "max_errors", "max_connections",
            "max_connections_per_ip", "bare_newline", "shutdown_timeout", "[local]", "domains", "users", "aliases",
            "delivery", "maildir_root", "lmtp", "[relay]", "networks", "smarthost", "[queue]", "retry_min",
            "retry_max", "max_lifetime", "concurrency", "min_free_space", "[log]", "mail_log", "require_tls",
            "client_certificates", "request_client_certificates_from", "require_client_certificates_from", "never_request_client_certificates_from", "[tls]", "lmtp_tls",
            "certificate", "key", "client_ca_files", "crl_files", "smarthost_tls", "smarthost_implicit_tls",
            "smarthost_ca_files", "smarthost_server_name", "smarthost_client_certificate", "smarthost_client_key",
            "[auth]", "mechanisms", "plaintext_networks", "broken_auth_line", "sender_login_match", "external_identity",
            "max_failures_per_ip", "max_failures_per_user", "verified_cache_ttl", "delay_after", "failure_window", "ban_time", "ban_action",
            "smarthost_username", "smarthost_password_file", "smarthost_auth_plaintext", "auth_mechanisms",
            "default_rules", "[mx]", "delay_warning", "nameservers", "domain_concurrency", "domain_backoff", "[[rule]]", "action", "message", "listener", "client", "client_file", "tls",
            "authenticated", "users", "cert_verified", "cert_ca", "cert_issuer", "cert_subject", "cert_san",
            "cert_sha256", "cert_spki_sha256", "sender", "rcpt", "[[route]]", "transport", "next_hop",
            "[[milter]]", "milters", "sync", "sendmail_milters", "socket", "default_action", "connect_timeout", "command_timeout", "eom_timeout",
        ] {
            assert!(EXAMPLE.contains(key), "example.toml does not mention {key}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let table: &[(&str, &str)] = &[
            ("[limits]\nmax_errors = \"x\"\n", "f.toml:2:14: key `limits.max_errors`: invalid type"),
            ("[limits]\nbogus = 1\n", "f.toml:2:1: key `limits.bogus`: unknown field `bogus`"),
            ("[relay]\nnetworks = [\"10.0.0.0/33\"]\n", "f.toml:2:12: key `relay.networks`: bad prefix length"),
            ("[queue]\nretry_min = \"soon\"\n", "f.toml:2:13: key `queue.retry_min`: bad duration"),
            ("[local]\nlmtp = \"nohost\"\n", "f.toml:2:8: key `local.lmtp`: expected host:port"),
            ("whatever = 1\n", "f.toml:1:1: key `whatever`: unknown field"),
            ("[[listener]]\naddress = \"1.2.3.4\"\n", "f.toml:2:11: key `listener.address`: invalid socket address"),
            ("[local]\ndelivery = \"lmtp\"\n", "f.toml: key `local.lmtp`: required"),
            ("[[milter]]\nname = \"a\"\nsocket = \"8891\"\n", "f.toml:3:10: key `milter.socket`: milter socket \"8891\": expected"),
            ("[[milter]]\nname = \"a\"\nsocket = \"unix:/x\"\ndefault_action = \"drop\"\n", "f.toml:4:18: key `milter.default_action`: unknown variant"),
            ("[[listener]]\naddress = \"127.0.0.1:25\"\nmilters = [\"dkim\"]\n", "f.toml: key `listener.milters` of listener \"smtp\": no [[milter]] named \"dkim\""),
        ];
        for (text, want) in table {
            let got = Config::parse(text, "f.toml").unwrap_err().to_string();
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!("h:25".parse::<Endpoint>(), Ok(Endpoint::Tcp("h".into(), 25)));
        assert_eq!("[::1]:24".parse::<Endpoint>(), Ok(Endpoint::Tcp("::1".into(), 24)));
        assert_eq!("unix:/run/x".parse::<Endpoint>(), Ok(Endpoint::Unix("/run/x".into())));
        assert!("unix:rel".parse::<Endpoint>().is_err());
        assert!("h:99999".parse::<Endpoint>().is_err());
    }

    #[test]
    fn milter_sockets() {
        let tcp = |h: &str, p| Ok(MilterSocket(Endpoint::Tcp(h.into(), p)));
        assert_eq!("inet:127.0.0.1:8891".parse::<MilterSocket>(), tcp("127.0.0.1", 8891));
        assert_eq!("inet:8891@localhost".parse::<MilterSocket>(), tcp("localhost", 8891));
        assert_eq!("inet6:[::1]:8891".parse::<MilterSocket>(), tcp("::1", 8891));
        assert_eq!("unix:/run/m.sock".parse::<MilterSocket>(), Ok(MilterSocket(Endpoint::Unix("/run/m.sock".into()))));
        assert_eq!("local:/run/m.sock".parse::<MilterSocket>(), Ok(MilterSocket(Endpoint::Unix("/run/m.sock".into()))));
        for bad in ["8891", "inet:host", "inet:@h", "unix:rel", "inet::25"] {
            assert!(bad.parse::<MilterSocket>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod doc_tests {
    #[test]
    fn configuration_doc_embeds_the_example() {
        let doc = include_str!("../../../docs/configuration.md");
        assert!(doc.contains(super::EXAMPLE), "docs/configuration.md must embed example.toml verbatim");
    }
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn cert_mode_by_network() {
        let c = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:25\"\nclient_certificates = \"optional\"\n\
             never_request_client_certificates_from = [\"10.1.0.0/16\"]\n\
             require_client_certificates_from = [\"10.0.0.0/8\"]\n\
             request_client_certificates_from = [\"192.0.2.0/24\"]\n",
            "t",
        )
        .unwrap();
        let l = &c.listeners[0];
        let table = [
            ("10.1.2.3", ClientCertMode::None),
            ("10.2.3.4", ClientCertMode::Required),
            ("192.0.2.9", ClientCertMode::Optional),
            ("198.51.100.1", ClientCertMode::Optional),
            ("::ffff:10.9.9.9", ClientCertMode::Required),
        ];
        for (ip, want) in table {
            assert_eq!(l.cert_mode_for(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
