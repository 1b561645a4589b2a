//! The config schema: the serde structs and enums of every table but
//! `[[listener]]` (in `schema_listener.rs`), `[mx]` (in `schema_mx.rs`), `[[route]]` (in `schema_route.rs`) and `[[dkim]]` (in `schema_dkim.rs`), each field with its meaning and
//! default. Strings with a fixed set of values are enums, so a wrong value is
//! a load error naming file, line and key.
//!
//! May touch: nothing (types only).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema_misc::SyncMode;
pub use super::schema_route::{Route, RouteTransport};
use super::values::{duration, show_duration, show_size, show_size_usize, size, size_usize, Cidr, Endpoint, MilterSocket};

/// What to do when a milter cannot be reached, times out or breaks the
/// protocol (Postfix `milter_default_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(default = "default_milter_connect", deserialize_with = "duration", serialize_with = "show_duration")]
    pub connect_timeout: Duration,
    /// Time for each reply before end of message. Default "30s".
    #[serde(default = "default_milter_command", deserialize_with = "duration", serialize_with = "show_duration")]
    pub command_timeout: Duration,
    /// Time for the reply to end of message (progress replies restart it). Default "5m".
    #[serde(default = "default_milter_eom", deserialize_with = "duration", serialize_with = "show_duration")]
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

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Take mail for a local or relay domain. Never relays: for other
    /// domains an `accept` rule does not match.
    Accept,
    /// Accept the recipient whatever its domain (permits relaying).
    Relay,
    /// Refuse with 550 5.7.1 and `message`.
    Reject,
    /// Refuse for now with 450 4.7.1 (451 4.7.1 for a message) and `message`.
    Tempfail,
    /// Message-stage rules only: queue the message on hold (quarantine).
    Hold,
}

impl RuleAction {
    /// The config spelling (also in logs and `postern explain`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Accept => "accept",
            RuleAction::Relay => "relay",
            RuleAction::Reject => "reject",
            RuleAction::Tempfail => "tempfail",
            RuleAction::Hold => "hold",
        }
    }
}

/// Recipient classes for rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptClass {
    /// A local domain (or bare `<Postmaster>`).
    Local,
    /// A relay domain (`relay.domains` or a `[[route]]` domain).
    Relay,
    /// Anything else.
    Other,
}

impl RcptClass {
    /// The config spelling (also in `postern explain`).
    pub fn as_str(self) -> &'static str {
        match self {
            RcptClass::Local => "local",
            RcptClass::Relay => "relay",
            RcptClass::Other => "other",
        }
    }
}

/// One relay rule. Every criterion given must match (lists match if any
/// element does); the first matching rule decides.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for logs and `explain`.
    #[serde(default)]
    pub name: Option<String>,
    /// `accept`, `relay`, `reject`, `tempfail` or (message-stage rules) `hold`.
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
    /// Issuer DN of a verified certificate, matched as parsed RDNs in the
    /// certificate's order; `*` matches inside one attribute value only.
    #[serde(default)]
    pub cert_issuer: Option<String>,
    /// Subject DN of a verified certificate, matched as parsed RDNs in the
    /// certificate's order; `*` matches inside one attribute value only.
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
    /// "example.org"), subdomains ("@.example.org": any domain below
    /// example.org) or "<>" for the null sender.
    #[serde(default)]
    pub sender: Option<Vec<String>>,
    /// Recipient classes: "local", "relay", "other".
    #[serde(default)]
    pub rcpt: Option<Vec<RcptClass>>,
    /// Message stage: SPF results ("pass", "fail", "softfail", "neutral",
    /// "none", "temperror", "permerror"); "none" also when not verified.
    #[serde(default)]
    pub spf: Option<Vec<super::AuthResult>>,
    /// Message stage: DKIM results (pass if any signature passed).
    #[serde(default)]
    pub dkim: Option<Vec<super::AuthResult>>,
    /// Message stage: DMARC results.
    #[serde(default)]
    pub dmarc: Option<Vec<super::AuthResult>>,
    /// Message stage: ARC chain results ("pass", "fail", "none").
    #[serde(default)]
    pub arc: Option<Vec<super::AuthResult>>,
    /// The client's reverse DNS (`[inbound.rdns] lookup`): "ok", "fail"
    /// (no PTR), "forged" (PTR does not resolve back), "temp" (DNS
    /// failure). A client that was not looked up (loopback, lookup off)
    /// matches none.
    #[serde(default)]
    pub rdns: Option<Vec<super::Resolve>>,
    /// Networks read from `client_file` at load time.
    #[serde(skip)]
    pub client_file_networks: Vec<Cidr>,
}

/// How to treat bare CR or LF inside DATA (SMTP smuggling defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Refuse the message with 550 5.6.0 (default).
    Reject,
    /// Accept it, storing bare CR/LF as CRLF.
    Normalize,
}

/// Limits on everything a client controls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted (declared SIZE and actual): bytes, or a
    /// number with K, M or G (binary: K = 1024). Default "25M" (26214400).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub max_message_size: u64,
    /// Recipients per message; more get 452 4.5.3. Default 1000.
    pub max_recipients: usize,
    /// Longest command or text line including CRLF (RFC 5321 §4.5.3.1). Default 1000.
    pub max_line_length: usize,
    /// Idle time allowed while waiting for a command. Default "5m" (RFC 5321 §4.5.3.2).
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub command_timeout: Duration,
    /// Time allowed for the whole DATA/BDAT transfer of one message. Default "10m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
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
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub shutdown_timeout: Duration,
    /// Time one write to a client may take (a client that stops reading). Default "5m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub write_timeout: Duration,
    /// Total lifetime of a session; then 421 4.4.2 at the next command. Default "1h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub session_lifetime: Duration,
    /// NOOP, VRFY, EXPN, HELP, RSET, HELO/EHLO per session before 421 4.7.0. Default 100.
    pub max_junk_commands: u32,
    /// IPv6 clients share `max_connections_per_ip` per this prefix. Default 64.
    pub ipv6_prefix: u8,
    /// Most `Received:` header fields a message may arrive with; more is a
    /// mail loop and gets 554 5.4.6 (RFC 5321 §6.3; Postfix `hopcount_limit`).
    /// Default 50.
    pub max_received_headers: u32,
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
            write_timeout: Duration::from_secs(300),
            session_lifetime: Duration::from_secs(3600),
            max_junk_commands: 100,
            ipv6_prefix: 64,
            max_received_headers: 50,
        }
    }
}

/// How local mail is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDelivery {
    /// Maildir under `maildir_root/<user>/` (default).
    Maildir,
    /// LMTP to `lmtp` (e.g. Dovecot).
    Lmtp,
}

/// Local domains, users and delivery.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// How often the daemon scans `DATA/maildrop` for mail from the
    /// `sendmail` command when nothing woke it (each `sendmail` wakes it at
    /// once through `DATA/pickup.sock`; this is the fallback). Default "1m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub pickup_interval: Duration,
    /// At most this many maildrop files are taken per scan (the rest wait
    /// for the next one). Default 100.
    pub pickup_batch: usize,
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
            pickup_interval: Duration::from_secs(60),
            pickup_batch: 100,
        }
    }
}

/// Relaying.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
            networks: Cidr::loopback(),
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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

/// Outbound TLS policy for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
    /// DANE (RFC 7672): when the next hop's TLSA records are DNSSEC-secure,
    /// TLS is required and the certificate must match them; when they are
    /// insecure (unsigned zone) or absent, behaves as "may".
    Dane,
}

/// Queue timing and concurrency.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// First retry delay; doubles each attempt. Default "5m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub retry_min: Duration,
    /// Longest retry delay. Default "1h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub retry_max: Duration,
    /// After this long in the queue, undelivered recipients bounce. Default "5d".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub max_lifetime: Duration,
    /// Warn the sender (RFC 3464 "delayed") when mail is still undelivered
    /// after this long, then again every interval. "0s" turns it off. Default "4h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub delay_warning: Duration,
    /// Deliveries in progress at once. Default 20.
    pub concurrency: usize,
    /// Refuse new mail with 452 4.3.1 when the queue's file system has less
    /// free space than this: bytes, or K, M, G (K = 1024). Default "100M".
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub min_free_space: u64,
    /// How a message is made durable before its 250: "fsync" (default: one
    /// fdatasync of its queue file, whose name was made and its directory
    /// fsynced ahead of time: one device flush per message; see
    /// docs/queue-format.md) or "syncfs" (one syncfs(2) of the queue's file
    /// system shared by all sessions; best when the queue has a file system
    /// of its own). Read at start.
    pub sync: SyncMode,
    /// Longest time one delivery attempt of one message may take, all routes
    /// together; recipients still open then are deferred (4.4.7). Default "30m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub attempt_timeout: Duration,
    /// Most bytes of the original message a bounce or notice returns (Postfix
    /// `bounce_size_limit`); larger: headers only, cut at this size. Bytes,
    /// or K, M, G (K = 1024). Default 50000.
    #[serde(deserialize_with = "size_usize", serialize_with = "show_size_usize")]
    pub bounce_size_limit: usize,
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
            sync: SyncMode::Fsync,
            attempt_timeout: Duration::from_secs(1800),
            bounce_size_limit: 50_000,
        }
    }
}
