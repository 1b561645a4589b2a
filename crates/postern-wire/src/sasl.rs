//! SASL server mechanisms as I/O-free step machines (RFC 4422), for SMTP
//! AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login),
//! CRAM-MD5 (RFC 2195), SCRAM-SHA-1/SHA-256 and -PLUS (RFC 5802, RFC 7677,
//! channel binding RFC 5929 `tls-server-end-point` and RFC 9266
//! `tls-exporter`), EXTERNAL (RFC 4422 appendix A).
//!
//! The machines never look anything up: when they need a password check,
//! a stored secret or SCRAM keys they return [`Step::Need`], and the caller
//! answers with [`Exchange::provide`]. Base64 is the caller's business too
//! (this module takes and returns raw bytes). Written by hand because SASL
//! server mechanisms are small and owning them keeps channel binding and
//! policy in our types (no maintained crate covers the server side of all
//! of these without a C library).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Mechanisms we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The LOGIN mechanism Microsoft clients use.
    Login,
    /// RFC 2195.
    CramMd5,
    /// RFC 2831 (obsolete, RFC 6331; opt-in only).
    DigestMd5,
    /// RFC 5802.
    ScramSha1,
    /// RFC 7677.
    ScramSha256,
    /// RFC 7677 with channel binding.
    ScramSha256Plus,
    /// RFC 4422 appendix A: identity from the TLS client certificate.
    External,
}

impl Mechanism {
    /// Parses an upper-case mechanism name.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Some(match name {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            "CRAM-MD5" => Mechanism::CramMd5,
            "DIGEST-MD5" => Mechanism::DigestMd5,
            "SCRAM-SHA-1" => Mechanism::ScramSha1,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "SCRAM-SHA-256-PLUS" => Mechanism::ScramSha256Plus,
            "EXTERNAL" => Mechanism::External,
            _ => return None,
        })
    }

    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::DigestMd5 => "DIGEST-MD5",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// True if the server must keep a plaintext-equivalent secret for it.
    pub fn needs_plaintext_secret(self) -> bool {
        matches!(self, Mechanism::CramMd5 | Mechanism::DigestMd5)
    }
}

/// SCRAM hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// SCRAM keys for one user and hash (what the server stores, RFC 5802 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    /// Salt.
    pub salt: Vec<u8>,
    /// Iteration count.
    pub iterations: u32,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

fn hmac(h: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match h {
        ScramHash::Sha1 => {
            let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        ScramHash::Sha256 => {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(h: ScramHash, data: &[u8]) -> Vec<u8> {
    match h {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

impl ScramKeys {
    /// Derives the stored keys from a password (user add / passwd).
    pub fn derive(h: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = match h {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password.as_bytes(), salt, iterations).to_vec(),
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations).to_vec(),
        };
        let client_key = hmac(h, &salted, b"Client Key");
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash(h, &client_key),
            server_key: hmac(h, &salted, b"Server Key"),
        }
    }
}

/// Channel-binding data from the TLS layer (for SCRAM-*-PLUS).
#[derive(Clone, Debug, Default)]
pub struct ChannelBindings {
    /// RFC 9266 `tls-exporter` (TLS 1.3 only).
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point`.
    pub tls_server_end_point: Option<Vec<u8>>,
}

/// What the machine needs from the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Check this password for `authcid` (PLAIN, LOGIN); answer [`Provide::PasswordOk`].
    CheckPassword {
        /// The user.
        authcid: String,
        /// The password as sent.
        password: String,
    },
    /// The user's plaintext-equivalent secret (CRAM-MD5, DIGEST-MD5); answer [`Provide::Secret`].
    Secret {
        /// The user.
        authcid: String,
    },
    /// SCRAM keys for the user; answer [`Provide::Scram`].
    Scram {
        /// The user.
        authcid: String,
        /// Which hash.
        hash: ScramHash,
    },
}

/// The caller's answer to a [`Need`].
#[derive(Clone, Debug)]
pub enum Provide {
    /// Result of the password check.
    PasswordOk(bool),
    /// The secret, or `None` for an unknown user.
    Secret(Option<String>),
    /// The keys, or `None` for an unknown user.
    Scram(Option<ScramKeys>),
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4): 501 5.7.0.
    #[error("exchange cancelled")]
    Cancelled,
    /// Malformed client message: 501 5.5.2.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Bad credentials: 535 5.7.8.
    #[error("authentication failed")]
    BadCredentials,
    /// The authorization identity is not allowed for this user: 535 5.7.8.
    #[error("authorization identity not permitted")]
    BadAuthzid,
    /// Channel binding missing, wrong or downgraded: 535 5.7.8.
    #[error("channel binding failed: {0}")]
    ChannelBinding(&'static str),
    /// No identity for EXTERNAL (no verified, mapped certificate): 535 5.7.8.
    #[error("no usable client certificate")]
    NoExternalIdentity,
}

/// One step of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (334) and feed the client's response to [`Exchange::respond`].
    Challenge(Vec<u8>),
    /// Answer with [`Exchange::provide`].
    Need(Need),
    /// Authenticated. `final_data`, if any, goes in a last 334 whose empty
    /// response the caller must read before replying 235 (RFC 4954 §4).
    Success {
        /// The authenticated user.
        authcid: String,
        /// Additional server data for the client (SCRAM server-final).
        final_data: Option<Vec<u8>>,
    },
    /// Failed.
    Fail(SaslError),
}

#[derive(Debug)]
enum St {
    PlainWait,
    ExternalWait,
    LoginUser,
    LoginPass { user: String },
    WaitPassword { authcid: String },
    CramChallenge { challenge: String },
    CramSecret { user: String, digest: Vec<u8>, challenge: String },
    DigestChallenge { nonce: String },
    DigestSecret(Box<DigestResponse>),
    ScramFirst,
    ScramKeys(Box<ScramState>),
    ScramFinal(Box<ScramState>, ScramKeys),
    Done,
}

#[derive(Debug, Clone)]
struct DigestResponse {
    username: String,
    realm: String,
    nonce: String,
    cnonce: String,
    nc: String,
    qop: String,
    digest_uri: String,
    response: String,
    authzid: Option<String>,
}

/// Parses RFC 2831 directives: `key=value` or `key="quoted"`, comma-separated.
fn digest_directives(s: &str) -> Result<Vec<(String, String)>, SaslError> {
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
                    Some(b'\\') => {
                        if let Some(&c) = b.get(i + 1) {
                            val.push(c as char);
                        }
                        i += 2;
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

/// RFC 2831 §2.1.2.1 response value (`a2_prefix` "AUTHENTICATE" for the
/// client's response, "" for the server's rspauth).
#[cfg(test)]
fn digest_value(r: &DigestResponse, password: &str, a2_prefix: &str) -> String {
    digest_value_bytes(r, format!("{}:{}:{}", r.username, r.realm, password).as_bytes(), a2_prefix)
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

fn digest_value_bytes(r: &DigestResponse, urp: &[u8], a2_prefix: &str) -> String {
    let mut a1 = md5(urp);
    a1.extend_from_slice(format!(":{}:{}", r.nonce, r.cnonce).as_bytes());
    if let Some(z) = &r.authzid {
        a1.extend_from_slice(format!(":{z}").as_bytes());
    }
    let ha1 = hex_lower(&md5(&a1));
    let ha2 = hex_lower(&md5(format!("{a2_prefix}:{}", r.digest_uri).as_bytes()));
    hex_lower(&md5(format!("{ha1}:{}:{}:{}:{}:{ha2}", r.nonce, r.nc, r.cnonce, r.qop).as_bytes()))
}

#[derive(Debug, Clone)]
struct ScramState {
    hash: ScramHash,
    authcid: String,
    gs2_header: String,
    client_first_bare: String,
    nonce: String,
    server_first: String,
    cb_data: Vec<u8>,
}

/// One SASL exchange.
#[derive(Debug)]
pub struct Exchange {
    mech: Mechanism,
    st: St,
    hostname: String,
    bindings: ChannelBindings,
    /// Offered SCRAM-*-PLUS (to detect the `y` downgrade).
    plus_offered: bool,
    external: Option<String>,
}

fn random_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

fn utf8(b: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(b).map_err(|_| SaslError::Malformed("not UTF-8"))
}

impl Exchange {
    /// Starts an exchange. `plus_offered`: SCRAM-*-PLUS is advertised on this
    /// connection. `external`: the user a verified client certificate maps to.
    pub fn new(mech: Mechanism, hostname: &str, bindings: ChannelBindings, plus_offered: bool, external: Option<String>) -> Exchange {
        Exchange { mech, st: St::Done, hostname: hostname.to_string(), bindings, plus_offered, external }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// First step, with the optional initial response (already base64-decoded;
    /// `Some(vec![])` for an empty initial response `=`).
    pub fn start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match self.mech {
            Mechanism::Plain => match initial {
                Some(data) => self.plain(&data),
                None => {
                    self.st = St::PlainWait;
                    Step::Challenge(Vec::new())
                }
            },
            Mechanism::Login => match initial {
                // `AUTH LOGIN <base64 user>` (initial response, RFC 4954 style).
                Some(user) if !user.is_empty() => match utf8(&user) {
                    Ok(u) => {
                        self.st = St::LoginPass { user: u.to_string() };
                        Step::Challenge(b"Password:".to_vec())
                    }
                    Err(e) => Step::Fail(e),
                },
                _ => {
                    self.st = St::LoginUser;
                    Step::Challenge(b"Username:".to_vec())
                }
            },
            Mechanism::CramMd5 => {
                if initial.is_some_and(|i| !i.is_empty()) {
                    return Step::Fail(SaslError::Malformed("CRAM-MD5 takes no initial response"));
                }
                let challenge = format!("<{}.{}@{}>", rand::random::<u32>(), std::process::id(), self.hostname);
                self.st = St::CramChallenge { challenge: challenge.clone() };
                Step::Challenge(challenge.into_bytes())
            }
            Mechanism::DigestMd5 => {
                if initial.is_some_and(|i| !i.is_empty()) {
                    return Step::Fail(SaslError::Malformed("DIGEST-MD5 takes no initial response"));
                }
                let nonce = random_nonce();
                let challenge = format!(
                    "realm=\"{}\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess",
                    self.hostname
                );
                self.st = St::DigestChallenge { nonce };
                Step::Challenge(challenge.into_bytes())
            }
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => {
                self.st = St::ScramFirst;
                match initial {
                    Some(data) if !data.is_empty() => self.scram_first(&data),
                    _ => Step::Challenge(Vec::new()),
                }
            }
            Mechanism::External => match initial {
                Some(data) => self.external(&data),
                None => {
                    self.st = St::ExternalWait;
                    Step::Challenge(Vec::new())
                }
            },
        }
    }

    /// Feeds the client's (base64-decoded) response to the last challenge.
    pub fn respond(&mut self, data: &[u8]) -> Step {
        match std::mem::replace(&mut self.st, St::Done) {
            St::PlainWait => self.plain(data),
            St::ExternalWait => self.external(data),
            St::LoginUser => match utf8(data) {
                Ok(u) if !u.is_empty() => {
                    self.st = St::LoginPass { user: u.to_string() };
                    Step::Challenge(b"Password:".to_vec())
                }
                Ok(_) => Step::Fail(SaslError::Malformed("empty user name")),
                Err(e) => Step::Fail(e),
            },
            St::LoginPass { user } => match utf8(data) {
                Ok(p) => {
                    self.st = St::WaitPassword { authcid: user.clone() };
                    Step::Need(Need::CheckPassword { authcid: user, password: p.to_string() })
                }
                Err(e) => Step::Fail(e),
            },
            St::CramChallenge { challenge } => {
                let text = match utf8(data) {
                    Ok(t) => t,
                    Err(e) => return Step::Fail(e),
                };
                let Some((user, hexd)) = text.rsplit_once(' ') else {
                    return Step::Fail(SaslError::Malformed("expected `user digest`"));
                };
                let Ok(digest) = decode_hex(hexd) else { return Step::Fail(SaslError::Malformed("bad hex digest")) };
                self.st = St::CramSecret { user: user.to_string(), digest, challenge };
                Step::Need(Need::Secret { authcid: user.to_string() })
            }
            St::DigestChallenge { nonce } => self.digest_response(&nonce, data),
            St::ScramFirst => self.scram_first(data),
            St::ScramFinal(state, keys) => self.scram_final(*state, keys, data),
            _ => Step::Fail(SaslError::Malformed("unexpected response")),
        }
    }

    /// Answers a [`Step::Need`].
    pub fn provide(&mut self, p: Provide) -> Step {
        match (std::mem::replace(&mut self.st, St::Done), p) {
            (St::WaitPassword { authcid }, Provide::PasswordOk(true)) => Step::Success { authcid, final_data: None },
            (St::WaitPassword { .. }, Provide::PasswordOk(false)) => Step::Fail(SaslError::BadCredentials),
            (St::CramSecret { user, digest, challenge }, Provide::Secret(secret)) => {
                // Compute even for unknown users, so timing does not tell.
                let secret = secret.unwrap_or_else(|| format!("{:x}", rand::random::<u128>()));
                let mut m = <Hmac<md5::Md5> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
                m.update(challenge.as_bytes());
                let want = m.finalize().into_bytes();
                if bool::from(want.as_slice().ct_eq(&digest)) {
                    Step::Success { authcid: user, final_data: None }
                } else {
                    Step::Fail(SaslError::BadCredentials)
                }
            }
            (St::DigestSecret(r), Provide::Secret(secret)) => {
                let secret = secret.unwrap_or_else(|| format!("{:x}", rand::random::<u128>()));
                let got = r.response.to_ascii_lowercase();
                let utf8_urp = format!("{}:{}:{}", r.username, r.realm, secret).into_bytes();
                let mut urps = vec![utf8_urp];
                if let Some(l1) = latin1_urp(&r, &secret) {
                    urps.insert(0, l1);
                }
                let Some(urp) = urps.into_iter().find(|u| bool::from(digest_value_bytes(&r, u, "AUTHENTICATE").as_bytes().ct_eq(got.as_bytes())))
                else {
                    return Step::Fail(SaslError::BadCredentials);
                };
                let rspauth = format!("rspauth={}", digest_value_bytes(&r, &urp, ""));
                Step::Success { authcid: r.username.clone(), final_data: Some(rspauth.into_bytes()) }
            }
            (St::ScramKeys(state), Provide::Scram(keys)) => {
                // Unknown users get a fake, stable-looking salt (RFC 5802 §5.1
                // suggests not revealing whether the user exists).
                let keys = keys.unwrap_or_else(|| ScramKeys {
                    salt: Sha256::digest(format!("postern-fake-salt:{}", state.authcid)).to_vec()[..16].to_vec(),
                    iterations: 4096,
                    stored_key: vec![0; 32],
                    server_key: vec![0; 32],
                });
                let mut state = *state;
                state.nonce = format!("{}{}", state.nonce, random_nonce());
                state.server_first = format!("r={},s={},i={}", state.nonce, B64.encode(&keys.salt), keys.iterations);
                let challenge = state.server_first.clone().into_bytes();
                self.st = St::ScramFinal(Box::new(state), keys);
                Step::Challenge(challenge)
            }
            _ => Step::Fail(SaslError::Malformed("unexpected answer")),
        }
    }

    fn digest_response(&mut self, nonce: &str, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        let d = match digest_directives(text) {
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
        let r = DigestResponse { username: username.clone(), realm: get("realm").unwrap_or_default(), nonce: n, cnonce, nc, qop, digest_uri, response, authzid };
        self.st = St::DigestSecret(Box::new(r));
        Step::Need(Need::Secret { authcid: username })
    }

    fn plain(&mut self, data: &[u8]) -> Step {
        // message = [authzid] UTF8NUL authcid UTF8NUL passwd
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        if parts.len() != 3 {
            return Step::Fail(SaslError::Malformed("PLAIN needs authzid NUL authcid NUL password"));
        }
        let (authzid, authcid, password) = match (utf8(parts[0]), utf8(parts[1]), utf8(parts[2])) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return Step::Fail(SaslError::Malformed("not UTF-8")),
        };
        if authcid.is_empty() {
            return Step::Fail(SaslError::Malformed("empty authcid"));
        }
        // We do not support proxy authorization: authzid must be empty or the user itself.
        if !authzid.is_empty() && authzid != authcid {
            return Step::Fail(SaslError::BadAuthzid);
        }
        self.st = St::WaitPassword { authcid: authcid.to_string() };
        Step::Need(Need::CheckPassword { authcid: authcid.to_string(), password: password.to_string() })
    }

    fn external(&mut self, data: &[u8]) -> Step {
        let Some(user) = self.external.clone() else { return Step::Fail(SaslError::NoExternalIdentity) };
        match utf8(data) {
            Ok("") => Step::Success { authcid: user, final_data: None },
            Ok(authzid) if authzid == user => Step::Success { authcid: user, final_data: None },
            Ok(_) => Step::Fail(SaslError::BadAuthzid),
            Err(e) => Step::Fail(e),
        }
    }

    fn scram_hash(&self) -> ScramHash {
        if self.mech == Mechanism::ScramSha1 {
            ScramHash::Sha1
        } else {
            ScramHash::Sha256
        }
    }

    fn scram_first(&mut self, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = text.splitn(3, ',');
        let (flag, authzid, bare) = match (it.next(), it.next(), it.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Step::Fail(SaslError::Malformed("bad SCRAM client-first message")),
        };
        let plus = self.mech == Mechanism::ScramSha256Plus;
        let cb_data = match flag {
            "n" if plus => return Step::Fail(SaslError::ChannelBinding("-PLUS requires channel binding")),
            "n" => Vec::new(),
            // The client supports binding but thinks we do not: if we offered
            // -PLUS, someone removed it from our list (downgrade).
            "y" if self.plus_offered => return Step::Fail(SaslError::ChannelBinding("downgrade detected")),
            "y" if plus => return Step::Fail(SaslError::ChannelBinding("-PLUS requires channel binding")),
            "y" => Vec::new(),
            f if f.starts_with("p=") => {
                if !plus {
                    return Step::Fail(SaslError::ChannelBinding("channel binding needs the -PLUS mechanism"));
                }
                let data = match &f[2..] {
                    "tls-exporter" => self.bindings.tls_exporter.clone(),
                    "tls-server-end-point" => self.bindings.tls_server_end_point.clone(),
                    _ => None,
                };
                match data {
                    Some(d) => d,
                    None => return Step::Fail(SaslError::ChannelBinding("unsupported channel binding type")),
                }
            }
            _ => return Step::Fail(SaslError::Malformed("bad gs2 flag")),
        };
        let mut user = None;
        let mut nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(v.replace("=2C", ",").replace("=3D", "="));
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v.to_string());
            } else if attr.starts_with("m=") {
                return Step::Fail(SaslError::Malformed("mandatory extension not supported"));
            }
        }
        let (Some(user), Some(nonce)) = (user, nonce) else {
            return Step::Fail(SaslError::Malformed("SCRAM client-first needs n= and r="));
        };
        if user.is_empty() || nonce.is_empty() {
            return Step::Fail(SaslError::Malformed("empty SCRAM user or nonce"));
        }
        let authzid = authzid.strip_prefix("a=").map(|a| a.replace("=2C", ",").replace("=3D", "="));
        if authzid.as_ref().is_some_and(|a| a != &user) {
            return Step::Fail(SaslError::BadAuthzid);
        }
        let state = ScramState {
            hash: self.scram_hash(),
            authcid: user.clone(),
            gs2_header: format!("{flag},{},", text.split(',').nth(1).unwrap_or("")),
            client_first_bare: bare.to_string(),
            nonce,
            server_first: String::new(),
            cb_data,
        };
        let hash = state.hash;
        self.st = St::ScramKeys(Box::new(state));
        Step::Need(Need::Scram { authcid: user, hash })
    }

    fn scram_final(&mut self, state: ScramState, keys: ScramKeys, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        let Some(idx) = text.rfind(",p=") else { return Step::Fail(SaslError::Malformed("SCRAM final needs p=")) };
        let without_proof = &text[..idx];
        let Ok(proof) = B64.decode(&text[idx + 3..]) else { return Step::Fail(SaslError::Malformed("bad proof")) };
        let mut c = None;
        let mut r = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                c = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                r = Some(v);
            }
        }
        let (Some(c), Some(r)) = (c, r) else { return Step::Fail(SaslError::Malformed("SCRAM final needs c= and r=")) };
        if r != state.nonce {
            return Step::Fail(SaslError::Malformed("nonce mismatch"));
        }
        let mut cbind = state.gs2_header.clone().into_bytes();
        cbind.extend_from_slice(&state.cb_data);
        let Ok(c_dec) = B64.decode(c) else { return Step::Fail(SaslError::Malformed("bad c=")) };
        if !bool::from(c_dec.ct_eq(&cbind)) {
            return Step::Fail(SaslError::ChannelBinding("channel binding data does not match"));
        }
        let auth_message = format!("{},{},{}", state.client_first_bare, state.server_first, without_proof);
        let client_signature = hmac(state.hash, &keys.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Step::Fail(SaslError::BadCredentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if !bool::from(hash(state.hash, &client_key).ct_eq(&keys.stored_key)) {
            return Step::Fail(SaslError::BadCredentials);
        }
        let server_signature = hmac(state.hash, &keys.server_key, auth_message.as_bytes());
        self.st = St::Done;
        Step::Success { authcid: state.authcid, final_data: Some(format!("v={}", B64.encode(server_signature)).into_bytes()) }
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, ()> {
    if s.len() % 2 != 0 {
        return Err(());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| ())).collect()
}

/// Decodes a client's base64 line (RFC 4954 §4). `*` is a cancel; `=` an
/// empty initial response.
pub fn decode_response(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(Vec::new());
    }
    B64.decode(line).map_err(|_| SaslError::Malformed("invalid base64"))
}

/// Encodes a challenge for a 334 line.
pub fn encode_challenge(data: &[u8]) -> String {
    B64.encode(data)
}

/// SASL client side (for smarthosts): PLAIN initial response.
pub fn client_plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// SCRAM client (for smarthosts), SHA-256, no channel binding.
pub struct ScramClient {
    user: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Vec<u8>,
}

impl ScramClient {
    /// Starts; returns the client-first message.
    pub fn new(user: &str, password: &str) -> (ScramClient, String) {
        let nonce = random_nonce();
        let bare = format!("n={},r={}", user.replace('=', "=3D").replace(',', "=2C"), nonce);
        let first = format!("n,,{bare}");
        (
            ScramClient { user: user.into(), password: password.into(), nonce, client_first_bare: bare, server_signature: Vec::new() },
            first,
        )
    }

    /// Answers server-first with client-final.
    pub fn final_message(&mut self, server_first: &str) -> Result<String, SaslError> {
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for attr in server_first.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                r = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                s = B64.decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                i = v.parse::<u32>().ok();
            }
        }
        let (Some(r), Some(salt), Some(iter)) = (r, s, i) else { return Err(SaslError::Malformed("bad server-first")) };
        if !r.starts_with(&self.nonce) || !(1..=1_000_000).contains(&iter) {
            return Err(SaslError::Malformed("bad server nonce or iteration count"));
        }
        let _ = &self.user;
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(self.password.as_bytes(), &salt, iter);
        let client_key = hmac(ScramHash::Sha256, &salted, b"Client Key");
        let stored_key = hash(ScramHash::Sha256, &client_key);
        let without_proof = format!("c={},r={r}", B64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let sig = hmac(ScramHash::Sha256, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = hmac(ScramHash::Sha256, &salted, b"Server Key");
        self.server_signature = hmac(ScramHash::Sha256, &server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message (mutual authentication).
    pub fn verify_server(&self, server_final: &str) -> bool {
        server_final
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .is_some_and(|v| bool::from(v.ct_eq(&self.server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_password(mech: Mechanism, initial: Option<&[u8]>, responses: &[&[u8]], ok: bool) -> Step {
        let mut ex = Exchange::new(mech, "mx.test", ChannelBindings::default(), false, None);
        let mut step = ex.start(initial.map(|i| i.to_vec()));
        let mut it = responses.iter();
        loop {
            step = match step {
                Step::Challenge(_) => match it.next() {
                    Some(r) => ex.respond(r),
                    None => return step,
                },
                Step::Need(Need::CheckPassword { ref password, .. }) => {
                    let good = ok && password == "pa ss:wörd";
                    ex.provide(Provide::PasswordOk(good))
                }
                other => return other,
            };
        }
    }

    #[test]
    fn plain_and_login() {
        let ok = Step::Success { authcid: "alice".into(), final_data: None };
        assert_eq!(run_password(Mechanism::Plain, Some(b"\0alice\0pa ss:w\xc3\xb6rd"), &[], true), ok);
        assert_eq!(run_password(Mechanism::Plain, Some(b"alice\0alice\0pa ss:w\xc3\xb6rd"), &[], true), ok);
        assert_eq!(run_password(Mechanism::Plain, None, &[b"\0alice\0pa ss:w\xc3\xb6rd"], true), ok);
        assert_eq!(run_password(Mechanism::Plain, Some(b"\0alice\0wrong"), &[], true), Step::Fail(SaslError::BadCredentials));
        assert_eq!(run_password(Mechanism::Plain, Some(b"bob\0alice\0x"), &[], true), Step::Fail(SaslError::BadAuthzid));
        assert!(matches!(run_password(Mechanism::Plain, Some(b"nonul"), &[], true), Step::Fail(SaslError::Malformed(_))));
        assert_eq!(run_password(Mechanism::Login, None, &[b"alice", "pa ss:wörd".as_bytes()], true), ok);
        assert_eq!(run_password(Mechanism::Login, Some(b"alice"), &["pa ss:wörd".as_bytes()], true), ok);
        assert_eq!(run_password(Mechanism::Login, None, &[b"alice", b"no"], true), Step::Fail(SaslError::BadCredentials));
    }

    #[test]
    fn cram_md5_rfc2195_vector() {
        let mut ex = Exchange::new(Mechanism::CramMd5, "mx.test", ChannelBindings::default(), false, None);
        let Step::Challenge(_) = ex.start(None) else { panic!() };
        // Force the RFC 2195 example challenge.
        ex.st = St::CramChallenge { challenge: "<1896.697170952@postoffice.reston.mci.net>".into() };
        let step = ex.respond(b"tim b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(step, Step::Need(Need::Secret { authcid: "tim".into() }));
        assert_eq!(ex.provide(Provide::Secret(Some("tanstaaftanstaaf".into()))), Step::Success { authcid: "tim".into(), final_data: None });
    }

    fn scram_login(mech: Mechanism, cb: ChannelBindings, flag: &str, cb_data: &[u8], password: &str) -> Step {
        let keys = ScramKeys::derive(ScramHash::Sha256, "pencil", b"saltsaltsalt", 4096);
        let mut ex = Exchange::new(mech, "mx.test", cb, mech == Mechanism::ScramSha256Plus, None);
        let cnonce = "rOprNGfwEbeRWgbNEkqO";
        let bare = format!("n=user,r={cnonce}");
        let step = ex.start(Some(format!("{flag},,{bare}").into_bytes()));
        let Step::Need(Need::Scram { .. }) = step else { return step };
        let Step::Challenge(sf) = ex.provide(Provide::Scram(Some(keys))) else { panic!() };
        let server_first = String::from_utf8(sf).unwrap();
        let r = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap().to_string();
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), b"saltsaltsalt", 4096);
        let client_key = hmac(ScramHash::Sha256, &salted, b"Client Key");
        let stored = hash(ScramHash::Sha256, &client_key);
        let mut cbind = format!("{flag},,").into_bytes();
        cbind.extend_from_slice(cb_data);
        let without = format!("c={},r={r}", B64.encode(cbind));
        let am = format!("{bare},{server_first},{without}");
        let sig = hmac(ScramHash::Sha256, &stored, am.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        ex.respond(format!("{without},p={}", B64.encode(proof)).as_bytes())
    }

    #[test]
    fn scram_sha256_and_plus() {
        let none = ChannelBindings::default();
        assert!(matches!(scram_login(Mechanism::ScramSha256, none.clone(), "n", b"", "pencil"), Step::Success { .. }));
        assert_eq!(scram_login(Mechanism::ScramSha256, none.clone(), "n", b"", "wrong"), Step::Fail(SaslError::BadCredentials));
        let cb = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: Some(vec![9; 32]) };
        assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-exporter", &[7; 32], "pencil"), Step::Success { .. }));
        assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-server-end-point", &[9; 32], "pencil"), Step::Success { .. }));
        assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "p=tls-exporter", &[8; 32], "pencil"), Step::Fail(SaslError::ChannelBinding(_))));
        assert!(matches!(scram_login(Mechanism::ScramSha256Plus, cb.clone(), "n", b"", "pencil"), Step::Fail(SaslError::ChannelBinding(_))));
        // "y" while we offered -PLUS: downgrade.
        let mut ex = Exchange::new(Mechanism::ScramSha256, "h", cb, true, None);
        assert!(matches!(ex.start(Some(b"y,,n=u,r=abc".to_vec())), Step::Fail(SaslError::ChannelBinding(_))));
    }

    #[test]
    fn scram_client_against_server() {
        let keys = ScramKeys::derive(ScramHash::Sha256, "s3cret pw", b"0123456789abcdef", 4096);
        let (mut client, first) = ScramClient::new("bob", "s3cret pw");
        let mut ex = Exchange::new(Mechanism::ScramSha256, "h", ChannelBindings::default(), false, None);
        let Step::Need(_) = ex.start(Some(first.into_bytes())) else { panic!() };
        let Step::Challenge(sf) = ex.provide(Provide::Scram(Some(keys))) else { panic!() };
        let fin = client.final_message(std::str::from_utf8(&sf).unwrap()).unwrap();
        let Step::Success { final_data: Some(v), .. } = ex.respond(fin.as_bytes()) else { panic!() };
        assert!(client.verify_server(std::str::from_utf8(&v).unwrap()));
    }

    #[test]
    fn digest_md5_rfc2831_example() {
        // RFC 2831 §4 example (IMAP there; the computation is the same).
        let r = DigestResponse {
            username: "chris".into(),
            realm: "elwood.innosoft.com".into(),
            nonce: "OA6MG9tEQGm2hh".into(),
            cnonce: "OA6MHXh6VqTrRk".into(),
            nc: "00000001".into(),
            qop: "auth".into(),
            digest_uri: "imap/elwood.innosoft.com".into(),
            response: String::new(),
            authzid: None,
        };
        assert_eq!(digest_value(&r, "secret", "AUTHENTICATE"), "d388dad90d4bbd760a152321f2143af7");
        assert_eq!(digest_value(&r, "secret", ""), "ea40f60335c427b5527b84dbabcdfffd");
        let d = digest_directives("username=\"chris\",realm=\"a,b\",nc=00000001").unwrap();
        assert_eq!(d[1], ("realm".to_string(), "a,b".to_string()));
    }

    #[test]
    fn external_and_responses() {
        let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, Some("alice".into()));
        assert_eq!(ex.start(Some(Vec::new())), Step::Success { authcid: "alice".into(), final_data: None });
        let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, Some("alice".into()));
        assert_eq!(ex.start(Some(b"bob".to_vec())), Step::Fail(SaslError::BadAuthzid));
        let mut ex = Exchange::new(Mechanism::External, "h", ChannelBindings::default(), false, None);
        assert_eq!(ex.start(Some(Vec::new())), Step::Fail(SaslError::NoExternalIdentity));
        assert_eq!(decode_response("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_response("="), Ok(Vec::new()));
        assert!(matches!(decode_response("!!!"), Err(SaslError::Malformed(_))));
    }
}
