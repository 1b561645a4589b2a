//! DKIM signing: which mail is signed ([`should_sign`], pure), for which
//! domain ([`signing_domain`]: the From: domain, as opendkim does), which
//! header fields ([`signed_headers`]: opendkim's default list, From
//! oversigned), and the signature itself ([`sign`], relaxed/relaxed, `t=`
//! and optional `x=`) by `mail-auth`.
//!
//! May touch: a spool draft ([`sign_draft`]: read, then rewritten with the
//! signatures in front); keys are in memory. RFCs: 6376 §3.4 (relaxed
//! canonicalization), §3.5 (the tags), §5.4 (which fields to sign; §8.15
//! oversigning), 8463 (Ed25519), 5322 §3.6.2 (From:).

use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use super::keys::{KeySet, LoadedKey, PrivateKey};
use crate::config::Role;
use crate::spool::Draft;

/// The header fields signed by default: opendkim's `SignHeaders` default
/// (RFC 6376 §5.4.1) plus the MIME fields and Message-ID. Only fields the
/// message has are signed; From: is signed once more than it occurs
/// (oversigned, RFC 6376 §8.15), so a second From: cannot be added.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Sender",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
];

/// Where a message came from, as far as signing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The listener's role (`None`: the `sendmail` command, via the pickup).
    pub role: Option<Role>,
    /// The client authenticated with SMTP AUTH.
    pub authenticated: bool,
    /// The client may relay because of its client certificate (a rule
    /// matching the certificate decided).
    pub cert_relay: bool,
    /// The client's address is in `relay.networks` (opendkim's
    /// `InternalHosts`: the LAN's application servers, printers, cron
    /// hosts submit without AUTH and expect their mail signed).
    pub trusted_network: bool,
}

/// Is mail from `o` ours to sign? Submissions (authenticated, on a
/// submission listener, relayed by certificate, from `relay.networks`, or
/// local) are; inbound mail from other unauthenticated clients on an smtp
/// listener is not (signing it would vouch for mail we did not originate).
pub fn should_sign(o: &Origin) -> bool {
    match o.role {
        None => true,
        Some(Role::Submission | Role::Submissions) => true,
        Some(Role::Smtp) => o.authenticated || o.cert_relay || o.trusted_network,
    }
}

/// The header section: the text up to the first empty line.
fn header_section(text: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < text.len() {
        let end = text[i..].iter().position(|&b| b == b'\n').map_or(text.len(), |p| i + p + 1);
        let line = &text[i..end];
        if line == b"\r\n" || line == b"\n" {
            return &text[..i];
        }
        i = end;
    }
    text
}

/// The header fields of `text`, unfolded: `(name, value)`.
fn fields(text: &[u8]) -> Vec<(String, String)> {
    let head = String::from_utf8_lossy(header_section(text));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The domain of an address in a From:/sender value: the last `<...>`
/// if there is one, else the bare address; comments are dropped.
fn address_domain(value: &str) -> Option<String> {
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split_once('(').map_or(value, |(a, _)| a),
    };
    // The first address of a list (RFC 5322 §3.6.2 allows several).
    let addr = addr.split(',').next().unwrap_or_default().trim();
    let domain = addr.rsplit_once('@')?.1.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty() && !domain.contains([' ', '"', '<', '>'])).then_some(domain)
}

/// The domain that signs: the RFC 5322 From: domain (what DMARC aligns
/// with; opendkim's choice too), or the envelope sender's when there is no
/// From:. `None` for neither (a bounce without From:).
pub fn signing_domain(text: &[u8], envelope_sender: &str) -> Option<String> {
    let from = fields(text).into_iter().find(|(n, _)| n.eq_ignore_ascii_case("From"));
    match from {
        Some((_, v)) => address_domain(&v),
        None => address_domain(envelope_sender),
    }
}

/// The `h=` list for this message: each field of `wanted` (default
/// [`DEFAULT_HEADERS`]) the message has, once (mail-auth signs every
/// occurrence), then one more `From` (oversigned: no From: may be added).
pub fn signed_headers(text: &[u8], wanted: Option<&[String]>) -> Vec<String> {
    let present = fields(text);
    let has = |n: &str| present.iter().any(|(p, _)| p.eq_ignore_ascii_case(n));
    let mut list: Vec<String> = match wanted {
        Some(w) => w.iter().map(|s| s.trim().to_string()).collect(),
        None => DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
    };
    if !list.iter().any(|n| n.eq_ignore_ascii_case("From")) {
        list.insert(0, "From".into());
    }
    let mut out: Vec<String> = Vec::new();
    for n in list {
        if has(&n) && !out.iter().any(|o| o.eq_ignore_ascii_case(&n)) {
            out.push(n);
        }
    }
    // Listed twice: mail-auth signs every From: for the first and adds the
    // second as "not present" (RFC 6376 §5.4.2).
    out.push("From".into());
    out
}

/// Why a message could not be signed (the caller answers 451 4.7.0 or
/// keeps the drop file: never an unsigned 250).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key for this domain could not be loaded.
    #[error("DKIM key {label} unavailable: {reason}")]
    KeyUnavailable {
        /// `selector@domain`.
        label: String,
        /// Why.
        reason: String,
    },
    /// mail-auth failed to sign.
    #[error("DKIM signing with {label} failed: {reason}")]
    Sign {
        /// `selector@domain`.
        label: String,
        /// Why.
        reason: String,
    },
}

/// What signing added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The `DKIM-Signature:` fields, CRLF-terminated, to prepend.
    pub header: String,
    /// `selector@domain` of each signature (the mail log's `dkim=`).
    pub labels: Vec<String>,
}

/// A borrowed key as mail-auth's `SigningKey` (the keys stay in the
/// shared [`KeySet`]; both algorithms hash with SHA-256).
struct KeyRef<'a>(&'a PrivateKey);

impl SigningKey for KeyRef<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self.0 {
            PrivateKey::Rsa(k) => k.sign(input),
            PrivateKey::Ed25519(k) => k.sign(input),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self.0 {
            PrivateKey::Rsa(_) => Algorithm::RsaSha256,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }
}

/// Signs with one key.
fn sign_one(k: &LoadedKey, text: &[u8]) -> Result<String, SignError> {
    let label = k.label();
    let key = k.key.as_ref().map_err(|reason| SignError::KeyUnavailable { label: label.clone(), reason: reason.clone() })?;
    let mut signer = DkimSigner::from_key(KeyRef(key))
        .domain(k.domain.as_str())
        .selector(k.selector.as_str())
        .headers(signed_headers(text, k.headers.as_deref()))
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    if k.expire > 0 {
        signer = signer.expiration(k.expire);
    }
    let sig = signer.sign(text).map_err(|e| SignError::Sign { label: label.clone(), reason: e.to_string() })?;
    Ok(sig.to_header())
}

/// Signs `text` with every key for its signing domain. `Ok(None)`: no
/// `[[dkim]]` entry for that domain (the mail goes out unsigned, as
/// configured). One failing key fails the whole (no half-signed mail).
pub fn sign(keys: &KeySet, text: &[u8], envelope_sender: &str) -> Result<Option<Signed>, SignError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let Some(domain) = signing_domain(text, envelope_sender) else { return Ok(None) };
    let entries = keys.for_domain(&domain);
    if entries.is_empty() {
        return Ok(None);
    }
    let mut header = String::new();
    let mut labels = Vec::new();
    for k in entries {
        header.push_str(&sign_one(k, text)?);
        labels.push(k.label());
    }
    Ok(Some(Signed { header, labels }))
}

/// Signs a spool draft in place: its text is read back, and the
/// signatures are written in front of it, in the same file
/// ([`Draft::replace`]: nothing is durable until the commit, and the
/// commit still costs one flush). `Ok(labels)` as for the mail log's `dkim=`;
/// `Ok(None)`: no key for the domain. `Err`: why not (the caller refuses
/// with a temporary error).
pub fn sign_draft(keys: &KeySet, draft: &mut Draft, envelope_sender: &str) -> Result<Option<String>, String> {
    use std::io::Read;
    if keys.is_empty() {
        return Ok(None);
    }
    let mut text = Vec::with_capacity(usize::try_from(draft.written()).unwrap_or(0));
    draft.reader().map_err(|e| e.to_string())?.read_to_end(&mut text).map_err(|e| e.to_string())?;
    let Some(signed) = sign(keys, &text, envelope_sender).map_err(|e| e.to_string())? else { return Ok(None) };
    draft.replace(&[signed.header.as_bytes(), &text]).map_err(|e| e.to_string())?;
    Ok(Some(signed.labels.join(",")))
}

#[cfg(test)]
mod tests;
