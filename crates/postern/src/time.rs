//! Clock helpers shared by the session, the scheduler, DSNs and the
//! `sendmail` face. A leaf module: it imports nothing from the crate.
//!
//! May touch: the system clock. Implements RFC 5322 §3.3 (date-time).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The current local time in RFC 5322 §3.3 form, for `Date:` and `Received:`.
pub fn rfc5322_date() -> String {
    chrono::Local::now().format("%a, %d %b %Y %H:%M:%S %z").to_string()
}
