//! Stored passwords in Dovecot's `{SCHEME}data` form, as `[sql]` and
//! `[ldap]` directories hand them out: ARGON2ID/ARGON2I, BLF-CRYPT,
//! SHA512-CRYPT, SHA256-CRYPT, SSHA512, PLAIN/CLEAR (only when the operator
//! allows it), and bare crypt strings (`$6$…`, `$2y$…`, `$argon2id$…`) that
//! name their scheme themselves. The crypt verifiers are the user
//! database's ([`crate::users::verify_hash`]); this module adds the scheme
//! prefix, SSHA512 and PLAIN. Every compare is constant-time.
//!
//! May touch: nothing (pure; argon2 and bcrypt are slow: call from
//! `spawn_blocking`). Schemes: Dovecot "Password schemes".

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// The outcome of checking a password against a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashCheck {
    /// The password matches.
    Match,
    /// The password does not match.
    Mismatch,
    /// A `{PLAIN}`/`{CLEAR}` value while `allow_plain_passwords` is off:
    /// the login fails (the caller logs why).
    PlainRefused,
    /// A scheme this module does not know (the login fails; the caller logs it).
    UnknownScheme,
}

/// Splits `{SCHEME}data` into the upper-case scheme and the data; a value
/// without braces is a bare crypt string (`None`).
fn split_scheme(stored: &str) -> (Option<String>, &str) {
    if let Some(rest) = stored.strip_prefix('{') {
        if let Some((scheme, data)) = rest.split_once('}') {
            return (Some(scheme.to_ascii_uppercase()), data);
        }
    }
    (None, stored)
}

/// Is this stored value in plaintext (`{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}`)?
pub fn is_plain(stored: &str) -> bool {
    matches!(split_scheme(stored).0.as_deref(), Some("PLAIN" | "CLEAR" | "CLEARTEXT"))
}

/// `{SSHA512}`: base64 of SHA-512(password || salt) || salt.
fn check_ssha512(data: &str, password: &str) -> bool {
    let Ok(raw) = B64.decode(data.trim()) else { return false };
    if raw.len() <= 64 {
        return false;
    }
    let (digest, salt) = raw.split_at(64);
    let mut h = Sha512::new();
    h.update(password.as_bytes());
    h.update(salt);
    bool::from(h.finalize().as_slice().ct_eq(digest))
}

/// Checks `password` against `stored` (see the module doc for the forms).
pub fn check(stored: &str, password: &str, allow_plain: bool) -> HashCheck {
    let yes = |b: bool| if b { HashCheck::Match } else { HashCheck::Mismatch };
    let crypt = |data: &str, prefixes: &[&str]| {
        if prefixes.iter().any(|p| data.starts_with(p)) {
            yes(crate::users::verify_hash(data, password))
        } else {
            HashCheck::UnknownScheme
        }
    };
    match split_scheme(stored) {
        (None, data) => crypt(data, &["$argon2", "$2a$", "$2b$", "$2y$", "$6$", "$5$"]),
        (Some(scheme), data) => match scheme.as_str() {
            "ARGON2ID" => crypt(data, &["$argon2id$"]),
            "ARGON2I" => crypt(data, &["$argon2i$"]),
            "BLF-CRYPT" => crypt(data, &["$2a$", "$2b$", "$2y$"]),
            "SHA512-CRYPT" => crypt(data, &["$6$"]),
            "SHA256-CRYPT" => crypt(data, &["$5$"]),
            "CRYPT" => crypt(data, &["$argon2", "$2a$", "$2b$", "$2y$", "$6$", "$5$"]),
            "SSHA512" => yes(check_ssha512(data, password)),
            "PLAIN" | "CLEAR" | "CLEARTEXT" if allow_plain => yes(bool::from(data.as_bytes().ct_eq(password.as_bytes()))),
            "PLAIN" | "CLEAR" | "CLEARTEXT" => HashCheck::PlainRefused,
            _ => HashCheck::UnknownScheme,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssha512(password: &str, salt: &[u8]) -> String {
        let mut h = Sha512::new();
        h.update(password.as_bytes());
        h.update(salt);
        let mut raw = h.finalize().to_vec();
        raw.extend_from_slice(salt);
        format!("{{SSHA512}}{}", B64.encode(raw))
    }

    #[test]
    fn schemes_table() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let a2id = argon2::Argon2::default().hash_password(b"s3cret", &salt).expect("argon2").to_string();
        let a2i = argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, argon2::Params::default())
            .hash_password(b"s3cret", &salt)
            .expect("argon2i")
            .to_string();
        let bcrypt = bcrypt::hash_with_result("s3cret", 4).expect("bcrypt").format_for_version(bcrypt::Version::TwoY);
        let sha512 = sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::new(1000).expect("params")).expect("sha512");
        let sha256 = sha_crypt::sha256_simple("s3cret", &sha_crypt::Sha256Params::new(1000).expect("params")).expect("sha256");
        let ssha = ssha512("s3cret", b"saltsalt");
        use HashCheck::*;
        let table: Vec<(String, &str, bool, HashCheck)> = vec![
            (format!("{{ARGON2ID}}{a2id}"), "s3cret", false, Match),
            (format!("{{ARGON2ID}}{a2id}"), "wrong", false, Mismatch),
            (format!("{{ARGON2I}}{a2i}"), "s3cret", false, Match),
            (format!("{{ARGON2I}}{a2id}"), "s3cret", false, UnknownScheme),
            (a2id, "s3cret", false, Match),
            (format!("{{BLF-CRYPT}}{bcrypt}"), "s3cret", false, Match),
            (format!("{{blf-crypt}}{bcrypt}"), "nope", false, Mismatch),
            (bcrypt, "s3cret", false, Match),
            (format!("{{SHA512-CRYPT}}{sha512}"), "s3cret", false, Match),
            (format!("{{SHA512-CRYPT}}{sha512}"), "S3cret", false, Mismatch),
            (sha512, "s3cret", false, Match),
            (format!("{{SHA256-CRYPT}}{sha256}"), "s3cret", false, Match),
            (format!("{{CRYPT}}{sha256}"), "s3cret", false, Match),
            (ssha.clone(), "s3cret", false, Match),
            (ssha, "s3cre", false, Mismatch),
            ("{SSHA512}not base64!".into(), "s3cret", false, Mismatch),
            ("{SSHA512}c2hvcnQ=".into(), "s3cret", false, Mismatch),
            ("{PLAIN}s3cret".into(), "s3cret", false, PlainRefused),
            ("{PLAIN}s3cret".into(), "s3cret", true, Match),
            ("{CLEAR}s3cret".into(), "s3cre", true, Mismatch),
            ("{MD5-CRYPT}$1$abc$def".into(), "s3cret", true, UnknownScheme),
            ("s3cret".into(), "s3cret", true, UnknownScheme),
            ("$1$abc$def".into(), "s3cret", true, UnknownScheme),
            ("{ARGON2ID".into(), "s3cret", true, UnknownScheme),
            ("".into(), "", true, UnknownScheme),
        ];
        for (stored, pw, plain, want) in table {
            assert_eq!(check(&stored, pw, plain), want, "{stored} / {pw}");
        }
        assert!(is_plain("{clear}x") && !is_plain("$6$x"));
    }
}
