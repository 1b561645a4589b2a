//! TLS reporting (RFC 8460): what outbound TLS achieved, per policy
//! domain. MX delivery calls [`TlsReports::record`] once per connection
//! attempt to a host of a domain that has a policy (DANE TLSA or MTA-STS)
//! or none; the reporter counts successes and failure types and, once a
//! day, mails an aggregate report to the domain's `rua` address.
//!
//! This file holds the types every outbound-security module shares; the
//! counters and the daily report live beside it: `counts.rs` (one day's
//! counts, bounded; the day file's format), `store.rs` ([`Reporter`]: today
//! in memory, days in `DATA/tlsrpt/`), `classify.rs` (an MX attempt without
//! a policy as a session result), `report.rs` (RFC 8460 JSON, file name,
//! TXT record), `mail.rs` (the report mail, gzip), `send.rs` (lookup and
//! queueing), `task.rs` (saving and the daily run), `command.rs` (`tlsrpt
//! show|send` on the control socket and the CLI).
//!
//! May touch: nothing here (types and a no-op sink). RFCs: 8460 §4.

pub mod classify;
pub mod command;
pub mod counts;
pub mod mail;
pub mod report;
pub mod send;
pub mod store;
pub mod task;

use std::net::IpAddr;

pub use store::Reporter;

/// The policy that applied to a session (RFC 8460 §4.3 "policy-type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyType {
    /// An MTA-STS policy (RFC 8461).
    Sts,
    /// DANE TLSA records (RFC 7672).
    Tlsa,
    /// Neither: opportunistic TLS.
    NoPolicyFound,
}

impl PolicyType {
    /// The name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Sts => "sts",
            PolicyType::Tlsa => "tlsa",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

/// Why a session failed (RFC 8460 §4.3 "result-type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureType {
    /// The host did not offer STARTTLS (or it was stripped).
    StarttlsNotSupported,
    /// The certificate does not name the host.
    CertificateHostMismatch,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate chain does not lead to a trusted root.
    CertificateNotTrusted,
    /// Any other failure of TLS negotiation or validation.
    ValidationFailure,
    /// TLSA records were present but unusable.
    TlsaInvalid,
    /// The DNSSEC validation of the records failed (bogus).
    DnssecInvalid,
    /// The domain requires DANE and the session could not satisfy it.
    DaneRequired,
    /// The MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// The MTA-STS policy was invalid.
    StsPolicyInvalid,
    /// The policy's HTTPS host certificate did not validate.
    StsWebpkiInvalid,
}

impl FailureType {
    /// The name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::StarttlsNotSupported => "starttls-not-supported",
            FailureType::CertificateHostMismatch => "certificate-host-mismatch",
            FailureType::CertificateExpired => "certificate-expired",
            FailureType::CertificateNotTrusted => "certificate-not-trusted",
            FailureType::ValidationFailure => "validation-failure",
            FailureType::TlsaInvalid => "tlsa-invalid",
            FailureType::DnssecInvalid => "dnssec-invalid",
            FailureType::DaneRequired => "dane-required",
            FailureType::StsPolicyFetchError => "sts-policy-fetch-error",
            FailureType::StsPolicyInvalid => "sts-policy-invalid",
            FailureType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// One outbound session (or a failure before any session, such as a
/// policy that could not be fetched: then `mx_host` is the MX host or
/// the policy host and `ip` is `None`).
#[derive(Debug, Clone)]
pub struct SessionResult<'a> {
    /// The recipient domain whose policy applied.
    pub policy_domain: &'a str,
    /// Which policy.
    pub policy_type: PolicyType,
    /// The policy as text lines (RFC 8460 §4.4 "policy-string": the STS
    /// policy's lines, or each TLSA record in presentation form).
    pub policy_strings: &'a [String],
    /// STS: the policy's `mx` patterns (RFC 8460 "mx-host").
    pub mx_patterns: &'a [String],
    /// The MX host of the session.
    pub mx_host: &'a str,
    /// Its address, when a connection was made.
    pub ip: Option<IpAddr>,
    /// `Ok` for a successful TLS session, else the failure.
    pub result: Result<(), FailureType>,
    /// Free text for the report's `failure-reason-code`.
    pub detail: &'a str,
}

/// Where session results go.
pub trait TlsReports: Send + Sync {
    /// Counts one session result.
    fn record(&self, r: &SessionResult<'_>);
}

/// Counts nothing (TLS reporting off).
#[derive(Debug, Default)]
pub struct Discard;

impl TlsReports for Discard {
    fn record(&self, _r: &SessionResult<'_>) {}
}
