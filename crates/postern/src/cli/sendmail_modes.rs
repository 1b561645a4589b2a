//! The sendmail modes other than queueing one message: the dispatcher for
//! `-bs`, `-bv`, `-bt`, `-bi` and `-q…`, the `-q` argument grammar, the
//! flush request, and `newaliases` (check the aliases file, make the
//! running daemon reload it).
//!
//! May touch: the control socket, the aliases file (read), standard
//! input/output.

use std::io::ErrorKind;

use super::sendmail::{Flush, Mode, SendmailError};
use super::sysexits as exit;
use crate::control;
use crate::settings::Settings;

/// Parses what follows `-q`: nothing, an interval (`1h`, `30m`, `15`),
/// `f`/`p…` (sendmail's foreground/persistent runs), `R<site>`,
/// `S<site>`, `I<id>` (the value may also be the next argument).
pub fn parse_q(rest: &str, next: impl FnOnce() -> Result<String, SendmailError>) -> Result<Flush, SendmailError> {
    let bad = || SendmailError::UnknownOption(format!("-q{rest}"));
    let mut chars = rest.chars();
    match chars.next() {
        None | Some('f') if rest.len() <= 1 => Ok(Flush::All),
        Some('p') if is_interval(&rest[1..]) => Ok(Flush::All),
        Some('R' | 'S' | 'I') => {
            let value = if rest.len() > 1 { rest[1..].to_string() } else { next()? };
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                return Err(bad());
            }
            Ok(match rest.as_bytes()[0] {
                b'R' => Flush::Recipient(value),
                b'S' => Flush::Sender(value),
                _ => Flush::Id(value),
            })
        }
        Some(_) if is_interval(rest) => Ok(Flush::All),
        _ => Err(bad()),
    }
}

/// sendmail's queue intervals: `15`, `30m`, `1h30m`, `2d` (empty is fine).
fn is_interval(s: &str) -> bool {
    let mut digits = false;
    for c in s.chars() {
        match c {
            '0'..='9' => digits = true,
            's' | 'm' | 'h' | 'd' | 'w' if digits => digits = false,
            _ => return false,
        }
    }
    true
}

/// Runs a mode other than `-bm`/`-bp`/`--help`; returns the exit code.
pub fn run(s: &Settings, mode: Mode) -> i32 {
    match mode {
        Mode::Smtp(o) => super::sendmail_bs::run_stdio(s, &o),
        Mode::Flush(f) => flush(s, &f),
        Mode::Verify(o) => super::addrtest::verify(s, &o.recipients),
        Mode::AddressTest(o) => super::addrtest::test(s, &o.recipients),
        Mode::Newaliases => newaliases(s),
        Mode::Submit(o) => super::sendmail_verbose::submit(s, &o),
        Mode::Help | Mode::ListQueue => exit::SOFTWARE,
    }
}

/// The control command for a flush selection.
pub fn flush_command(f: &Flush) -> String {
    match f {
        Flush::All => "flush".to_string(),
        Flush::Recipient(t) => format!("flush-match rcpt {t}"),
        Flush::Sender(t) => format!("flush-match sender {t}"),
        Flush::Id(t) => format!("flush-match id {t}"),
    }
}

/// What to tell the caller when the control socket does not answer.
fn unreachable(s: &Settings, e: &std::io::Error) -> String {
    let path = control::socket_path(&s.data_dir);
    match e.kind() {
        ErrorKind::PermissionDenied => format!("{}: permission denied (only the daemon's user and root may use it)", path.display()),
        _ => format!("no daemon is running ({}: {e})", path.display()),
    }
}

/// `-q…`: asks the running daemon to try the selected messages now.
/// Silent on success, like sendmail and Postfix.
pub fn flush(s: &Settings, f: &Flush) -> i32 {
    match control::request(&s.data_dir, &flush_command(f)) {
        Ok(a) if a.starts_with("ok") => exit::OK,
        Ok(a) => {
            eprintln!("postern sendmail: the daemon refused the flush: {a}");
            exit::TEMPFAIL
        }
        Err(e) => {
            eprintln!("postern sendmail: cannot flush: {}; queued mail is tried when `postern serve` runs", unreachable(s, &e));
            exit::UNAVAILABLE
        }
    }
}

/// `newaliases`, `sendmail -bi`, `postern aliases`: checks the aliases
/// file (a broken one already failed the settings load, with file:line)
/// and makes a running daemon reload it. Without a reachable daemon it
/// still succeeds: the daemon reads the file at start and watches it.
pub fn newaliases(s: &Settings) -> i32 {
    let path = s.aliases_path();
    if s.config.local.aliases.is_some() || path.exists() {
        if let Err(e) = crate::aliases::Aliases::load(&path) {
            eprintln!("postern: {e}");
            return exit::DATAERR;
        }
    }
    match control::request(&s.data_dir, "reload-aliases") {
        Ok(a) => match a.strip_prefix("ok ") {
            Some(n) => {
                println!("postern: {}: {n} aliases, active in the running daemon", path.display());
                exit::OK
            }
            None => {
                eprintln!("postern: the daemon did not reload the aliases: {a}");
                exit::TEMPFAIL
            }
        },
        Err(e) => {
            println!("postern: {}: {} aliases, syntax ok", path.display(), s.aliases.len());
            println!("postern: {}; the daemon reads the file when it starts and notices changes within {} s", unreachable(s, &e), 2);
            exit::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sendmail::{parse_args, Options};
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn submit(s: &str) -> Options {
        match parse_args(&args(s)).unwrap() {
            Mode::Submit(o) => o,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn option_table() {
        let o = submit("-t -oi -f me@x.example -F Me a@b");
        assert!(o.from_headers && o.ignore_dots && !o.verbose);
        assert_eq!(o.sender.as_deref(), Some("me@x.example"));
        assert_eq!(o.full_name.as_deref(), Some("Me"));
        assert_eq!(o.recipients, vec!["a@b"]);
        let o = submit("-fme@x -i -oem -v -- -weird@x");
        assert_eq!(o.sender.as_deref(), Some("me@x"));
        assert_eq!(o.recipients, vec!["-weird@x"]);
        assert!(o.verbose);
        assert!(parse_args(&args("-f")).is_err());
        assert_eq!(parse_args(&args("-f x -h")).unwrap(), Mode::Help);
        assert_eq!(parse_args(&args("-f")).unwrap_err().exit_code(), exit::USAGE);
    }

    /// Every mode and flag: (arguments, the mode, or None for a usage error).
    #[test]
    fn mode_table() {
        let o = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o
        };
        let cases: Vec<(&str, Option<Mode>)> = vec![
            ("", Some(Mode::Submit(Options::default()))),
            ("-bm a", Some(Mode::Submit(o(|o| o.recipients = vec!["a".into()])))),
            ("-bp", Some(Mode::ListQueue)),
            ("-bs", Some(Mode::Smtp(Options::default()))),
            ("-bs -i", Some(Mode::Smtp(o(|o| o.ignore_dots = true)))),
            ("-t -bs", Some(Mode::Smtp(o(|o| o.from_headers = true)))),
            ("-bv a b", Some(Mode::Verify(o(|o| o.recipients = vec!["a".into(), "b".into()])))),
            ("-bt", Some(Mode::AddressTest(Options::default()))),
            ("-bt x@y", Some(Mode::AddressTest(o(|o| o.recipients = vec!["x@y".into()])))),
            ("-bi", Some(Mode::Newaliases)),
            ("-q", Some(Mode::Flush(Flush::All))),
            ("-q1h", Some(Mode::Flush(Flush::All))),
            ("-q30m", Some(Mode::Flush(Flush::All))),
            ("-q1h30m", Some(Mode::Flush(Flush::All))),
            ("-q15", Some(Mode::Flush(Flush::All))),
            ("-qf", Some(Mode::Flush(Flush::All))),
            ("-qp5m", Some(Mode::Flush(Flush::All))),
            ("-qRexample.com", Some(Mode::Flush(Flush::Recipient("example.com".into())))),
            ("-qR example.com", Some(Mode::Flush(Flush::Recipient("example.com".into())))),
            ("-qSsender.example", Some(Mode::Flush(Flush::Sender("sender.example".into())))),
            ("-qI0123ABCD", Some(Mode::Flush(Flush::Id("0123ABCD".into())))),
            ("-bm -q", Some(Mode::Flush(Flush::All))),
            ("-q -v", Some(Mode::Flush(Flush::All))),
            ("-qR", None),
            ("-qx", None),
            ("-q1x", None),
            ("-bp -q", None),
            ("-bs -q", None),
            ("-bd", None),
            ("-bD", None),
            ("-bh", None),
            ("-vv", None),
            ("-X /tmp/log", None),
        ];
        for (a, want) in cases {
            match (parse_args(&args(a)), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{a}"),
                (Err(e), None) => assert_eq!(e.exit_code(), exit::USAGE, "{a}"),
                (got, want) => panic!("{a}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn flush_commands() {
        assert_eq!(flush_command(&Flush::All), "flush");
        assert_eq!(flush_command(&Flush::Recipient("ex.com".into())), "flush-match rcpt ex.com");
        assert_eq!(flush_command(&Flush::Sender("a".into())), "flush-match sender a");
        assert_eq!(flush_command(&Flush::Id("AB".into())), "flush-match id AB");
    }
}
