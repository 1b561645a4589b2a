//! TLS: the one place where rustls configurations are built and private
//! keys are loaded.
//!
//! May touch: certificate, key, CA and CRL files (read); `DATA/tls/` (writes
//! the self-signed default certificate on first start).
//! Implements RFC 3207 (STARTTLS) and RFC 8314 (implicit TLS) key material,
//! TLS 1.2 and 1.3 only, with the ring provider.
//!
//! Client certificates: `none` sends no CertificateRequest; `required`
//! uses rustls' WebPKI client verifier (chain, validity, CA flags, CRLs);
//! `optional` asks for a certificate and accepts any at the TLS layer (the
//! handshake signature is still checked, so the client holds the key),
//! then [`ServerTls::identify`] runs the same WebPKI verification after the
//! handshake and records the result as a fact for policy. A look-alike CA
//! with the same DN but another key never verifies: verification is by
//! signature, not by name.
//!
//! Layout: [`files`] (reading certificates, keys and CRLs, default paths,
//! the self-signed default certificate, expiry warnings), [`server`]
//! (server configs per client-cert mode, [`TlsInfo`] from a handshake),
//! [`verify`] (client-certificate verification, [`CertInfo`],
//! [`ClientCertIdentity`]), [`client`] (outbound client configs), [`dane`]
//! (DANE TLSA matching and its server-certificate verifier, RFC 7671/7672).

pub mod client;
pub mod dane;
pub mod files;
pub mod observe;
pub mod server;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::{ring as provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem;
use sha2::{Digest, Sha256};

pub use client::{client_summary, ClientTls, SYSTEM_CA_BUNDLE};
pub use files::{
    client_ca_paths, crl_paths, ensure_default_certificate, load_certs, load_key, server_paths, warn_expiry, write_private,
    EXPIRY_WARNING_DAYS,
};
pub use server::{ServerTls, TlsInfo};
pub use verify::{cert_info, CertInfo, CertVerifier, ClientCertIdentity, VerifyError};

/// Errors loading or building TLS material; each names the file, or the
/// step, and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CRL file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds a malformed PEM certificate.
    #[error("{}: bad PEM certificate: {source:?}", path.display())]
    BadPemCertificate {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A certificate file holds no certificate at all.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key in a form we read (PKCS#8, PKCS#1, SEC1).
    #[error("{}: no usable private key: {source:?}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A CRL file holds a malformed CRL.
    #[error("{}: bad CRL: {source:?}", path.display())]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A DER certificate could not be parsed (X.509).
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// A CA file holds a certificate rustls cannot use as a trust anchor.
    #[error("{}: not a usable CA certificate: {source}", path.display())]
    UnusableCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The provider does not support TLS 1.2 and 1.3.
    #[error("TLS versions: {0}")]
    Versions(#[source] rustls::Error),
    /// The server certificate and key do not match, or are unusable.
    #[error("{} / {}: certificate and key do not match or are unusable: {source}", certificate.display(), key.display())]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the client CAs.
    #[error("client CA: {0}")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
    /// The server-certificate verifier could not be built from the CAs.
    #[error("smarthost CA: {0}")]
    ServerCa(#[source] rustls::server::VerifierBuilderError),
    /// Our outbound client certificate and key are unusable.
    #[error("{}: client certificate and key unusable: {source}", certificate.display())]
    ClientCertificate {
        /// The certificate file.
        certificate: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// Generating the default certificate failed (`what`: key generation,
    /// certificate, self-signing).
    #[error("{what}: {source}")]
    Generate {
        /// The step.
        what: &'static str,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// Writing a key, certificate or directory failed.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider::default_provider().signature_verification_algorithms
}

/// SHA-256 as colon-less lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
