//! postern-wire: the SMTP/LMTP wire protocol without I/O.
//!
//! Bytes in, typed values out: command parsing ([`command`]), RFC 5321 paths
//! ([`address`]), replies with RFC 3463 enhanced codes ([`reply`]), DATA
//! dot-unstuffing with smuggling-safe end detection and BDAT checks
//! ([`data`]), command-line framing ([`line`]), SASL step machines ([`sasl`])
//! the milter protocol codec ([`milter`]) and hop counting ([`received`]). No tokio, no policy;
//! this is the part we fuzz: `fuzz/` at the top of the repository has one
//! cargo-fuzz target per parser (`scripts/fuzz`).
//!
//! May touch: nothing (bytes in, values out).

pub mod address;
pub mod command;
pub mod data;
pub mod line;
pub mod milter;
pub mod received;
pub mod reply;
pub mod sasl;

pub use address::{Mailbox, Path};
pub use command::{parse_command, Command, ParseError};
pub use reply::{codes, Enhanced, Reply};
