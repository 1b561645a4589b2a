//! The `[[listener]]` table: role, TLS and client-certificate modes, AUTH
//! mechanisms and milters of one listening socket.
//!
//! May touch: nothing (types only). RFCs: 6409 (submission), 8314
//! (implicit TLS).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::values::{socket_addr, AuthMechanism, Cidr};

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// No CertificateRequest at all (what Entourage-era clients need).
    None,
    /// Ask; accept any certificate or none; verification becomes a policy fact.
    Optional,
    /// The handshake fails without a certificate that verifies against
    /// `tls.client_ca_files`; MAIL over plaintext gets `530 5.7.0`. Without
    /// any client CA this is a config error (F5).
    Required,
}

impl ClientCertMode {
    /// The config spelling (also in the mail log).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::None => "none",
            ClientCertMode::Optional => "optional",
            ClientCertMode::Required => "required",
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for rules and logs. Default: the role.
    #[serde(default)]
    pub name: Option<String>,
    /// `address:port` to bind, e.g. `0.0.0.0:25` or `[::]:25`.
    #[serde(deserialize_with = "socket_addr")]
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
    /// Clients in these networks must present a verified certificate (STARTTLS
    /// before MAIL; a client CA must be configured).
    #[serde(default)]
    pub require_client_certificates_from: Vec<Cidr>,
    /// SASL mechanisms on this listener (default: `auth.mechanisms`; `[]`
    /// turns AUTH off here). An unknown name is a load error.
    #[serde(default)]
    pub auth_mechanisms: Option<Vec<AuthMechanism>>,
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

/// The listeners of the embedded default config.
pub(super) fn default_listeners() -> Vec<Listener> {
    vec![
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2525)), Role::Smtp),
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2465)), Role::Submissions),
        Listener::new(SocketAddr::from(([127, 0, 0, 1], 2587)), Role::Submission),
    ]
}
