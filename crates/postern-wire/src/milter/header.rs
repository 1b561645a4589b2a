//! The header section as milters see and change it: splitting a message,
//! values in sendmail's form, and applying header modifications.
//!
//! May touch: nothing (bytes in, values out).

use super::Response;

/// One header field of a message, as a milter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name, as written.
    pub name: String,
    /// The value after the colon, including leading white space, folded
    /// lines joined with CRLF, without the final CRLF.
    pub raw_value: String,
}

impl Header {
    /// The value the way sendmail hands it to milters: the one space after
    /// the colon removed (unless `keep_space`), line folds as bare `\n`.
    pub fn milter_value(&self, keep_space: bool) -> String {
        let v = if keep_space { &self.raw_value[..] } else { self.raw_value.strip_prefix(' ').unwrap_or(&self.raw_value) };
        v.replace("\r\n", "\n")
    }

    /// A header from a milter's name and value: folds become CRLF, and a
    /// space follows the colon unless the value starts with white space.
    /// A line break not followed by white space would start a new field,
    /// so one is added: a milter cannot inject fields through a value.
    pub fn from_milter(name: &str, value: &str) -> Header {
        let mut v = String::with_capacity(value.len() + 8);
        let mut lines = value.split('\n').map(|l| l.trim_end_matches('\r').replace('\r', " "));
        if let Some(first) = lines.next() {
            v.push_str(&first);
        }
        for l in lines {
            v.push_str("\r\n");
            if !l.starts_with([' ', '\t']) {
                v.push('\t');
            }
            v.push_str(&l);
        }
        let raw_value = if v.starts_with([' ', '\t']) { v } else { format!(" {v}") };
        Header { name: name.to_string(), raw_value }
    }

    /// RFC 5322 §3.6.8: a field name is printable US-ASCII except colon.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty() && name.len() <= 998 && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
    }

    /// The field in message form, CRLF-terminated.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.raw_value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Splits a CRLF message into its header fields and the offset where the
/// body starts (after the empty line; the end of `msg` when there is none).
/// Lines that are not fields (no colon) end the header section, as they
/// would for a reader of the message.
pub fn split_headers(msg: &[u8]) -> (Vec<Header>, usize) {
    let mut headers: Vec<Header> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = match msg[pos..].windows(2).position(|w| w == b"\r\n") {
            Some(i) => pos + i,
            None => msg.len(),
        };
        let line = &msg[pos..end];
        let next = (end + 2).min(msg.len());
        if line.is_empty() {
            return (headers, next);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match headers.last_mut() {
                Some(h) => {
                    h.raw_value.push_str("\r\n");
                    h.raw_value.push_str(&String::from_utf8_lossy(line));
                }
                None => return (headers, pos),
            }
        } else {
            match line.iter().position(|&b| b == b':') {
                Some(c) if c > 0 && line[..c].iter().all(|&b| b.is_ascii_graphic()) => headers.push(Header {
                    name: String::from_utf8_lossy(&line[..c]).into_owned(),
                    raw_value: String::from_utf8_lossy(&line[c + 1..]).into_owned(),
                }),
                _ => return (headers, pos),
            }
        }
        pos = next;
    }
    (headers, msg.len())
}

/// Applies a header modification to a header list (sendmail semantics).
/// Returns false (and changes nothing) for a malformed field name.
pub fn apply_header_change(headers: &mut Vec<Header>, change: &Response) -> bool {
    match change {
        Response::AddHeader { name, .. } | Response::InsertHeader { name, .. } | Response::ChangeHeader { name, .. }
            if !Header::valid_name(name) =>
        {
            return false
        }
        Response::AddHeader { name, value } => headers.push(Header::from_milter(name, value)),
        Response::InsertHeader { index, name, value } => {
            let at = (*index as usize).min(headers.len());
            headers.insert(at, Header::from_milter(name, value));
        }
        Response::ChangeHeader { index, name, value } => {
            // The index counts headers of that name from 1; 0 means 1.
            let nth = (*index as usize).max(1);
            let found = headers.iter().enumerate().filter(|(_, h)| h.name.eq_ignore_ascii_case(name)).nth(nth - 1).map(|(i, _)| i);
            match (found, value.is_empty()) {
                (Some(i), true) => {
                    headers.remove(i);
                }
                (Some(i), false) => headers[i] = Header::from_milter(&headers[i].name.clone(), value),
                // Changing a header that does not exist adds it.
                (None, false) => headers.push(Header::from_milter(name, value)),
                (None, true) => {}
            }
        }
        _ => {}
    }
    true
}
