//! Client-certificate verification after the handshake, and the facts a
//! certificate carries ([`CertInfo`], [`ClientCertIdentity`]). WebPKI:
//! signatures, validity, CA constraints, client-auth usage, CRLs.
//!
//! May touch: the client CA and CRL files (read, through [`super::files`]).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, InvalidDnsNameError, UnixTime};
use rustls::RootCertStore;

use super::files::{client_ca_paths, crl_paths, load_certs, load_crls, warn_expiry};
use super::{algorithms, sha256_hex, TlsError};
use crate::dn::{Attr, Dn};
use crate::settings::Settings;

/// Why a peer's certificate chain did not verify. Kept as text in
/// [`ClientCertIdentity::verified`] and in the outbound log line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No client CA is configured, so no client certificate can verify.
    #[error("no client CA configured")]
    NoClientCa,
    /// The server sent no certificate.
    #[error("no server certificate")]
    NoServerCertificate,
    /// No CA to verify a server certificate against.
    #[error("no CA to verify against")]
    NoCa,
    /// The end-entity certificate is not one WebPKI can parse.
    #[error("{0:?}")]
    Unparsable(webpki::Error),
    /// The chain did not verify (unknown issuer, expired, revoked, ...).
    #[error("{}", describe_webpki(.0))]
    Rejected(webpki::Error),
    /// The name to check the certificate for is not a valid server name.
    #[error("{0}")]
    BadName(InvalidDnsNameError),
    /// The chain verified, but the certificate is not valid for this name.
    #[error("certificate not valid for {0}")]
    WrongName(String),
}

/// Facts about a certificate, for logs, `Received:` and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN, RFC 4514-escaped, in the certificate's order (for logs).
    pub subject: String,
    /// Issuer DN, likewise.
    pub issuer: String,
    /// Subject alternative names: `DNS:name`, `email:addr`, `IP:addr`.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate.
    pub sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Expiry, unix seconds.
    pub not_after: i64,
    /// The values of every CN attribute of the subject, parsed from its
    /// RDNs in order (an undecodable one as ""). Identity mappings take a
    /// name only when there is exactly one.
    pub subject_cns: Vec<String>,
    /// The subject as parsed RDNs: what `cert_subject` rules match (F10).
    pub subject_dn: Dn,
    /// The issuer as parsed RDNs: what `cert_issuer` rules match.
    pub issuer_dn: Dn,
}

/// The RDNs of an X.509 name: attribute types by their short names (`CN`,
/// `O`, ...) or dotted OIDs; values decoded (a non-string value as `#` and
/// the hex of its DER, RFC 4514 §2.4).
fn parsed_dn(name: &x509_parser::x509::X509Name<'_>) -> Dn {
    let registry = x509_parser::objects::oid_registry();
    let rdns = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let name = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    let value = match a.as_str() {
                        Ok(v) => v.to_string(),
                        Err(_) => format!("#{}", hex::encode(a.attr_value().as_bytes())),
                    };
                    Attr { name, value }
                })
                .collect()
        })
        .collect();
    Dn { rdns }
}

/// Parses a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                GeneralName::IPAddress(ip) => {
                    let s = match ip.len() {
                        4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(ip);
                            std::net::Ipv6Addr::from(b).to_string()
                        }
                        _ => hex::encode(ip),
                    };
                    sans.push(format!("IP:{s}"));
                }
                _ => {}
            }
        }
    }
    let (subject_dn, issuer_dn) = (parsed_dn(cert.subject()), parsed_dn(cert.issuer()));
    Ok(CertInfo {
        subject: subject_dn.to_string(),
        issuer: issuer_dn.to_string(),
        sans,
        sha256: sha256_hex(der),
        spki_sha256: sha256_hex(cert.tbs_certificate.subject_pki.raw),
        not_after: cert.validity().not_after.timestamp(),
        subject_cns: cert.subject().iter_common_name().map(|cn| cn.as_str().map(str::to_string).unwrap_or_default()).collect(),
        subject_dn,
        issuer_dn,
    })
}

/// A client certificate as seen by the server: what it says, and whether
/// it verified. Built only by [`ServerTls::identify`] (the TLS layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertIdentity {
    /// The end-entity certificate's facts.
    pub cert: CertInfo,
    /// `Ok(subject DN of the trust anchor)` or `Err(why not)`.
    pub verified: Result<String, String>,
}

impl ClientCertIdentity {
    /// "verified by <anchor>" / "not verified: <why>" for logs.
    pub fn verdict(&self) -> String {
        match &self.verified {
            Ok(anchor) => format!("verified by {anchor}"),
            Err(why) => format!("not verified: {why}"),
        }
    }
}

/// Client-certificate verification material (CAs, CRLs), usable without
/// the server's own certificate (`postern explain`).
#[derive(Clone)]
pub struct CertVerifier {
    pub(super) roots: Arc<RootCertStore>,
    anchor_names: Vec<(Vec<u8>, String)>,
    pub(super) crls: Vec<CertificateRevocationListDer<'static>>,
}

impl CertVerifier {
    /// Loads the configured client CAs and CRLs.
    pub fn load(s: &Settings) -> Result<CertVerifier, TlsError> {
        let mut roots = RootCertStore::empty();
        let mut anchor_names = Vec::new();
        for p in client_ca_paths(s) {
            let certs = load_certs(&p)?;
            warn_expiry("client CA", &p, &certs);
            for c in certs {
                let name = cert_info(&c).map(|i| i.subject).unwrap_or_default();
                roots.add(c).map_err(|source| TlsError::UnusableCa { path: p.clone(), source })?;
                if let Some(ta) = roots.roots.last() {
                    anchor_names.push((ta.subject.as_ref().to_vec(), name));
                }
            }
        }
        Ok(CertVerifier { roots: Arc::new(roots), anchor_names, crls: load_crls(&crl_paths(s))? })
    }

    /// Verifies a client chain after the handshake (WebPKI: signatures,
    /// validity, CA constraints, client-auth usage, CRLs) and describes it.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCertIdentity> {
        let ee = chain.first()?;
        let cert = match cert_info(ee) {
            Ok(c) => c,
            Err(e) => {
                return Some(ClientCertIdentity {
                    cert: CertInfo {
                        subject: String::new(),
                        issuer: String::new(),
                        sans: Vec::new(),
                        sha256: sha256_hex(ee),
                        spki_sha256: String::new(),
                        not_after: 0,
                        subject_cns: Vec::new(),
                        subject_dn: Dn::default(),
                        issuer_dn: Dn::default(),
                    },
                    verified: Err(e.to_string()),
                })
            }
        };
        let verified = self.verify_client_chain(chain).map_err(|e| e.to_string());
        Some(ClientCertIdentity { cert, verified })
    }

    fn verify_client_chain(&self, chain: &[CertificateDer<'_>]) -> Result<String, VerifyError> {
        if self.roots.is_empty() {
            return Err(VerifyError::NoClientCa);
        }
        let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(VerifyError::Unparsable)?;
        let owned: Vec<webpki::OwnedCertRevocationList> =
            self.crls.iter().filter_map(|c| webpki::OwnedCertRevocationList::from_der(c.as_ref()).ok()).collect();
        let crls: Vec<webpki::CertRevocationList<'_>> = owned.into_iter().map(webpki::CertRevocationList::from).collect();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
            .ok()
            .map(|b| b.with_depth(webpki::RevocationCheckDepth::EndEntity).with_status_policy(webpki::UnknownStatusPolicy::Allow).build());
        let algs = algorithms();
        let path = ee
            .verify_for_usage(algs.all, &self.roots.roots, &chain[1..], UnixTime::now(), webpki::KeyUsage::client_auth(), revocation, None)
            .map_err(VerifyError::Rejected)?;
        let subject = path.anchor().subject.as_ref();
        Ok(self.anchor_names.iter().find(|(s, _)| s == subject).map(|(_, n)| n.clone()).unwrap_or_else(|| "a configured CA".into()))
    }
}

pub(super) fn describe_webpki(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "unknown issuer".into(),
        webpki::Error::CertExpired { .. } => "certificate expired".into(),
        webpki::Error::CertNotValidYet { .. } => "certificate not valid yet".into(),
        webpki::Error::CertRevoked => "certificate revoked".into(),
        webpki::Error::InvalidSignatureForPublicKey => "bad signature (look-alike issuer?)".into(),
        other => format!("{other:?}"),
    }
}
