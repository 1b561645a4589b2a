//! DANE for MX delivery (RFC 7672): for each MX host, what TLS the
//! DNSSEC facts demand ([`HostTls`]), how a failed session is counted for
//! TLS reporting (RFC 8460 result types), and which resolvers may be
//! trusted for the AD bit.
//!
//! The decision, per RFC 7672 §2.2:
//! * the MX RRset (or, with no MX, the domain's denial) is insecure → no
//!   DANE: opportunistic TLS ("may"), as without DANE;
//! * the MX host's address records are insecure → no DANE (§2.2.2);
//! * the TLSA lookup fails (SERVFAIL: bogus, or a server failure) → that
//!   host is deferred, never tried without TLS (§2.2: indeterminate);
//! * no TLSA records, or insecure ones → "may";
//! * secure TLSA records, none usable (only PKIX-TA/PKIX-EE, unknown
//!   parameters) → TLS required, not authenticated (§3.1.3, "encrypt");
//! * secure, usable records → TLS required and the chain must match
//!   ([`crate::tls::dane`]); no fallback to cleartext or to
//!   unauthenticated TLS.
//!
//! May touch: DNS (through [`dns::SecureDns`]). Which resolvers are trusted
//! is decided in `config/schema_mx.rs` ([`untrusted_resolvers`], also used
//! by the config check). RFCs: 7672, 7671, 8460.

pub mod dns;

use self::dns::{DnsFailure, Secured};
use super::smtp::ConnError;
use super::tlsrpt::FailureType;
use crate::tls::dane::{DaneFailure, Tlsa};

/// What one MX host gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTls {
    /// No DANE for this host: `mx.tls = "dane"` behaves as "may".
    Opportunistic,
    /// Secure TLSA records exist but none is usable: TLS is required, the
    /// certificate is not checked. The records are kept for the report.
    Encrypt(Vec<Tlsa>),
    /// Secure, usable TLSA records: TLS required, the chain must match.
    Dane(Vec<Tlsa>),
    /// The DNS could not say (SERVFAIL, timeout): defer this host.
    Defer {
        /// For the TLS report.
        failure: FailureType,
        /// For the log and the deferral reason.
        reason: String,
    },
}

impl HostTls {
    /// Does a TLS report of type "tlsa" apply to sessions with this host?
    pub fn reported(&self) -> bool {
        !matches!(self, HostTls::Opportunistic)
    }

    /// The TLSA records (for the report's policy strings).
    pub fn records(&self) -> &[Tlsa] {
        match self {
            HostTls::Encrypt(r) | HostTls::Dane(r) => r,
            _ => &[],
        }
    }

    /// A key that changes when the records do (for the connection pools).
    pub fn pool_key(&self) -> String {
        match self {
            HostTls::Opportunistic | HostTls::Defer { .. } => "may".into(),
            HostTls::Encrypt(_) => "encrypt".into(),
            HostTls::Dane(r) => {
                let text: Vec<String> = r.iter().map(Tlsa::to_string).collect();
                format!("dane:{}", crate::tls::sha256_hex(text.join(",").as_bytes()))
            }
        }
    }
}

/// A lookup failure as the host's verdict: deferred; SERVFAIL counts as
/// `dnssec-invalid` in the TLS report.
pub fn defer(e: &DnsFailure) -> HostTls {
    let failure = if e.servfail { FailureType::DnssecInvalid } else { FailureType::ValidationFailure };
    HostTls::Defer { failure, reason: e.to_string() }
}

/// The verdict from the TLSA answer, once the MX RRset and the host's
/// addresses are known to be secure. Pure.
pub fn from_tlsa(answer: Result<Secured<Tlsa>, DnsFailure>) -> HostTls {
    match answer {
        Err(e) => defer(&e),
        Ok(a) if a.records.is_empty() || !a.secure => HostTls::Opportunistic,
        Ok(a) if a.records.iter().any(Tlsa::usable) => HostTls::Dane(a.records.into_iter().filter(Tlsa::usable).collect()),
        Ok(a) => HostTls::Encrypt(a.records),
    }
}

/// The RFC 8460 result type for a session that could not be opened with
/// a DANE host (`None`: not a TLS failure, such as a refused connection,
/// which is not reported). `dane` is the verifier's last failure.
pub fn failure_of(e: &ConnError, dane: Option<DaneFailure>) -> Option<FailureType> {
    match e {
        ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } => Some(FailureType::StarttlsNotSupported),
        ConnError::Handshake { .. } => Some(match dane {
            Some(DaneFailure::NameMismatch(_)) => FailureType::CertificateHostMismatch,
            Some(DaneFailure::Expired(_)) => FailureType::CertificateExpired,
            _ => FailureType::ValidationFailure,
        }),
        _ => None,
    }
}

pub use crate::config::untrusted_resolvers;

#[cfg(test)]
mod tests;
