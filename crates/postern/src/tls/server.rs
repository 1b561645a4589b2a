//! Server TLS: the rustls server configs per client-certificate mode
//! (`none`, `optional`, `required`), rebuilt as a whole on reload, and the
//! facts a session keeps from its handshake ([`TlsInfo`]).
//!
//! May touch: the server certificate, key, client CA and CRL files (read,
//! through [`super::files`]). RFC 3207, RFC 8314; channel bindings per
//! RFC 5929 and RFC 9266.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use super::files::{client_ca_paths, crl_paths, load_certs, load_key, mtime, server_paths, warn_expiry};
use super::{algorithms, provider, sha256_hex, CertVerifier, ClientCertIdentity, TlsError};
use crate::config::ClientCertMode;
use crate::settings::Settings;

/// What a session knows about its TLS layer.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// "TLSv1.3" / "TLSv1.2".
    pub version: String,
    /// Cipher suite name.
    pub cipher: String,
    /// The client-certificate mode used for the handshake.
    pub mode: ClientCertMode,
    /// The client's certificate, if it sent one.
    pub client_cert: Option<ClientCertIdentity>,
    /// Channel bindings for SCRAM-*-PLUS.
    pub bindings: postern_wire::sasl::ChannelBindings,
}

impl TlsInfo {
    /// Collects facts from a finished server handshake.
    pub fn from_server(conn: &rustls::ServerConnection, tls: &ServerTls, mode: ClientCertMode) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "unknown".to_string(),
        };
        let cipher = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        let client_cert = conn.peer_certificates().and_then(|chain| tls.identify(chain));
        // RFC 9266 tls-exporter: TLS 1.3 only (TLS 1.2 would need extra care).
        let tls_exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let mut out = [0u8; 32];
            conn.export_keying_material(&mut out[..], b"EXPORTER-Channel-Binding", None).ok().map(|o| o.to_vec())
        } else {
            None
        };
        // RFC 5929 tls-server-end-point: hash of our certificate; SHA-256
        // for SHA-256/ECDSA-P256 and SHA-1/MD5-signed certificates (§4.1).
        let tls_server_end_point = Some(Sha256::digest(&tls.server_cert).to_vec());
        let bindings = postern_wire::sasl::ChannelBindings { tls_exporter, tls_server_end_point };
        TlsInfo { version, cipher, mode, client_cert, bindings }
    }
}

/// Our client-certificate verifier for the modes that do not chain-check
/// in the handshake (handshake signatures are still verified).
/// `optional`: asks, accepts any certificate or none (`identify` checks the
/// chain after the handshake and records the result instead of failing).
/// `refuse_all`: the `required` mode when no client CA is configured (F5:
/// fail closed; the config loader already refuses that setup, this covers a
/// CA file that went away): every certificate, and no certificate, fails.
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
    refuse_all: bool,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.refuse_all
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.refuse_all {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        }
        Ok(ClientCertVerified::assertion())
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

/// Server TLS for one load of the material; replaced as a whole on reload.
#[derive(Clone)]
pub struct ServerTls {
    none: Arc<rustls::ServerConfig>,
    optional: Arc<rustls::ServerConfig>,
    required: Arc<rustls::ServerConfig>,
    /// A client CA is configured: `required` can be satisfied.
    has_client_ca: bool,
    verifier: CertVerifier,
    /// SHA-256 of the server certificate.
    pub fingerprint: String,
    /// The server certificate (DER), for tls-server-end-point.
    pub server_cert: Vec<u8>,
    /// Files this was built from, with their modification times (reload on change).
    pub files: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("fingerprint", &self.fingerprint).finish()
    }
}

impl ServerTls {
    /// Loads the server certificate, key, client CAs and CRLs named by the settings.
    pub fn load(s: &Settings) -> Result<ServerTls, TlsError> {
        let (cert_path, key_path) = server_paths(s);
        let ca_paths = client_ca_paths(s);
        let crl_files = crl_paths(s);
        // Modification times are taken *before* reading, so a file that
        // changes while we read it is seen as changed again next time.
        let mut files: Vec<(PathBuf, Option<std::time::SystemTime>)> = Vec::new();
        for p in [cert_path.clone(), key_path.clone()]
            .into_iter()
            .chain(ca_paths.iter().cloned())
            .chain(crl_files.iter().cloned())
            .chain([s.data_dir.join("ca/ca.crt"), s.data_dir.join("ca/crl.pem")])
        {
            // The built-in CA's files are watched even before they exist, so
            // `postern ca init` / `ca revoke` take effect without a restart.
            if !files.iter().any(|(f, _)| *f == p) {
                let t = mtime(&p);
                files.push((p, t));
            }
        }
        let chain = load_certs(&cert_path)?;
        let key = load_key(&key_path)?;
        warn_expiry("server certificate", &cert_path, &chain[..1]);
        let fingerprint = sha256_hex(&chain[0]);

        let verifier = CertVerifier::load(s)?;
        let roots = verifier.roots.clone();
        let crls = verifier.crls.clone();

        let build = |verifier: Arc<dyn ClientCertVerifier>| -> Result<Arc<rustls::ServerConfig>, TlsError> {
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(TlsError::Versions)?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|source| TlsError::KeyMismatch { certificate: cert_path.clone(), key: key_path.clone(), source })?;
            cfg.alpn_protocols = Vec::new();
            Ok(Arc::new(cfg))
        };
        let hints: Vec<DistinguishedName> = roots.subjects();
        let none = build(WebPkiClientVerifier::no_client_auth())?;
        let optional = build(Arc::new(RequestClientCert { hints, algs: algorithms(), refuse_all: false }))?;
        let has_client_ca = !roots.is_empty();
        let required = if !has_client_ca {
            build(Arc::new(RequestClientCert { hints: Vec::new(), algs: algorithms(), refuse_all: true }))?
        } else {
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .with_crls(crls.clone())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status()
                .build()
                .map_err(TlsError::ClientCa)?;
            build(v)?
        };
        let server_cert = chain[0].as_ref().to_vec();
        Ok(ServerTls { none, optional, required, has_client_ca, verifier, fingerprint, server_cert, files })
    }

    /// The rustls config for a client-certificate mode. `required` without
    /// any CA configured cannot verify anything; it then refuses every
    /// client (fail closed, F5), never falls back to `optional`.
    pub fn config(&self, mode: ClientCertMode) -> Arc<rustls::ServerConfig> {
        match mode {
            ClientCertMode::None => self.none.clone(),
            ClientCertMode::Optional => self.optional.clone(),
            ClientCertMode::Required => self.required.clone(),
        }
    }

    /// True when `required` can be honoured (a client CA is configured).
    pub fn can_require(&self) -> bool {
        self.has_client_ca
    }

    /// Verifies a client chain after the handshake (WebPKI: signatures,
    /// validity, CA constraints, client-auth usage, CRLs) and describes it.
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCertIdentity> {
        self.verifier.identify(chain)
    }

    /// The same material, remembering other file times (after a refused reload).
    pub fn with_files(&self, files: Vec<(PathBuf, Option<std::time::SystemTime>)>) -> ServerTls {
        let mut c = self.clone();
        c.files = files;
        c
    }

    /// True if any file changed since this was loaded.
    pub fn files_changed(&self) -> bool {
        self.files.iter().any(|(p, t)| mtime(p) != *t)
    }

    /// The watched files with their current modification times.
    pub fn current_file_times(&self) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        self.files.iter().map(|(p, _)| (p.clone(), mtime(p))).collect()
    }
}
