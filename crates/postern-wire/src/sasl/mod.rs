//! SASL server mechanisms as I/O-free step machines (RFC 4422), for SMTP
//! AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login),
//! CRAM-MD5 (RFC 2195), DIGEST-MD5 (RFC 2831, opt-in), SCRAM-SHA-1/SHA-256
//! and -PLUS (RFC 5802, RFC 7677, channel binding RFC 5929
//! `tls-server-end-point` and RFC 9266 `tls-exporter`), EXTERNAL (RFC 4422
//! appendix A); and the client side for smarthosts ([`client_plain`],
//! [`ScramClient`]).
//!
//! May touch: nothing (bytes in, values out; randomness for nonces).
//!
//! The machines never look anything up: when they need a password check,
//! a stored secret or SCRAM keys they return [`Step::Need`], and the caller
//! answers with [`Exchange::provide`]. Base64 of the SMTP lines is done by
//! [`decode_response`] / [`encode_challenge`]; the machines take and return
//! raw bytes. Written by hand because SASL server mechanisms are small and
//! owning them keeps channel binding and policy in our types (no maintained
//! crate covers the server side of all of these without a C library).
//!
//! One file per mechanism: each adds the `impl Exchange` methods for its
//! states; this file holds the shared types and the dispatch.

mod client;
mod cram;
mod digest;
mod external;
mod login;
mod plain;
mod scram;
#[cfg(test)]
mod tests;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

pub use client::{client_plain, ScramClient};
pub use scram::{ScramHash, ScramKeys};

use digest::DigestResponse;
use scram::ScramState;

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
    /// Every mechanism, in the order of the enum (fuzzing and tests).
    pub const ALL: [Mechanism; 8] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::DigestMd5,
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha256Plus,
        Mechanism::External,
    ];

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

/// Proof that an exchange succeeded: only the machines in this module
/// build one (the fields are private and there is no public constructor),
/// so code that trusts an identity can ask for a `&Success`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Success {
    authcid: String,
    final_data: Option<Vec<u8>>,
}

impl Success {
    /// Only the mechanisms call this, once they verified the client.
    fn new(authcid: String, final_data: Option<Vec<u8>>) -> Success {
        Success { authcid, final_data }
    }

    /// The authenticated user, as the client spelled it.
    pub fn authcid(&self) -> &str {
        &self.authcid
    }

    /// Additional server data for the client (SCRAM server-final,
    /// DIGEST-MD5 `rspauth`): it goes in a last 334 whose empty response
    /// the caller must read before replying 235 (RFC 4954 §4).
    pub fn final_data(&self) -> Option<&[u8]> {
        self.final_data.as_deref()
    }
}

/// One step of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (334) and feed the client's response to [`Exchange::respond`].
    Challenge(Vec<u8>),
    /// Answer with [`Exchange::provide`].
    Need(Need),
    /// Authenticated (see [`Success::final_data`] for a last 334).
    Success(Success),
    /// Failed.
    Fail(SaslError),
}

/// Where an exchange is: what the next [`Exchange::respond`] or
/// [`Exchange::provide`] must bring.
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
            Mechanism::Plain => self.plain_start(initial),
            Mechanism::Login => self.login_start(initial),
            Mechanism::CramMd5 => self.cram_start(initial),
            Mechanism::DigestMd5 => self.digest_start(initial),
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => self.scram_start(initial),
            Mechanism::External => self.external_start(initial),
        }
    }

    /// Feeds the client's (base64-decoded) response to the last challenge.
    pub fn respond(&mut self, data: &[u8]) -> Step {
        match std::mem::replace(&mut self.st, St::Done) {
            St::PlainWait => self.plain(data),
            St::ExternalWait => self.external(data),
            St::LoginUser => self.login_user(data),
            St::LoginPass { user } => self.login_pass(user, data),
            St::CramChallenge { challenge } => self.cram_response(challenge, data),
            St::DigestChallenge { nonce } => self.digest_response(&nonce, data),
            St::ScramFirst => self.scram_first(data),
            St::ScramFinal(state, keys) => self.scram_final(*state, keys, data),
            _ => Step::Fail(SaslError::Malformed("unexpected response")),
        }
    }

    /// Answers a [`Step::Need`].
    pub fn provide(&mut self, p: Provide) -> Step {
        match (std::mem::replace(&mut self.st, St::Done), p) {
            (St::WaitPassword { authcid }, Provide::PasswordOk(true)) => Step::Success(Success::new(authcid, None)),
            (St::WaitPassword { .. }, Provide::PasswordOk(false)) => Step::Fail(SaslError::BadCredentials),
            (St::CramSecret { user, digest, challenge }, Provide::Secret(secret)) => cram::verify(user, &digest, &challenge, secret),
            (St::DigestSecret(r), Provide::Secret(secret)) => digest::verify(&r, secret),
            (St::ScramKeys(state), Provide::Scram(keys)) => self.scram_server_first(*state, keys),
            _ => Step::Fail(SaslError::Malformed("unexpected answer")),
        }
    }
}

fn random_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

fn utf8(b: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(b).map_err(|_| SaslError::Malformed("not UTF-8"))
}

/// A secret nobody knows, for unknown users: the check runs anyway, so
/// timing does not tell whether the user exists.
fn unknown_user_secret() -> String {
    format!("{:x}", rand::random::<u128>())
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
