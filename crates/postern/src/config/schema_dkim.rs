//! The `[[dkim]]` tables: DKIM signing keys per sender domain (RFC 6376).
//!
//! May touch: nothing (types only). RFCs: 6376 (DKIM), 8463 (Ed25519).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// A DKIM signing algorithm (RFC 6376 §3.3, RFC 8463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256 (`a=rsa-sha256`); use 2048-bit keys.
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (`a=ed25519-sha256`, RFC 8463).
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// One DKIM signing key: mail whose sender domain is `domain` is signed
/// with it. Several entries for one domain sign with each (dual signing,
/// e.g. RSA-2048 and Ed25519).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The signing domain (`d=`): mail whose From: domain (or, without a
    /// From:, envelope sender domain) is this is signed. Required.
    pub domain: String,
    /// The selector (`s=`): the key is published at
    /// `SELECTOR._domainkey.DOMAIN`. Required.
    pub selector: String,
    /// The private key, PKCS#8 (or PKCS#1 for RSA) PEM, as written by
    /// `postern dkim keygen`; relative to the data directory. Required.
    pub key_file: PathBuf,
    /// "rsa-sha256" or "ed25519-sha256". Default: derived from the key.
    #[serde(default)]
    pub algorithm: Option<DkimAlgorithm>,
    /// Also sign mail from subdomains of `domain` (with `d=domain`).
    /// Default false.
    #[serde(default)]
    pub subdomains: bool,
    /// The header fields to sign, replacing the default list (opendkim's:
    /// From, Reply-To, Subject, Date, To, Cc, Resent-*, In-Reply-To,
    /// References, List-*, Message-ID, MIME and content fields). `From` is
    /// always signed and oversigned. Default: the built-in list.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// Signature lifetime: adds `x=` this long after `t=`; "0s" adds no
    /// `x=`. Default "0s".
    #[serde(default, deserialize_with = "duration", serialize_with = "show_duration")]
    pub expire: Duration,
}
