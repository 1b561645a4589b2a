//! The built-in certificate authority (`postern ca …`), on rcgen.
//!
//! May touch: `DATA/ca/` only: `ca.key` (0600), `ca.crt`, `index.json` (what
//! was issued, serials, revocations), `crl.pem`, and `issued/NAME.{crt,key,p12}`.
//! The server trusts `ca.crt` for client certificates and honours `crl.pem`
//! by default (see `tls.rs`), and reloads when either changes.
//!
//! Keys are ECDSA P-256 by default; `--rsa` makes RSA-2048+ keys for old
//! clients. ring (our one crypto provider) cannot generate RSA keys, so
//! those come from the pure-Rust `rsa` crate; ring then signs with them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::tls::{sha256_hex, write_private, TlsError};

/// A CA error; each names the file, the input or the step.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `index.json` is missing or unreadable: the CA is not initialised.
    #[error("{}: {source} (run `postern ca init` first)", path.display())]
    NotInitialised {
        /// `DATA/ca/index.json`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `index.json` is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    Index {
        /// `DATA/ca/index.json`.
        path: PathBuf,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The index could not be serialised.
    #[error("{0}")]
    Serialize(#[source] serde_json::Error),
    /// A CA file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An I/O error on an issued file or the CRL.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The CA key or certificate is not usable PEM.
    #[error("{}: {source}", path.display())]
    CaPem {
        /// `ca.key` or `ca.crt`.
        path: PathBuf,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// `ca init` when a CA key already exists.
    #[error("{} exists: the CA is already initialised", .0.display())]
    Exists(PathBuf),
    /// A certificate name that cannot be a file name.
    #[error("name {0:?}: use letters, digits, . _ - + = (it becomes a file name)")]
    BadName(String),
    /// A subject alternative name rcgen does not accept.
    #[error("SAN {san}: {source}")]
    BadSan {
        /// The SAN as given.
        san: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// Generating a key or signing a certificate failed.
    #[error("{0}")]
    Sign(#[source] rcgen::Error),
    /// Reading or writing TLS material (certificates, keys, 0600 files).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A certificate p12-keystore cannot take.
    #[error("{0:?}")]
    P12Certificate(p12_keystore::error::Error),
    /// Writing the PKCS#12 bundle failed.
    #[error("PKCS#12: {0:?}")]
    Pkcs12(p12_keystore::error::Error),
    /// `ca revoke` with a serial that was never issued.
    #[error("no issued certificate with serial {0}")]
    NoSerial(String),
    /// Signing or encoding the CRL failed.
    #[error("CRL: {0}")]
    Crl(#[source] rcgen::Error),
    /// Generating an RSA key failed.
    #[error("RSA key generation: {0:?}")]
    RsaGenerate(Box<dyn std::error::Error + Send + Sync>),
    /// Encoding an RSA key as PKCS#8 failed.
    #[error("RSA key encoding: {0}")]
    RsaEncode(#[source] rsa::pkcs8::Error),
    /// rcgen refused the RSA key.
    #[error("RSA key: {0}")]
    RsaKey(#[source] rcgen::Error),
}

/// What kind of certificate was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The CA itself.
    Ca,
    /// A TLS server certificate.
    Server,
    /// A TLS client certificate.
    Client,
}

impl Kind {
    /// The name used in `index.json` and `postern ca list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ca => "ca",
            Kind::Server => "server",
            Kind::Client => "client",
        }
    }
}

/// One issued certificate in `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// Serial number, hex.
    pub serial: String,
    /// Kind.
    pub kind: Kind,
    /// Name given at issue time (file name under `issued/`).
    pub name: String,
    /// Subject DN.
    pub subject: String,
    /// SHA-256 of the certificate.
    pub sha256: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Revocation time, RFC 3339, if revoked.
    #[serde(default)]
    pub revoked: Option<String>,
}

/// `index.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    /// Next serial number.
    pub next_serial: u64,
    /// Next CRL number.
    #[serde(default)]
    pub next_crl: u64,
    /// Everything issued.
    pub issued: Vec<Issued>,
}

/// The CA directory.
pub struct Ca {
    dir: PathBuf,
}

impl Ca {
    /// The CA under `DATA/ca`.
    pub fn new(data_dir: &Path) -> Ca {
        Ca { dir: data_dir.join("ca") }
    }

    /// The CA certificate file.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The CRL file.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Where issued files go.
    pub fn issued_dir(&self) -> PathBuf {
        self.dir.join("issued")
    }

    fn load_index(&self) -> Result<Index, CaError> {
        let p = self.index_path();
        let text = std::fs::read_to_string(&p).map_err(|source| CaError::NotInitialised { path: p.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| CaError::Index { path: p, source })
    }

    fn save_index(&self, idx: &Index) -> Result<(), CaError> {
        let p = self.index_path();
        let bytes = serde_json::to_vec_pretty(idx).map_err(CaError::Serialize)?;
        crate::private_file::write(&p, "json.tmp", &bytes).map_err(|source| CaError::File { path: p.clone(), source })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key_pem = std::fs::read_to_string(self.key_path()).map_err(|source| CaError::File { path: self.key_path(), source })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::CaPem { path: self.key_path(), source })?;
        let cert_pem = std::fs::read_to_string(self.cert_path()).map_err(|source| CaError::File { path: self.cert_path(), source })?;
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CaError::CaPem { path: self.cert_path(), source })
    }

    /// Creates the CA (refuses to overwrite one).
    pub fn init(&self, name: &str, days: i64, rsa: bool) -> Result<Issued, CaError> {
        if self.key_path().exists() {
            return Err(CaError::Exists(self.key_path()));
        }
        crate::private_file::create_dirs(&self.issued_dir()).map_err(|source| CaError::File { path: self.dir.clone(), source })?;
        let key = new_key(rsa)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        params.serial_number = Some(SerialNumber::from(1u64));
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        write_private(&self.key_path(), key.serialize_pem().as_bytes())?;
        crate::private_file::write(&self.cert_path(), "crt.tmp", cert.pem().as_bytes())
            .map_err(|source| CaError::File { path: self.cert_path(), source })?;
        let issued = Issued {
            serial: "01".into(),
            kind: Kind::Ca,
            name: "ca".into(),
            subject: format!("CN={name}"),
            sha256: sha256_hex(cert.der()),
            not_after: rfc3339(params.not_after),
            revoked: None,
        };
        self.save_index(&Index { next_serial: 2, next_crl: 1, issued: vec![issued.clone()] })?;
        self.write_crl()?;
        Ok(issued)
    }

    /// Issues a server or client certificate signed by the CA. Returns the
    /// record and the paths of the certificate and key.
    pub fn issue(&self, kind: Kind, name: &str, sans: &[String], days: i64, rsa: bool) -> Result<(Issued, PathBuf, PathBuf), CaError> {
        if !crate::aliases::is_local_name(&name.to_ascii_lowercase()) && !name.contains('@') {
            return Err(CaError::BadName(name.to_string()));
        }
        let safe: String = name.chars().map(|c| if c == '@' { '_' } else { c }).collect();
        let issuer = self.issuer()?;
        let mut idx = self.load_index()?;
        let serial = idx.next_serial;
        idx.next_serial += 1;
        let key = new_key(rsa)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let mut all_sans: Vec<String> = sans.to_vec();
        if kind == Kind::Server && all_sans.is_empty() {
            all_sans.push(name.to_string());
        }
        for s in &all_sans {
            let san = if s.contains('@') {
                SanType::Rfc822Name(s.clone().try_into().map_err(|source| CaError::BadSan { san: s.clone(), source })?)
            } else if let Ok(ip) = s.parse() {
                SanType::IpAddress(ip)
            } else {
                SanType::DnsName(s.clone().try_into().map_err(|source| CaError::BadSan { san: s.clone(), source })?)
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match kind {
            Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            _ => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &issuer).map_err(CaError::Sign)?;
        let crt_path = self.issued_dir().join(format!("{safe}.crt"));
        let key_path = self.issued_dir().join(format!("{safe}.key"));
        crate::private_file::create_dirs(&self.issued_dir()).map_err(CaError::Io)?;
        crate::private_file::write(&crt_path, "crt.tmp", cert.pem().as_bytes())
            .map_err(|source| CaError::File { path: crt_path.clone(), source })?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        let issued = Issued {
            serial: format!("{serial:02X}"),
            kind,
            name: safe,
            subject: format!("CN={name}"),
            sha256: sha256_hex(cert.der()),
            not_after: rfc3339(params.not_after),
            revoked: None,
        };
        idx.issued.push(issued.clone());
        self.save_index(&idx)?;
        Ok((issued, crt_path, key_path))
    }

    /// Writes a password-protected PKCS#12 bundle (key, certificate, CA) for
    /// mail clients. 3DES + SHA-1 MAC: the combination Outlook, Thunderbird
    /// and macOS Keychain all import.
    pub fn pkcs12(&self, crt: &Path, key: &Path, password: &str, out: &Path) -> Result<(), CaError> {
        let chain: Vec<_> = [crt, &self.cert_path()]
            .iter()
            .map(|p| crate::tls::load_certs(p).map_err(CaError::Tls).map(|mut v| v.remove(0)))
            .collect::<Result<_, _>>()?;
        let key = crate::tls::load_key(key)?;
        let certs: Vec<p12_keystore::Certificate> = chain
            .iter()
            .map(|c| p12_keystore::Certificate::from_der(c.as_ref()).map_err(CaError::P12Certificate))
            .collect::<Result<_, _>>()?;
        let local_id = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(chain[0].as_ref()))[..20].to_vec();
        let mut ks = p12_keystore::KeyStore::new();
        ks.add_entry(
            "postern",
            p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(key.secret_der(), local_id, certs)),
        );
        let der = ks
            .writer(password)
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
            .write()
            .map_err(CaError::Pkcs12)?;
        Ok(write_private(out, &der)?)
    }

    /// Everything issued.
    pub fn list(&self) -> Result<Vec<Issued>, CaError> {
        Ok(self.load_index()?.issued)
    }

    /// Revokes a serial and rewrites the CRL.
    pub fn revoke(&self, serial: &str) -> Result<Issued, CaError> {
        let mut idx = self.load_index()?;
        let want = serial.trim_start_matches("0x").trim_start_matches('0').to_ascii_uppercase();
        let entry = idx
            .issued
            .iter_mut()
            .find(|i| i.serial.trim_start_matches('0') == want && i.kind != Kind::Ca)
            .ok_or_else(|| CaError::NoSerial(serial.to_string()))?;
        if entry.revoked.is_none() {
            entry.revoked = Some(rfc3339(OffsetDateTime::now_utc()));
        }
        let out = entry.clone();
        self.save_index(&idx)?;
        self.write_crl()?;
        Ok(out)
    }

    /// Writes `crl.pem` listing every revoked serial (valid 30 days;
    /// rewritten at every revocation).
    pub fn write_crl(&self) -> Result<(), CaError> {
        let issuer = self.issuer()?;
        let mut idx = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        let revoked = idx
            .issued
            .iter()
            .filter(|i| i.revoked.is_some())
            .filter_map(|i| u64::from_str_radix(&i.serial, 16).ok())
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: now,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(idx.next_crl.max(1)),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        idx.next_crl = idx.next_crl.max(1) + 1;
        let crl = params.signed_by(&issuer).map_err(CaError::Crl)?;
        let pem = crl.pem().map_err(CaError::Crl)?;
        crate::private_file::write(&self.crl_path(), "pem.tmp", pem.as_bytes()).map_err(CaError::Io)?;
        self.save_index(&idx)
    }
}

/// A new key pair: ECDSA P-256, or RSA with `rsa`.
fn new_key(rsa: bool) -> Result<KeyPair, CaError> {
    if !rsa {
        return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Sign);
    }
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::Generate;
    let k = rsa::PrivateKey::try_generate().map_err(|e| CaError::RsaGenerate(Box::new(e)))?;
    let pem = k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(CaError::RsaEncode)?;
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(CaError::RsaKey)
}

fn rfc3339(t: OffsetDateTime) -> String {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), 0).map(|d| d.to_rfc3339()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path());
        ca.init("Test CA", 3650, false).unwrap();
        assert!(ca.init("Again", 1, false).is_err());
        let (c, crt, key) = ca.issue(Kind::Client, "alice", &["alice@example.org".into()], 365, false).unwrap();
        assert_eq!(c.serial, "02");
        let info = crate::tls::cert_info(&crate::tls::load_certs(&crt).unwrap()[0]).unwrap();
        assert_eq!(info.subject, "CN=alice");
        assert_eq!(info.issuer, "CN=Test CA");
        assert_eq!(info.sans, vec!["email:alice@example.org"]);
        ca.pkcs12(&crt, &key, "pw", &dir.path().join("a.p12")).unwrap();
        let ks = p12_keystore::KeyStore::from_pkcs12(&std::fs::read(dir.path().join("a.p12")).unwrap(), "pw").unwrap();
        assert_eq!(ks.entries_count(), 1);
        let r = ca.revoke("2").unwrap();
        assert!(r.revoked.is_some());
        assert!(ca.revoke("99").is_err());
        assert!(std::fs::read_to_string(ca.crl_path()).unwrap().contains("BEGIN X509 CRL"));
        let (_, crt, _) = ca.issue(Kind::Server, "rsa.example", &[], 30, true).unwrap();
        assert!(!crate::tls::load_certs(&crt).unwrap().is_empty());
    }
}
