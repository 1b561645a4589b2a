//! Hop counting: the `Received:` fields of a message's header section
//! (RFC 5321 §6.3 loop detection, RFC 5322 §3.6.7), counted while the
//! message streams in, without a second pass over the spool file.
//!
//! The header section ends at the first empty line, or at the first line
//! that is neither a header field (`name:`, with RFC 5322 §4.5.3 obsolete
//! white space before the colon) nor a continuation line: from there on a
//! line starting with `Received:` is body text and is not counted.
//!
//! May touch: nothing (bytes in, a number out).

const NAME: &[u8] = b"received";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// At the start of a header line.
    LineStart,
    /// A CR at the start of a line: an empty line if LF follows.
    StartCr,
    /// In a field name; `Some(n)`: the first `n` octets match `received`.
    Name(Option<usize>),
    /// White space after the field name, before the colon (obsolete syntax).
    AfterName(bool),
    /// In a field body or a continuation line, until LF.
    Rest,
    /// Past the header section.
    Done,
}

/// Counts `Received:` header fields as octets arrive, in any split.
#[derive(Clone, Debug)]
pub struct ReceivedCounter {
    st: St,
    count: u32,
}

impl Default for ReceivedCounter {
    fn default() -> Self {
        ReceivedCounter::new()
    }
}

impl ReceivedCounter {
    /// A counter at the start of a message.
    pub fn new() -> ReceivedCounter {
        ReceivedCounter { st: St::LineStart, count: 0 }
    }

    /// `Received:` fields seen so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True once the header section has ended.
    pub fn header_done(&self) -> bool {
        self.st == St::Done
    }

    /// Feeds the next octets of the message (unstuffed, as stored).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &c in bytes {
            self.st = match self.st {
                St::Done => return,
                St::LineStart => match c {
                    b'\r' => St::StartCr,
                    b' ' | b'\t' => St::Rest,
                    // RFC 5322 §3.6.8: ftext is printable US-ASCII except ':'.
                    33..=126 if c != b':' => St::Name(next(Some(0), c)),
                    _ => St::Done,
                },
                St::StartCr => St::Done, // an empty line (CR LF) or a bare CR: the body starts
                St::Name(m) => match c {
                    b':' => self.field(m),
                    b' ' | b'\t' => St::AfterName(m == Some(NAME.len())),
                    33..=126 => St::Name(next(m, c)),
                    _ => St::Done,
                },
                St::AfterName(is) => match c {
                    b' ' | b'\t' => St::AfterName(is),
                    b':' => self.field(if is { Some(NAME.len()) } else { None }),
                    _ => St::Done,
                },
                St::Rest if c == b'\n' => St::LineStart,
                St::Rest => St::Rest,
            };
        }
    }

    fn field(&mut self, m: Option<usize>) -> St {
        if m == Some(NAME.len()) {
            self.count = self.count.saturating_add(1);
        }
        St::Rest
    }
}

/// Advances the match of `received` by one octet.
fn next(m: Option<usize>, c: u8) -> Option<usize> {
    let n = m?;
    (NAME.get(n).is_some_and(|w| w.eq_ignore_ascii_case(&c))).then_some(n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(msg: &[u8]) -> u32 {
        let mut c = ReceivedCounter::new();
        c.feed(msg);
        c.count()
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 0),
            (b"Received: from a\r\nReceived: from b\r\n\r\nbody\r\n", 2),
            (b"received: x\r\nRECEIVED: y\r\nSubject: z\r\n\r\n", 2),
            (b"Received : obsolete space\r\nReceived\t: tab\r\n\r\n", 2),
            (b"Received: from a\r\n by b\r\n\twith c\r\nReceived: d\r\n\r\n", 2),
            (b"Received-SPF: pass\r\nX-Received: y\r\nReceive: z\r\nReceivedX: w\r\n\r\n", 0),
            (b"Subject: s\r\n\r\nReceived: in the body\r\n", 0),
            (b"Subject: s\r\nnot a header line\r\nReceived: body\r\n", 0),
            (b"\r\nReceived: body\r\n", 0),
            (b"Received: a\nReceived: b\n\nReceived: c\n", 2),
            (b"Received: no end", 1),
        ];
        for (msg, want) in cases {
            assert_eq!(count(msg), *want, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn any_split_gives_the_same_count() {
        let msg = b"Received: from a\r\nX: y\r\n  cont\r\nReceived : b\r\nreceived:c\r\n\r\nReceived: body\r\n";
        for cut in 0..=msg.len() {
            let mut c = ReceivedCounter::new();
            c.feed(&msg[..cut]);
            c.feed(&msg[cut..]);
            assert_eq!(c.count(), 3, "cut at {cut}");
            assert!(c.header_done());
        }
        let mut c = ReceivedCounter::new();
        msg.iter().for_each(|b| c.feed(std::slice::from_ref(b)));
        assert_eq!(c.count(), 3);
    }
}
