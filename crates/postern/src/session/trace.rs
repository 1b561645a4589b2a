//! What the session writes about a message: the `Received:` trace header
//! and the queue envelope.
//!
//! May touch: nothing (pure, but for the clock in `Received:`). Implements
//! RFC 5321 §4.4 (trace information), RFC 3848 (ESMTPS/ESMTPA/ESMTPSA),
//! RFC 6531 §3.7.3 (UTF8SMTP), RFC 3461 (NOTIFY/ORCPT/RET/ENVID kept for DSN).

use postern_wire::command::Body;

use super::{Conn, Greeted, Helo, Txn};
use crate::settings::Settings;
use crate::spool::{Envelope, QueueId, RcptStatus, Recipient, ENVELOPE_VERSION};
use crate::time::{now_unix, rfc5322_date};
use crate::tls::TlsInfo;

/// The envelope for a received message: one recipient per final target,
/// duplicates removed.
pub(super) fn build_envelope(id: &QueueId, txn: &Txn, size: u64, conn: &Conn, helo: &Helo) -> Envelope {
    let mut recipients: Vec<Recipient> = Vec::new();
    for a in &txn.rcpts {
        for t in &a.targets {
            if recipients.iter().any(|r| r.address.eq_ignore_ascii_case(t)) {
                continue;
            }
            recipients.push(Recipient {
                address: t.clone(),
                original: a.original.clone(),
                status: RcptStatus::Pending,
                attempts: 0,
                last_reply: None,
                next_attempt: 0,
                bounced: false,
                notify: a.params.notify.clone(),
                orcpt: a.params.orcpt.clone(),
                remote_mta: None,
                warned_at: 0,
            });
        }
    }
    Envelope {
        version: ENVELOPE_VERSION,
        id: id.clone(),
        created: now_unix(),
        sender: txn.sender(),
        recipients,
        size,
        eight_bit: txn.params.body == Body::EightBitMime,
        smtputf8: txn.params.smtputf8,
        client: format!("[{}]:{}", conn.peer.ip(), conn.peer.port()),
        helo: Some(helo.name.clone()),
        ret: txn.params.ret.clone(),
        envid: txn.params.envid.clone(),
        quarantine: None,
        requiretls: txn.params.requiretls,
    }
}

/// RFC 5321 §4.4 trace header with the RFC 3848 protocol name.
/// `client_name`: the forward-confirmed name, or "".
pub(super) fn received_header(
    s: &Settings,
    conn: &Conn,
    client_name: &str,
    greeted: &Greeted,
    txn: &Txn,
    id: &QueueId,
    tls: Option<&TlsInfo>,
) -> String {
    received_header_at(&s.hostname, conn, client_name, greeted, txn, id, tls, &rfc5322_date())
}

/// [`received_header`] at a given date (for golden tests).
#[allow(clippy::too_many_arguments)]
fn received_header_at(
    hostname: &str,
    conn: &Conn,
    client_name: &str,
    greeted: &Greeted,
    txn: &Txn,
    id: &QueueId,
    tls: Option<&TlsInfo>,
    date: &str,
) -> String {
    let helo = &greeted.helo;
    // RFC 3848 (ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 §3.7.3 (UTF8SMTP…).
    let base = match (helo.extended, txn.params.smtputf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    };
    let protocol =
        format!("{base}{}{}", if tls.is_some() { "S" } else { "" }, if greeted.auth.is_some() && helo.extended { "A" } else { "" });
    let tls_comment = match tls {
        None => String::new(),
        Some(t) => {
            let cert = match &t.client_cert {
                None => "no client certificate".to_string(),
                Some(c) => format!("client certificate \"{}\" {}", comment_safe(&c.cert.subject), comment_safe(&c.verdict())),
            };
            format!("\r\n\t(using {} with cipher {})\r\n\t({cert})", t.version, t.cipher)
        }
    };
    let ip = match conn.peer.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let helo_name: String = helo.name.chars().filter(|c| !c.is_control() && *c != '(' && *c != ')').take(255).collect();
    let for_clause = match txn.rcpts.as_slice() {
        [only] => format!("\r\n\tfor <{}>", only.original),
        _ => String::new(),
    };
    // RFC 5321 §4.4 TCP-info: "(name [ip])" with the confirmed name.
    let sep = if client_name.is_empty() { "" } else { " " };
    format!("Received: from {helo_name} ({client_name}{sep}[{ip}]){tls_comment}\r\n\tby {hostname} (postern) with {protocol} id {id}{for_clause};\r\n\t{date}\r\n")
}

/// Text safe inside an RFC 5322 comment: no parentheses, backslashes,
/// quotes or control characters.
fn comment_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\' | '"')).take(200).collect()
}

#[cfg(test)]
mod tests {
    use postern_wire::command::{MailParams, RcptParams};
    use postern_wire::Path;

    use super::super::Accepted;
    use super::*;
    use crate::auth::Authenticated;

    fn txn(rcpts: &[&str], smtputf8: bool) -> Txn {
        let from = postern_wire::address::parse_path("<a@b.example>", true, false, true).map(|(p, _)| p).unwrap_or(Path::Null);
        let params = MailParams { smtputf8, ..MailParams::default() };
        let rcpts = rcpts
            .iter()
            .map(|r| Accepted { original: r.to_string(), targets: vec![r.to_string()], params: RcptParams::default() })
            .collect();
        Txn { from, params, rcpts, discard: false }
    }

    fn conn(ip: &str) -> Conn {
        let peer = format!("{ip}:4567").parse().unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        Conn { peer, local: std::net::SocketAddr::from(([127, 0, 0, 1], 25)) }
    }

    /// Golden `Received:` headers (no TLS; the TLS comment is covered by
    /// the in-process TLS dialogs).
    #[test]
    fn received_golden() {
        let id = QueueId::parse("0123456789ABCDEF").unwrap_or_else(QueueId::generate);
        let date = "Sat, 05 Dec 2026 06:00:00 +0000";
        let plain = Greeted { helo: Helo { name: "client.example".into(), extended: true }, auth: None };
        let helo_only = Greeted { helo: Helo { name: "old (evil)\r\nX: y".into(), extended: false }, auth: None };
        let authed = Greeted { auth: Some(Authenticated::dangerous_assume("alice")), ..plain.clone() };
        let cases = [
            (
                received_header_at("mx.test", &conn("192.0.2.7"), "", &plain, &txn(&["bob@mx.test"], false), &id, None, date),
                "Received: from client.example ([192.0.2.7])\r\n\tby mx.test (postern) with ESMTP id 0123456789ABCDEF\r\n\tfor <bob@mx.test>;\r\n\tSat, 05 Dec 2026 06:00:00 +0000\r\n",
            ),
            (
                received_header_at("mx.test", &conn("[2001:db8::1]"), "", &authed, &txn(&["a@x", "b@x"], true), &id, None, date),
                "Received: from client.example ([IPv6:2001:db8::1])\r\n\tby mx.test (postern) with UTF8SMTPA id 0123456789ABCDEF;\r\n\tSat, 05 Dec 2026 06:00:00 +0000\r\n",
            ),
            (
                received_header_at("mx.test", &conn("192.0.2.7"), "", &helo_only, &txn(&["bob@mx.test"], false), &id, None, date),
                "Received: from old evilX: y ([192.0.2.7])\r\n\tby mx.test (postern) with SMTP id 0123456789ABCDEF\r\n\tfor <bob@mx.test>;\r\n\tSat, 05 Dec 2026 06:00:00 +0000\r\n",
            ),
            (
                received_header_at("mx.test", &conn("192.0.2.7"), "mail.example.org", &plain, &txn(&["bob@mx.test"], false), &id, None, date),
                "Received: from client.example (mail.example.org [192.0.2.7])\r\n\tby mx.test (postern) with ESMTP id 0123456789ABCDEF\r\n\tfor <bob@mx.test>;\r\n\tSat, 05 Dec 2026 06:00:00 +0000\r\n",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
