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
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::tls::{sha256_hex, write_private};

/// A CA error with a readable message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaError(pub String);

fn err(s: impl Into<String>) -> CaError {
    CaError(s.into())
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
        let text = std::fs::read_to_string(&p).map_err(|e| err(format!("{}: {e} (run `postern ca init` first)", p.display())))?;
        serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", p.display())))
    }

    fn save_index(&self, idx: &Index) -> Result<(), CaError> {
        let p = self.index_path();
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(idx).map_err(|e| err(e.to_string()))?)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| err(format!("{}: {e}", p.display())))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key_pem = std::fs::read_to_string(self.key_path()).map_err(|e| err(format!("{}: {e}", self.key_path().display())))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| err(format!("{}: {e}", self.key_path().display())))?;
        let cert_pem = std::fs::read_to_string(self.cert_path()).map_err(|e| err(format!("{}: {e}", self.cert_path().display())))?;
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| err(format!("{}: {e}", self.cert_path().display())))
    }

    /// Creates the CA (refuses to overwrite one).
    pub fn init(&self, name: &str, days: i64, rsa: bool) -> Result<Issued, CaError> {
        if self.key_path().exists() {
            return Err(err(format!("{} exists: the CA is already initialised", self.key_path().display())));
        }
        std::fs::create_dir_all(self.issued_dir()).map_err(|e| err(format!("{}: {e}", self.dir.display())))?;
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
        let cert = params.self_signed(&key).map_err(|e| err(e.to_string()))?;
        write_private(&self.key_path(), key.serialize_pem().as_bytes()).map_err(|e| err(e.to_string()))?;
        std::fs::write(self.cert_path(), cert.pem()).map_err(|e| err(format!("{}: {e}", self.cert_path().display())))?;
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
            return Err(err(format!("name {name:?}: use letters, digits, . _ - + = (it becomes a file name)")));
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
                SanType::Rfc822Name(s.clone().try_into().map_err(|e| err(format!("SAN {s}: {e}")))?)
            } else if let Ok(ip) = s.parse() {
                SanType::IpAddress(ip)
            } else {
                SanType::DnsName(s.clone().try_into().map_err(|e| err(format!("SAN {s}: {e}")))?)
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
        let cert = params.signed_by(&key, &issuer).map_err(|e| err(e.to_string()))?;
        let crt_path = self.issued_dir().join(format!("{safe}.crt"));
        let key_path = self.issued_dir().join(format!("{safe}.key"));
        std::fs::create_dir_all(self.issued_dir()).map_err(|e| err(e.to_string()))?;
        std::fs::write(&crt_path, cert.pem()).map_err(|e| err(format!("{}: {e}", crt_path.display())))?;
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| err(e.to_string()))?;
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
            .map(|p| crate::tls::load_certs(p).map_err(|e| err(e.to_string())).map(|mut v| v.remove(0)))
            .collect::<Result<_, _>>()?;
        let key = crate::tls::load_key(key).map_err(|e| err(e.to_string()))?;
        let certs: Vec<p12_keystore::Certificate> = chain
            .iter()
            .map(|c| p12_keystore::Certificate::from_der(c.as_ref()).map_err(|e| err(format!("{e:?}"))))
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
            .map_err(|e| err(format!("PKCS#12: {e:?}")))?;
        write_private(out, &der).map_err(|e| err(e.to_string()))
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
            .ok_or_else(|| err(format!("no issued certificate with serial {serial}")))?;
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
        let crl = params.signed_by(&issuer).map_err(|e| err(format!("CRL: {e}")))?;
        let pem = crl.pem().map_err(|e| err(format!("CRL: {e}")))?;
        let tmp = self.crl_path().with_extension("pem.tmp");
        std::fs::write(&tmp, pem).and_then(|_| std::fs::rename(&tmp, self.crl_path())).map_err(|e| err(e.to_string()))?;
        self.save_index(&idx)
    }
}

/// A new key pair: ECDSA P-256, or RSA with `rsa`.
fn new_key(rsa: bool) -> Result<KeyPair, CaError> {
    if !rsa {
        return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(e.to_string()));
    }
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::Generate;
    let k = rsa::PrivateKey::try_generate().map_err(|e| err(format!("RSA key generation: {e:?}")))?;
    let pem = k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| err(format!("RSA key encoding: {e}")))?;
    KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| err(format!("RSA key: {e}")))
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
