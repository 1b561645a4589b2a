//! DANE server-certificate authentication for SMTP (RFC 7672, with the
//! usage rules of RFC 7671): TLSA records, which of them SMTP may use, how
//! a presented chain is matched against them, and the rustls verifier that
//! makes a handshake fail when nothing matches.
//!
//! May touch: nothing (pure matching over bytes; the verifier runs inside
//! the rustls handshake). RFCs: 6698 §2.1 (record fields), 7671 §5
//! (DANE-EE, DANE-TA), 7672 §3.1 (usages for SMTP), §3.2 (names).
//!
//! * DANE-EE(3): the server's own certificate (or its key) must match a
//!   record; names and validity dates are not checked (RFC 7672 §3.1.1).
//! * DANE-TA(2): a certificate of the presented chain above the server's
//!   must match a record; the chain from the server certificate up to it
//!   is then verified (signatures, validity, CA flags) with that
//!   certificate as the trust anchor, and the server certificate must name
//!   one of the reference identifiers (the MX host name; RFC 7672 §3.2.2).
//!   A trust anchor the server does not send (a bare-key "2 1 0" record) is
//!   not supported: such records never match.
//! * PKIX-TA(0) and PKIX-EE(1) are not for SMTP (RFC 7672 §3.1.3): they are
//!   "unusable", like unknown usages, selectors and matching types.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha512};

use super::client::ClientTls;
use super::{algorithms, provider, TlsError};
use crate::config::OutboundTls;

/// One TLSA record (RFC 6698 §2.1), as numbers and the association data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// Selector: 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Can SMTP use it (RFC 7672 §3.1): DANE-TA or DANE-EE, a known
    /// selector and matching type, and data of the digest's length.
    pub fn usable(&self) -> bool {
        let len_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, 2 | 3) && self.selector <= 1 && len_ok
    }

    /// "3 1 1": the three numbers, as logged.
    pub fn params(&self) -> String {
        format!("{} {} {}", self.usage, self.selector, self.matching)
    }

    /// Does this certificate (DER) match the record's selector and data?
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected: Vec<u8> = match self.selector {
            0 => cert.to_vec(),
            1 => match x509_parser::parse_x509_certificate(cert) {
                Ok((_, c)) => c.tbs_certificate.subject_pki.raw.to_vec(),
                Err(_) => return false,
            },
            _ => return false,
        };
        let digest: Vec<u8> = match self.matching {
            0 => selected,
            1 => Sha256::digest(&selected).to_vec(),
            2 => Sha512::digest(&selected).to_vec(),
            _ => return false,
        };
        // Public data (a certificate and a published record): no need for
        // a constant-time compare.
        digest == self.data
    }
}

/// Presentation form, as in a zone file and a TLS report's policy string.
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.params(), hex::encode(&self.data))
    }
}

/// Why a presented chain did not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneFailure {
    /// The server sent no certificate.
    NoCertificate,
    /// No usable record matched any certificate of the chain.
    NoMatch,
    /// A DANE-TA record matched, but the server certificate names none of
    /// the reference identifiers.
    NameMismatch(String),
    /// A DANE-TA record matched, but the chain up to it has expired (or is
    /// not yet valid).
    Expired(String),
    /// A DANE-TA record matched, but the chain up to it did not verify.
    Chain(String),
}

impl fmt::Display for DaneFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaneFailure::NoCertificate => write!(f, "no server certificate"),
            DaneFailure::NoMatch => write!(f, "no TLSA record matches the server's certificate chain"),
            DaneFailure::NameMismatch(n) => write!(f, "DANE-TA matched but the certificate is not for {n}"),
            DaneFailure::Expired(e) => write!(f, "DANE-TA matched but the chain is out of its validity period: {e}"),
            DaneFailure::Chain(e) => write!(f, "DANE-TA matched but the chain does not verify: {e}"),
        }
    }
}

/// Authenticates `chain` (server certificate first) against `records` for
/// the reference identifiers `names` at `now`; returns the record that
/// matched. DANE-EE records are tried first (RFC 7671 §5.1). Pure.
pub fn authenticate<'r>(
    records: &'r [Tlsa],
    chain: &[CertificateDer<'_>],
    names: &[String],
    now: UnixTime,
) -> Result<&'r Tlsa, DaneFailure> {
    let ee_cert = chain.first().ok_or(DaneFailure::NoCertificate)?;
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    if let Some(r) = usable.iter().find(|r| r.usage == 3 && r.matches(ee_cert)) {
        return Ok(r);
    }
    let mut failure = DaneFailure::NoMatch;
    for (depth, ta) in chain.iter().enumerate().skip(1) {
        let Some(r) = usable.iter().find(|r| r.usage == 2 && r.matches(ta)) else { continue };
        match ta_chain(ee_cert, &chain[1..depth], ta, names, now) {
            Ok(()) => return Ok(r),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

/// RFC 7671 §5.2: verifies `ee` up to the trust anchor `ta` through
/// `intermediates`, then the name.
fn ta_chain(
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    ta: &CertificateDer<'_>,
    names: &[String],
    now: UnixTime,
) -> Result<(), DaneFailure> {
    let anchor = webpki::anchor_from_trusted_cert(ta).map_err(|e| DaneFailure::Chain(e.to_string()))?;
    let cert = webpki::EndEntityCert::try_from(ee).map_err(|e| DaneFailure::Chain(e.to_string()))?;
    let algs = algorithms();
    cert.verify_for_usage(algs.all, &[anchor], intermediates, now, webpki::KeyUsage::server_auth(), None, None).map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => DaneFailure::Expired(e.to_string()),
        e => DaneFailure::Chain(e.to_string()),
    })?;
    let ok = names.iter().any(|n| {
        ServerName::try_from(n.trim_end_matches('.').to_string()).is_ok_and(|sn| cert.verify_is_valid_for_subject_name(&sn).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(DaneFailure::NameMismatch(names.join(" or ")))
    }
}

/// The rustls verifier for one MX host with secure, usable TLSA records:
/// the handshake fails unless [`authenticate`] accepts the chain. The last
/// failure is kept for the TLS report.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    names: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
    last: Mutex<Option<DaneFailure>>,
}

impl DaneVerifier {
    /// For `records` (the host's TLSA RRset) and the reference identifiers.
    pub fn new(records: Vec<Tlsa>, names: Vec<String>) -> DaneVerifier {
        DaneVerifier { records, names, algs: algorithms(), last: Mutex::new(None) }
    }

    /// The records, in presentation form.
    pub fn records(&self) -> &[Tlsa] {
        &self.records
    }

    /// After a handshake: which record matched, for the log ("dane (3 1 1)").
    pub fn note(&self, chain: &[CertificateDer<'_>]) -> String {
        match authenticate(&self.records, chain, &self.names, UnixTime::now()) {
            Ok(r) => format!("dane ({})", r.params()),
            Err(e) => format!("dane ({e})"),
        }
    }

    /// Why the last handshake through this verifier failed, if one did.
    pub fn last_failure(&self) -> Option<DaneFailure> {
        self.last.lock().ok().and_then(|g| g.clone())
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let r = authenticate(&self.records, &chain, &self.names, now).map(|_| ());
        if let Ok(mut g) = self.last.lock() {
            *g = r.clone().err();
        }
        r.map(|()| ServerCertVerified::assertion()).map_err(|e| {
            rustls::Error::InvalidCertificate(match e {
                DaneFailure::NameMismatch(_) => CertificateError::NotValidForName,
                DaneFailure::Expired(_) => CertificateError::Expired,
                e => CertificateError::Other(rustls::OtherError(Arc::new(DaneError(e.to_string())))),
            })
        })
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A DANE failure as a rustls "other" certificate error (its text is what
/// the handshake error, and so the deferral reason, says).
#[derive(Debug)]
struct DaneError(String);

impl fmt::Display for DaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DANE: {}", self.0)
    }
}

impl std::error::Error for DaneError {}

impl ClientTls {
    /// The client config for one MX host whose TLSA records are secure
    /// and usable: TLS 1.2/1.3, the [`DaneVerifier`], no client certificate.
    pub fn dane(records: Vec<Tlsa>, names: Vec<String>) -> Result<ClientTls, TlsError> {
        let verifier = Arc::new(DaneVerifier::new(records, names));
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config), roots: Arc::new(RootCertStore::empty()), policy: OutboundTls::Dane, dane: Some(verifier) })
    }
}

#[cfg(test)]
#[path = "dane_tests.rs"]
mod tests;
