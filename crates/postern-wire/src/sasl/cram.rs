//! CRAM-MD5 (RFC 2195): an HMAC-MD5 of our challenge, keyed with the
//! user's plaintext-equivalent secret.
//!
//! May touch: nothing (bytes in, values out; randomness for the challenge).

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{unknown_user_secret, utf8, Exchange, Need, SaslError, St, Step, Success};

impl Exchange {
    /// Sends the RFC 2195 §2 challenge `<random.pid@hostname>`.
    pub(super) fn cram_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        if initial.is_some_and(|i| !i.is_empty()) {
            return Step::Fail(SaslError::Malformed("CRAM-MD5 takes no initial response"));
        }
        let challenge = format!("<{}.{}@{}>", rand::random::<u32>(), std::process::id(), self.hostname);
        self.st = St::CramChallenge { challenge: challenge.clone() };
        Step::Challenge(challenge.into_bytes())
    }

    /// The client's `user hex-digest`.
    pub(super) fn cram_response(&mut self, challenge: String, data: &[u8]) -> Step {
        let text = match utf8(data) {
            Ok(t) => t,
            Err(e) => return Step::Fail(e),
        };
        let Some((user, hexd)) = text.rsplit_once(' ') else {
            return Step::Fail(SaslError::Malformed("expected `user digest`"));
        };
        let Some(digest) = decode_hex(hexd) else { return Step::Fail(SaslError::Malformed("bad hex digest")) };
        self.st = St::CramSecret { user: user.to_string(), digest, challenge };
        Step::Need(Need::Secret { authcid: user.to_string() })
    }
}

/// Checks the digest against the secret (`None`: unknown user).
pub(super) fn verify(user: String, digest: &[u8], challenge: &str, secret: Option<String>) -> Step {
    // Compute even for unknown users, so timing does not tell.
    let secret = secret.unwrap_or_else(unknown_user_secret);
    // HMAC takes keys of any length: the key is never refused.
    let Ok(mut m) = <Hmac<md5::Md5> as Mac>::new_from_slice(secret.as_bytes()) else {
        return Step::Fail(SaslError::BadCredentials);
    };
    m.update(challenge.as_bytes());
    let want = m.finalize().into_bytes();
    if bool::from(want.as_slice().ct_eq(digest)) {
        Step::Success(Success::new(user, None))
    } else {
        Step::Fail(SaslError::BadCredentials)
    }
}

/// Lower- or upper-case hex; `None` for anything else. Checking the
/// octets first also keeps the slicing below on character boundaries
/// (a multi-byte character in the digest used to panic here).
pub(super) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}
