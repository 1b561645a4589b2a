//! The `sendmail` face: local submission compatible with the classic
//! `/usr/sbin/sendmail` interface (the flags cron, PHP, mutt, git
//! send-email and friends use). It checks the submission (so the caller
//! hears about a bad address or an unknown local user at once), writes it
//! to the maildrop ([`crate::maildrop`], Postfix's postdrop) and wakes the
//! daemon, which queues it; with no daemon running, the file waits in the
//! maildrop until `postern serve` starts. It prints nothing on success:
//! the `queued` line is the daemon's.
//!
//! May touch: standard input, `DATA/maildrop`, `DATA/pickup.sock`.
//!
//! Exit codes are sysexits(3) (see [`super::sysexits`]): 0 ok, 64 usage,
//! 65 data error, 67 unknown user, 69 no maildrop, 73 cannot create the
//! drop file, 75 temporary failure, 78 config error. `-bp` is not handled here:
//! [`parse_args`] returns [`Mode::ListQueue`] and the dispatcher lists the
//! queue, as it does for `mailq`.

use std::io::Read;

use postern_wire::data::normalize_crlf;
use postern_wire::Reply;

use super::sysexits as exit;
use crate::maildrop::compose::{compose, ComposeError, Headers};
use crate::maildrop::{self, DropEnvelope, DropError};
use crate::settings::Settings;
use crate::spool::{QueueId, SpoolError};

/// Why a submission failed. Each variant knows its sysexits code
/// ([`SendmailError::exit_code`]); the face prints `postern sendmail: {error}`.
#[derive(Debug, thiserror::Error)]
pub enum SendmailError {
    /// An option that takes a value (`-f`, `-F`, `-N`, ...) had none.
    #[error("option {0} needs a value")]
    MissingValue(String),
    /// A `-b` mode postern does not have (`-bd`, `-bD`, `-bh`, ...), or one combined with `-q`.
    #[error("unsupported mode -b{0}")]
    UnsupportedMode(String),
    /// An option this face does not know.
    #[error("unknown option {0}")]
    UnknownOption(String),
    /// Standard input could not be read.
    #[error("reading standard input: {0}")]
    Input(#[source] std::io::Error),
    /// The message is larger than `limits.max_message_size` (the limit, in bytes).
    #[error("message larger than limits.max_message_size ({0} bytes)")]
    TooBig(u64),
    /// The sender or a recipient is not acceptable (bad address, unknown
    /// local user, no recipients): the checks the daemon's pickup repeats.
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// The spool directory could not be opened.
    #[error("{0}")]
    SpoolOpen(#[source] SpoolError),
    /// Writing or committing the message to the spool failed.
    #[error("{0}")]
    Queue(#[source] SpoolError),
    /// Applying a milter's rewrite to the draft failed.
    #[error("{0}")]
    Rewrite(#[source] SpoolError),
    /// The runtime for the milter conversation could not be started.
    #[error("cannot start runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A milter (`local.sendmail_milters`) refused the message.
    #[error("refused by a milter: {}", .0.summary())]
    MilterRefused(Reply),
    /// The message could not be written to the maildrop.
    #[error("{0}")]
    Maildrop(#[source] DropError),
    /// No data directory was named and no running daemon was found.
    #[error("{0}")]
    NoDataDir(String),
}

impl SendmailError {
    /// The sysexits(3) code the face exits with.
    pub fn exit_code(&self) -> i32 {
        match self {
            SendmailError::MissingValue(_)
            | SendmailError::UnsupportedMode(_)
            | SendmailError::UnknownOption(_)
            | SendmailError::Compose(ComposeError::BadSender { .. }) => exit::USAGE,
            SendmailError::Input(_)
            | SendmailError::TooBig(_)
            | SendmailError::Compose(ComposeError::BadRecipient { .. } | ComposeError::NoRecipients) => exit::DATAERR,
            SendmailError::Compose(ComposeError::NoSuchUser(_)) => exit::NOUSER,
            SendmailError::Queue(e) if e.is_no_space() => exit::TEMPFAIL,
            SendmailError::SpoolOpen(_) | SendmailError::Queue(_) | SendmailError::Rewrite(_) => exit::CANTCREAT,
            SendmailError::Runtime(_) => exit::TEMPFAIL,
            SendmailError::MilterRefused(r) if r.is_permanent() => exit::UNAVAILABLE,
            SendmailError::MilterRefused(_) => exit::TEMPFAIL,
            SendmailError::Maildrop(DropError::NoMaildrop(_)) => exit::UNAVAILABLE,
            SendmailError::Maildrop(DropError::BadField(_)) => exit::DATAERR,
            SendmailError::Maildrop(DropError::Io { source, .. }) if source.raw_os_error() == Some(nix::libc::ENOSPC) => exit::TEMPFAIL,
            SendmailError::Maildrop(_) => exit::CANTCREAT,
            SendmailError::NoDataDir(_) => exit::CONFIG,
        }
    }

    /// True for command-line errors, after which the face prints [`HELP`].
    pub fn is_usage(&self) -> bool {
        matches!(self, SendmailError::MissingValue(_) | SendmailError::UnsupportedMode(_) | SendmailError::UnknownOption(_))
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--help` / `-h`: print [`HELP`].
    Help,
    /// `-bm` (the default): read a message from standard input and queue it.
    Submit(Options),
    /// `-bp`: list the queue, like `mailq`.
    ListQueue,
    /// `-bs`: an SMTP dialogue on standard input/output ([`super::sendmail_bs`]).
    Smtp(Options),
    /// `-q`, `-q<interval>`, `-qR<site>`, `-qS<site>`, `-qI<id>`: ask the daemon to flush.
    Flush(Flush),
    /// `-bv`: verify the recipients ([`super::addrtest`]).
    Verify(Options),
    /// `-bt`: address test, addresses from the arguments or standard input.
    AddressTest(Options),
    /// `-bi` (and the `newaliases` face): check the aliases, reload the daemon's.
    Newaliases,
}

/// Which queued messages `-q` flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flush {
    /// `-q`, `-q1h`: every message.
    All,
    /// `-qR<site>`: messages with a pending recipient containing `site`.
    Recipient(String),
    /// `-qS<site>`: messages whose sender contains `site`.
    Sender(String),
    /// `-qI<id>`: one message (a queue id, or a part of one).
    Id(String),
}

/// Parsed sendmail options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-t`: take recipients from To/Cc/Bcc (Bcc removed).
    pub from_headers: bool,
    /// `-i` / `-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-f` / `-r`: envelope sender.
    pub sender: Option<String>,
    /// `-F`: full name for a generated From: header.
    pub full_name: Option<String>,
    /// Command-line recipients.
    pub recipients: Vec<String>,
    /// `-v`: a delivery transcript on standard error ([`super::sendmail_verbose`]).
    pub verbose: bool,
}

pub use super::sendmail_help::HELP;

/// Parses sendmail-style arguments (not clap: `-oi`, `-fADDR` and `-f ADDR`
/// forms do not fit a modern parser). `--help` or `-h` anywhere wins.
pub fn parse_args(args: &[String]) -> Result<Mode, SendmailError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Mode::Help);
    }
    let mut o = Options::default();
    let mut mode: Option<&str> = None;
    let mut flush: Option<Flush> = None;
    let mut i = 0;
    let value = |i: &mut usize, flag: &str, rest: &str| -> Result<String, SendmailError> {
        if !rest.is_empty() {
            return Ok(rest.to_string());
        }
        *i += 1;
        args.get(*i).cloned().ok_or_else(|| SendmailError::MissingValue(flag.to_string()))
    };
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            o.recipients.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            o.recipients.push(a.clone());
            i += 1;
            continue;
        }
        let (flag, rest) = a.split_at(2.min(a.len()));
        match flag {
            "-t" if rest.is_empty() => o.from_headers = true,
            "-i" if rest.is_empty() => o.ignore_dots = true,
            "-o" if rest == "i" => o.ignore_dots = true,
            "-o" => {} // other -oX options: ignored
            "-f" | "-r" => o.sender = Some(value(&mut i, flag, rest)?),
            "-F" => o.full_name = Some(value(&mut i, flag, rest)?),
            "-b" => match rest {
                "m" | "p" | "s" | "v" | "t" | "i" => mode = Some(rest),
                _ => return Err(SendmailError::UnsupportedMode(rest.to_string())),
            },
            "-q" => flush = Some(super::sendmail_modes::parse_q(rest, || value(&mut i, a, ""))?),
            "-v" if rest.is_empty() => o.verbose = true,
            "-N" | "-R" | "-V" | "-B" | "-L" => {
                value(&mut i, flag, rest)?;
            }
            _ => return Err(SendmailError::UnknownOption(a.clone())),
        }
        i += 1;
    }
    match (mode, flush) {
        (None | Some("m"), Some(f)) => Ok(Mode::Flush(f)),
        (Some(m), Some(_)) => Err(SendmailError::UnsupportedMode(format!("{m} with -q"))),
        (Some("p"), None) => Ok(Mode::ListQueue),
        (Some("s"), None) => Ok(Mode::Smtp(o)),
        (Some("v"), None) => Ok(Mode::Verify(o)),
        (Some("t"), None) => Ok(Mode::AddressTest(o)),
        (Some("i"), None) => Ok(Mode::Newaliases),
        _ => Ok(Mode::Submit(o)),
    }
}

/// Reads the message: stops at a lone `.` line unless `ignore_dots`.
pub fn read_message(input: impl Read, ignore_dots: bool, max: u64) -> Result<Vec<u8>, SendmailError> {
    let mut raw = Vec::new();
    input.take(max + 1).read_to_end(&mut raw).map_err(SendmailError::Input)?;
    if raw.len() as u64 > max {
        return Err(SendmailError::TooBig(max));
    }
    let mut text = normalize_crlf(&raw);
    if !ignore_dots {
        let mut pos = 0;
        while pos < text.len() {
            let end = text[pos..].windows(2).position(|w| w == b"\r\n").map(|e| pos + e).unwrap_or(text.len());
            if &text[pos..end] == b"." {
                text.truncate(pos);
                break;
            }
            pos = end + 2;
        }
    }
    if !text.is_empty() && !text.ends_with(b"\r\n") {
        text.extend_from_slice(b"\r\n");
    }
    Ok(text)
}

pub use crate::maildrop::compose::addresses;

/// The login name of the invoking user.
pub fn login_name() -> String {
    crate::maildrop::compose::login_name(nix::unistd::getuid().as_raw())
}

/// Resolves recipients to delivery addresses (aliases expanded). Bare
/// names get the host name. Errors name the bad address.
pub fn resolve(settings: &Settings, rcpts: &[String]) -> Result<Vec<String>, SendmailError> {
    Ok(crate::maildrop::compose::resolve(settings, rcpts)?)
}

/// The envelope sender: `-f`/`-r` (`<>` or empty for the null sender; a
/// bare name gets the host name), else the login name at the host name.
pub fn envelope_sender(settings: &Settings, given: Option<&str>) -> Result<String, SendmailError> {
    Ok(crate::maildrop::compose::envelope_sender(settings, given, nix::unistd::getuid().as_raw())?)
}

/// What became of a submitted message.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Committed to the queue under this id.
    Queued(QueueId),
    /// A milter discarded it, or removed every recipient (logged).
    Discarded,
    /// Written to the maildrop under this name; the daemon queues it.
    Dropped(String),
}

/// Reads a message from `input` and submits it as `o` says: the `-bm`
/// mode. Checks it, writes it to the maildrop and wakes the daemon.
///
/// Every user goes through the maildrop, root too, although root could
/// write the queue: one path is simpler to get right, and the daemon then
/// writes every `queued` line to its own mail log (with `uid=`), so one
/// grep by queue id shows a message's whole life whoever sent it.
pub fn submit(settings: &Settings, o: &Options, input: impl Read) -> Result<Submitted, SendmailError> {
    let d = &settings.data_dir;
    if d.as_path() == std::path::Path::new(crate::settings::DEFAULT_DATA_DIR) && !maildrop::dir(d).is_dir() {
        // Never strand mail in a `./postern-data` nobody reads (review §2).
        return Err(SendmailError::NoDataDir(format!(
            "no running postern daemon found ({}/daemon.json) and no data directory configured \
             (--data-dir, $POSTERN_DATA_DIR, `data_dir` in the config); not queueing into ./{}",
            crate::locate::run_dir().display(),
            crate::settings::DEFAULT_DATA_DIR
        )));
    }
    let max = settings.config.limits.max_message_size;
    let text = read_message(input, o.ignore_dots, max)?;
    let uid = nix::unistd::getuid().as_raw();
    let h = Headers { from_headers: o.from_headers, full_name: o.full_name.as_deref(), uid };
    // The daemon checks again and trusts none of it; this is for the exit code.
    compose(settings, o.sender.as_deref(), &o.recipients, &text, h)?;
    if nix::unistd::geteuid().is_root() && !maildrop::dir(d).is_dir() {
        // Before the daemon first ran: root may make the maildrop.
        maildrop::prepare_dirs(d)
            .map_err(|source| SendmailError::Maildrop(DropError::Io { what: "create", path: maildrop::dir(d), source }))?;
    }
    let env = DropEnvelope {
        sender: o.sender.clone(),
        full_name: o.full_name.clone(),
        from_headers: o.from_headers,
        recipients: o.recipients.clone(),
    };
    let name = maildrop::write(d, &env, &text).map_err(SendmailError::Maildrop)?;
    maildrop::wake(d);
    Ok(Submitted::Dropped(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_until_dot_unless_i() {
        let m = read_message(&b"a\n.\nb\n"[..], false, 100).unwrap();
        assert_eq!(m, b"a\r\n");
        let m = read_message(&b"a\n.\nb"[..], true, 100).unwrap();
        assert_eq!(m, b"a\r\n.\r\nb\r\n");
        assert!(read_message(&b"0123456789"[..], true, 5).is_err());
    }
}
