//! The typed result text of a delivery: an optional SMTP code, an RFC 3463
//! enhanced status and the text, as a peer replied or as we describe a
//! local failure. Every reply postern makes up itself is built here (or by
//! the `reply()` of an error enum), so its status is never guessed from text.
//!
//! Its `Display` form is what the mail log's `reply=` field and the
//! envelope's `last_reply` hold (docs/queue-format.md):
//! `[code ]class.subject.detail text`, e.g. `550 5.1.1 <a@b>: no such user`
//! or `4.4.1 connect to mx.example:25: timed out`.
//!
//! May touch: nothing (pure). RFC 3463 (enhanced status codes), RFC 5321 §4.2.

use std::fmt;
use std::path::Path;

use postern_wire::Enhanced;

/// One delivery reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReply {
    /// The SMTP/LMTP reply code, when a peer (or a local transport speaking
    /// SMTP's language) gave one; `None` for errors below the protocol.
    pub code: Option<u16>,
    /// The enhanced status code, when known; see [`DeliveryReply::status`].
    pub enhanced: Option<Enhanced>,
    /// The text (a multi-line peer reply is joined with " / ").
    pub text: String,
}

impl DeliveryReply {
    /// A reply with a code and an enhanced status.
    pub fn new(code: u16, status: Enhanced, text: impl Into<String>) -> DeliveryReply {
        DeliveryReply { code: Some(code), enhanced: Some(status), text: text.into() }
    }

    /// A reason without an SMTP code (connection, DNS, TLS, set-up errors).
    pub fn status_only(status: Enhanced, text: impl Into<String>) -> DeliveryReply {
        DeliveryReply { code: None, enhanced: Some(status), text: text.into() }
    }

    /// A peer's reply.
    pub fn from_wire(r: &postern_wire::Reply) -> DeliveryReply {
        let text = r.lines.iter().map(|l| l.as_ref()).collect::<Vec<_>>().join(" / ");
        DeliveryReply { code: Some(r.code), enhanced: r.enhanced, text }
    }

    /// The RFC 3463 status for a DSN: the enhanced code, else the class of
    /// the reply code (`X.0.0`), else 5.0.0.
    pub fn status(&self) -> Enhanced {
        if let Some(e) = self.enhanced {
            return e;
        }
        match self.code.map(|c| c / 100) {
            Some(c @ 2..=5) => Enhanced(c as u8, 0, 0),
            _ => Enhanced(5, 0, 0),
        }
    }

    /// Decodes the `last_reply` text of an envelope written by any version
    /// of postern (the inverse of `Display`). Text of unknown shape keeps
    /// its words and gets 5.0.0, or 4.4.7 when it speaks of expiry (RFC
    /// 3463: "delivery time expired").
    pub fn from_stored(text: &str) -> DeliveryReply {
        let mut rest = text;
        let mut code = None;
        if let Some((w, r)) = rest.split_once(' ') {
            if w.len() == 3 && w.bytes().all(|c| c.is_ascii_digit()) {
                code = w.parse().ok();
                rest = r;
            }
        }
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Some(e) = parse_enhanced(word) {
            return DeliveryReply { code, enhanced: Some(e), text: after.to_string() };
        }
        if code.is_none() && text.contains("expired") {
            return DeliveryReply { code: None, enhanced: Some(Enhanced(4, 4, 7)), text: text.to_string() };
        }
        match code {
            Some(_) => DeliveryReply { code, enhanced: None, text: rest.to_string() },
            None => DeliveryReply { code: None, enhanced: None, text: text.to_string() },
        }
    }
}

/// `class.subject.detail` with class 2, 4 or 5 (RFC 3463 §3.1).
fn parse_enhanced(word: &str) -> Option<Enhanced> {
    let mut parts = word.split('.');
    let mut num = |max: usize| parts.next().filter(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|c| c.is_ascii_digit()));
    let a: u8 = num(1)?.parse().ok()?;
    let b: u16 = num(3)?.parse().ok()?;
    let c: u16 = num(3)?.parse().ok()?;
    (parts.next().is_none() && matches!(a, 2 | 4 | 5)).then_some(Enhanced(a, b, c))
}

impl fmt::Display for DeliveryReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(c) = self.code {
            write!(f, "{c}")?;
            sep = " ";
        }
        if let Some(e) = self.enhanced {
            write!(f, "{sep}{e}")?;
            sep = " ";
        }
        write!(f, "{sep}{}", self.text)
    }
}

/// The replies postern makes up itself, by name.
pub mod made {
    use super::*;

    /// 553 5.6.7: the message needs SMTPUTF8, the next hop lacks it (RFC 6531 §3.4).
    pub fn no_smtputf8() -> DeliveryReply {
        DeliveryReply::new(553, Enhanced(5, 6, 7), "next hop does not support SMTPUTF8")
    }

    /// 554 5.6.3: 8-bit content to a next hop without 8BITMIME (we do not convert).
    pub fn no_8bitmime() -> DeliveryReply {
        DeliveryReply::new(554, Enhanced(5, 6, 3), "next hop does not support 8BITMIME; postern does not convert to 7 bit")
    }

    /// 4.0.0: the peer gave no reply for this recipient.
    pub fn no_reply() -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 0, 0), "no reply")
    }

    /// 4.3.0: a transport returned fewer outcomes than recipients.
    pub fn no_outcome() -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 3, 0), "no outcome")
    }

    /// 4.3.0: the account directory (`[sql]`, `[ldap]`) cannot say now
    /// whether a virtual-domain mailbox exists.
    pub fn directory_unavailable(rcpt: &str) -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 3, 0), format!("<{rcpt}>: account directory unavailable"))
    }

    /// 550 5.1.1: local delivery to a mailbox nobody knows.
    pub fn no_such_local_mailbox(rcpt: &str) -> DeliveryReply {
        DeliveryReply::new(550, Enhanced(5, 1, 1), format!("<{rcpt}>: no such local mailbox"))
    }

    /// 550 5.1.3: a local part that cannot be a Maildir name.
    pub fn mailbox_name_not_allowed(rcpt: &str) -> DeliveryReply {
        DeliveryReply::new(550, Enhanced(5, 1, 3), format!("<{rcpt}>: mailbox name not allowed"))
    }

    /// 250 2.0.0: written to a Maildir.
    pub fn delivered_to_maildir(file: &Path) -> DeliveryReply {
        DeliveryReply::new(250, Enhanced(2, 0, 0), format!("delivered to maildir {}", file.display()))
    }

    /// 452 4.2.2: no space for the Maildir copy.
    pub fn mailbox_full(rcpt: &str, e: &std::io::Error) -> DeliveryReply {
        DeliveryReply::new(452, Enhanced(4, 2, 2), format!("<{rcpt}>: mailbox full or disk full: {e}"))
    }

    /// 451 4.3.0: the Maildir copy could not be written.
    pub fn maildir_write_failed(rcpt: &str, dir: &Path, e: &std::io::Error) -> DeliveryReply {
        DeliveryReply::new(451, Enhanced(4, 3, 0), format!("<{rcpt}>: cannot write maildir {}: {e}", dir.display()))
    }

    /// 4.3.0: the blocking Maildir task died.
    pub fn maildir_task_failed(e: &dyn std::fmt::Display) -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 3, 0), format!("maildir delivery task failed: {e}"))
    }

    /// 556 5.1.10: RFC 7505 null MX.
    pub fn null_mx(domain: &str) -> DeliveryReply {
        DeliveryReply::new(556, Enhanced(5, 1, 10), format!("{domain} does not accept mail (null MX, RFC 7505)"))
    }

    /// 554 5.4.6: every MX address of the domain is this host (Postfix's wording).
    pub fn loops_back(domain: &str) -> DeliveryReply {
        DeliveryReply::new(554, Enhanced(5, 4, 6), format!("mail for {domain} loops back to myself"))
    }

    /// 550 5.1.2: the domain does not exist.
    pub fn no_such_domain(domain: &str) -> DeliveryReply {
        DeliveryReply::new(550, Enhanced(5, 1, 2), format!("domain {domain} does not exist (NXDOMAIN)"))
    }

    /// 4.4.7: one delivery attempt outlived `queue.attempt_timeout`.
    pub fn attempt_timed_out(limit: std::time::Duration) -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 4, 7), format!("delivery attempt timed out after {}s", limit.as_secs()))
    }

    /// 4.4.7: the message outlived `queue.max_lifetime`; keeps the last reply's text.
    pub fn expired(last: &str) -> DeliveryReply {
        DeliveryReply::status_only(Enhanced(4, 4, 7), format!("delivery time expired; last reply: {last}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_from_stored_round_trip() {
        for text in [
            "550 5.1.1 <x@y>: unknown",
            "4.4.1 connect to a:25: timed out",
            "250 2.0.0 delivered to maildir /m/new/x",
            "4.4.7 delivery time expired; last reply: 451 4.3.0 later",
            "451 try later",
        ] {
            assert_eq!(DeliveryReply::from_stored(text).to_string(), text);
        }
    }

    #[test]
    fn statuses() {
        let st = |t: &str| DeliveryReply::from_stored(t).status().to_string();
        assert_eq!(st("550 5.1.1 <x@y>: unknown"), "5.1.1");
        assert_eq!(st("4.4.1 connect failed"), "4.4.1");
        assert_eq!(st("delivery time expired"), "4.4.7");
        assert_eq!(st("weird"), "5.0.0");
        assert_eq!(st("451 later"), "4.0.0");
        assert_eq!(made::null_mx("d").status().to_string(), "5.1.10");
        let peer = postern_wire::reply::parse_reply_lines(&["250-2.0.0 ok", "250 2.0.0 queued"]).unwrap();
        assert_eq!(DeliveryReply::from_wire(&peer).to_string(), peer.summary());
    }
}
