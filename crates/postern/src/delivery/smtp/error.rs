//! The SMTP client's connection-level errors ([`ConnError`]) and the
//! RFC 3463 status each stands for: every recipient without an outcome is
//! deferred (or failed, for 5.7.8) with [`ConnError::reply`].
//!
//! May touch: nothing (pure).

use postern_wire::Enhanced;

use crate::config::Endpoint;
use crate::delivery::DeliveryReply;

/// Why a connection-level step failed: every recipient without an
/// outcome is deferred (or, for 5.7.8, failed) with [`ConnError::reply`].
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP or unix-socket connect failed or timed out.
    #[error("connect to {ep}: {reason}")]
    Connect {
        /// The peer.
        ep: Endpoint,
        /// "timed out" or the OS error.
        reason: String,
    },
    /// The policy wants TLS but no client TLS material was configured.
    #[error("TLS to {0} is not configured")]
    TlsNotConfigured(Endpoint),
    /// The configured TLS server name is not a valid name.
    #[error("bad TLS server name {name:?}: {reason}")]
    BadServerName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed or timed out.
    #[error("TLS handshake with {ep}: {reason}")]
    Handshake {
        /// The peer.
        ep: Endpoint,
        /// "timed out" or the TLS error.
        reason: String,
    },
    /// The greeting was not 220.
    #[error("{ep} greeted with {reply}")]
    Greeting {
        /// The peer.
        ep: Endpoint,
        /// Its greeting.
        reply: String,
    },
    /// EHLO/LHLO was refused.
    #[error("{ep} refused {verb}: {reply}")]
    HelloRefused {
        /// The peer.
        ep: Endpoint,
        /// "EHLO" or "LHLO".
        verb: &'static str,
        /// Its reply.
        reply: String,
    },
    /// TLS is required and the peer does not offer STARTTLS.
    #[error("TLS required but {0} does not offer STARTTLS")]
    NoStartTls(Endpoint),
    /// TLS is required and the peer refused STARTTLS.
    #[error("{ep} refused STARTTLS: {reply}")]
    StartTlsRefused {
        /// The peer.
        ep: Endpoint,
        /// Its reply.
        reply: String,
    },
    /// Credentials would go out in plaintext.
    #[error("refusing to send credentials to {0} without TLS (smarthost_auth_plaintext = false)")]
    CredentialsWithoutTls(Endpoint),
    /// Only password mechanisms are offered and TLS did not verify (F8).
    #[error(
        "refusing to send the password to {ep} over TLS whose certificate did not verify (offered: {offered}); \
         set smarthost_tls = \"verify\""
    )]
    PasswordOverUnverifiedTls {
        /// The peer.
        ep: Endpoint,
        /// What it offered, space-separated.
        offered: String,
    },
    /// No offered AUTH mechanism is one we use.
    #[error("{ep} offers no usable AUTH mechanism (offered: {offered})")]
    NoAuthMechanism {
        /// The peer.
        ep: Endpoint,
        /// What it offered, space-separated.
        offered: String,
    },
    /// The peer rejected our AUTH; `permanent` for a 5xx (5.7.8).
    #[error("AUTH {mech} at {ep} failed: {reply}")]
    AuthFailed {
        /// The mechanism.
        mech: &'static str,
        /// The peer.
        ep: Endpoint,
        /// Its reply.
        reply: String,
        /// 5xx: the credentials are wrong, not a passing problem.
        permanent: bool,
    },
    /// A SASL challenge did not decode, or SCRAM failed on our side.
    #[error("{0}")]
    Sasl(String),
    /// The peer failed SCRAM server authentication.
    #[error("{0} failed SCRAM server authentication (wrong server key)")]
    ScramServer(Endpoint),
    /// Writing to the peer failed.
    #[error("write: {0}")]
    Write(std::io::Error),
    /// Reading from the peer failed.
    #[error("read: {0}")]
    Read(std::io::Error),
    /// No reply in time.
    #[error("timeout waiting for reply")]
    ReplyTimeout,
    /// The peer stopped taking what we write.
    #[error("timeout writing to the peer")]
    WriteTimeout,
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer's reply lines did not form a reply.
    #[error("malformed reply: {0:?}")]
    MalformedReply(String),
    /// A connection opened with the TLS requirement relaxed for a
    /// `TLS-Required: No` message was offered another message: never
    /// reused for mail that did not ask for it (a fresh one is opened).
    #[error("connection opened without its TLS requirement (TLS-Required: No) is not reused for other mail")]
    RelaxedConnection,
}

impl ConnError {
    /// The failure is the TLS requirement's (no STARTTLS, STARTTLS
    /// refused, the handshake or its certificate check failed): what
    /// `TLS-Required: No` lets pass (RFC 8689 §5).
    pub fn is_tls_requirement(&self) -> bool {
        matches!(self, ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } | ConnError::Handshake { .. })
    }

    /// The RFC 3463 status this error stands for.
    pub fn status(&self) -> Enhanced {
        match self {
            ConnError::Connect { .. } => Enhanced(4, 4, 1),
            ConnError::TlsNotConfigured(_) | ConnError::BadServerName { .. } => Enhanced(4, 7, 0),
            ConnError::Handshake { .. } => Enhanced(4, 7, 5),
            ConnError::Greeting { .. } | ConnError::HelloRefused { .. } => Enhanced(4, 4, 2),
            ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } => Enhanced(4, 7, 4),
            ConnError::CredentialsWithoutTls(_) | ConnError::NoAuthMechanism { .. } => Enhanced(4, 7, 0),
            ConnError::PasswordOverUnverifiedTls { .. } => Enhanced(4, 7, 0),
            ConnError::AuthFailed { permanent: true, .. } => Enhanced(5, 7, 8),
            ConnError::AuthFailed { permanent: false, .. } | ConnError::Sasl(_) | ConnError::ScramServer(_) => Enhanced(4, 7, 0),
            ConnError::Write(_) | ConnError::Read(_) | ConnError::ReplyTimeout | ConnError::WriteTimeout | ConnError::Closed => {
                Enhanced(4, 4, 2)
            }
            ConnError::MalformedReply(_) => Enhanced(4, 5, 0),
            ConnError::RelaxedConnection => Enhanced(4, 7, 0),
        }
    }

    /// The reply recorded for the recipients it affects.
    pub fn reply(&self) -> DeliveryReply {
        DeliveryReply::status_only(self.status(), self.to_string())
    }
}
