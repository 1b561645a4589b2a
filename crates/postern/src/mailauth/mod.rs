//! Native mail authentication (issue 18) on Stalwart's `mail-auth` crate:
//! no hand-written crypto.
//!
//! - Signing: `keys.rs` (the `[[dkim]]` keys, loaded at start and on
//!   reload, and `postern dkim keygen`), `sign.rs` (which mail is signed and
//!   the signing itself).
//! - Verifying: `resolver.rs` (the DNS resolver built from `[mx]`),
//!   `verify.rs` and `verdict.rs` (results, `Authentication-Results:`, the
//!   DMARC policy decision).
//!
//! May touch: DNS (through `resolver`), the DKIM key files (read at load;
//! written by keygen). RFCs: 6376 (DKIM), 8463 (Ed25519 for DKIM), 8301
//! (RSA key sizes), 7208 (SPF), 7489 (DMARC), 8617 (ARC), 8601
//! (Authentication-Results).

// Signing half.
pub mod keys;
pub mod sign;
// Verifying half.
pub mod resolver;
pub mod verdict;
pub mod verify;
