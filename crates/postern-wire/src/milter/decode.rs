//! Cutting packets out of a byte stream and decoding a milter's
//! responses (`SMFIR_*`).
//!
//! May touch: nothing (bytes in, values out).

use crate::reply::{parse_reply_lines, Reply};

use super::{MilterError, Stage, MAX_PACKET};

/// What a milter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Option negotiation reply, with the macros the milter wants per
    /// stage (`SMFIR_SETSYMLIST` data; empty: whatever the MTA sends).
    OptNeg {
        /// The milter's protocol version.
        version: u32,
        /// The actions (`SMFIF_*`) it wants.
        actions: u32,
        /// The protocol steps (`SMFIP_*`) it does not want.
        protocol: u32,
        /// Macro names wanted, per stage.
        macros: Vec<(Stage, Vec<String>)>,
    },
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
    AddHeader {
        /// Field name.
        name: String,
        /// Field value (folds as `\n`).
        value: String,
    },
    /// Insert a header at 0-based position `index`.
    InsertHeader {
        /// 0-based position in the header list.
        index: u32,
        /// Field name.
        name: String,
        /// Field value (folds as `\n`).
        value: String,
    },
    /// Change the `index`-th (1-based) header called `name`; empty value deletes.
    ChangeHeader {
        /// 1-based occurrence of `name` (0 counts as 1).
        index: u32,
        /// Field name.
        name: String,
        /// New value; empty deletes the field.
        value: String,
    },
    /// Add a recipient (with optional ESMTP parameters).
    AddRcpt {
        /// The recipient, usually `<addr>`.
        rcpt: String,
        /// ESMTP parameters (`SMFIR_ADDRCPT_PAR`).
        params: Option<String>,
    },
    /// Delete a recipient.
    DelRcpt(String),
    /// A chunk of the replacement body.
    ReplaceBody(Vec<u8>),
    /// Change the envelope sender (with optional ESMTP parameters).
    ChangeFrom {
        /// The new sender, usually `<addr>`.
        from: String,
        /// ESMTP parameters.
        params: Option<String>,
    },
    /// Drop the SMTP connection (with a 421).
    ConnFail,
    /// Shut down: 421 to the client.
    Shutdown,
    /// Macros wanted per stage (only valid in negotiation; ignored).
    SetSymList,
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
