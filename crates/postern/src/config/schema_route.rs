//! `[[route]]`: the transport map. A route matches recipient domains,
//! envelope sender domains (sender-dependent relaying, Postfix
//! `sender_dependent_relayhost_maps`) or both, and says how the mail goes:
//! SMTP to one next hop or a list tried in order, LMTP, Maildir or MX. SMTP
//! routes carry their own TLS, client certificate and SASL settings;
//! [`Outbound`] is the one shape those settings take for delivery, built
//! from a route or from the `relay.smarthost_*` keys, so both go through
//! one code path.
//!
//! May touch: nothing (types only).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::schema::{OutboundTls, Relay};
use super::values::Endpoint;

/// How mail for some domains (or from some sender domains) is delivered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Recipient domains (matched case-insensitively, a UTF-8 name and its
    /// `xn--` form alike). Domains of a route without `senders` are also
    /// relay domains (accepted from anyone). Default: none (any recipient
    /// domain that is not local; then `senders` is required).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Envelope sender domains: the route is taken only for mail whose
    /// sender's domain is one of these (sender-dependent relaying). With
    /// `domains` too, both must match. A route without `domains` never
    /// takes mail for local domains: it replaces the smarthost or MX
    /// delivery. The null sender `<>` matches no `senders`. Default: none.
    #[serde(default)]
    pub senders: Vec<String>,
    /// "smtp" (to `next_hop` or `next_hops`), "lmtp", "maildir" or "mx".
    pub transport: RouteTransport,
    /// `host:port` or `unix:/path` for smtp and lmtp.
    #[serde(default)]
    pub next_hop: Option<Endpoint>,
    /// smtp only: next hops tried in order; the next is tried when one
    /// cannot be reached or does not open a session (4xx/5xx greeting, TLS
    /// or AUTH failure). Instead of `next_hop`. Default: none.
    #[serde(default)]
    pub next_hops: Vec<Endpoint>,
    /// smtp only: TLS to the next hop: "none", "may" (default), "encrypt",
    /// "verify" ("dane" is for MX delivery: `[mx] tls`).
    #[serde(default = "default_tls")]
    pub tls: OutboundTls,
    /// smtp only: CA certificates (PEM) for "verify". Default: the system
    /// bundle `/etc/ssl/certs/ca-certificates.crt` plus the built-in CA if any.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// smtp only: name to send as SNI and to verify. Default: the next hop's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// smtp only: the next hop speaks implicit TLS (port 465 style) instead
    /// of STARTTLS. Default false.
    #[serde(default)]
    pub implicit_tls: bool,
    /// smtp only: client certificate chain (PEM) to present. Default none.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// smtp only: key for `client_certificate` (PEM). Default none.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// smtp only: user name for SMTP AUTH (SCRAM-SHA-256, PLAIN or LOGIN,
    /// whichever the next hop offers, best first). Default none.
    #[serde(default)]
    pub username: Option<String>,
    /// smtp only: file holding the password (first line; keep it 0600). Default none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// smtp only: allow AUTH without TLS, and PLAIN/LOGIN over TLS that did
    /// not verify. Default false.
    #[serde(default)]
    pub auth_plaintext: bool,
}

fn default_tls() -> OutboundTls {
    OutboundTls::May
}

impl Route {
    /// The next hops in order (`next_hop` or `next_hops`).
    pub fn hops(&self) -> Vec<Endpoint> {
        self.next_hop.iter().cloned().chain(self.next_hops.iter().cloned()).collect()
    }

    /// The keys that apply to smtp routes only and are set here (for the
    /// "only with transport = smtp" check).
    pub fn smtp_only_keys(&self) -> Vec<&'static str> {
        let set = [
            ("next_hops", !self.next_hops.is_empty()),
            ("tls", self.tls != OutboundTls::May),
            ("ca_files", !self.ca_files.is_empty()),
            ("server_name", self.server_name.is_some()),
            ("implicit_tls", self.implicit_tls),
            ("client_certificate", self.client_certificate.is_some()),
            ("client_key", self.client_key.is_some()),
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("auth_plaintext", self.auth_plaintext),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect()
    }
}

/// How a `[[route]]` delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteTransport {
    /// SMTP to `next_hop` (or `next_hops`, in order) with the route's TLS
    /// and AUTH settings.
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

/// Where a set of [`Outbound`] settings comes from: names its keys in
/// errors and warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopOrigin {
    /// `relay.smarthost_*`.
    Smarthost,
    /// `[[route]]` number `n` (0-based).
    Route(usize),
}

/// SMTP next-hop settings, one shape for the smarthost and smtp routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Where the settings come from.
    pub origin: HopOrigin,
    /// Next hops, tried in order.
    pub hops: Vec<Endpoint>,
    /// TLS policy.
    pub tls: OutboundTls,
    /// CA files for "verify" (as configured; empty = the defaults).
    pub ca_files: Vec<PathBuf>,
    /// SNI / name to verify (default: each hop's host).
    pub server_name: Option<String>,
    /// Implicit TLS.
    pub implicit_tls: bool,
    /// Client certificate and key.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// SASL user and password file.
    pub credentials: Option<(String, PathBuf)>,
    /// AUTH without (verified) TLS allowed.
    pub auth_plaintext: bool,
}

impl Outbound {
    /// The smarthost's settings (`relay.smarthost*`), if one is configured.
    pub fn smarthost(r: &Relay) -> Option<Outbound> {
        let hop = r.smarthost.clone()?;
        Some(Outbound {
            origin: HopOrigin::Smarthost,
            hops: vec![hop],
            tls: r.smarthost_tls,
            ca_files: r.smarthost_ca_files.clone(),
            server_name: r.smarthost_server_name.clone(),
            implicit_tls: r.smarthost_implicit_tls,
            client_certificate: r.smarthost_client_certificate.clone().zip(r.smarthost_client_key.clone()),
            credentials: r.smarthost_username.clone().zip(r.smarthost_password_file.clone()),
            auth_plaintext: r.smarthost_auth_plaintext,
        })
    }

    /// The settings of `[[route]]` number `i` (0-based).
    pub fn route(i: usize, r: &Route) -> Outbound {
        Outbound {
            origin: HopOrigin::Route(i),
            hops: r.hops(),
            tls: r.tls,
            ca_files: r.ca_files.clone(),
            server_name: r.server_name.clone(),
            implicit_tls: r.implicit_tls,
            client_certificate: r.client_certificate.clone().zip(r.client_key.clone()),
            credentials: r.username.clone().zip(r.password_file.clone()),
            auth_plaintext: r.auth_plaintext,
        }
    }

    /// The name of setting `k` ("tls", "password_file", ...) as the
    /// operator wrote it: `relay.smarthost_tls`, `route[2].tls` (1-based).
    pub fn key(&self, k: &str) -> String {
        match self.origin {
            HopOrigin::Smarthost => format!("relay.smarthost_{k}"),
            HopOrigin::Route(i) => format!("route[{}].{k}", i + 1),
        }
    }

    /// "smarthost" or "route 2" (1-based), for messages.
    pub fn label(&self) -> String {
        match self.origin {
            HopOrigin::Smarthost => "smarthost".into(),
            HopOrigin::Route(i) => format!("route {}", i + 1),
        }
    }

    /// The TLS policy actually used: implicit TLS with "none" means "encrypt".
    pub fn effective_tls(&self) -> OutboundTls {
        if self.implicit_tls && self.tls == OutboundTls::None {
            OutboundTls::Encrypt
        } else {
            self.tls
        }
    }
}

/// The config spelling of a TLS policy.
pub fn tls_name(t: OutboundTls) -> &'static str {
    match t {
        OutboundTls::None => "none",
        OutboundTls::May => "may",
        OutboundTls::Encrypt => "encrypt",
        OutboundTls::Verify => "verify",
        OutboundTls::Dane => "dane",
    }
}
