//! Reading TLS material (certificates, keys, CRLs), the default paths
//! under `DATA/`, the self-signed default certificate, expiry warnings.
//! The one place private keys are read and written.
//!
//! May touch: certificate, key, CA and CRL files (read); `DATA/tls/` (writes
//! the default certificate and key, the key 0600).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::{cert_info, sha256_hex, TlsError};
use crate::maillog;
use crate::settings::Settings;

/// Days before expiry at which the log warns.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadPemCertificate { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|source| TlsError::NoPrivateKey { path: path.to_path_buf(), source })
}

pub(super) fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(p).map_err(|source| TlsError::Read { path: p.clone(), source })?;
        for crl in CertificateRevocationListDer::pem_slice_iter(&data) {
            out.push(crl.map_err(|source| TlsError::BadCrl { path: p.clone(), source })?);
        }
    }
    Ok(out)
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
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write { path: dir.clone(), source })?;
    let mut names = vec![s.hostname.clone()];
    if s.hostname != "localhost" {
        names.push("localhost".into());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| TlsError::Generate { what: "key generation", source })?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|source| TlsError::Generate { what: "certificate", source })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, s.hostname.clone());
    params.not_before = rcgen::date_time_ymd(2000, 1, 1).max(time::OffsetDateTime::now_utc() - time::Duration::days(1));
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(825);
    let cert = params.self_signed(&key).map_err(|source| TlsError::Generate { what: "self-signing", source })?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|source| TlsError::Write { path: cert_path.clone(), source })?;
    Ok(Some(sha256_hex(cert.der())))
}

/// Writes a file readable only by its owner (private keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::private_file::write(path, "tmp", bytes).map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

pub(super) fn mtime(p: &Path) -> Option<std::time::SystemTime> {
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
                maillog::tls(&[
                    ("warning", state),
                    ("what", what),
                    ("file", &path.display().to_string()),
                    ("subject", &info.subject),
                    ("days_left", &days.to_string()),
                ]);
            }
        }
    }
}
