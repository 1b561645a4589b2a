//! Mail authentication built in (issue 18), on Stalwart's `mail-auth`:
//! DKIM signing (`keys.rs`: the `[[dkim]]` keys, loaded at start and on
//! reload, and `postern dkim keygen`; `sign.rs`: which mail is signed and
//! the signing itself).
//!
//! May touch: the DKIM key files (read at load; written by keygen). RFCs:
//! 6376 (DKIM), 8463 (Ed25519 for DKIM), 8301 (RSA key sizes).

pub mod keys;
pub mod sign;
