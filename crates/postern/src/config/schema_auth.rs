//! The `[auth]` table: SASL mechanisms, the EXTERNAL identity mapping and
//! the brute-force throttle's limits (see `docs/auth.md`).
//!
//! May touch: nothing (types only). RFC 4954 (SMTP AUTH).

use std::time::Duration;

use postern_wire::sasl::Mechanism;
use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration, AuthMechanism, Cidr, MilterSocket};

/// How EXTERNAL maps a verified client certificate to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalIdentity {
    /// The subject's one CN attribute (parsed RDNs) is the user name; a
    /// subject with none or several CNs maps to nobody.
    Cn,
    /// A SAN e-mail address in a local domain: a user listing it in
    /// `addresses`, else its local part. Other domains are ignored.
    Email,
    /// The certificate's SHA-256 is listed in the user's `certificates`.
    Fingerprint,
}

/// What to do once a client or user has failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BanAction {
    /// Answer AUTH with 454 4.7.0 until the ban ends.
    Refuse,
    /// Answer 421 4.7.0 and close the connection.
    Disconnect,
}

/// Where SMTP AUTH checks credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthBackend {
    /// `DATA/users.json` (default; `postern user add`).
    #[default]
    File,
    /// A Dovecot auth server (`auth.dovecot_socket`): Dovecot runs the SASL
    /// exchange; postern never sees the password.
    Dovecot,
    /// The `[sql]` directory's password query.
    Sql,
    /// The `[ldap]` directory (search-then-bind or bind-as-user).
    Ldap,
}

/// SMTP AUTH settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Where credentials are checked: "file" (default, `DATA/users.json`),
    /// "dovecot", "sql" or "ldap".
    pub backend: AuthBackend,
    /// Dovecot's auth socket when `backend = "dovecot"` (required then):
    /// "unix:/path" (e.g. "unix:/var/spool/postfix/private/auth", the
    /// socket Postfix uses) or "inet:host:port". Default none. Restart.
    pub dovecot_socket: Option<MilterSocket>,
    /// How long postern waits for Dovecot: to connect, and for each answer
    /// during an exchange. Past it, AUTH gets 454 4.7.0. Default "10s". Restart.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub dovecot_timeout: Duration,
    /// Mechanisms offered, in order. Default ["SCRAM-SHA-256-PLUS",
    /// "SCRAM-SHA-256", "PLAIN", "LOGIN"]. Also: "CRAM-MD5" (stores a
    /// plaintext-equivalent secret), "DIGEST-MD5", "SCRAM-SHA-1", "EXTERNAL".
    /// An unknown name is a load error.
    pub mechanisms: Vec<AuthMechanism>,
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
    /// Failed AUTH attempts from one client address (IPv6: per
    /// `ipv6_prefix` network) within `failure_window` before that address
    /// is banned for `ban_time`. Delays come long before: this is the
    /// backstop against many parallel connections. Addresses in
    /// `ban_exempt_networks` are never banned, and an address that logged
    /// in as a user before may still log in as that user. Default 50.
    pub max_failures_per_ip: u32,
    /// Failures for one user, from any address, within `failure_window`
    /// after which attempts for that user from addresses that never logged
    /// in as that user are slowed down (1 s, doubling, at most
    /// `max_failure_delay`) before the password is checked. Never a ban:
    /// the right password is never refused for this. Default 10.
    pub max_failures_per_user: u32,
    /// Replies to failed AUTH from one client address are delayed once it
    /// has more than this many failures in `failure_window`: 1 s, then
    /// doubling, at most `max_failure_delay` (Dovecot's auth penalty).
    /// Default 2.
    pub delay_after: u32,
    /// Window in which failures are counted. Default "10m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub failure_window: Duration,
    /// How long a ban lasts. Default "15m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub ban_time: Duration,
    /// "refuse" (default: 454 4.7.0 to AUTH) or "disconnect" (421 4.7.0).
    pub ban_action: BanAction,
    /// A password that verified (PLAIN, LOGIN) is remembered this long, in
    /// memory only, as a keyed hash, so a client that logs in for every
    /// message does not pay for argon2 each time (like Dovecot's auth
    /// cache). A password change takes effect at once. "0s" turns it off.
    /// Default "15m".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub verified_cache_ttl: Duration,
    /// The AUTH throttle counts IPv6 clients per network of this prefix
    /// length (one /64 is usually one customer's); 128 counts each address,
    /// larger values count as 128. Default 64.
    pub ipv6_prefix: u8,
    /// Client networks the AUTH throttle never bans (fail2ban's
    /// `ignoreip`): a webmail or a proxy on these addresses speaks for many
    /// users. Their failures are still delayed. Default the loopback
    /// networks ["127.0.0.0/8", "::1"].
    pub ban_exempt_networks: Vec<Cidr>,
    /// The longest delay of a failed AUTH reply (and of the per-user
    /// slow-down). Default "15s", Dovecot's auth penalty maximum.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub max_failure_delay: Duration,
    /// How long a successful login of a user from an address (IPv6: per
    /// `ipv6_prefix` network) is remembered, in memory only. From such an
    /// address that user is neither slowed down by failures elsewhere nor
    /// refused by an address ban. Default "30d".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub login_memory: Duration,
    /// Entries each of the AUTH throttle's in-memory maps (addresses, users,
    /// remembered logins) holds at most; the least recently used are
    /// dropped when it is full. Default 100000.
    pub throttle_max_entries: usize,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            backend: AuthBackend::File,
            dovecot_socket: None,
            dovecot_timeout: Duration::from_secs(10),
            mechanisms: [Mechanism::ScramSha256Plus, Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login]
                .into_iter()
                .map(AuthMechanism)
                .collect(),
            plaintext_networks: Vec::new(),
            broken_auth_line: false,
            sender_login_match: false,
            external_identity: ExternalIdentity::Cn,
            max_failures_per_ip: 50,
            max_failures_per_user: 10,
            delay_after: 2,
            failure_window: Duration::from_secs(600),
            ban_time: Duration::from_secs(900),
            ban_action: BanAction::Refuse,
            verified_cache_ttl: Duration::from_secs(900),
            ipv6_prefix: 64,
            ban_exempt_networks: Cidr::loopback(),
            max_failure_delay: Duration::from_secs(15),
            login_memory: Duration::from_secs(30 * 86400),
            throttle_max_entries: 100_000,
        }
    }
}
