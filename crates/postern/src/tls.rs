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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::{ClientCertMode, OutboundTls};
use crate::maillog;
use crate::settings::Settings;

/// Days before expiry at which the log warns.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Errors loading TLS material; the text names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn err(s: impl Into<String>) -> TlsError {
    TlsError(s.into())
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

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| err(format!("{}: cannot read: {e}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{}: bad PEM certificate: {e:?}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!("{}: no certificate found", path.display())));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| err(format!("{}: cannot read: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| err(format!("{}: no usable private key: {e:?}", path.display())))
}

fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(p).map_err(|e| err(format!("{}: cannot read: {e}", p.display())))?;
        for crl in CertificateRevocationListDer::pem_slice_iter(&data) {
            out.push(crl.map_err(|e| err(format!("{}: bad CRL: {e:?}", p.display())))?);
        }
    }
    Ok(out)
}

/// Facts about a certificate, for logs, `Received:` and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN (RFC 4514 style).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject alternative names: `DNS:name`, `email:addr`, `IP:addr`.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate.
    pub sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Expiry, unix seconds.
    pub not_after: i64,
}

/// Parses a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| err(format!("bad certificate: {e}")))?;
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
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        sha256: sha256_hex(der),
        spki_sha256: sha256_hex(cert.tbs_certificate.subject_pki.raw),
        not_after: cert.validity().not_after.timestamp(),
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

/// Accepts any client certificate at the TLS layer (handshake signatures
/// are still verified); used for the `optional` mode.
#[derive(Debug)]
struct RequestAnyClientCert {
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
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
        // Deliberately no chain check here: `identify` does it after the
        // handshake and records the result instead of failing.
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
    required: Option<Arc<rustls::ServerConfig>>,
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

/// Client-certificate verification material (CAs, CRLs), usable without
/// the server's own certificate (`postern explain`).
#[derive(Clone)]
pub struct CertVerifier {
    roots: Arc<RootCertStore>,
    anchor_names: Vec<(Vec<u8>, String)>,
    crls: Vec<CertificateRevocationListDer<'static>>,
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
                roots.add(c).map_err(|e| err(format!("{}: not a usable CA certificate: {e}", p.display())))?;
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
                    },
                    verified: Err(e.to_string()),
                })
            }
        };
        let verified = self.verify_client_chain(chain);
        Some(ClientCertIdentity { cert, verified })
    }

    fn verify_client_chain(&self, chain: &[CertificateDer<'_>]) -> Result<String, String> {
        if self.roots.is_empty() {
            return Err("no client CA configured".into());
        }
        let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("{e:?}"))?;
        let owned: Vec<webpki::OwnedCertRevocationList> = self
            .crls
            .iter()
            .filter_map(|c| webpki::OwnedCertRevocationList::from_der(c.as_ref()).ok())
            .collect();
        let crls: Vec<webpki::CertRevocationList<'_>> = owned.into_iter().map(webpki::CertRevocationList::from).collect();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::EndEntity)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .build()
        });
        let algs = algorithms();
        let path = ee
            .verify_for_usage(
                algs.all,
                &self.roots.roots,
                &chain[1..],
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                revocation,
                None,
            )
            .map_err(|e| describe_webpki(&e))?;
        let subject = path.anchor().subject.as_ref();
        Ok(self.anchor_names.iter().find(|(s, _)| s == subject).map(|(_, n)| n.clone()).unwrap_or_else(|| "a configured CA".into()))
    }

}

/// Where the server certificate and key are, after defaults.
pub fn server_paths(s: &Settings) -> (PathBuf, PathBuf) {
    match (&s.config.tls.certificate, &s.config.tls.key) {
        (Some(c), Some(k)) => (s.resolve(c), s.resolve(k)),
        _ => (s.data_dir.join("tls/server.crt"), s.data_dir.join("tls/server.key")),
    }
}

/// CA files for client certificates, after defaults.
pub fn client_ca_paths(s: &Settings) -> Vec<PathBuf> {
    match &s.config.tls.client_ca_files {
        Some(v) => v.iter().map(|p| s.resolve(p)).collect(),
        None => {
            let p = s.data_dir.join("ca/ca.crt");
            if p.exists() {
                vec![p]
            } else {
                Vec::new()
            }
        }
    }
}

/// CRL files, after defaults.
pub fn crl_paths(s: &Settings) -> Vec<PathBuf> {
    match &s.config.tls.crl_files {
        Some(v) => v.iter().map(|p| s.resolve(p)).collect(),
        None => {
            let p = s.data_dir.join("ca/crl.pem");
            if p.exists() {
                vec![p]
            } else {
                Vec::new()
            }
        }
    }
}

/// Creates the self-signed default certificate if no certificate is
/// configured and none exists yet. Returns its fingerprint when created.
pub fn ensure_default_certificate(s: &Settings) -> Result<Option<String>, TlsError> {
    if s.config.tls.certificate.is_some() {
        return Ok(None);
    }
    let (cert_path, key_path) = server_paths(s);
    if cert_path.exists() && key_path.exists() {
        return Ok(None);
    }
    let dir = cert_path.parent().unwrap_or(&s.data_dir).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let mut names = vec![s.hostname.clone()];
    if s.hostname != "localhost" {
        names.push("localhost".into());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(format!("key generation: {e}")))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| err(format!("certificate: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, s.hostname.clone());
    params.not_before = rcgen::date_time_ymd(2000, 1, 1).max(time::OffsetDateTime::now_utc() - time::Duration::days(1));
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(825);
    let cert = params.self_signed(&key).map_err(|e| err(format!("self-signing: {e}")))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| err(format!("{}: {e}", cert_path.display())))?;
    Ok(Some(sha256_hex(cert.der())))
}

/// Writes a file readable only by its owner (private keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Logs a warning for certificates that expire within 30 days.
pub fn warn_expiry(what: &str, path: &Path, certs: &[CertificateDer<'_>]) {
    let now = chrono::Utc::now().timestamp();
    for c in certs {
        if let Ok(info) = cert_info(c) {
            let days = (info.not_after - now) / 86400;
            if days < EXPIRY_WARNING_DAYS {
                let state = if info.not_after < now { "expired" } else { "expires soon" };
                maillog::event(
                    "tls",
                    &[
                        ("warning", state),
                        ("what", what),
                        ("file", &path.display().to_string()),
                        ("subject", &info.subject),
                        ("days_left", &days.to_string()),
                    ],
                );
            }
        }
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
                .map_err(|e| err(format!("TLS versions: {e}")))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| err(format!("{} / {}: certificate and key do not match or are unusable: {e}", cert_path.display(), key_path.display())))?;
            cfg.alpn_protocols = Vec::new();
            Ok(Arc::new(cfg))
        };
        let hints: Vec<DistinguishedName> = roots.subjects();
        let none = build(WebPkiClientVerifier::no_client_auth())?;
        let optional = build(Arc::new(RequestAnyClientCert { hints, algs: algorithms() }))?;
        let required = if roots.is_empty() {
            None
        } else {
            let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .with_crls(crls.clone())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| err(format!("client CA: {e}")))?;
            Some(build(v)?)
        };
        let server_cert = chain[0].as_ref().to_vec();
        Ok(ServerTls { none, optional, required, verifier, fingerprint, server_cert, files })
    }

    /// The rustls config for a client-certificate mode. `required` without
    /// any CA configured cannot verify anything; it then refuses every
    /// client (fail closed) by falling back to an empty-trust verifier.
    pub fn config(&self, mode: ClientCertMode) -> Arc<rustls::ServerConfig> {
        match mode {
            ClientCertMode::None => self.none.clone(),
            ClientCertMode::Optional => self.optional.clone(),
            ClientCertMode::Required => match &self.required {
                Some(c) => c.clone(),
                None => self.optional.clone(),
            },
        }
    }

    /// True when `required` can be honoured (a client CA is configured).
    pub fn can_require(&self) -> bool {
        self.required.is_some()
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

fn describe_webpki(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "unknown issuer".into(),
        webpki::Error::CertExpired { .. } => "certificate expired".into(),
        webpki::Error::CertNotValidYet { .. } => "certificate not valid yet".into(),
        webpki::Error::CertRevoked => "certificate revoked".into(),
        webpki::Error::InvalidSignatureForPublicKey => "bad signature (look-alike issuer?)".into(),
        other => format!("{other:?}"),
    }
}

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
    roots: Arc<RootCertStore>,
    /// The policy.
    pub policy: OutboundTls,
}

/// The system CA bundle used for "verify" when no CA files are given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl ClientTls {
    /// Builds the client config for a destination.
    pub fn build(
        policy: OutboundTls,
        ca_files: &[PathBuf],
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for p in ca_files {
            for c in load_certs(p)? {
                roots.add(c).map_err(|e| err(format!("{}: not a usable CA certificate: {e}", p.display())))?;
            }
        }
        let roots = Arc::new(roots);
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err(format!("TLS versions: {e}")))?;
        let builder = if policy == OutboundTls::Verify {
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| err(format!("smarthost CA: {e}")))?;
            builder.with_webpki_verifier(v)
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCert { algs: algorithms() }))
        };
        let config = match client_cert {
            Some((c, k)) => {
                let chain = load_certs(c)?;
                warn_expiry("client certificate", c, &chain[..1]);
                builder
                    .with_client_auth_cert(chain, load_key(k)?)
                    .map_err(|e| err(format!("{}: client certificate and key unusable: {e}", c.display())))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { config: Arc::new(config), roots, policy })
    }

    /// After a handshake: did the server's certificate verify for `name`?
    pub fn verify_peer(&self, conn: &rustls::ClientConnection, name: &str) -> Result<(), String> {
        let chain = conn.peer_certificates().ok_or("no server certificate")?;
        if self.roots.is_empty() {
            return Err("no CA to verify against".into());
        }
        let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| format!("{e:?}"))?;
        let algs = algorithms();
        ee.verify_for_usage(algs.all, &self.roots.roots, &chain[1..], UnixTime::now(), webpki::KeyUsage::server_auth(), None, None)
            .map_err(|e| describe_webpki(&e))?;
        let sn = ServerName::try_from(name.to_string()).map_err(|e| format!("{e}"))?;
        ee.verify_is_valid_for_subject_name(&sn).map_err(|_| format!("certificate not valid for {name}"))
    }
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
