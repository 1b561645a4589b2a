//! SMTP replies: a three-digit code, an RFC 3463 enhanced status code and text.
//!
//! RFC 5321 §4.2 (reply syntax, multi-line replies), RFC 2034 / RFC 3463
//! (enhanced status codes). Every reply postern sends carries an enhanced code,
//! except the greeting (220) and the EHLO response (250), which RFC 2034 §3
//! exempts.

use std::borrow::Cow;
use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2.1).
    pub code: u16,
    /// The enhanced status code, printed after the code on every line.
    pub enhanced: Option<Enhanced>,
    /// The text lines; never empty when encoded (an empty text becomes one empty line).
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: Some(enhanced), lines: vec![text.into()] }
    }

    /// A reply without an enhanced status code (greeting, EHLO, LHLO).
    pub fn plain(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: None, lines }
    }

    /// Replaces the text, keeping the codes.
    pub fn with_text(mut self, text: impl Into<Cow<'static, str>>) -> Reply {
        self.lines = vec![text.into()];
        self
    }

    /// 2yz: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3yz: intermediate (DATA's 354, AUTH's 334).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4yz: temporary failure.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5yz: permanent failure.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as a single line of text for logs: `550 5.1.1 text`.
    pub fn summary(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(e) = self.enhanced {
            s.push(' ');
            s.push_str(&e.to_string());
        }
        for (i, l) in self.lines.iter().enumerate() {
            s.push_str(if i == 0 { " " } else { " / " });
            s.push_str(l);
        }
        s
    }

    /// Encodes the reply onto `out` in wire form, CRLF-terminated lines.
    /// Text containing CR or LF is sanitised so a reply can never inject a
    /// second reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let empty: [Cow<'static, str>; 1] = [Cow::Borrowed("")];
        let lines: &[Cow<'static, str>] = if self.lines.is_empty() { &empty } else { &self.lines };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            for &b in line.as_bytes() {
                out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a string (tests, logs).
    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.encode(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Parses one reply from a peer (used by the LMTP and SMTP clients).
///
/// Accepts a slice of lines without CRLF. Returns `None` if the lines do not
/// form a valid reply.
pub fn parse_reply_lines(lines: &[&str]) -> Option<Reply> {
    let mut code = None;
    let mut texts: Vec<Cow<'static, str>> = Vec::new();
    let mut enhanced = None;
    for (i, line) in lines.iter().enumerate() {
        let b = line.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let c: u16 = line[..3].parse().ok()?;
        if *code.get_or_insert(c) != c {
            return None;
        }
        let sep = b.get(3).copied().unwrap_or(b' ');
        let last = i + 1 == lines.len();
        if (sep == b' ') != last && !(last && b.len() == 3) {
            return None;
        }
        let mut text = line.get(4..).unwrap_or("");
        // RFC 2034 §4: with enhanced codes, every line carries one; a
        // code-like word on a later line of a reply without one is text
        // (found by `fuzz/` target `reply`: encode and parse disagreed).
        if let Some((e, rest)) = parse_enhanced_prefix(text) {
            if i == 0 {
                enhanced = Some(e);
            }
            if enhanced.is_some() {
                text = rest;
            }
        }
        texts.push(Cow::Owned(text.to_string()));
    }
    Some(Reply { code: code?, enhanced, lines: texts })
}

fn parse_enhanced_prefix(text: &str) -> Option<(Enhanced, &str)> {
    let (word, rest) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let mut parts = word.split('.');
    let a: u8 = parts.next()?.parse().ok()?;
    let b: u16 = parts.next()?.parse().ok()?;
    let c: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(2..=5).contains(&a) {
        return None;
    }
    Some((Enhanced(a, b, c), rest))
}

/// Named replies. Dynamic text is added with [`Reply::with_text`].
pub mod codes {
    use super::{Enhanced, Reply};

    macro_rules! reply {
        ($(#[$m:meta])* $name:ident, $code:expr, $a:expr, $b:expr, $c:expr, $text:expr) => {
            $(#[$m])*
            pub fn $name() -> Reply {
                Reply::new($code, Enhanced($a, $b, $c), $text)
            }
        };
    }

    reply!(/// 250 2.0.0 Ok
        ok, 250, 2, 0, 0, "Ok");
    reply!(/// 250 2.1.0 sender ok
        sender_ok, 250, 2, 1, 0, "Sender ok");
    reply!(/// 250 2.1.5 recipient ok
        recipient_ok, 250, 2, 1, 5, "Recipient ok");
    reply!(/// 354 after DATA
        start_data, 354, 2, 0, 0, "End data with <CR><LF>.<CR><LF>");
    reply!(/// 221 closing
        bye, 221, 2, 0, 0, "Bye");
    reply!(/// 252 for VRFY (RFC 5321 §3.5.3: we do not disclose users)
        cannot_vrfy, 252, 2, 5, 0, "Cannot VRFY user, but will accept message and attempt delivery");
    reply!(/// 214 HELP
        help, 214, 2, 0, 0, "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
    reply!(/// 421 service shutting down
        shutting_down, 421, 4, 3, 0, "Service shutting down, closing connection");
    reply!(/// 421 too many errors
        too_many_errors, 421, 4, 7, 0, "Too many errors, closing connection");
    reply!(/// 421 command timeout
        timeout, 421, 4, 4, 2, "Timeout exceeded, closing connection");
    reply!(/// 421 the session outlived `limits.session_lifetime`
        session_expired, 421, 4, 4, 2, "Session time limit exceeded, closing connection");
    reply!(/// 421 too many commands that carry no mail (`limits.max_junk_commands`)
        too_many_junk_commands, 421, 4, 7, 0, "Too many commands without mail, closing connection");
    reply!(/// 421 connection limit reached
        too_many_connections, 421, 4, 7, 0, "Too many connections, try again later");
    reply!(/// 451 local error
        local_error, 451, 4, 3, 0, "Local error in processing, try again later");
    reply!(/// 452 4.3.1 insufficient storage
        insufficient_storage, 452, 4, 3, 1, "Insufficient system storage, try again later");
    reply!(/// 452 4.5.3 too many recipients (RFC 5321 §4.5.3.1.10)
        too_many_recipients, 452, 4, 5, 3, "Too many recipients");
    reply!(/// 500 5.5.1 unknown command
        unknown_command, 500, 5, 5, 1, "Command unrecognized");
    reply!(/// 500 5.5.2 line too long
        line_too_long, 500, 5, 5, 2, "Line too long");
    reply!(/// 501 5.5.4 syntax error in parameters
        syntax_params, 501, 5, 5, 4, "Syntax error in parameters or arguments");
    reply!(/// 502 5.5.1 not implemented
        not_implemented, 502, 5, 5, 1, "Command not implemented");
    reply!(/// 503 5.5.1 bad sequence
        bad_sequence, 503, 5, 5, 1, "Bad sequence of commands");
    reply!(/// 550 5.1.1 no such user
        no_such_user, 550, 5, 1, 1, "No such user here");
    reply!(/// 550 5.7.1 relay denied
        relay_denied, 550, 5, 7, 1, "Relaying denied");
    reply!(/// 552 5.3.4 message too big
        too_big, 552, 5, 3, 4, "Message size exceeds fixed maximum message size");
    reply!(/// 554 5.5.1 no valid recipients
        no_valid_recipients, 554, 5, 5, 1, "No valid recipients");
    reply!(/// 554 5.4.6 more `Received:` fields than `limits.max_received_headers` (RFC 5321 §6.3; Postfix's text)
        too_many_hops, 554, 5, 4, 6, "Too many hops");
    reply!(/// 555 5.5.4 unsupported parameter
        unknown_parameter, 555, 5, 5, 4, "MAIL FROM/RCPT TO parameters not recognized or not implemented");
    reply!(/// 220 2.0.0 after STARTTLS (RFC 3207 §4)
        ready_for_tls, 220, 2, 0, 0, "Ready to start TLS");
    reply!(/// 235 2.7.0 AUTH succeeded (RFC 4954 §6)
        auth_ok, 235, 2, 7, 0, "Authentication successful");
    reply!(/// 421 4.5.0 a BDAT command we cannot parse: the octet count is lost
        bdat_unrecoverable, 421, 4, 5, 0, "Cannot recover from bad BDAT, closing connection");
    reply!(/// 421 4.5.0 a non-BDAT line between chunks (RFC 3030 §2)
        bdat_expected, 421, 4, 5, 0, "Expected BDAT, closing connection");
    reply!(/// 421 4.7.0 AUTH throttle, `ban_action = "disconnect"`
        auth_banned_closing, 421, 4, 7, 0, "Too many authentication failures, closing connection");
    reply!(/// 451 4.7.1 a milter's tempfail (sendmail's text)
        milter_tempfail, 451, 4, 7, 1, "Service unavailable - try again later");
    reply!(/// 451 4.7.0 the message should be DKIM-signed but cannot be now
        dkim_sign_failed, 451, 4, 7, 0, "Cannot sign the message now, try again later");
    reply!(/// 421 4.7.0 a milter asked to close the connection
        milter_closing, 421, 4, 7, 0, "Service unavailable, closing connection");
    reply!(/// 454 4.7.0 AUTH throttle, `ban_action = "refuse"`
        auth_banned, 454, 4, 7, 0, "Too many authentication failures, try again later");
    reply!(/// 454 4.7.0 the authentication backend (Dovecot, `[sql]`, `[ldap]`) cannot check credentials now (RFC 4954 §6)
        auth_tempfail, 454, 4, 7, 0, "Temporary authentication failure");
    reply!(/// 451 4.3.0 the account directory (`[sql]`, `[ldap]`) cannot answer now
        directory_unavailable, 451, 4, 3, 0, "Temporary lookup failure, try again later");
    reply!(/// 454 4.7.0 STARTTLS without a certificate (RFC 3207 §4)
        tls_unavailable, 454, 4, 7, 0, "TLS not available");
    reply!(/// 500 5.5.6 an AUTH response line over 12288 octets (RFC 4954 §4)
        auth_line_too_long, 500, 5, 5, 6, "Authentication exchange line is too long");
    reply!(/// 501 5.7.0 the client sent `*` (RFC 4954 §4)
        auth_cancelled, 501, 5, 7, 0, "Authentication cancelled");
    reply!(/// 501 5.5.2 bad base64 or a malformed SASL message (RFC 4954 §4)
        auth_malformed, 501, 5, 5, 2, "Malformed authentication data");
    reply!(/// 504 5.5.4 unknown or unusable mechanism (RFC 4954 §6)
        auth_unknown_mechanism, 504, 5, 5, 4, "Unrecognized authentication type");
    reply!(/// 530 5.7.0 TLS required before MAIL (RFC 3207 §4)
        tls_required, 530, 5, 7, 0, "Must issue a STARTTLS command first");
    reply!(/// 530 5.7.10 MAIL FROM ... REQUIRETLS outside TLS (RFC 8689 §2: the
        /// option is only for a session that uses TLS; 5.7.10 "Encryption Needed", RFC 5248)
        requiretls_needs_tls, 530, 5, 7, 10, "REQUIRETLS requires a TLS session; issue STARTTLS first");
    reply!(/// 530 5.7.0 submission without AUTH (RFC 4954 §6, RFC 6409 §4.3)
        auth_required, 530, 5, 7, 0, "Authentication required");
    reply!(/// 535 5.7.8 wrong credentials (RFC 4954 §6)
        auth_invalid, 535, 5, 7, 8, "Authentication credentials invalid");
    reply!(/// 538 5.7.11 mechanism needs TLS (RFC 4954 §6)
        encryption_required, 538, 5, 7, 11, "Encryption required for requested authentication mechanism");
    reply!(/// 550 5.6.0 bare CR or LF in the message (SMTP smuggling defence)
        bare_newline, 550, 5, 6, 0, "Message contains bare CR or LF; lines must end with CRLF");
    reply!(/// 550 5.6.0 a line over the limit (RFC 5321 §4.5.3.1.6); text names the limit
        line_in_message_too_long, 550, 5, 6, 0, "Message has a line that is too long");
    reply!(/// 550 5.7.1 a milter refused a command
        milter_rejected, 550, 5, 7, 1, "Command rejected");
    reply!(/// 550 5.7.1 a milter refused the message
        milter_rejected_content, 550, 5, 7, 1, "Message content rejected");
    reply!(/// 554 5.7.1 a milter refused the connection
        milter_rejected_connection, 554, 5, 7, 1, "Connection rejected");
    reply!(/// 553 5.6.7 a UTF-8 address without SMTPUTF8 (RFC 6531 §3.4)
        utf8_needs_smtputf8, 553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8");
    reply!(/// 553 5.7.1 `auth.sender_login_match`: the sender is not the user's
        sender_not_owned, 553, 5, 7, 1, "Sender address not owned by user");
    reply!(/// 450 4.7.1 a rule's temporary refusal; text from the rule
        rule_tempfail, 450, 4, 7, 1, "Try again later");
    reply!(/// 550 5.7.1 DMARC p=reject failed (`mail_auth.dmarc_reject`)
        dmarc_rejected, 550, 5, 7, 1, "Message rejected by the DMARC policy of the From domain");
    reply!(/// 451 4.7.1 a DNS error left the DMARC verdict open while a reject policy depends on it
        dmarc_tempfail, 451, 4, 7, 1, "Temporary DNS error checking SPF/DKIM/DMARC, try again later");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_single_and_multi() {
        assert_eq!(codes::ok().to_wire(), "250 2.0.0 Ok\r\n");
        let r = Reply::plain(250, vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(r.to_wire(), "250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn encode_sanitises_newlines() {
        let r = codes::ok().with_text("a\r\n250 injected");
        assert_eq!(r.to_wire(), "250 2.0.0 a  250 injected\r\n");
    }

    #[test]
    fn parse_peer_replies() {
        let r = parse_reply_lines(&["250-mx.example", "250-PIPELINING", "250 SIZE"]).unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines.len(), 3);
        let r = parse_reply_lines(&["550 5.1.1 <x@y>: unknown"]).unwrap();
        assert_eq!(r.enhanced, Some(Enhanced(5, 1, 1)));
        assert_eq!(r.lines[0], "<x@y>: unknown");
        assert!(parse_reply_lines(&["250-a", "251 b"]).is_none());
        assert!(parse_reply_lines(&["25"]).is_none());
        assert_eq!(parse_reply_lines(&["354"]).unwrap().code, 354);
    }

    /// Regression (fuzz target `reply`): a later line's `4.7.0` is text when
    /// the first line has no enhanced code, so encode/parse is a fixed point.
    #[test]
    fn enhanced_code_only_when_the_first_line_has_one() {
        let r = parse_reply_lines(&["421-closing", "421 4.7.0 bye"]).unwrap();
        assert_eq!((r.enhanced, r.lines[1].as_ref()), (None, "4.7.0 bye"));
        assert_eq!(r.to_wire(), "421-closing\r\n421 4.7.0 bye\r\n");
        let r = parse_reply_lines(&["421-4.7.0 closing", "421 4.7.0 bye"]).unwrap();
        assert_eq!((r.enhanced, r.lines[1].as_ref()), (Some(Enhanced(4, 7, 0)), "bye"));
    }
}
