//! The client side, for smarthosts: a PLAIN initial response (RFC 4616)
//! and a SCRAM-SHA-256 client without channel binding (RFC 5802, RFC 7677).
//!
//! May touch: nothing (bytes in, values out; randomness for the nonce).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::scram::{hash, hmac, ScramHash};
use super::{random_nonce, SaslError};

/// SASL client side (for smarthosts): PLAIN initial response.
pub fn client_plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// SCRAM client (for smarthosts), SHA-256, no channel binding.
pub struct ScramClient {
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
        (ScramClient { password: password.into(), nonce, client_first_bare: bare, server_signature: Vec::new() }, first)
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

    /// Checks the server-final message (mutual authentication); false
    /// before [`ScramClient::final_message`] computed the expected value.
    pub fn verify_server(&self, server_final: &str) -> bool {
        !self.server_signature.is_empty()
            && server_final.strip_prefix("v=").and_then(|v| B64.decode(v).ok()).is_some_and(|v| bool::from(v.ct_eq(&self.server_signature)))
    }
}
