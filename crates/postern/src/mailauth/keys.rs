//! DKIM keys: the `[[dkim]]` private keys loaded into memory (at start and
//! on every reload, so a signing never reads a file), the public half as a
//! DNS TXT record, and new key pairs for `postern dkim keygen`.
//!
//! May touch: the key files (read by [`KeySet::load`]; written 0600 by
//! [`write_new_key`]). RFCs: 6376 §3.6.1 (the key record), 8463 (Ed25519),
//! 8301 (RSA at least 1024, 2048 advised).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{DkimAlgorithm, DkimKey};

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable private key.
    #[error("{path}: {reason}")]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key could not be generated or written.
    #[error("{0}")]
    Generate(String),
}

/// A private key ready to sign.
pub enum PrivateKey {
    /// RSA (`a=rsa-sha256`).
    Rsa(RsaKey<Sha256>),
    /// Ed25519 (`a=ed25519-sha256`).
    Ed25519(Ed25519Key),
}

impl PrivateKey {
    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> DkimAlgorithm {
        match self {
            PrivateKey::Rsa(_) => DkimAlgorithm::RsaSha256,
            PrivateKey::Ed25519(_) => DkimAlgorithm::Ed25519Sha256,
        }
    }

    /// The DNS TXT record text (RFC 6376 §3.6.1): `v=DKIM1; k=...; p=...`,
    /// with the RSA key as a SubjectPublicKeyInfo (what opendkim, dkimpy and
    /// `openssl rsa -pubout` use) and the Ed25519 key raw (RFC 8463 §4).
    pub fn txt_record(&self) -> Result<String, KeyError> {
        let (k, der) = match self {
            PrivateKey::Rsa(k) => ("rsa", rsa_spki(&k.public_key())?),
            PrivateKey::Ed25519(k) => ("ed25519", k.public_key()),
        };
        Ok(format!("v=DKIM1; k={k}; p={}", base64::engine::general_purpose::STANDARD.encode(der)))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        write!(f, "PrivateKey({:?})", self.algorithm())
    }
}

/// A PKCS#1 RSAPublicKey as SubjectPublicKeyInfo DER.
fn rsa_spki(pkcs1: &[u8]) -> Result<Vec<u8>, KeyError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    let k = rsa::PublicKey::from_pkcs1_der(pkcs1).map_err(|e| KeyError::Generate(e.to_string()))?;
    let doc = k.to_public_key_der().map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(doc.as_bytes().to_vec())
}

/// Reads a private key: PKCS#8 PEM (RSA or Ed25519) or PKCS#1 PEM (RSA).
/// `want`: the configured algorithm, if any, which the key must match.
pub fn read_key(path: &Path, want: Option<DkimAlgorithm>) -> Result<PrivateKey, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
    let bad = |reason: String| KeyError::Parse { path: path.to_path_buf(), reason };
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(format!("no PEM private key ({e})")))?;
    let key = match der {
        PrivateKeyDer::Pkcs8(p8) => match Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der()) {
            Ok(k) => PrivateKey::Ed25519(k),
            Err(_) => RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(p8))
                .map(PrivateKey::Rsa)
                .map_err(|e| bad(format!("neither an Ed25519 nor a usable RSA key ({e})")))?,
        },
        der @ PrivateKeyDer::Pkcs1(_) => {
            RsaKey::<Sha256>::from_key_der(der).map(PrivateKey::Rsa).map_err(|e| bad(format!("RSA key: {e}")))?
        }
        _ => return Err(bad("an EC (SEC1) key: DKIM signs with RSA or Ed25519".into())),
    };
    // ring refuses RSA keys under 2048 bits (RFC 8301 §3.2 allows 1024).
    match want {
        Some(a) if a != key.algorithm() => Err(bad(format!("the key is {:?}, the config says algorithm {:?}", key.algorithm(), a))),
        _ => Ok(key),
    }
}

/// One loaded `[[dkim]]` entry.
#[derive(Debug)]
pub struct LoadedKey {
    /// `d=`, lower-case.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// Also sign for subdomains of `domain`.
    pub subdomains: bool,
    /// The header list override, if any.
    pub headers: Option<Vec<String>>,
    /// `x=` lifetime in seconds; 0: none.
    pub expire: u64,
    /// The key, or why it could not be loaded (mail for this domain then
    /// gets 451 4.7.0 instead of going out unsigned).
    pub key: Result<PrivateKey, String>,
    /// The key file, as resolved.
    pub file: PathBuf,
}

impl LoadedKey {
    /// `selector@domain`, as the mail log shows it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.selector, self.domain)
    }

    /// Does this entry sign mail from `domain` (lower-case)?
    pub fn covers(&self, domain: &str) -> bool {
        domain == self.domain || (self.subdomains && domain.strip_suffix(&self.domain).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// Every `[[dkim]]` key, loaded.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Arc<Vec<LoadedKey>>,
}

impl KeySet {
    /// Loads every configured key; `resolve` makes a relative path absolute
    /// (against the data directory). A key that fails is kept as a failure:
    /// `config check` and `serve` report it (preflight) and mail for its
    /// domain is refused with a 451 rather than sent unsigned.
    pub fn load(cfg: &[DkimKey], resolve: impl Fn(&Path) -> PathBuf) -> KeySet {
        let keys = cfg
            .iter()
            .map(|c| {
                let file = resolve(&c.key_file);
                LoadedKey {
                    domain: c.domain.trim_end_matches('.').to_ascii_lowercase(),
                    selector: c.selector.clone(),
                    subdomains: c.subdomains,
                    headers: c.headers.clone(),
                    expire: c.expire.as_secs(),
                    key: read_key(&file, c.algorithm).map_err(|e| e.to_string()),
                    file,
                }
            })
            .collect();
        KeySet { keys: Arc::new(keys) }
    }

    /// True if no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The first key that failed to load, as "DKIM key SEL@DOMAIN: file: reason".
    pub fn first_error(&self) -> Option<String> {
        self.keys.iter().find_map(|k| k.key.as_ref().err().map(|e| format!("DKIM key {}: {e}", k.label())))
    }

    /// Every entry, in config order (index = `dkim[i]`).
    pub fn entries(&self) -> &[LoadedKey] {
        &self.keys
    }

    /// The entries that sign for `domain` (lower-case). Entries for the
    /// domain itself win over subdomain entries of a parent.
    pub fn for_domain(&self, domain: &str) -> Vec<&LoadedKey> {
        let exact: Vec<&LoadedKey> = self.keys.iter().filter(|k| k.domain == domain).collect();
        if !exact.is_empty() {
            return exact;
        }
        // The closest parent with `subdomains = true`.
        let mut best: Vec<&LoadedKey> = Vec::new();
        for k in self.keys.iter().filter(|k| k.covers(domain)) {
            match best.first() {
                Some(b) if b.domain.len() > k.domain.len() => {}
                Some(b) if b.domain.len() == k.domain.len() => best.push(k),
                _ => best = vec![k],
            }
        }
        best
    }
}

/// The algorithm asked of `postern dkim keygen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKey {
    /// Ed25519 (ring).
    Ed25519,
    /// RSA with this many bits, 2048 to 4096 (the `rsa` crate: ring cannot
    /// generate RSA keys, and refuses to sign with fewer than 2048 bits).
    Rsa(usize),
}

/// The system's random numbers (rand's `OsRng`) as the `rand_core`
/// generator the `rsa` crate asks for.
struct SystemRng;

/// A failure of the system's random number generator.
#[derive(Debug, thiserror::Error)]
#[error("system random number generator: {0}")]
struct RngError(String);

impl rsa::rand_core::TryRng for SystemRng {
    type Error = RngError;
    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        use rand::TryRngCore;
        rand::rngs::OsRng.try_fill_bytes(dst).map_err(|e| RngError(e.to_string()))
    }
}

impl rsa::rand_core::TryCryptoRng for SystemRng {}

/// Makes a new private key as PKCS#8 PEM (readable by mail-auth, opendkim
/// and OpenSSL).
pub fn generate(kind: NewKey) -> Result<String, KeyError> {
    match kind {
        NewKey::Ed25519 => {
            // ring makes PKCS#8 v2 (with the public key), which OpenSSL,
            // and so opendkim, refuse; RFC 8410 §7's v1 form holds only the
            // 32-octet seed, and ring reads it too.
            let v2 = Ed25519Key::generate_pkcs8().map_err(|e| KeyError::Generate(e.to_string()))?;
            let v2 = PrivatePkcs8KeyDer::from(v2);
            let seed = v2
                .secret_pkcs8_der()
                .windows(4)
                .position(|w| w == [0x04, 0x22, 0x04, 0x20])
                .and_then(|i| v2.secret_pkcs8_der().get(i + 4..i + 36))
                .ok_or_else(|| KeyError::Generate("unexpected Ed25519 PKCS#8 layout".into()))?;
            let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
            v1.extend_from_slice(seed);
            Ok(pem_encode("PRIVATE KEY", &v1))
        }
        NewKey::Rsa(bits) => {
            use rsa::pkcs8::EncodePrivateKey;
            if !(2048..=4096).contains(&bits) {
                return Err(KeyError::Generate(format!("--bits {bits}: RSA keys for DKIM are 2048 to 4096 bits (2048 advised)")));
            }
            let k = rsa::PrivateKey::new(&mut SystemRng, bits).map_err(|e| KeyError::Generate(e.to_string()))?;
            let pem = k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(pem.to_string())
        }
    }
}

/// The DER of a PKCS#8 v1 Ed25519 key up to its 32-octet seed (RFC 8410
/// §7: SEQUENCE, version 0, algorithm id-Ed25519, OCTET STRING of the
/// CurvePrivateKey OCTET STRING).
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// PEM with 64-column base64 lines (RFC 7468).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a new key file 0600 (refusing to overwrite one).
pub fn write_new_key(path: &Path, pem: &str) -> Result<(), KeyError> {
    if path.exists() {
        return Err(KeyError::Generate(format!("{} exists: remove it or pick another --selector", path.display())));
    }
    if let Some(dir) = path.parent() {
        crate::private_file::create_dirs(dir).map_err(|e| KeyError::Generate(format!("{}: {e}", dir.display())))?;
    }
    crate::private_file::write(path, "tmp", pem.as_bytes()).map_err(|e| KeyError::Generate(format!("{}: {e}", path.display())))
}

/// The zone-file line for a key record: `SEL._domainkey.DOMAIN. IN TXT
/// "..." "..."`, the text cut into strings of at most 255 octets (RFC 1035
/// §3.3.14: a character-string is at most 255 octets; RSA-2048 needs two).
pub fn zone_line(domain: &str, selector: &str, txt: &str) -> String {
    let parts: Vec<String> = txt.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    format!("{selector}._domainkey.{domain}. IN TXT {}", parts.join(" "))
}

#[cfg(test)]
mod tests;
