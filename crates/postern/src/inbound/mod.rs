//! Inbound defences at the SMTP level, decided from the connection, HELO
//! and envelope before any milter runs (docs/inbound.md): reverse DNS,
//! DNSBL/DNSWL scores, pre-greeting checks, HELO and sender checks,
//! directory-harvest protection, rate limits, greylisting. Each defence is
//! one submodule; its verdicts are pure functions over what it looked up,
//! tested with tables; the session asks at the stage the config names.
//!
//! May touch: DNS (through `mailauth::resolver`), the shared counters
//! (`crate::counters`), nothing on disk unless a submodule says so.

pub mod dns;
pub mod dnsbl;
pub mod greylist;
pub mod harvest;
pub mod helo;
pub mod pregreet;
pub mod rate;
pub mod rdns;
pub mod rdns_service;
