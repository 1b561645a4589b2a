//! The sendmail milter protocol, MTA side, without I/O.
//!
//! Protocol version 6 as spoken by sendmail 8.14+ and Postfix 2.6+
//! (`libmilter/mfdef.h`, `docs/milter-protocol.txt` of sendmail; there is no
//! RFC). Every packet is a 4-octet big-endian length (counting the command
//! octet), one command octet, and data. Strings are NUL-terminated.
//!
//! No maintained Rust crate implements the MTA side (`indymilter` is the
//! filter side), so this codec is ours: [`Command::encode`] builds what the
//! MTA sends, [`parse_frame`] cuts packets out of a byte buffer and
//! [`Response::parse`] turns one into a typed value.

use crate::reply::{parse_reply_lines, Reply};

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// Body chunks sent to a milter are at most this long (`MILTER_CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 65535;

/// The largest packet we accept from a milter: 1 MiB of data (what
/// `SMFIP_MDS_1M` allows) plus headroom for the command and length.
pub const MAX_PACKET: usize = 1024 * 1024 + 1024;

/// Actions a milter may take (`SMFIF_*`), offered in option negotiation.
pub mod action {
    /// Add headers.
    pub const ADDHDRS: u32 = 0x01;
    /// Replace the body.
    pub const CHGBODY: u32 = 0x02;
    /// Add recipients.
    pub const ADDRCPT: u32 = 0x04;
    /// Delete recipients.
    pub const DELRCPT: u32 = 0x08;
    /// Change or delete headers.
    pub const CHGHDRS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHGFROM: u32 = 0x40;
    /// Add recipients with ESMTP parameters.
    pub const ADDRCPT_PAR: u32 = 0x80;
    /// Ask for a list of macros per stage.
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything above: what postern offers.
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps (`SMFIP_*`): what the milter does not want to see, and
/// where it will not reply.
pub mod proto {
    /// No CONNECT.
    pub const NOCONNECT: u32 = 0x01;
    /// No HELO.
    pub const NOHELO: u32 = 0x02;
    /// No MAIL.
    pub const NOMAIL: u32 = 0x04;
    /// No RCPT.
    pub const NORCPT: u32 = 0x08;
    /// No body.
    pub const NOBODY: u32 = 0x10;
    /// No headers.
    pub const NOHDRS: u32 = 0x20;
    /// No end-of-headers.
    pub const NOEOH: u32 = 0x40;
    /// No reply to HEADER.
    pub const NR_HDR: u32 = 0x80;
    /// No unknown commands.
    pub const NOUNKNOWN: u32 = 0x100;
    /// No DATA.
    pub const NODATA: u32 = 0x200;
    /// The MTA understands SKIP.
    pub const SKIP: u32 = 0x400;
    /// Also send rejected recipients.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to CONNECT.
    pub const NR_CONN: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to unknown commands.
    pub const NR_UNKN: u32 = 0x20000;
    /// No reply to EOH.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to BODY chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space.
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Larger data sizes (256 KiB / 1 MiB) are fine with us.
    pub const MDS_256K: u32 = 0x1000_0000;
    /// See [`MDS_256K`].
    pub const MDS_1M: u32 = 0x2000_0000;
    /// Every step and no-reply flag postern honours: what it offers.
    pub const OFFERED: u32 = 0x1f_ffff | MDS_256K | MDS_1M;
}

/// The SMTP stage a command or a macro list belongs to (`SMFIM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// CONNECT.
    Connect,
    /// HELO/EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// End of message.
    Eom,
    /// End of headers.
    Eoh,
}

impl Stage {
    /// The stage for an `SMFIM_*` index.
    pub fn from_index(i: u32) -> Option<Stage> {
        Some(match i {
            0 => Stage::Connect,
            1 => Stage::Helo,
            2 => Stage::Mail,
            3 => Stage::Rcpt,
            4 => Stage::Data,
            5 => Stage::Eom,
            6 => Stage::Eoh,
            _ => return None,
        })
    }

    /// The command octet the macros of this stage are attached to.
    fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address family in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// IPv4 address and port.
    Inet(std::net::Ipv4Addr, u16),
    /// IPv6 address and port.
    Inet6(std::net::Ipv6Addr, u16),
    /// Unknown (local submission).
    Unknown,
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Option negotiation: version, actions offered, protocol steps offered.
    OptNeg { version: u32, actions: u32, protocol: u32 },
    /// Macros for the next command of `stage`.
    Macros { stage: Stage, pairs: &'a [(&'a str, String)] },
    /// A new connection.
    Connect { hostname: &'a str, family: Family },
    /// HELO/EHLO argument.
    Helo(&'a str),
    /// MAIL FROM: the `<path>` and ESMTP parameters.
    Mail(&'a [String]),
    /// RCPT TO: the `<path>` and ESMTP parameters.
    Rcpt(&'a [String]),
    /// DATA was given.
    Data,
    /// One header field, name and value (folded lines joined with `\n`).
    Header { name: &'a str, value: &'a str },
    /// End of headers.
    Eoh,
    /// A body chunk (at most [`CHUNK_SIZE`]).
    Body(&'a [u8]),
    /// End of message.
    BodyEob,
    /// The transaction is over (RSET, or after EOM): forget message state.
    Abort,
    /// Close.
    Quit,
}

impl Command<'_> {
    /// Appends the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Command::OptNeg { version, actions, protocol } => {
                out.push(b'O');
                for v in [version, actions, protocol] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Command::Macros { stage, pairs } => {
                out.push(b'D');
                out.push(stage.command());
                for (k, v) in pairs.iter() {
                    push_str(out, k.as_bytes());
                    push_str(out, v.as_bytes());
                }
            }
            Command::Connect { hostname, family } => {
                out.push(b'C');
                push_str(out, hostname.as_bytes());
                match family {
                    Family::Inet(a, p) => {
                        out.push(b'4');
                        out.extend_from_slice(&p.to_be_bytes());
                        push_str(out, a.to_string().as_bytes());
                    }
                    Family::Inet6(a, p) => {
                        out.push(b'6');
                        out.extend_from_slice(&p.to_be_bytes());
                        push_str(out, a.to_string().as_bytes());
                    }
                    Family::Unknown => out.push(b'U'),
                }
            }
            Command::Helo(h) => {
                out.push(b'H');
                push_str(out, h.as_bytes());
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                out.push(if matches!(self, Command::Mail(_)) { b'M' } else { b'R' });
                for a in args.iter() {
                    push_str(out, a.as_bytes());
                }
            }
            Command::Data => out.push(b'T'),
            Command::Header { name, value } => {
                out.push(b'L');
                push_str(out, name.as_bytes());
                push_str(out, value.as_bytes());
            }
            Command::Eoh => out.push(b'N'),
            Command::Body(b) => {
                out.push(b'B');
                out.extend_from_slice(b);
            }
            Command::BodyEob => out.push(b'E'),
            Command::Abort => out.push(b'A'),
            Command::Quit => out.push(b'Q'),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// NUL is the string terminator, so a value cannot carry one.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().map(|&b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

/// What a milter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Option negotiation reply, with the macros the milter wants per
    /// stage (`SMFIR_SETSYMLIST` data; empty: whatever the MTA sends).
    OptNeg { version: u32, actions: u32, protocol: u32, macros: Vec<(Stage, Vec<String>)> },
    /// Accept: no more from this milter for this message (or connection).
    Accept,
    /// Go on.
    Continue,
    /// Accept the message, then silently drop it.
    Discard,
    /// Reject (5xx).
    Reject,
    /// Temporary failure (4xx).
    Tempfail,
    /// Reject with this reply (`SMFIR_REPLYCODE`, 4xx or 5xx).
    ReplyCode(Reply),
    /// Stop sending body chunks; EOM comes next.
    Skip,
    /// Still working: extend the timeout.
    Progress,
    /// Put the message on hold with this reason.
    Quarantine(String),
    /// Append a header.
    AddHeader { name: String, value: String },
    /// Insert a header at 0-based position `index`.
    InsertHeader { index: u32, name: String, value: String },
    /// Change the `index`-th (1-based) header called `name`; empty value deletes.
    ChangeHeader { index: u32, name: String, value: String },
    /// Add a recipient (with optional ESMTP parameters).
    AddRcpt { rcpt: String, params: Option<String> },
    /// Delete a recipient.
    DelRcpt(String),
    /// A chunk of the replacement body.
    ReplaceBody(Vec<u8>),
    /// Change the envelope sender (with optional ESMTP parameters).
    ChangeFrom { from: String, params: Option<String> },
    /// Drop the SMTP connection (with a 421).
    ConnFail,
    /// Shut down: 421 to the client.
    Shutdown,
    /// Macros wanted per stage (only valid in negotiation; ignored).
    SetSymList,
}

/// A packet that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MilterError {
    /// The length field is zero or larger than [`MAX_PACKET`].
    #[error("bad packet length {0}")]
    Length(usize),
    /// The command octet is not one we know.
    #[error("unknown response {0:?}")]
    Unknown(char),
    /// The data does not fit the command.
    #[error("malformed {0} response")]
    Malformed(&'static str),
}

/// One packet cut out of a buffer: command octet, data, octets consumed.
pub type Frame<'a> = (u8, &'a [u8], usize);

/// Cuts one packet out of `buf`: `Ok(Some((command, data, consumed)))`,
/// `Ok(None)` when more bytes are needed.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, MilterError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(MilterError::Length(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[5..4 + len], 4 + len)))
}

/// Splits NUL-terminated strings (a missing final NUL is tolerated).
fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    data.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn u32_at<'a>(data: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8]), MilterError> {
    if data.len() < 4 {
        return Err(MilterError::Malformed(what));
    }
    Ok((u32::from_be_bytes([data[0], data[1], data[2], data[3]]), &data[4..]))
}

fn name_value(data: &[u8], what: &'static str) -> Result<(String, String), MilterError> {
    let mut s = strings(data).into_iter();
    let name = s.next().filter(|n| !n.is_empty()).ok_or(MilterError::Malformed(what))?;
    let value = s.next().unwrap_or_default();
    Ok((name, value))
}

fn addr_params(data: &[u8], what: &'static str) -> Result<(String, Option<String>), MilterError> {
    let mut s = strings(data).into_iter();
    let addr = s.next().filter(|n| !n.is_empty()).ok_or(MilterError::Malformed(what))?;
    Ok((addr, s.next().filter(|p| !p.is_empty())))
}

impl Response {
    /// Decodes one packet.
    pub fn parse(cmd: u8, data: &[u8]) -> Result<Response, MilterError> {
        Ok(match cmd {
            b'O' => {
                let (version, rest) = u32_at(data, "option negotiation")?;
                let (actions, rest) = u32_at(rest, "option negotiation")?;
                let (protocol, mut rest) = u32_at(rest, "option negotiation")?;
                let mut macros = Vec::new();
                while !rest.is_empty() {
                    let (stage, after) = u32_at(rest, "macro list")?;
                    let end = after.iter().position(|&b| b == 0).unwrap_or(after.len());
                    let names = String::from_utf8_lossy(&after[..end]).split_whitespace().map(str::to_string).collect();
                    if let Some(stage) = Stage::from_index(stage) {
                        macros.push((stage, names));
                    }
                    rest = after.get(end + 1..).unwrap_or(&[]);
                }
                Response::OptNeg { version, actions, protocol, macros }
            }
            b'a' => Response::Accept,
            b'c' => Response::Continue,
            b'd' => Response::Discard,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b's' => Response::Skip,
            b'p' => Response::Progress,
            b'f' => Response::ConnFail,
            b'4' => Response::Shutdown,
            b'l' => Response::SetSymList,
            b'y' => Response::ReplyCode(parse_replycode(data)?),
            b'q' => Response::Quarantine(strings(data).into_iter().next().unwrap_or_default()),
            b'h' => {
                let (name, value) = name_value(data, "add header")?;
                Response::AddHeader { name, value }
            }
            b'i' | b'm' => {
                let what = if cmd == b'i' { "insert header" } else { "change header" };
                let (index, rest) = u32_at(data, what)?;
                let (name, value) = name_value(rest, what)?;
                if cmd == b'i' {
                    Response::InsertHeader { index, name, value }
                } else {
                    Response::ChangeHeader { index, name, value }
                }
            }
            b'+' | b'2' => {
                let (rcpt, params) = addr_params(data, "add recipient")?;
                Response::AddRcpt { rcpt, params }
            }
            b'-' => Response::DelRcpt(addr_params(data, "delete recipient")?.0),
            b'b' => Response::ReplaceBody(data.to_vec()),
            b'e' => {
                let (from, params) = addr_params(data, "change sender")?;
                Response::ChangeFrom { from, params }
            }
            other => return Err(MilterError::Unknown(other as char)),
        })
    }

    /// True for the replies that end a command's exchange (as opposed to
    /// modifications and progress, which come before the final reply).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Response::Accept
                | Response::Continue
                | Response::Discard
                | Response::Reject
                | Response::Tempfail
                | Response::ReplyCode(_)
                | Response::Skip
                | Response::ConnFail
                | Response::Shutdown
                | Response::OptNeg { .. }
        )
    }
}

/// `SMFIR_REPLYCODE`: "550 5.7.1 text", possibly multi-line with CRLF.
fn parse_replycode(data: &[u8]) -> Result<Reply, MilterError> {
    let text = strings(data).into_iter().next().unwrap_or_default();
    let lines: Vec<&str> = text.split("\r\n").map(|l| l.trim_end_matches('\n')).filter(|l| !l.is_empty()).collect();
    let reply = parse_reply_lines(&lines).ok_or(MilterError::Malformed("reply code"))?;
    // Only failures may be set this way (libmilter enforces the same).
    if !(400..600).contains(&reply.code) {
        return Err(MilterError::Malformed("reply code"));
    }
    Ok(reply)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        Command::OptNeg { version: 6, actions: 0x1ff, protocol: 0x3f }.encode(&mut out);
        assert_eq!(out, [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0x3f]);
        out.clear();
        Command::Connect { hostname: "mx.example", family: Family::Inet("127.0.0.1".parse().unwrap(), 25) }.encode(&mut out);
        assert_eq!(&out[4..], b"Cmx.example\x004\x00\x19127.0.0.1\x00");
        out.clear();
        let pairs = [("j", "host".to_string()), ("{client_addr}", "1.2.3.4".to_string())];
        Command::Macros { stage: Stage::Connect, pairs: &pairs }.encode(&mut out);
        assert_eq!(&out[4..], b"DCj\x00host\x00{client_addr}\x001.2.3.4\x00");
        out.clear();
        Command::Mail(&["<a@b>".into(), "SIZE=10".into()]).encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x0fM<a@b>\x00SIZE=10\x00");
        out.clear();
        Command::Header { name: "Subject", value: "a\0b" }.encode(&mut out);
        assert_eq!(&out[4..], b"LSubject\x00a b\x00");
    }

    #[test]
    fn frames_and_responses() {
        assert_eq!(parse_frame(&[0, 0, 0]), Ok(None));
        assert_eq!(parse_frame(&[0, 0, 0, 2, b'c']), Ok(None));
        assert_eq!(parse_frame(&[0, 0, 0, 0]), Err(MilterError::Length(0)));
        assert_eq!(parse_frame(&[0x7f, 0, 0, 0, b'c']), Err(MilterError::Length(0x7f00_0000)));
        let (c, d, n) = parse_frame(&[0, 0, 0, 1, b'c', 9]).unwrap().unwrap();
        assert_eq!((c, d, n), (b'c', &[][..], 5));
        let cases: Vec<(u8, &[u8], Response)> = vec![
            (b'a', b"", Response::Accept),
            (
                b'O',
                b"\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x02{auth_authen} i\0\0\0\0\x09junk\0",
                Response::OptNeg { version: 6, actions: 1, protocol: 0, macros: vec![(Stage::Mail, vec!["{auth_authen}".into(), "i".into()])] },
            ),
            (b'q', b"virus\0", Response::Quarantine("virus".into())),
            (b'h', b"X-A\0v\0", Response::AddHeader { name: "X-A".into(), value: "v".into() }),
            (b'i', b"\0\0\0\x01X-B\0w\0", Response::InsertHeader { index: 1, name: "X-B".into(), value: "w".into() }),
            (b'm', b"\0\0\0\x02Subject\0\0", Response::ChangeHeader { index: 2, name: "Subject".into(), value: String::new() }),
            (b'+', b"<x@y>\0", Response::AddRcpt { rcpt: "<x@y>".into(), params: None }),
            (b'2', b"<x@y>\0NOTIFY=NEVER\0", Response::AddRcpt { rcpt: "<x@y>".into(), params: Some("NOTIFY=NEVER".into()) }),
            (b'-', b"<x@y>\0", Response::DelRcpt("<x@y>".into())),
            (b'e', b"<s@y>\0", Response::ChangeFrom { from: "<s@y>".into(), params: None }),
            (b'b', b"new body\r\n", Response::ReplaceBody(b"new body\r\n".to_vec())),
        ];
        for (c, d, want) in cases {
            assert_eq!(Response::parse(c, d).unwrap(), want, "{}", c as char);
        }
        let Response::ReplyCode(r) = Response::parse(b'y', b"554 5.7.1 go away\0").unwrap() else { panic!() };
        assert_eq!(r.summary(), "554 5.7.1 go away");
        assert!(Response::parse(b'y', b"250 2.0.0 fine\0").is_err());
        assert!(Response::parse(b'h', b"\0").is_err());
        assert!(Response::parse(b'i', b"\0\0").is_err());
        assert_eq!(Response::parse(b'Z', b""), Err(MilterError::Unknown('Z')));
    }

    /// Arbitrary bytes never panic the codec (a bounded, seeded stand-in
    /// for a fuzz target: cargo-fuzz needs a nightly toolchain).
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"\0\r\n :\tabcXY<>@.5y";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 { alphabet[(r as usize / 3) % alphabet.len()] } else { (r >> 8) as u8 }
                })
                .collect();
            let cmd = b"OacdrtspfayqhimM+2-be4lZ"[(next() % 24) as usize];
            if let Ok(r) = Response::parse(cmd, &data) {
                let mut h = split_headers(&data).0;
                apply_header_change(&mut h, &r);
                let mut out = Vec::new();
                for f in &h {
                    f.encode(&mut out);
                }
            }
            let _ = parse_frame(&data);
        }
    }

    #[test]
    fn headers_split_and_change() {
        let msg = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-A: 1\r\nsubject: two\r\n\r\nbody\r\n";
        let (mut h, body) = split_headers(msg);
        assert_eq!(&msg[body..], b"body\r\n");
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].milter_value(false), "from x\n\tby y");
        apply_header_change(&mut h, &Response::ChangeHeader { index: 2, name: "Subject".into(), value: "new".into() });
        assert_eq!(h[3].raw_value, " new");
        apply_header_change(&mut h, &Response::ChangeHeader { index: 1, name: "X-A".into(), value: String::new() });
        assert_eq!(h.len(), 3);
        apply_header_change(&mut h, &Response::InsertHeader { index: 0, name: "X-Top".into(), value: "a\n\tb".into() });
        let mut out = Vec::new();
        h[0].encode(&mut out);
        assert_eq!(out, b"X-Top: a\r\n\tb\r\n");
        assert!(!apply_header_change(&mut h, &Response::AddHeader { name: "Bad Name".into(), value: "v".into() }));
        assert!(!apply_header_change(&mut h, &Response::AddHeader { name: "X\r\nBcc".into(), value: "v".into() }));
        out.clear();
        Header::from_milter("X-Inj", "a\nBcc: victim@example.org\r\n\tok").encode(&mut out);
        assert_eq!(out, b"X-Inj: a\r\n\tBcc: victim@example.org\r\n\tok\r\n");
        let (h2, b2) = split_headers(b"no header line\r\n\r\n");
        assert!(h2.is_empty());
        assert_eq!(b2, 0);
        let (h3, b3) = split_headers(b"A: b\r\n");
        assert_eq!((h3.len(), b3), (1, 6));
    }
}
