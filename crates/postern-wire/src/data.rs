//! DATA decoding (RFC 5321 §4.1.1.4, §4.5.2) and BDAT content checks (RFC 3030).
//!
//! SMTP smuggling defence: the end of data is *only* `<CRLF>.<CRLF>` where the
//! first CRLF is a real CR LF pair (or the start of the data). `<LF>.<LF>`,
//! `<LF>.<CR><LF>`, `<CR>.<CR>` and friends never end a message. Bare CR and
//! bare LF are recorded in [`DataFlags`]; the session then either rejects the
//! message (the default) or keeps it with those line ends normalised to CRLF.
//! Either way the stored message never contains a line that a downstream
//! server could read as an end-of-data marker, because every client we have
//! dot-stuffs on every line break.

/// What the decoder noticed in the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataFlags {
    /// A CR not followed by LF, or an LF not preceded by CR, was seen.
    pub bare_cr_lf: bool,
    /// A line longer than the limit (including CRLF) was seen (§4.5.3.1.6).
    pub long_line: bool,
    /// The message grew beyond the size limit; output stopped there.
    pub too_big: bool,
}

#[cfg(test)]
mod against_reference;
#[cfg(test)]
mod reference;
mod stuff;

pub use stuff::{dot_stuff, DotStuffed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// At the start of a line: start of data or right after a real CRLF.
    LineStart,
    /// Inside a line.
    Mid,
    /// Saw a CR inside a line (pending).
    Cr,
    /// Saw `.` at line start.
    Dot,
    /// Saw `.` CR at line start.
    DotCr,
}

/// Incremental decoder for the DATA phase: removes dot-stuffing, finds the
/// real end marker, enforces the line and size limits.
#[derive(Debug)]
pub struct DataDecoder {
    st: St,
    line_len: usize,
    max_line: usize,
    max_size: u64,
    size: u64,
    flags: DataFlags,
}

/// Result of [`DataDecoder::feed`].
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed.
    pub consumed: usize,
    /// True when the end-of-data marker was consumed.
    pub done: bool,
}

impl DataDecoder {
    /// `max_line` counts the CRLF (1000 per RFC 5321); `max_size` caps the
    /// decoded message.
    pub fn new(max_line: usize, max_size: u64) -> DataDecoder {
        DataDecoder { st: St::LineStart, line_len: 0, max_line, max_size, size: 0, flags: DataFlags::default() }
    }

    /// What was seen so far.
    pub fn flags(&self) -> DataFlags {
        self.flags
    }

    /// Decoded size so far (may stop growing once `too_big` is set).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `bytes` whole, or nothing once the size cap would be passed.
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.flags.too_big {
            return;
        }
        if self.size + bytes.len() as u64 > self.max_size {
            self.flags.too_big = true;
            return;
        }
        self.size += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }

    /// Appends a run of content octets and CR LF pairs (never a lone CR or
    /// LF, never a CR at its end) in one copy. At the size cap it keeps what
    /// octet-by-octet decoding would have kept: every content octet that
    /// fits, a CR LF pair only whole.
    fn emit_run(&mut self, out: &mut Vec<u8>, run: &[u8]) {
        if self.flags.too_big || run.is_empty() {
            return;
        }
        let room = self.max_size - self.size;
        if run.len() as u64 <= room {
            self.size += run.len() as u64;
            out.extend_from_slice(run);
            return;
        }
        // `room < run.len()`, so it fits in usize.
        let mut cut = room as usize;
        if cut > 0 && run[cut - 1] == b'\r' {
            cut -= 1; // the pair would not fit whole
        }
        self.size += cut as u64;
        out.extend_from_slice(&run[..cut]);
        self.flags.too_big = true;
    }

    /// `n` more content octets on the current line (§4.5.3.1.6).
    fn count_line(&mut self, n: usize) {
        if n > 0 {
            self.line_len += n;
            if self.line_len + 2 > self.max_line {
                self.flags.long_line = true;
            }
        }
    }

    fn content(&mut self, out: &mut Vec<u8>, c: u8) {
        self.count_line(1);
        self.emit(out, &[c]);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        self.line_len = 0;
        self.emit(out, b"\r\n");
    }

    /// Processes one octet in the `Mid` state.
    fn mid(&mut self, out: &mut Vec<u8>, c: u8) {
        match c {
            b'\r' => self.st = St::Cr,
            b'\n' => {
                // Bare LF: a line break for the stored copy, but never a
                // line start for end-of-data detection.
                self.flags.bare_cr_lf = true;
                self.end_line(out);
                self.st = St::Mid;
            }
            _ => {
                self.content(out, c);
                self.st = St::Mid;
            }
        }
    }

    /// The fast path: from `start` (state `Mid`, or `LineStart` with no dot
    /// at `start`), skips over content and real CR LF line ends with
    /// `memchr`, counting line lengths. Returns where the run ends: at a dot
    /// that starts a line, at a lone CR or LF, at a CR that ends the input
    /// (its LF may come in the next read), or at the end of the input. The
    /// state is then `LineStart` (right after a CR LF) or `Mid`.
    fn clean_run(&mut self, input: &[u8], start: usize) -> usize {
        let mut i = start;
        loop {
            let rest = &input[i..];
            let Some(k) = memchr::memchr2(b'\r', b'\n', rest) else {
                self.count_line(rest.len());
                self.st = St::Mid;
                return input.len();
            };
            self.count_line(k);
            let p = i + k;
            if input[p] != b'\r' || input.get(p + 1) != Some(&b'\n') {
                self.st = St::Mid;
                return p;
            }
            self.line_len = 0;
            self.st = St::LineStart;
            i = p + 2;
            if input.get(i).is_none_or(|&c| c == b'.') {
                return i;
            }
        }
    }

    /// Feeds bytes; appends decoded content to `out`. Stops right after the
    /// end marker so pipelined commands that follow stay in the input.
    ///
    /// Clean text (content and CR LF line ends, no line starting with a
    /// dot) is found with `memchr` and copied a run at a time; the state
    /// machine below handles, one octet at a time, only what surrounds a
    /// leading dot and a lone CR or LF. The result is the same for any
    /// split of the input (the fuzz target `data` checks both, against the
    /// octet-at-a-time decoder in `data/reference.rs`).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        out.reserve(input.len().min(self.max_size.saturating_sub(self.size).try_into().unwrap_or(usize::MAX)));
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.st {
                St::LineStart if c == b'.' => {
                    self.st = St::Dot;
                    i += 1;
                }
                St::LineStart | St::Mid => {
                    let end = self.clean_run(input, i);
                    if end > i {
                        self.emit_run(out, &input[i..end]);
                        i = end;
                    } else {
                        // A lone CR or LF, or a CR at the end of the input.
                        self.mid(out, c);
                        i += 1;
                    }
                }
                St::Cr => {
                    if c == b'\n' {
                        self.end_line(out);
                        self.st = St::LineStart;
                    } else {
                        self.flags.bare_cr_lf = true;
                        self.end_line(out);
                        self.st = St::Mid;
                        self.mid(out, c);
                    }
                    i += 1;
                }
                St::Dot => {
                    if c == b'\r' {
                        self.st = St::DotCr;
                        i += 1;
                    } else {
                        // The leading dot is removed (§4.5.2); the rest is
                        // content, read again in the `Mid` state.
                        self.st = St::Mid;
                    }
                }
                St::DotCr => {
                    if c == b'\n' {
                        return Fed { consumed: i + 1, done: true };
                    }
                    // `.` CR x: the dot was stuffing; the CR is bare.
                    self.flags.bare_cr_lf = true;
                    self.end_line(out);
                    self.st = St::Mid;
                    self.mid(out, c);
                    i += 1;
                }
            }
        }
        Fed { consumed: input.len(), done: false }
    }
}

/// Checks BDAT chunks for bare CR/LF and long lines across chunk boundaries.
/// BDAT content is taken verbatim (no dot-stuffing, RFC 3030 §2).
#[derive(Debug, Default)]
pub struct ChunkScanner {
    pending_cr: bool,
    line_len: usize,
    max_line: usize,
    flags: DataFlags,
}

impl ChunkScanner {
    /// `max_line` counts the CRLF.
    pub fn new(max_line: usize) -> ChunkScanner {
        ChunkScanner { max_line, ..Default::default() }
    }

    /// Scans one chunk (lines found with `memchr`, not octet by octet).
    pub fn scan(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.pending_cr {
                self.pending_cr = false;
                self.line_len = 0;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
                self.flags.bare_cr_lf = true;
            }
            let Some(k) = memchr::memchr2(b'\r', b'\n', rest) else {
                self.count_line(rest.len());
                return;
            };
            self.count_line(k);
            if rest[k] == b'\r' {
                self.pending_cr = true;
            } else {
                self.flags.bare_cr_lf = true;
                self.line_len = 0;
            }
            rest = &rest[k + 1..];
        }
    }

    /// `n` more content octets on the current line.
    fn count_line(&mut self, n: usize) {
        if n > 0 {
            self.line_len += n;
            if self.line_len + 2 > self.max_line {
                self.flags.long_line = true;
            }
        }
    }

    /// Call after the last chunk; a trailing CR is bare.
    pub fn finish(&mut self) -> DataFlags {
        if self.pending_cr {
            self.flags.bare_cr_lf = true;
        }
        self.flags
    }
}

/// Converts any message text to canonical CRLF line ends (bare CR or LF
/// become CRLF). Used for local submission (`sendmail` reads Unix text) and
/// when the operator chose to normalise.
pub fn normalize_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut rest = input;
    // Text between line ends is copied a run at a time.
    while let Some(k) = memchr::memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..k]);
        out.extend_from_slice(b"\r\n");
        let crlf = rest[k] == b'\r' && rest.get(k + 1) == Some(&b'\n');
        rest = &rest[k + if crlf { 2 } else { 1 }..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Vec<u8>, Option<usize>, DataFlags) {
        let mut d = DataDecoder::new(1000, 1 << 20);
        let mut out = Vec::new();
        let f = d.feed(input, &mut out);
        (out, f.done.then_some(f.consumed), d.flags())
    }

    #[test]
    fn simple_and_stuffed() {
        let (out, end, flags) = decode(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(end, Some(b"Subject: x\r\n\r\n..dot\r\n.\r\n".len()));
        assert_eq!(flags, DataFlags::default());
        // Empty message.
        let (out, end, _) = decode(b".\r\n");
        assert!(out.is_empty());
        assert_eq!(end, Some(3));
    }

    #[test]
    fn byte_at_a_time_matches() {
        let input = b"a\r\n..b\r\n.c\r\n\r\n.\r\nrest";
        let mut d = DataDecoder::new(1000, 1 << 20);
        let mut out = Vec::new();
        let mut consumed = 0;
        for b in input.iter() {
            let f = d.feed(std::slice::from_ref(b), &mut out);
            consumed += f.consumed;
            if f.done {
                break;
            }
        }
        assert_eq!(out, b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(consumed, input.len() - 4);
    }

    #[test]
    fn smuggling_markers_do_not_end() {
        for probe in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL\r\n",
        ] {
            let (_, end, flags) = decode(probe);
            assert_eq!(end, None, "probe {probe:?} ended the data");
            assert!(flags.bare_cr_lf, "probe {probe:?} not flagged");
        }
    }

    #[test]
    fn long_lines_and_size() {
        let mut msg = vec![b'x'; 998];
        msg.extend_from_slice(b"\r\n.\r\n");
        assert!(!decode(&msg).2.long_line);
        let mut msg = vec![b'x'; 999];
        msg.extend_from_slice(b"\r\n.\r\n");
        assert!(decode(&msg).2.long_line);

        let mut d = DataDecoder::new(1000, 10);
        let mut out = Vec::new();
        let f = d.feed(b"0123456789abc\r\n.\r\n", &mut out);
        assert!(f.done);
        assert!(d.flags().too_big);
        assert!(out.len() <= 10);
    }

    #[test]
    fn chunk_scanner() {
        let mut s = ChunkScanner::new(1000);
        s.scan(b"a\r");
        s.scan(b"\nb\r\n");
        assert_eq!(s.finish(), DataFlags::default());
        let mut s = ChunkScanner::new(1000);
        s.scan(b"a\nb\r\n");
        assert!(s.finish().bare_cr_lf);
        let mut s = ChunkScanner::new(1000);
        s.scan(b"a\r");
        assert!(s.finish().bare_cr_lf);
    }

    #[test]
    fn normalize_and_stuff() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        let mut out = Vec::new();
        dot_stuff(b".a\r\nb\r\n.\r\n", &mut out);
        assert_eq!(out, b"..a\r\nb\r\n..\r\n.\r\n");
        let mut out = Vec::new();
        dot_stuff(b"x\n.\ny", &mut out);
        assert_eq!(out, b"x\n..\ny\r\n.\r\n");
    }

    /// NUL and other control bytes are message content (the documented
    /// choice in docs/security.md): stored and relayed unchanged, never
    /// flagged, and never an end-of-data marker, in DATA and in BDAT.
    #[test]
    fn nul_is_content_not_a_marker() {
        let msg = b"Subject: a\x00b\r\n\r\nx\x00\r\n.\x00\r\n\x00.\r\n\x01\x1b\x7f\r\n.\r\nQUIT\r\n";
        let (out, end, flags) = decode(msg);
        // A leading dot is unstuffed (RFC 5321 §4.5.2) whatever follows it.
        assert_eq!(out, b"Subject: a\x00b\r\n\r\nx\x00\r\n\x00\r\n\x00.\r\n\x01\x1b\x7f\r\n");
        assert_eq!(end, Some(msg.len() - b"QUIT\r\n".len()));
        assert_eq!(flags, DataFlags::default());
        let mut scan = ChunkScanner::new(1000);
        scan.scan(b"Subject: a\x00b\r\n\r\nx\x00\r\n");
        assert_eq!(scan.finish(), DataFlags::default());
        let mut stuffed = Vec::new();
        dot_stuff(b".\x00\r\n", &mut stuffed);
        assert_eq!(stuffed, b"..\x00\r\n.\r\n");
    }
}
