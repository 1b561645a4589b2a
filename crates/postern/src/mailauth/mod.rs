//! Native mail authentication (DKIM, SPF, DMARC, ARC) on Stalwart's
//! `mail-auth` crate: no hand-written crypto. The verifying half lives in
//! `resolver.rs` (the DNS resolver built from `[mx]`) and `verify.rs`
//! (results, `Authentication-Results:`, the DMARC policy decision).
//!
//! May touch: DNS (through `resolver`). RFCs: 6376 (DKIM), 7208 (SPF),
//! 7489 (DMARC), 8617 (ARC), 8601 (Authentication-Results).

// Verifying half.
pub mod resolver;
pub mod verdict;
pub mod verify;
