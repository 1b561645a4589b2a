//! The envelope: everything about a queued message except its text, in
//! the versioned JSON documented in docs/queue-format.md; and how a
//! complete message becomes a queued one ([`enqueue`], [`enqueue_draft`]).
//!
//! May touch: the spool, only through `Spool` (commit). RFC 3461 (the DSN
//! fields kept per recipient), RFC 8689 (the REQUIRETLS flag).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Draft, Place, QueueId, Spool, SpoolError};
use crate::time::now_unix;

/// The envelope format version written by this code.
pub const ENVELOPE_VERSION: u32 = 1;

/// Delivery state of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    /// Not yet delivered; will be tried at `next_attempt`.
    Pending,
    /// Delivered; nothing more to do.
    Delivered,
    /// Failed permanently (or expired); a bounce is owed unless `bounced`.
    Failed,
}

/// One recipient of a queued message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Where to deliver: the address after alias expansion.
    pub address: String,
    /// The address the client gave in RCPT TO (before aliases).
    pub original: String,
    /// Delivery state.
    pub status: RcptStatus,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply or error text from a delivery attempt.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// Unix time of the next attempt, for pending recipients.
    #[serde(default)]
    pub next_attempt: u64,
    /// True once a bounce for this failed recipient has been queued.
    #[serde(default)]
    pub bounced: bool,
    /// DSN `NOTIFY=` (RFC 3461 §4.1), upper-case, e.g. "SUCCESS,FAILURE" or "NEVER".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// DSN `ORCPT=` (RFC 3461 §4.2), e.g. "rfc822;user@example.org".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// The host that took (or last refused) this recipient, for DSNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// Unix time of the last delay warning sent for this recipient (0: none).
    #[serde(default)]
    pub warned_at: u64,
}

impl Recipient {
    /// A new recipient, not yet tried, without DSN parameters.
    pub fn pending(address: impl Into<String>, original: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            original: original.into(),
            status: RcptStatus::Pending,
            attempts: 0,
            last_reply: None,
            next_attempt: 0,
            bounced: false,
            notify: None,
            orcpt: None,
            remote_mta: None,
            warned_at: 0,
        }
    }

    /// Does the sender want notices of this kind ("SUCCESS", "FAILURE",
    /// "DELAY")? Without NOTIFY, failures and delays are reported (RFC 3461 §4.1).
    pub fn wants(&self, kind: &str) -> bool {
        match &self.notify {
            None => kind != "SUCCESS",
            Some(n) => n.split(',').any(|k| k == kind),
        }
    }
}

/// The envelope: everything about a queued message except its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub version: u32,
    /// The queue id; also the file names.
    pub id: QueueId,
    /// Unix time the message was accepted.
    pub created: u64,
    /// The reverse-path; empty for the null sender `<>`.
    pub sender: String,
    /// Recipients with their states.
    pub recipients: Vec<Recipient>,
    /// Size of the message file in octets.
    pub size: u64,
    /// True if the message was declared 8BITMIME.
    #[serde(default)]
    pub eight_bit: bool,
    /// True if the message needs SMTPUTF8 downstream.
    #[serde(default)]
    pub smtputf8: bool,
    /// How it arrived: `[ip]:port` of the SMTP client, or `local` for sendmail.
    #[serde(default)]
    pub client: String,
    /// The HELO/EHLO name the client used, if any.
    #[serde(default)]
    pub helo: Option<String>,
    /// DSN `RET=` ("FULL" or "HDRS").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// DSN `ENVID=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// Why the message was put on hold when it arrived (a milter's
    /// quarantine reason); released with `postern queue release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// MAIL FROM carried `REQUIRETLS` (RFC 8689): relay only over verified
    /// TLS to a next hop that offers REQUIRETLS, else bounce (5.7.30).
    /// Absent in older envelopes and written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub requiretls: bool,
}

/// For `skip_serializing_if`: a false flag is not written.
fn is_false(b: &bool) -> bool {
    !*b
}

impl Envelope {
    /// True when no recipient is pending and every failure has its bounce.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.status == RcptStatus::Delivered || (r.status == RcptStatus::Failed && r.bounced))
    }

    /// The earliest next attempt among pending recipients.
    pub fn next_attempt(&self) -> Option<u64> {
        self.recipients.iter().filter(|r| r.status == RcptStatus::Pending).map(|r| r.next_attempt).min()
    }
}

/// Queues a complete message (CRLF text) for `rcpts` (already expanded).
/// Blocking (fsync). Used for bounces and local submission.
pub fn enqueue(spool: &Spool, sender: &str, rcpts: &[String], text: &[u8], client: &str) -> Result<QueueId, SpoolError> {
    enqueue_notice(spool, sender, rcpts, text, client, false)
}

/// [`enqueue`] for a delivery status notice: `requiretls` when the message
/// it reports on had REQUIRETLS (RFC 8689 §5: its notices are protected
/// the same way, and return headers only).
pub fn enqueue_notice(
    spool: &Spool,
    sender: &str,
    rcpts: &[String],
    text: &[u8],
    client: &str,
    requiretls: bool,
) -> Result<QueueId, SpoolError> {
    let mut draft = spool.draft()?;
    draft.write(text);
    let id = draft.id.clone();
    let mut env = draft_envelope(&draft, sender, rcpts, client, text.iter().any(|&b| b >= 0x80), None);
    env.requiretls = requiretls;
    spool.commit_to(draft, &env, Place::Active)?;
    Ok(id)
}

/// Commits a written draft for `rcpts`; `eight_bit` when the text has
/// octets above 127; on hold with the reason when `quarantine` is given (a
/// milter's decision).
pub fn enqueue_draft(
    spool: &Spool,
    draft: Draft,
    sender: &str,
    rcpts: &[String],
    client: &str,
    eight_bit: bool,
    quarantine: Option<String>,
) -> Result<QueueId, SpoolError> {
    let id = draft.id.clone();
    let env = draft_envelope(&draft, sender, rcpts, client, eight_bit, quarantine.clone());
    let place = if quarantine.is_some() { Place::Hold } else { Place::Active };
    spool.commit_to(draft, &env, place)?;
    Ok(id)
}

/// The envelope of a locally made message (no DSN parameters, no HELO).
fn draft_envelope(draft: &Draft, sender: &str, rcpts: &[String], client: &str, eight_bit: bool, quarantine: Option<String>) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        id: draft.id.clone(),
        created: now_unix(),
        sender: sender.to_string(),
        recipients: rcpts.iter().map(|r| Recipient::pending(r.as_str(), r.as_str())).collect(),
        size: draft.written(),
        eight_bit,
        smtputf8: sender.bytes().any(|b| b >= 0x80) || rcpts.iter().any(|r| r.bytes().any(|b| b >= 0x80)),
        client: client.to_string(),
        helo: None,
        ret: None,
        envid: None,
        quarantine,
        requiretls: false,
    }
}

/// The envelope file's contents. Serialising an envelope cannot fail (plain
/// data, string keys); should it, the caller reports an I/O error.
pub(super) fn envelope_bytes(env: &Envelope) -> std::io::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(env)?;
    v.push(b'\n');
    Ok(v)
}

pub(super) fn parse_envelope(path: &Path, bytes: &[u8]) -> Result<Envelope, SpoolError> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| SpoolError::Corrupt { path: path.to_path_buf(), message: e.to_string() })?;
    if env.version != ENVELOPE_VERSION {
        return Err(SpoolError::Corrupt { path: path.to_path_buf(), message: format!("unknown version {}", env.version) });
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope written before `requiretls` existed reads as false; the
    /// flag is written only when set, and reads back.
    #[test]
    fn requiretls_is_backward_compatible() {
        let old = br#"{"version":1,"id":"0123456789abcdef","created":1,"sender":"a@b.example",
            "recipients":[{"address":"c@d.example","original":"c@d.example","status":"pending"}],"size":3}"#;
        let mut env = parse_envelope(Path::new("old.json"), old).expect("old envelope");
        assert!(!env.requiretls);
        let text = String::from_utf8(envelope_bytes(&env).unwrap()).unwrap();
        assert!(!text.contains("requiretls"), "{text}");
        env.requiretls = true;
        let text = envelope_bytes(&env).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("\"requiretls\": true"));
        assert!(parse_envelope(Path::new("new.json"), &text).unwrap().requiretls);
    }
}
