//! sysexits(3) exit codes, shared by every command-line face. A leaf:
//! it imports nothing, so any face can use it without a cycle.
//!
//! May touch: nothing.

/// Success.
pub const OK: i32 = 0;
/// Command line usage error.
pub const USAGE: i32 = 64;
/// Data format error (no recipients, message too big).
pub const DATAERR: i32 = 65;
/// Cannot open input (no such queued message).
pub const NOINPUT: i32 = 66;
/// Addressee unknown.
pub const NOUSER: i32 = 67;
/// Service unavailable (a milter refused the message; the daemon is not running).
pub const UNAVAILABLE: i32 = 69;
/// Internal software error (a mode reached the wrong dispatcher).
pub const SOFTWARE: i32 = 70;
/// Cannot create (queue) file.
pub const CANTCREAT: i32 = 73;
/// Temporary failure; try again.
pub const TEMPFAIL: i32 = 75;
/// Configuration error.
pub const CONFIG: i32 = 78;
