//! Command-line framing: finds the next line in a buffer, with a length cap.
//!
//! RFC 5321 §2.3.8 requires CRLF; like most MTAs we also accept a bare LF as
//! the end of a *command* line (never as part of DATA end detection).

/// The outcome of looking for a line in a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum LineScan {
    /// A complete line: `line` is the text without CRLF, `next` where the
    /// following input starts.
    Line {
        /// End of the line text (exclusive).
        end: usize,
        /// Start of the next line.
        next: usize,
    },
    /// No complete line yet, and the buffer is within the limit.
    Partial,
    /// More than `max` octets without a line end: the caller discards up to the
    /// next LF and replies 500 5.5.2.
    TooLong,
}

/// Looks for a line in `buf`; `max` counts the CRLF (RFC 5321 §4.5.3.1.4).
pub fn scan_line(buf: &[u8], max: usize) -> LineScan {
    match buf.iter().position(|&b| b == b'\n') {
        Some(lf) if lf < max => {
            let end = if lf > 0 && buf[lf - 1] == b'\r' { lf - 1 } else { lf };
            LineScan::Line { end, next: lf + 1 }
        }
        Some(_) => LineScan::TooLong,
        None if buf.len() >= max => LineScan::TooLong,
        None => LineScan::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(scan_line(b"NOOP\r\nQUIT", 100), LineScan::Line { end: 4, next: 6 });
        assert_eq!(scan_line(b"NOOP\nQUIT", 100), LineScan::Line { end: 4, next: 5 });
        assert_eq!(scan_line(b"NOOP", 100), LineScan::Partial);
        assert_eq!(scan_line(b"NOOP", 4), LineScan::TooLong);
        assert_eq!(scan_line(b"NOOP\r\n", 6), LineScan::Line { end: 4, next: 6 });
        assert_eq!(scan_line(b"NOOPS\r\n", 6), LineScan::TooLong);
    }
}
