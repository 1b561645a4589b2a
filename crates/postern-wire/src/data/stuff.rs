//! Dot-stuffing for sending a message with DATA (RFC 5321 §4.5.2), without
//! copying it: [`DotStuffed`] yields the message's own slices and the few
//! octets to insert between them, so a client can write a queued message
//! straight from the buffer it was read into.
//!
//! May touch: nothing (bytes in, slices out).

use std::sync::LazyLock;

use memchr::memmem;

/// A line that starts with a dot: built once, used for every message.
static DOT_LINE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\n."));

/// The pieces of a message as sent after `354`: slices of the message,
/// a `.` before every line that starts with a dot, `CRLF` if the text does
/// not end with one, then the end marker `.CRLF`. Any LF counts as a line
/// end, so a line can never start with an unstuffed dot even if the stored
/// text had a stray LF. Concatenated, the pieces are what [`dot_stuff`]
/// writes.
#[derive(Clone, Debug)]
pub struct DotStuffed<'a> {
    /// What is left to send.
    rest: &'a [u8],
    /// The whole message (for the trailing CRLF check).
    msg: &'a [u8],
    /// `rest` starts a line.
    at_line_start: bool,
    /// Where the pieces are.
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Slices of the message (and inserted dots).
    Text,
    /// The end marker (after a CRLF if needed).
    End,
    /// Nothing more.
    Done,
}

impl<'a> DotStuffed<'a> {
    /// The pieces of `msg` (CRLF text as stored).
    pub fn new(msg: &'a [u8]) -> DotStuffed<'a> {
        DotStuffed { rest: msg, msg, at_line_start: true, step: Step::Text }
    }

    /// The number of octets the pieces add up to (for a `SIZE=` or a buffer).
    pub fn wire_len(msg: &[u8]) -> usize {
        let dots = DOT_LINE.find_iter(msg).count() + usize::from(msg.first() == Some(&b'.'));
        msg.len() + dots + if needs_crlf(msg) { 5 } else { 3 }
    }
}

/// A message that does not end its last line gets a CRLF before the marker.
fn needs_crlf(msg: &[u8]) -> bool {
    !msg.is_empty() && !msg.ends_with(b"\r\n")
}

impl<'a> Iterator for DotStuffed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self.step {
            Step::Text if self.rest.is_empty() => {
                self.step = Step::End;
                self.next()
            }
            Step::Text => {
                if self.at_line_start && self.rest[0] == b'.' {
                    // The dot itself goes out with the next slice.
                    self.at_line_start = false;
                    return Some(b".");
                }
                // Up to and including the LF before the next line that
                // starts with a dot, or everything.
                let cut = DOT_LINE.find(self.rest).map_or(self.rest.len(), |k| k + 1);
                let (piece, rest) = self.rest.split_at(cut);
                self.rest = rest;
                self.at_line_start = piece.last() == Some(&b'\n');
                Some(piece)
            }
            Step::End => {
                self.step = Step::Done;
                Some(if needs_crlf(self.msg) { b"\r\n.\r\n" } else { b".\r\n" })
            }
            Step::Done => None,
        }
    }
}

/// Dot-stuffs a CRLF message for sending with DATA and appends the end
/// marker (the pieces of [`DotStuffed`], copied into `out`).
pub fn dot_stuff(msg: &[u8], out: &mut Vec<u8>) {
    out.reserve(DotStuffed::wire_len(msg));
    DotStuffed::new(msg).for_each(|p| out.extend_from_slice(p));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The octet-at-a-time stuffer this module replaced: the reference.
    fn reference(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &c in msg {
            if at_line_start && c == b'.' {
                out.push(b'.');
            }
            out.push(c);
            at_line_start = c == b'\n';
        }
        if !msg.is_empty() && !msg.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn stuffed(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(msg, &mut out);
        assert_eq!(out.len(), DotStuffed::wire_len(msg), "wire_len of {msg:?}");
        out
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\n", b"a\n\r\n.\r\n"),
            (b"a\r", b"a\r\r\n.\r\n"),
            (b".a\r\nb\r\n.\r\n", b"..a\r\nb\r\n..\r\n.\r\n"),
            (b"x\n.\ny", b"x\n..\ny\r\n.\r\n"),
            (b"x\r.y\r\n", b"x\r.y\r\n.\r\n"), // a CR alone is no line end
            (b"..\r\n...\r\n", b"...\r\n....\r\n.\r\n"),
            (b"\r\n.\r\n.\r\n", b"\r\n..\r\n..\r\n.\r\n"),
        ];
        for (msg, want) in cases {
            assert_eq!(stuffed(msg), *want, "{}", String::from_utf8_lossy(msg));
            assert_eq!(reference(msg), *want);
        }
    }

    /// The common case is one slice of the message itself: nothing copied.
    #[test]
    fn a_message_without_leading_dots_is_one_slice() {
        let msg = b"Subject: x\r\n\r\nbody. not. at. line. start.\r\n";
        let pieces: Vec<&[u8]> = DotStuffed::new(msg).collect();
        assert_eq!(pieces.len(), 2);
        assert!(std::ptr::eq(pieces[0], &msg[..]));
        assert_eq!(pieces[1], b".\r\n");
    }

    /// Every message over a small alphabet up to length 7 (every place a
    /// dot, CR and LF can be) stuffs as the reference does.
    #[test]
    fn exhaustive_small_messages_match_the_reference() {
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        let mut msg = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..4usize.pow(len) {
                msg.clear();
                for _ in 0..len {
                    msg.push(alphabet[n % 4]);
                    n /= 4;
                }
                assert_eq!(stuffed(&msg), reference(&msg), "{msg:?}");
            }
        }
    }
}
