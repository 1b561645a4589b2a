//! What the SMTP client may send to one next hop, decided before MAIL
//! FROM from the message's flags and what the connection is (pure, so the
//! decisions are tables in the tests):
//! - REQUIRETLS (RFC 8689 §4.2.1): a message that asked for it goes only
//!   over TLS whose certificate verified (WebPKI or DANE) to a next hop
//!   that offers REQUIRETLS, and MAIL FROM carries the option on; otherwise
//!   its recipients fail with 5.7.30. LMTP is local delivery: the end of
//!   the line, no check.
//! - `TLS-Required: No` (RFC 8689 §5): the sender lets the recipient
//!   domain's TLS policy failures pass; REQUIRETLS wins over it.
//! - IDNA (RFC 6531 §3.2, RFC 5891): to a next hop without SMTPUTF8 an
//!   address with an ASCII local part goes with its domain in A-labels; a
//!   UTF-8 local part still fails (5.6.7).
//!
//! May touch: nothing (pure). RFCs: 8689, 6531, 5890/5891.

use std::collections::HashSet;

use postern_wire::Enhanced;

use super::super::credentials::Channel;
use super::super::idna::to_ascii;
use super::super::reply::made;
use super::super::{DeliveryReply, Message};

/// What the transaction sends: the envelope in the form this next hop takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM's address (A-label domain when downgraded).
    pub sender: String,
    /// Send the `SMTPUTF8` parameter.
    pub smtputf8: bool,
    /// Send the `REQUIRETLS` parameter.
    pub requiretls: bool,
    /// (index into the recipients, address as sent).
    pub rcpts: Vec<(usize, String)>,
    /// (index, why): recipients that fail before the transaction.
    pub refused: Vec<(usize, DeliveryReply)>,
}

/// The next hop as the transaction sees it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// LMTP (local delivery) rather than SMTP.
    pub lmtp: bool,
    /// How the connection is protected.
    pub channel: Channel,
    /// EHLO keywords, upper case.
    pub ext: &'a HashSet<String>,
}

/// 554 5.7.30: REQUIRETLS could not be honoured (RFC 8689 §7 registers
/// 5.7.30 "REQUIRETLS support required").
pub fn requiretls_unmet(why: &str) -> DeliveryReply {
    DeliveryReply::new(554, Enhanced(5, 7, 30), format!("REQUIRETLS: {why}; not sent"))
}

/// RFC 8689 §4.2.1: may a REQUIRETLS message go over this connection?
/// `Err` is the reason every recipient fails.
pub fn requiretls_gate(requiretls: bool, peer: Peer<'_>) -> Result<(), DeliveryReply> {
    if !requiretls || peer.lmtp {
        return Ok(());
    }
    match peer.channel {
        Channel::Plaintext => Err(requiretls_unmet("the next hop was reached without TLS")),
        Channel::UnverifiedTls => Err(requiretls_unmet("the next hop's TLS certificate did not verify")),
        Channel::VerifiedTls if !peer.ext.contains("REQUIRETLS") => Err(requiretls_unmet("the next hop does not offer REQUIRETLS")),
        Channel::VerifiedTls => Ok(()),
    }
}

/// The address for a next hop without SMTPUTF8: unchanged when ASCII, the
/// domain in A-labels when only the domain is UTF-8, `None` when the local
/// part is UTF-8 (or the domain is no valid IDN). `""` (the null sender)
/// stays.
pub fn ascii_address(addr: &str) -> Option<String> {
    if addr.is_ascii() {
        return Some(addr.to_string());
    }
    let (local, domain) = addr.rsplit_once('@')?;
    if !local.is_ascii() {
        return None;
    }
    Some(format!("{local}@{}", to_ascii(domain).ok()?))
}

/// The envelope to send `msg` to `rcpts` over `peer`; `Err` when every
/// recipient fails with that reply (REQUIRETLS unmet, or a sender that
/// needs SMTPUTF8 the next hop lacks).
pub fn envelope(msg: &Message, rcpts: &[String], peer: Peer<'_>) -> Result<Envelope, DeliveryReply> {
    requiretls_gate(msg.requiretls, peer)?;
    let requiretls = msg.requiretls && !peer.lmtp;
    if !msg.smtputf8 || peer.ext.contains("SMTPUTF8") {
        let rcpts = rcpts.iter().cloned().enumerate().collect();
        return Ok(Envelope { sender: msg.sender.clone(), smtputf8: msg.smtputf8, requiretls, rcpts, refused: Vec::new() });
    }
    // RFC 6531 §3.2 leaves a non-SMTPUTF8 next hop to us: A-labels where
    // that is enough, a 5.6.7 failure where it is not.
    let sender = ascii_address(&msg.sender).ok_or_else(made::no_smtputf8)?;
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for (i, r) in rcpts.iter().enumerate() {
        match ascii_address(r) {
            Some(a) => ok.push((i, a)),
            None => refused.push((i, made::no_smtputf8())),
        }
    }
    Ok(Envelope { sender, smtputf8: false, requiretls, rcpts: ok, refused })
}

/// RFC 8689 §5: does the message's first header block carry
/// `TLS-Required: No`? Unfolded, case-insensitive; the first such field
/// counts. Only the header is read (it ends at the first empty line or
/// the first line that is no header field).
pub fn tls_required_no(body: &[u8]) -> bool {
    let mut lines = body.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return false;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // a continuation line of a field we skipped
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) {
            return false;
        }
        if !name.eq_ignore_ascii_case(b"TLS-Required") {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                value.extend_from_slice(next);
                lines.next();
            } else {
                break;
            }
        }
        return String::from_utf8_lossy(&value).trim().eq_ignore_ascii_case("no");
    }
    false
}

#[cfg(test)]
mod tests;
