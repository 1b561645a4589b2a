//! Delivery status notifications (bounces): RFC 3464 `multipart/report`
//! (RFC 6522) with a human part, a `message/delivery-status` part and the
//! original headers (`text/rfc822-headers`). Sent with the null sender
//! (RFC 5321 §4.5.5); a message with the null sender never gets one.
//!
//! Pure: builds bytes; the scheduler queues them. The `Status:` of each
//! entry comes from its typed [`DeliveryReply`]; text is never re-parsed
//! here.
//!
//! May touch: nothing. RFC 3461, RFC 3464, RFC 6522, RFC 3463.

use std::collections::HashMap;

use postern_wire::Enhanced;

use crate::delivery::DeliveryReply;
use crate::spool::{Envelope, RcptStatus, Recipient};

/// RFC 3464 `Action:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Permanent failure (a bounce).
    Failed,
    /// Still trying (a delay warning).
    Delayed,
    /// Delivered to a mailbox (NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a next hop that does not do DSN (NOTIFY=SUCCESS).
    Relayed,
}

impl Action {
    /// The RFC 3464 `Action:` value (also the mail log's `kind=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient in a report.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Final-Recipient.
    pub address: String,
    /// Original-Recipient (as given in RCPT TO).
    pub original: String,
    /// The last reply or reason.
    pub reply: DeliveryReply,
    /// DSN ORCPT (`type;address`), preferred for Original-Recipient.
    pub orcpt: Option<String>,
    /// Remote-MTA, if a remote host answered.
    pub remote_mta: Option<String>,
    /// What happened.
    pub action: Action,
}

impl Failure {
    /// A report entry for `r` with the reply of this attempt.
    pub fn new(r: &Recipient, reply: DeliveryReply, action: Action) -> Failure {
        Failure {
            address: r.address.clone(),
            original: r.original.clone(),
            reply,
            orcpt: r.orcpt.clone(),
            remote_mta: r.remote_mta.clone(),
            action,
        }
    }

    /// A report entry from an envelope recipient whose reply is known only
    /// from the envelope on disk (a failure recorded before a restart, or
    /// by `postern queue bounce`).
    pub fn from_recipient(r: &Recipient, action: Action) -> Failure {
        let reply = match &r.last_reply {
            Some(t) => DeliveryReply::from_stored(t),
            None => DeliveryReply::status_only(Enhanced(5, 0, 0), "delivery failed"),
        };
        Failure::new(r, reply, action)
    }

    /// The RFC 3464 `Status:` of this entry.
    pub fn status(&self) -> Enhanced {
        match self.action {
            Action::Delivered | Action::Relayed => Enhanced(2, 0, 0),
            Action::Delayed => match self.reply.status() {
                s @ Enhanced(4, _, _) => s,
                _ => Enhanced(4, 0, 0),
            },
            Action::Failed => self.reply.status(),
        }
    }
}

/// The failed recipients of `env` that still owe a bounce and asked for
/// one (NOTIFY absent or containing FAILURE). `fresh` holds the typed
/// replies of this attempt by recipient index; others come from the envelope.
pub fn owed(env: &Envelope, fresh: &HashMap<usize, DeliveryReply>) -> Vec<Failure> {
    env.recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == RcptStatus::Failed && !r.bounced && r.wants("FAILURE"))
        .map(|(i, r)| match fresh.get(&i) {
            Some(reply) => Failure::new(r, reply.clone(), Action::Failed),
            None => Failure::from_recipient(r, Action::Failed),
        })
        .collect()
}

/// Only the header section of a message: its lines up to the first empty
/// line, or up to the first line that is neither a header field nor a
/// folded continuation (RFC 5322 §2.2), so a "message" without an empty
/// line never returns its body as "headers".
pub fn headers_of(body: &[u8]) -> &[u8] {
    let mut end = 0;
    while end < body.len() {
        let rest = &body[end..];
        let len = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..len];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let folded = end > 0 && matches!(text.first(), Some(b' ' | b'\t'));
        if text.is_empty() || !(folded || is_field(text)) {
            break;
        }
        end += len;
    }
    &body[..end]
}

/// `name: value` with a field name of printable ASCII without a colon (RFC 5322 §2.2).
fn is_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(i) if i > 0 => line[..i].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

/// What part of the original message a report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// The whole message (RET=FULL on a bounce, within the size limit).
    Full,
    /// Its header section.
    Headers,
    /// Its header section, cut at a line boundary at the size limit.
    HeadersCut,
}

/// The original content a report returns, never more than `limit` bytes
/// (`queue.bounce_size_limit`, like Postfix `bounce_size_limit`): the whole
/// message only when `full` was asked for and it fits, else its headers,
/// themselves cut at the last whole line within the limit.
pub fn returned(original: &[u8], full: bool, limit: usize) -> (&[u8], Returned) {
    if full && original.len() <= limit {
        return (original, Returned::Full);
    }
    let headers = headers_of(original);
    if headers.len() <= limit {
        return (headers, Returned::Headers);
    }
    let cut = headers[..limit].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (&headers[..cut], Returned::HeadersCut)
}

/// Builds the report message text (CRLF) for `env`: a bounce, a delay
/// warning or a success notice, depending on the entries' action.
/// At most `limit` bytes of `original` are returned (see [`returned`]).
pub fn build(hostname: &str, env: &Envelope, failures: &[Failure], original: &[u8], date: &str, limit: usize) -> Vec<u8> {
    let kind = failures.first().map(|f| f.action).unwrap_or(Action::Failed);
    let (subject, intro) = match kind {
        Action::Failed => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to one or more\r\nrecipients. It is attached below.",
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered yet to one or more\r\nrecipients. It will be retried until it is too old; no action\r\nis needed from you.",
        ),
        Action::Delivered | Action::Relayed => (
            "Successful Mail Delivery Report",
            "Your message was delivered to (or handed on for) the\r\nrecipients listed below, as you asked.",
        ),
    };
    // RET=HDRS, no RET, and every delay or success notice: headers only.
    // RFC 8689 §5: a REQUIRETLS message is reported as if RET=HDRS.
    let asked_full = env.ret.as_deref() == Some("FULL") && kind == Action::Failed && !env.requiretls;
    let (part, what) = returned(original, asked_full, limit);
    let boundary = format!("{}.{}/{}", env.id, crate::time::now_unix(), hostname);
    let mut m = String::new();
    m.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"));
    m.push_str(&format!("To: <{}>\r\n", env.sender));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{}.bounce@{hostname}>\r\n", env.id));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    m.push_str(&format!("This is the mail system at host {hostname}.\r\n\r\n{intro}\r\n\r\n"));
    for f in failures {
        m.push_str(&format!("<{}>: {}\r\n", f.address, one_line(&f.reply.to_string())));
    }
    match what {
        Returned::Headers if asked_full => m.push_str(&format!(
            "\r\nThe message is larger than {limit} bytes, the most a report returns:\r\nonly its headers are attached.\r\n"
        )),
        Returned::HeadersCut => m.push_str(&format!(
            "\r\nThe message's headers are larger than {limit} bytes, the most a report\r\nreturns: they are cut at that size, and the body is not attached.\r\n"
        )),
        _ => {}
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"));
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\n", env.id));
    if let Some(envid) = &env.envid {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    m.push_str(&format!("Arrival-Date: {}\r\n", unix_to_rfc5322(env.created)));
    for f in failures {
        m.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.address));
        match &f.orcpt {
            Some(o) => m.push_str(&format!("Original-Recipient: {}\r\n", one_line(&o.replacen(';', "; ", 1)))),
            None if !f.original.is_empty() && !f.original.eq_ignore_ascii_case(&f.address) => {
                m.push_str(&format!("Original-Recipient: rfc822; {}\r\n", f.original))
            }
            None => {}
        }
        m.push_str(&format!("Action: {}\r\n", f.action.as_str()));
        m.push_str(&format!("Status: {}\r\n", f.status()));
        if let Some(r) = &f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", one_line(r)));
        }
        m.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(&f.reply.to_string())));
        m.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
    }
    if what == Returned::Full {
        m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\n"));
    } else {
        m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    }
    let mut out = m.into_bytes();
    out.extend_from_slice(&postern_wire::data::normalize_crlf(part));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Formats a unix time as an RFC 5322 date (UTC).
pub fn unix_to_rfc5322(t: u64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0).map(|d| d.format("%a, %d %b %Y %H:%M:%S +0000").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{QueueId, ENVELOPE_VERSION};

    #[test]
    fn statuses_come_from_the_typed_reply() {
        let r = Recipient::pending("a@b.example", "a@b.example");
        let f = |reply, action| Failure::new(&r, reply, action).status().to_string();
        assert_eq!(f(DeliveryReply::new(550, Enhanced(5, 1, 1), "x"), Action::Failed), "5.1.1");
        assert_eq!(f(DeliveryReply::new(550, Enhanced(5, 1, 1), "x"), Action::Delayed), "4.0.0");
        assert_eq!(f(DeliveryReply::new(451, Enhanced(4, 3, 0), "x"), Action::Delayed), "4.3.0");
        assert_eq!(f(crate::delivery::reply::made::expired("451 later"), Action::Failed), "4.4.7");
        assert_eq!(f(DeliveryReply::new(250, Enhanced(2, 0, 0), "ok"), Action::Relayed), "2.0.0");
    }

    fn envelope(ret: Option<&str>) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: QueueId::parse("00000000000000AB").unwrap(),
            created: 0,
            sender: "s@x.example".into(),
            recipients: vec![Recipient {
                address: "bob@y.example".into(),
                original: "team@y.example".into(),
                status: RcptStatus::Failed,
                attempts: 1,
                last_reply: Some("550 5.1.1 no such user".into()),
                next_attempt: 0,
                bounced: false,
                notify: None,
                orcpt: None,
                remote_mta: None,
                warned_at: 0,
            }],
            size: 10,
            eight_bit: false,
            smtputf8: false,
            client: String::new(),
            helo: None,
            ret: ret.map(String::from),
            envid: None,
            quarantine: None,
            requiretls: false,
        }
    }

    #[test]
    fn report_shape() {
        let env = envelope(None);
        let f = owed(&env, &HashMap::new());
        let out = String::from_utf8(build("mx.example", &env, &f, b"Subject: hi\r\nX: y\r\n\r\nsecret body\r\n", "DATE", 50_000)).unwrap();
        for want in [
            "multipart/report; report-type=delivery-status",
            "Final-Recipient: rfc822; bob@y.example\r\n",
            "Original-Recipient: rfc822; team@y.example\r\n",
            "Status: 5.1.1\r\n",
            "Action: failed\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nX: y\r\n",
            "Reporting-MTA: dns; mx.example\r\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(!out.contains("secret body"));
        assert!(!out.contains('\n') || !out.replace("\r\n", "").contains('\n'), "bare LF in bounce");
    }

    #[test]
    fn headers_stop_at_the_first_line_that_is_no_header() {
        for (input, want) in [
            (&b"Subject: a\r\n folded\r\n\r\nbody\r\n"[..], &b"Subject: a\r\n folded\r\n"[..]),
            (b"Subject: a\nX: b\n\nbody\n", b"Subject: a\nX: b\n"),
            // No empty line: the body must not pass for headers (F4).
            (b"Subject: a\r\nsecret body line\r\nmore\r\n", b"Subject: a\r\n"),
            (b"secret body without headers", b""),
            (b" leading fold\r\nX: y\r\n", b""),
            (b"\r\nbody", b""),
            (b"Subject: unterminated", b"Subject: unterminated"),
        ] {
            assert_eq!(headers_of(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn returned_content_is_capped() {
        let msg = b"Subject: hi\r\nX: y\r\n\r\nbody\r\n";
        assert_eq!(returned(msg, true, 1000), (&msg[..], Returned::Full));
        assert_eq!(returned(msg, false, 1000), (&msg[..19], Returned::Headers));
        assert_eq!(returned(msg, true, 25), (&msg[..19], Returned::Headers));
        assert_eq!(returned(msg, true, 18), (&msg[..13], Returned::HeadersCut));
        assert_eq!(returned(msg, true, 5), (&msg[..0], Returned::HeadersCut));
    }

    /// RFC 8689 §5: a REQUIRETLS message is reported as if RET=HDRS.
    #[test]
    fn requiretls_returns_headers_only() {
        let mut env = envelope(Some("FULL"));
        env.requiretls = true;
        let f: Vec<Failure> = env.recipients.iter().map(|r| Failure::from_recipient(r, Action::Failed)).collect();
        let out = String::from_utf8(build("mx.example", &env, &f, b"Subject: hi\r\n\r\nsecret body\r\n", "DATE", 50_000)).unwrap();
        assert!(!out.contains("secret body"), "{out}");
        assert!(out.contains("Subject: hi"), "{out}");
    }

    fn report(ret: Option<&str>, action: Action, original: &[u8], limit: usize) -> String {
        let env = envelope(ret);
        let f: Vec<Failure> = env.recipients.iter().map(|r| Failure::from_recipient(r, action)).collect();
        String::from_utf8(build("mx.example", &env, &f, original, "DATE", limit)).unwrap()
    }

    #[test]
    fn ret_hdrs_and_notices_never_return_the_body() {
        let msg = b"Subject: hi\r\n\r\nsecret body\r\n";
        for (ret, action) in [
            (Some("HDRS"), Action::Failed),
            (None, Action::Failed),
            (Some("FULL"), Action::Delayed),
            (Some("FULL"), Action::Delivered),
            (Some("FULL"), Action::Relayed),
        ] {
            let out = report(ret, action, msg, 50_000);
            assert!(!out.contains("secret body"), "{ret:?} {action:?}:\n{out}");
            assert!(out.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\n"), "{out}");
        }
        let out = report(Some("FULL"), Action::Failed, msg, 50_000);
        assert!(out.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nsecret body\r\n"), "{out}");
    }

    #[test]
    fn a_large_message_returns_headers_only_and_says_so() {
        let mut msg = b"Subject: big\r\n\r\n".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 60_000));
        let out = report(Some("FULL"), Action::Failed, &msg, 50_000);
        assert!(out.len() < 5_000, "{} bytes", out.len());
        assert!(out.contains("larger than 50000 bytes") && out.contains("only its headers are attached"), "{out}");
        assert!(out.contains("text/rfc822-headers\r\n\r\nSubject: big\r\n"), "{out}");
        // Headers larger than the limit are cut at a line boundary.
        let mut huge = Vec::new();
        for i in 0..10_000 {
            huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        let out = report(None, Action::Failed, &huge, 50_000);
        assert!(out.len() < 55_000, "{} bytes", out.len());
        assert!(out.contains("they are cut at that size"), "{out}");
    }
}
