//! The octet-at-a-time DATA decoder and BDAT scanner that the `memchr`
//! versions in `data.rs` replaced, kept as the reference they are tested
//! against: here by the unit tests, and by the fuzz target `data`
//! (`fuzz/fuzz_targets/data.rs` includes this file). Self-contained on
//! purpose: it shares no code with what it checks.
//!
//! Flags are `[bare_cr_lf, long_line, too_big]`.

#![allow(dead_code)]

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    LineStart,
    Mid,
    Cr,
    Dot,
    DotCr,
}

struct Decoder {
    st: St,
    line_len: usize,
    max_line: usize,
    max_size: u64,
    size: u64,
    flags: [bool; 3],
}

impl Decoder {
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.flags[2] {
            return;
        }
        if self.size + bytes.len() as u64 > self.max_size {
            self.flags[2] = true;
            return;
        }
        self.size += bytes.len() as u64;
        out.extend_from_slice(bytes);
    }

    fn content(&mut self, out: &mut Vec<u8>, c: u8) {
        self.line_len += 1;
        if self.line_len + 2 > self.max_line {
            self.flags[1] = true;
        }
        self.emit(out, &[c]);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        self.line_len = 0;
        self.emit(out, b"\r\n");
    }

    fn mid(&mut self, out: &mut Vec<u8>, c: u8) {
        match c {
            b'\r' => self.st = St::Cr,
            b'\n' => {
                self.flags[0] = true;
                self.end_line(out);
                self.st = St::Mid;
            }
            _ => {
                self.content(out, c);
                self.st = St::Mid;
            }
        }
    }

    /// `Some(consumed)` once the end marker was consumed.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        for (i, &c) in input.iter().enumerate() {
            match self.st {
                St::LineStart => match c {
                    b'.' => self.st = St::Dot,
                    _ => self.mid(out, c),
                },
                St::Mid => self.mid(out, c),
                St::Cr => {
                    if c == b'\n' {
                        self.end_line(out);
                        self.st = St::LineStart;
                    } else {
                        self.flags[0] = true;
                        self.end_line(out);
                        self.st = St::Mid;
                        self.mid(out, c);
                    }
                }
                St::Dot => match c {
                    b'\r' => self.st = St::DotCr,
                    _ => self.mid(out, c),
                },
                St::DotCr => {
                    if c == b'\n' {
                        return Some(i + 1);
                    }
                    self.flags[0] = true;
                    self.end_line(out);
                    self.st = St::Mid;
                    self.mid(out, c);
                }
            }
        }
        None
    }
}

/// Decodes `chunks` in turn: (decoded text, octets consumed up to and
/// including the end marker if it was found, flags).
pub(crate) fn decode(chunks: &[&[u8]], max_line: usize, max_size: u64) -> (Vec<u8>, Option<usize>, [bool; 3]) {
    let mut d = Decoder { st: St::LineStart, line_len: 0, max_line, max_size, size: 0, flags: [false; 3] };
    let (mut out, mut used) = (Vec::new(), 0);
    for c in chunks {
        if let Some(n) = d.feed(c, &mut out) {
            return (out, Some(used + n), d.flags);
        }
        used += c.len();
    }
    (out, None, d.flags)
}

/// Scans BDAT `chunks` in turn: the flags after the last one.
pub(crate) fn scan(chunks: &[&[u8]], max_line: usize) -> [bool; 3] {
    let (mut pending_cr, mut line_len, mut flags) = (false, 0usize, [false; 3]);
    for chunk in chunks {
        for &c in *chunk {
            if pending_cr {
                pending_cr = false;
                if c == b'\n' {
                    line_len = 0;
                    continue;
                }
                flags[0] = true;
                line_len = 0;
            }
            match c {
                b'\r' => pending_cr = true,
                b'\n' => {
                    flags[0] = true;
                    line_len = 0;
                }
                _ => {
                    line_len += 1;
                    if line_len + 2 > max_line {
                        flags[1] = true;
                    }
                }
            }
        }
    }
    if pending_cr {
        flags[0] = true;
    }
    flags
}
