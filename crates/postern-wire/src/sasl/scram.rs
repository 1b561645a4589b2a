//! SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server side (RFC
//! 5802, RFC 7677; channel binding RFC 5929 `tls-server-end-point`, RFC
//! 9266 `tls-exporter`), and the key derivation the user database stores.
//!
//! May touch: nothing (bytes in, values out; randomness for the nonce).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{random_nonce, utf8, Exchange, Mechanism, Need, SaslError, St, Step, Success};

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

impl ScramKeys {
    /// Derives the stored keys from a password (user add / passwd).
    pub fn derive(h: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = match h {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password.as_bytes(), salt, iterations).to_vec(),
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations).to_vec(),
        };
        let client_key = hmac(h, &salted, b"Client Key");
        ScramKeys { salt: salt.to_vec(), iterations, stored_key: hash(h, &client_key), server_key: hmac(h, &salted, b"Server Key") }
    }
}

/// HMAC with the SCRAM hash.
pub(super) fn hmac(h: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match h {
        ScramHash::Sha1 => mac::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => mac::<Hmac<Sha256>>(key, data),
    }
}

/// One MAC over `data`. HMAC takes keys of any length, so the key is never
/// refused; were it ever, the empty result matches no proof (fails closed).
fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut m) = <M as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The SCRAM hash function H().
pub(super) fn hash(h: ScramHash, data: &[u8]) -> Vec<u8> {
    match h {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// What the server remembers between client-first and client-final.
#[derive(Debug, Clone)]
pub(super) struct ScramState {
    hash: ScramHash,
    authcid: String,
    gs2_header: String,
    client_first_bare: String,
    nonce: String,
    server_first: String,
    cb_data: Vec<u8>,
}

/// RFC 5802 §5.1 saslname: `=2C` is `,` and `=3D` is `=`.
fn unescape_saslname(s: &str) -> String {
    s.replace("=2C", ",").replace("=3D", "=")
}

impl Exchange {
    /// SCRAM: client-first as initial response, or an empty 334 for it.
    pub(super) fn scram_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        self.st = St::ScramFirst;
        match initial {
            Some(data) if !data.is_empty() => self.scram_first(&data),
            _ => Step::Challenge(Vec::new()),
        }
    }

    fn scram_hash(&self) -> ScramHash {
        if self.mech == Mechanism::ScramSha1 {
            ScramHash::Sha1
        } else {
            ScramHash::Sha256
        }
    }

    /// client-first-message (RFC 5802 §7): gs2 header, then `n=user,r=nonce`.
    pub(super) fn scram_first(&mut self, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Step::Fail(SaslError::Malformed("bad SCRAM client-first message"));
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
                user = Some(unescape_saslname(v));
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
        let authzid_name = authzid.strip_prefix("a=").map(unescape_saslname);
        if authzid_name.as_ref().is_some_and(|a| a != &user) {
            return Step::Fail(SaslError::BadAuthzid);
        }
        let state = ScramState {
            hash: self.scram_hash(),
            authcid: user.clone(),
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            nonce,
            server_first: String::new(),
            cb_data,
        };
        let hash = state.hash;
        self.st = St::ScramKeys(Box::new(state));
        Step::Need(Need::Scram { authcid: user, hash })
    }

    /// server-first-message with the user's salt and iteration count
    /// (`None`: unknown user).
    pub(super) fn scram_server_first(&mut self, mut state: ScramState, keys: Option<ScramKeys>) -> Step {
        // Unknown users get a fake, stable-looking salt (RFC 5802 §5.1
        // suggests not revealing whether the user exists).
        let keys = keys.unwrap_or_else(|| ScramKeys {
            salt: Sha256::digest(format!("postern-fake-salt:{}", state.authcid)).to_vec()[..16].to_vec(),
            iterations: 4096,
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        });
        state.nonce = format!("{}{}", state.nonce, random_nonce());
        state.server_first = format!("r={},s={},i={}", state.nonce, B64.encode(&keys.salt), keys.iterations);
        let challenge = state.server_first.clone().into_bytes();
        self.st = St::ScramFinal(Box::new(state), keys);
        Step::Challenge(challenge)
    }

    /// client-final-message (RFC 5802 §7): channel binding, nonce, proof.
    pub(super) fn scram_final(&mut self, state: ScramState, keys: ScramKeys, data: &[u8]) -> Step {
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
        Step::Success(Success::new(state.authcid, Some(format!("v={}", B64.encode(server_signature)).into_bytes())))
    }
}
