//! `sendmail -bs`: an SMTP dialogue on standard input/output, as Symfony
//! Mailer, PHPMailer and other libraries use it. The caller is a local
//! process: no STARTTLS, no AUTH; its uid is recorded as with `-bm`. Each
//! DATA is queued through [`super::sendmail::submit`] (the same path as
//! `-bm`), so milters, aliases and the queue behave the same. Commands are
//! parsed with `postern_wire`; replies come from `postern_wire::codes`.
//!
//! May touch: standard input/output, the spool (through `submit`).
//! RFCs: 5321 (SMTP), 2920 (PIPELINING: replies are flushed only when no
//! further command is waiting), 1870 (SIZE), 6152 (8BITMIME), 2034 (codes).

use std::io::{Read, Write};

use postern_wire::command::{parse_command, Command};
use postern_wire::data::DataDecoder;
use postern_wire::line::{scan_line, LineScan};
use postern_wire::reply::codes;
use postern_wire::{Enhanced, Path, Reply};

use super::sendmail::{resolve, Options, SendmailError, Submitted};
use super::sysexits as exit;
use crate::maildrop::compose::ComposeError;
use crate::settings::Settings;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4 says 512; we
/// allow room for ESMTP parameters).
const MAX_COMMAND: usize = 2048;

/// `postern sendmail -bs`: the dialogue on the process's standard
/// input/output. Returns the exit code (0 unless the pipe breaks).
pub fn run_stdio(s: &Settings, _o: &Options) -> i32 {
    let mut submit = |o: &Options, text: &[u8]| super::sendmail::submit(s, o, text);
    match dialogue(s, std::io::stdin().lock(), std::io::stdout().lock(), &mut submit) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("postern sendmail -bs: {e}");
            exit::TEMPFAIL
        }
    }
}

/// Queues one message with its envelope (`sendmail::submit` outside tests).
pub type Submit<'a> = dyn FnMut(&Options, &[u8]) -> Result<Submitted, SendmailError> + 'a;

/// The open transaction.
#[derive(Default)]
struct Txn {
    sender: Option<String>,
    rcpts: Vec<String>,
}

/// Buffered input with replies flushed only before a read blocks.
struct Io<R, W> {
    input: R,
    out: W,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: Read, W: Write> Io<R, W> {
    fn reply(&mut self, r: &Reply) -> std::io::Result<()> {
        self.out.write_all(r.to_wire().as_bytes())
    }

    /// Reads more input (flushing pending replies first); false at EOF.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.out.flush()?;
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match self.input.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next command line, `Err(Reply)` for an over-long one, `None` at EOF.
    fn line(&mut self) -> std::io::Result<Option<Result<Vec<u8>, Reply>>> {
        loop {
            match scan_line(&self.buf, MAX_COMMAND) {
                LineScan::Line { end, next } => {
                    let line = self.buf[..end].to_vec();
                    self.buf.drain(..next);
                    return Ok(Some(Ok(line)));
                }
                LineScan::TooLong => {
                    // Discard through the next LF (reading on until there is one).
                    while !self.buf.contains(&b'\n') {
                        self.buf.clear();
                        if !self.fill()? {
                            return Ok(None);
                        }
                    }
                    let lf = self.buf.iter().position(|&b| b == b'\n').unwrap_or(0);
                    self.buf.drain(..=lf);
                    return Ok(Some(Err(codes::line_too_long())));
                }
                LineScan::Partial => {
                    if !self.fill()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The message after `354`, dot-unstuffed; `None` if input ended first.
    fn data(&mut self, dec: &mut DataDecoder) -> std::io::Result<Option<Vec<u8>>> {
        let mut text = Vec::with_capacity(16 * 1024);
        loop {
            let fed = dec.feed(&self.buf, &mut text);
            self.buf.drain(..fed.consumed);
            if fed.done {
                return Ok(Some(text));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

/// The reply to a failed submission.
fn refusal(e: &SendmailError) -> Reply {
    match e {
        SendmailError::TooBig(_) => codes::too_big(),
        SendmailError::MilterRefused(r) => r.clone(),
        SendmailError::Compose(ComposeError::NoSuchUser(m)) => codes::no_such_user().with_text(format!("<{m}>: No such user here")),
        SendmailError::Compose(ComposeError::BadSender { .. }) => Reply::new(553, Enhanced(5, 1, 7), e.to_string()),
        SendmailError::Compose(ComposeError::BadRecipient { .. }) => Reply::new(553, Enhanced(5, 1, 3), e.to_string()),
        SendmailError::Queue(q) if q.is_no_space() => codes::insufficient_storage(),
        _ => codes::local_error().with_text(format!("Local error: {e}")),
    }
}

/// Runs the dialogue: greeting, commands until QUIT or end of input. Each
/// message goes to `submit` with its SMTP envelope; a message cut off by
/// the end of input is dropped (as by an SMTP server).
pub fn dialogue<R: Read, W: Write>(s: &Settings, input: R, out: W, submit: &mut Submit<'_>) -> std::io::Result<()> {
    let mut io = Io { input, out, buf: Vec::new(), eof: false };
    let max = s.config.limits.max_message_size;
    let host = s.hostname.clone();
    io.reply(&Reply::plain(220, vec![format!("{host} ESMTP postern (sendmail -bs)").into()]))?;
    let mut txn = Txn::default();
    while let Some(line) = io.line()? {
        let cmd = match line {
            Ok(l) => parse_command(&l),
            Err(r) => {
                io.reply(&r)?;
                continue;
            }
        };
        let reply = match cmd {
            Err(e) => e.reply(),
            Ok(Command::Ehlo(_)) => {
                txn = Txn::default();
                let lines = [host.clone(), "PIPELINING".into(), format!("SIZE {max}"), "8BITMIME".into(), "ENHANCEDSTATUSCODES".into()];
                Reply::plain(250, lines.into_iter().map(Into::into).collect())
            }
            Ok(Command::Helo(_)) => {
                txn = Txn::default();
                Reply::plain(250, vec![host.clone().into()])
            }
            Ok(Command::Mail { .. }) if txn.sender.is_some() => codes::bad_sequence().with_text("Nested MAIL command"),
            Ok(Command::Mail { params, .. }) if params.size.is_some_and(|n| n > max) => codes::too_big(),
            Ok(Command::Mail { from, .. }) => {
                txn.sender = Some(match from {
                    Path::Mailbox(m) => m.to_string(),
                    _ => String::new(),
                });
                codes::sender_ok()
            }
            Ok(Command::Rcpt { .. }) if txn.sender.is_none() => codes::bad_sequence().with_text("Need MAIL before RCPT"),
            Ok(Command::Rcpt { .. }) if txn.rcpts.len() >= s.config.limits.max_recipients => codes::too_many_recipients(),
            Ok(Command::Rcpt { to, .. }) => {
                let addr = match to {
                    Path::Mailbox(m) => m.to_string(),
                    _ => format!("postmaster@{host}"),
                };
                match resolve(s, std::slice::from_ref(&addr)) {
                    Ok(_) => {
                        txn.rcpts.push(addr);
                        codes::recipient_ok()
                    }
                    Err(e) => refusal(&e),
                }
            }
            Ok(Command::Data) if txn.sender.is_none() => codes::bad_sequence().with_text("Need MAIL command"),
            Ok(Command::Data) if txn.rcpts.is_empty() => codes::bad_sequence().with_text("Need RCPT command"),
            Ok(Command::Data) => {
                io.reply(&codes::start_data())?;
                let mut dec = DataDecoder::new(usize::MAX, max);
                let Some(text) = io.data(&mut dec)? else { break };
                let done = std::mem::take(&mut txn);
                if dec.flags().too_big {
                    codes::too_big()
                } else {
                    let o = Options { sender: done.sender, recipients: done.rcpts, ignore_dots: true, ..Options::default() };
                    match submit(&o, &text) {
                        Ok(Submitted::Queued(id)) => codes::ok().with_text(format!("Ok: queued as {id}")),
                        // The daemon's `queued` line names it as `drop=NAME`.
                        Ok(Submitted::Dropped(name)) => codes::ok().with_text(format!("Ok: queued as {name}")),
                        Ok(Submitted::Discarded) => codes::ok().with_text("Ok: discarded by a milter"),
                        Err(e) => refusal(&e),
                    }
                }
            }
            Ok(Command::Rset) => {
                txn = Txn::default();
                codes::ok()
            }
            Ok(Command::Noop) => codes::ok(),
            Ok(Command::Vrfy(_)) => codes::cannot_vrfy(),
            Ok(Command::Help) => codes::help(),
            Ok(Command::Quit) => {
                io.reply(&codes::bye())?;
                break;
            }
            Ok(Command::Lhlo(_)) => codes::unknown_command(),
            Ok(Command::Expn(_) | Command::Bdat { .. } | Command::StartTls | Command::Auth { .. }) => codes::not_implemented(),
        };
        io.reply(&reply)?;
    }
    io.out.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Source;
    use crate::spool::QueueId;

    /// Settings with host `mx.test`, user `alice`, alias `team: alice, bob@far.test`.
    pub(crate) fn settings(extra: &str) -> Settings {
        let src = Source { config: None, data_dir: Some("/nonexistent-postern-test".into()) };
        let cfg = Config::parse(&format!("hostname = \"mx.test\"\n[local]\nusers = [\"alice\"]\n{extra}"), "t").unwrap();
        let mut s = Settings::from_config(cfg, &src).unwrap();
        s.aliases = crate::aliases::Aliases::parse("# team\nteam: alice,\n  bob@far.test\nroot: postmaster\n", "aliases").unwrap();
        s
    }

    /// Runs a dialogue; returns the transcript and the submitted (envelope, text).
    fn talk(s: &Settings, input: &str) -> (String, Vec<(Options, String)>) {
        let mut got = Vec::new();
        let mut out = Vec::new();
        let mut submit = |o: &Options, t: &[u8]| {
            got.push((o.clone(), String::from_utf8_lossy(t).into_owned()));
            Ok(Submitted::Queued(QueueId::parse(&format!("{:016X}", got.len())).unwrap()))
        };
        dialogue(s, input.as_bytes(), &mut out, &mut submit).unwrap();
        (String::from_utf8(out).unwrap(), got)
    }

    fn codes_of(transcript: &str) -> Vec<String> {
        transcript.lines().filter(|l| l.as_bytes().get(3) == Some(&b' ')).map(|l| l[..l.len().min(9)].to_string()).collect()
    }

    #[test]
    fn two_messages_pipelined_with_dot_stuffing() {
        let s = settings("");
        let input = "EHLO me\r\nMAIL FROM:<app@mx.test>\r\nRCPT TO:<alice@mx.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n\
Subject: one\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<team@mx.test>\r\nDATA\r\nSubject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let (t, got) = talk(&s, input);
        assert!(t.starts_with("220 mx.test ESMTP"), "{t}");
        for ext in ["250-PIPELINING", "250-SIZE 26214400", "250-8BITMIME", "250 ENHANCEDSTATUSCODES"] {
            assert!(t.contains(ext), "{ext}: {t}");
        }
        assert!(!t.contains("STARTTLS") && !t.contains("AUTH"), "{t}");
        assert_eq!(
            codes_of(&t),
            vec![
                "220 mx.te",
                "250 ENHAN",
                "250 2.1.0",
                "250 2.1.5",
                "250 2.1.5",
                "354 2.0.0",
                "250 2.0.0",
                "250 2.1.0",
                "250 2.1.5",
                "354 2.0.0",
                "250 2.0.0",
                "221 2.0.0"
            ]
        );
        assert!(t.contains("250 2.0.0 Ok: queued as 0000000000000001\r\n"), "{t}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.sender.as_deref(), Some("app@mx.test"));
        assert_eq!(got[0].0.recipients, vec!["alice@mx.test", "x@far.test"]);
        assert!(got[0].0.ignore_dots && !got[0].0.from_headers);
        assert_eq!(got[0].1, "Subject: one\r\n\r\n.leading dot\r\n");
        assert_eq!(got[1].0.sender.as_deref(), Some(""));
        assert_eq!(got[1].0.recipients, vec!["team@mx.test"]);
    }

    /// (input after the greeting, the replies' first nine characters).
    #[test]
    fn ordering_and_syntax() {
        let s = settings("[limits]\nmax_message_size = 100\n");
        let cases: &[(&str, &[&str])] = &[
            ("RCPT TO:<alice@mx.test>\r\n", &["503 5.5.1"]),
            ("DATA\r\n", &["503 5.5.1"]),
            ("MAIL FROM:<a@b.test>\r\nDATA\r\n", &["250 2.1.0", "503 5.5.1"]),
            ("MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n", &["250 2.1.0", "503 5.5.1"]),
            ("MAIL FROM:<a@b.test>\r\nRCPT TO:<nobody@mx.test>\r\n", &["250 2.1.0", "550 5.1.1"]),
            ("MAIL FROM:<a@b.test>\r\nRCPT TO:<root@mx.test>\r\nRCPT TO:<Postmaster>\r\n", &["250 2.1.0", "250 2.1.5", "250 2.1.5"]),
            ("MAIL FROM:<a@b.test>\r\nRSET\r\nRCPT TO:<alice@mx.test>\r\n", &["250 2.1.0", "250 2.0.0", "503 5.5.1"]),
            ("MAIL FROM:<a@b.test> SIZE=1000\r\n", &["552 5.3.4"]),
            ("MAIL FROM:<a@b\r\n", &["501 5.1.7"]),
            ("RCPT TO:\r\n", &["501 5.1.3"]),
            ("EHLO\r\n", &["501 5.5.4"]),
            ("FROB\r\n", &["500 5.5.1"]),
            ("NOOP\r\nVRFY alice\r\nEXPN team\r\nSTARTTLS\r\n", &["250 2.0.0", "252 2.5.0", "502 5.5.1", "502 5.5.1"]),
            ("HELO me\r\nQUIT\r\nNOOP\r\n", &["250 mx.te", "221 2.0.0"]),
            ("MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\nSubject: big\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n.\r\nNOOP\r\n",
                &["250 2.1.0", "250 2.1.5", "354 2.0.0", "552 5.3.4", "250 2.0.0"]),
            ("MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\nSubject: cut off\r\n", &["250 2.1.0", "250 2.1.5", "354 2.0.0"]),
            ("NOOP", &[]),
        ];
        for (input, want) in cases {
            let (t, got) = talk(&s, input);
            let mut codes = codes_of(&t);
            assert_eq!(codes.remove(0), "220 mx.te");
            assert_eq!(&codes, want, "{input:?}: {t}");
            assert!(got.is_empty(), "{input:?}");
        }
    }

    #[test]
    fn over_long_command_line_and_refused_submission() {
        let s = settings("");
        let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(5000));
        assert_eq!(codes_of(&talk(&s, &long).0)[1..], ["500 5.5.2", "250 2.0.0"]);
        let mut out = Vec::new();
        let mut refuse = |_: &Options, _: &[u8]| Err(SendmailError::MilterRefused(Reply::new(554, Enhanced(5, 7, 1), "spam")));
        let input = "MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\nx\r\n.\r\n";
        dialogue(&s, input.as_bytes(), &mut out, &mut refuse).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("554 5.7.1 spam\r\n"));
    }
}
