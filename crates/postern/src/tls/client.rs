//! Outbound TLS: rustls client configs for smarthosts, LMTP and MX
//! delivery (and `postern bench`), and the after-handshake check that lets
//! `may`/`encrypt` log whether the server's certificate verified.
//!
//! May touch: the CA files and our client certificate and key (read,
//! through [`super::files`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::files::{load_certs, load_key, warn_expiry};
use super::{algorithms, provider, TlsError, VerifyError};
use crate::config::OutboundTls;

/// Outbound: accept any server certificate at the TLS layer; verification
/// is done after the handshake so "may"/"encrypt" can log the result.
#[derive(Debug)]
struct AnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// Client-side TLS for one destination.
pub struct ClientTls {
    /// The rustls config.
    pub config: Arc<rustls::ClientConfig>,
    pub(super) roots: Arc<RootCertStore>,
    /// The policy.
    pub policy: OutboundTls,
    /// DANE (`policy` = Dane): the verifier holding the host's TLSA records.
    pub dane: Option<Arc<super::dane::DaneVerifier>>,
}

/// The system CA bundle used for "verify" when no CA files are given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl ClientTls {
    /// Builds the client config for a destination.
    pub fn build(policy: OutboundTls, ca_files: &[PathBuf], client_cert: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for p in ca_files {
            for c in load_certs(p)? {
                roots.add(c).map_err(|source| TlsError::UnusableCa { path: p.clone(), source })?;
            }
        }
        let roots = Arc::new(roots);
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Versions)?;
        let builder = builder.dangerous().with_custom_certificate_verifier(server_verifier(policy, &roots)?);
        let config = match client_cert {
            Some((c, k)) => {
                let chain = load_certs(c)?;
                warn_expiry("client certificate", c, &chain[..1]);
                builder
                    .with_client_auth_cert(chain, load_key(k)?)
                    .map_err(|source| TlsError::ClientCertificate { certificate: c.to_path_buf(), source })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config), roots, policy, dane: None })
    }

    /// After a handshake: did the server's certificate verify for `name`?
    pub fn verify_peer(&self, conn: &rustls::ClientConnection, name: &str) -> Result<(), VerifyError> {
        self.verify_chain(conn.peer_certificates().ok_or(VerifyError::NoServerCertificate)?, name)
    }

    /// Does this chain (end entity first) verify for `name` against our CAs?
    pub fn verify_chain(&self, chain: &[CertificateDer<'_>], name: &str) -> Result<(), VerifyError> {
        if chain.is_empty() {
            return Err(VerifyError::NoServerCertificate);
        }
        if self.roots.is_empty() {
            return Err(VerifyError::NoCa);
        }
        let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(VerifyError::Unparsable)?;
        let algs = algorithms();
        ee.verify_for_usage(algs.all, &self.roots.roots, &chain[1..], UnixTime::now(), webpki::KeyUsage::server_auth(), None, None)
            .map_err(VerifyError::Rejected)?;
        let sn = ServerName::try_from(name.to_string()).map_err(VerifyError::BadName)?;
        ee.verify_is_valid_for_subject_name(&sn).map_err(|_| VerifyError::WrongName(name.to_string()))
    }
}

/// The server certificate verifier for `policy`: WebPKI against `roots`
/// for "verify", else one that accepts any certificate (checked after the
/// handshake by [`ClientTls::verify_peer`]).
pub(super) fn server_verifier(policy: OutboundTls, roots: &Arc<RootCertStore>) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    Ok(if policy == OutboundTls::Verify {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build().map_err(TlsError::ServerCa)?
    } else {
        Arc::new(AnyServerCert { algs: algorithms() })
    })
}

/// Describes a finished client handshake for the log.
pub fn client_summary(conn: &rustls::ClientConnection) -> String {
    let v = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let c = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    format!("{v} {c}")
}
