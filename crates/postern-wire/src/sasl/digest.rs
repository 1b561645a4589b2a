//! DIGEST-MD5 (RFC 2831; obsolete per RFC 6331, so opt-in only): the
//! challenge, the directive parser and the response/`rspauth` values.
//!
//! May touch: nothing (bytes in, values out; randomness for the nonce).

use md5::Digest;
use subtle::ConstantTimeEq;

use super::{random_nonce, unknown_user_secret, utf8, Exchange, Need, SaslError, St, Step, Success};

/// The client's digest-response (RFC 2831 §2.1.2), the fields we check.
#[derive(Debug, Clone)]
pub(super) struct DigestResponse {
    pub(super) username: String,
    pub(super) realm: String,
    pub(super) nonce: String,
    pub(super) cnonce: String,
    pub(super) nc: String,
    pub(super) qop: String,
    pub(super) digest_uri: String,
    pub(super) response: String,
    pub(super) authzid: Option<String>,
}

impl Exchange {
    /// Sends the RFC 2831 §2.1.1 digest-challenge.
    pub(super) fn digest_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        if initial.is_some_and(|i| !i.is_empty()) {
            return Step::Fail(SaslError::Malformed("DIGEST-MD5 takes no initial response"));
        }
        let nonce = random_nonce();
        let challenge = format!("realm=\"{}\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess", self.hostname);
        self.st = St::DigestChallenge { nonce };
        Step::Challenge(challenge.into_bytes())
    }

    /// Parses and checks the digest-response, then asks for the secret.
    pub(super) fn digest_response(&mut self, nonce: &str, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        let d = match directives(text) {
            Ok(d) => d,
            Err(e) => return Step::Fail(e),
        };
        let get = |k: &str| d.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let (Some(username), Some(n), Some(cnonce), Some(nc), Some(response), Some(digest_uri)) =
            (get("username"), get("nonce"), get("cnonce"), get("nc"), get("response"), get("digest-uri"))
        else {
            return Step::Fail(SaslError::Malformed("DIGEST-MD5 response lacks a required directive"));
        };
        let qop = get("qop").unwrap_or_else(|| "auth".into());
        if n != nonce || qop != "auth" || nc != "00000001" || !digest_uri.to_ascii_lowercase().starts_with("smtp/") {
            return Step::Fail(SaslError::Malformed("DIGEST-MD5 nonce, qop, nc or digest-uri not acceptable"));
        }
        let authzid = get("authzid").filter(|z| !z.is_empty());
        if authzid.as_ref().is_some_and(|z| z != &username) {
            return Step::Fail(SaslError::BadAuthzid);
        }
        let r = DigestResponse {
            username: username.clone(),
            realm: get("realm").unwrap_or_default(),
            nonce: n,
            cnonce,
            nc,
            qop,
            digest_uri,
            response,
            authzid,
        };
        self.st = St::DigestSecret(Box::new(r));
        Step::Need(Need::Secret { authcid: username })
    }
}

/// Checks the response against the secret (`None`: unknown user); on
/// success the final data is `rspauth=...` (RFC 2831 §2.1.3).
pub(super) fn verify(r: &DigestResponse, secret: Option<String>) -> Step {
    let secret = secret.unwrap_or_else(unknown_user_secret);
    let got = r.response.to_ascii_lowercase();
    let utf8_urp = format!("{}:{}:{}", r.username, r.realm, secret).into_bytes();
    let mut urps = vec![utf8_urp];
    if let Some(l1) = latin1_urp(r, &secret) {
        urps.insert(0, l1);
    }
    let Some(urp) = urps.into_iter().find(|u| bool::from(value(r, u, "AUTHENTICATE").as_bytes().ct_eq(got.as_bytes()))) else {
        return Step::Fail(SaslError::BadCredentials);
    };
    let rspauth = format!("rspauth={}", value(r, &urp, ""));
    Step::Success(Success::new(r.username.clone(), Some(rspauth.into_bytes())))
}

/// Parses RFC 2831 directives: `key=value` or `key="quoted"`, comma-separated.
pub(super) fn directives(s: &str) -> Result<Vec<(String, String)>, SaslError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let k0 = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            return Err(SaslError::Malformed("DIGEST-MD5 directive without ="));
        }
        let key = s[k0..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(SaslError::Malformed("unterminated quoted string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    // quoted-pair: the next character as is (it may be multi-byte).
                    Some(b'\\') => {
                        i += 1;
                        if let Some(ch) = s.get(i..).and_then(|rest| rest.chars().next()) {
                            val.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                    Some(_) => {
                        let ch = s[i..].chars().next().unwrap_or(' ');
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let v0 = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[v0..i].trim().to_string();
        }
        out.push((key, val));
    }
    Ok(out)
}

fn md5(data: &[u8]) -> Vec<u8> {
    md5::Md5::digest(data).to_vec()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 2831 §2.1.2.1: with charset=utf-8, user, realm and password that all
/// fit ISO 8859-1 are hashed in ISO 8859-1 (GNU SASL does this; some
/// clients hash the UTF-8 bytes, so the caller tries both).
fn latin1_urp(r: &DigestResponse, password: &str) -> Option<Vec<u8>> {
    let s = format!("{}:{}:{}", r.username, r.realm, password);
    if s.is_ascii() {
        return None;
    }
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// RFC 2831 §2.1.2.1 response value over `urp` (`user:realm:password`),
/// `a2_prefix` "AUTHENTICATE" for the client's response, "" for the
/// server's rspauth.
pub(super) fn value(r: &DigestResponse, urp: &[u8], a2_prefix: &str) -> String {
    let mut a1 = md5(urp);
    a1.extend_from_slice(format!(":{}:{}", r.nonce, r.cnonce).as_bytes());
    if let Some(z) = &r.authzid {
        a1.extend_from_slice(format!(":{z}").as_bytes());
    }
    let ha1 = hex_lower(&md5(&a1));
    let ha2 = hex_lower(&md5(format!("{a2_prefix}:{}", r.digest_uri).as_bytes()));
    hex_lower(&md5(format!("{ha1}:{}:{}:{}:{}:{ha2}", r.nonce, r.nc, r.cnonce, r.qop).as_bytes()))
}
