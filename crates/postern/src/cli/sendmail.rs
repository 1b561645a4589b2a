//! The `sendmail` face: local submission compatible with the classic
//! `/usr/sbin/sendmail` interface (the flags cron, PHP, mutt, git
//! send-email and friends use). It writes straight into the queue with the
//! same durable commit as the SMTP server, then pokes a running daemon
//! through the control socket; with no daemon running, the message waits
//! in the queue until `postern serve` starts.
//!
//! May touch: standard input, the spool, the control socket.
//!
//! Exit codes are sysexits(3) (see [`super::sysexits`]): 0 ok, 64 usage,
//! 65 data error, 67 unknown user, 73 cannot create queue file, 75
//! temporary failure, 78 config error. `-bp` is not handled here:
//! [`parse_args`] returns [`Mode::ListQueue`] and the dispatcher lists the
//! queue, as it does for `mailq`.

use std::io::Read;

use postern_wire::address::AddressError;
use postern_wire::data::normalize_crlf;
use postern_wire::{Mailbox, Reply};

use super::sysexits as exit;
use crate::policy::local_targets;
use crate::settings::Settings;
use crate::spool::{QueueId, Spool, SpoolError};

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
    /// The `-f`/`-r` sender is not a valid address.
    #[error("sender {address}: bad address: {reason}")]
    BadSender {
        /// The sender as given, without angle brackets.
        address: String,
        /// What the address parser said.
        reason: AddressError,
    },
    /// A recipient is not a valid address.
    #[error("{address}: bad address: {reason}")]
    BadRecipient {
        /// The recipient as given.
        address: String,
        /// What the address parser said.
        reason: AddressError,
    },
    /// A recipient in a local domain that is neither a user nor an alias.
    #[error("<{0}>: no such local user")]
    NoSuchUser(Mailbox),
    /// No recipient on the command line, nor in the headers with `-t`.
    #[error("no recipients (give them as arguments, or use -t)")]
    NoRecipients,
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
}

impl SendmailError {
    /// The sysexits(3) code the face exits with.
    pub fn exit_code(&self) -> i32 {
        match self {
            SendmailError::MissingValue(_)
            | SendmailError::UnsupportedMode(_)
            | SendmailError::UnknownOption(_)
            | SendmailError::BadSender { .. } => exit::USAGE,
            SendmailError::Input(_) | SendmailError::TooBig(_) | SendmailError::BadRecipient { .. } | SendmailError::NoRecipients => {
                exit::DATAERR
            }
            SendmailError::NoSuchUser(_) => exit::NOUSER,
            SendmailError::Queue(e) if e.is_no_space() => exit::TEMPFAIL,
            SendmailError::SpoolOpen(_) | SendmailError::Queue(_) | SendmailError::Rewrite(_) => exit::CANTCREAT,
            SendmailError::Runtime(_) => exit::TEMPFAIL,
            SendmailError::MilterRefused(r) if r.is_permanent() => exit::UNAVAILABLE,
            SendmailError::MilterRefused(_) => exit::TEMPFAIL,
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

/// Splits a message into (header lines unfolded with their raw spans, body start).
fn header_end(text: &[u8]) -> usize {
    if text.starts_with(b"\r\n") {
        return 0;
    }
    text.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(text.len())
}

/// One header field: name, unfolded value, byte range in the text.
struct Field {
    name: String,
    value: String,
    start: usize,
    end: usize,
}

fn fields(text: &[u8]) -> Vec<Field> {
    let end = header_end(text);
    let mut out: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = text[pos..end].windows(2).position(|w| w == b"\r\n").map(|e| pos + e + 2).unwrap_or(end);
        let line = String::from_utf8_lossy(&text[pos..line_end]).trim_end_matches("\r\n").to_string();
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(f) = out.last_mut() {
                f.value.push(' ');
                f.value.push_str(line.trim());
                f.end = line_end;
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push(Field { name: name.trim().to_ascii_lowercase(), value: value.trim().to_string(), start: pos, end: line_end });
        }
        pos = line_end;
    }
    out
}

/// Extracts addresses from an address-list header value (RFC 5322 §3.4),
/// handling display names, quotes, comments and groups.
pub fn addresses(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut quote, mut angle, mut paren) = (false, false, 0u32);
    for c in value.chars() {
        match c {
            '"' if paren == 0 => {
                quote = !quote;
                cur.push(c);
            }
            '(' if !quote => paren += 1,
            ')' if !quote && paren > 0 => paren -= 1,
            _ if paren > 0 => {}
            '<' if !quote => {
                angle = true;
                cur.push(c);
            }
            '>' if !quote => {
                angle = false;
                cur.push(c);
            }
            ':' if !quote && !angle => cur.clear(), // group name
            ',' | ';' if !quote && !angle => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .filter_map(|item| {
            let item = item.trim();
            let addr = match (item.rfind('<'), item.rfind('>')) {
                (Some(a), Some(b)) if a < b => &item[a + 1..b],
                _ => item,
            };
            let addr = addr.trim();
            (!addr.is_empty()).then(|| addr.to_string())
        })
        .collect()
}

/// The login name of the invoking user.
pub fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()))
}

/// Prepares the message: removes Bcc (with -t), adds Received, From, Date
/// and Message-ID when missing. Returns the new text and recipients found
/// in headers (with -t).
pub fn prepare(text: &[u8], o: &Options, sender: &str, hostname: &str, date: &str, unique: &str) -> (Vec<u8>, Vec<String>) {
    let fs = fields(text);
    let mut header_rcpts = Vec::new();
    let mut out = Vec::with_capacity(text.len() + 256);
    out.extend_from_slice(
        format!("Received: by {hostname} (postern sendmail, from userid {});\r\n\t{date}\r\n", nix::unistd::getuid()).as_bytes(),
    );
    let has = |n: &str| fs.iter().any(|f| f.name == n);
    if !has("from") {
        let from = match &o.full_name {
            Some(n) => format!("From: \"{}\" <{sender}>\r\n", n.replace(['"', '\\', '\r', '\n'], "")),
            None => format!("From: {sender}\r\n"),
        };
        out.extend_from_slice(from.as_bytes());
    }
    if !has("date") {
        out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    if !has("message-id") {
        out.extend_from_slice(format!("Message-ID: <{unique}@{hostname}>\r\n").as_bytes());
    }
    let mut pos = 0;
    for f in &fs {
        if o.from_headers && matches!(f.name.as_str(), "to" | "cc" | "bcc") {
            header_rcpts.extend(addresses(&f.value));
        }
        if o.from_headers && f.name == "bcc" {
            out.extend_from_slice(&text[pos..f.start]);
            pos = f.end;
        }
    }
    out.extend_from_slice(&text[pos..]);
    (out, header_rcpts)
}

/// Resolves recipients to delivery addresses (aliases expanded). Bare
/// names get the host name. Errors name the bad address.
pub fn resolve(settings: &Settings, rcpts: &[String]) -> Result<Vec<String>, SendmailError> {
    let mut out: Vec<String> = Vec::new();
    for r in rcpts.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        let full = if r.contains('@') { r.to_string() } else { format!("{r}@{}", settings.hostname) };
        let m = Mailbox::parse(&full, true).map_err(|reason| SendmailError::BadRecipient { address: r.to_string(), reason })?;
        let targets = if settings.is_local_domain(&m.domain) {
            match local_targets(settings, &m.local.to_ascii_lowercase(), &m.domain) {
                Some(t) => t,
                None => return Err(SendmailError::NoSuchUser(m)),
            }
        } else {
            vec![m.to_string()]
        };
        for t in targets {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The envelope sender: `-f`/`-r` (`<>` or empty for the null sender; a
/// bare name gets the host name), else the login name at the host name.
pub fn envelope_sender(settings: &Settings, given: Option<&str>) -> Result<String, SendmailError> {
    match given {
        Some(s) if s.is_empty() || s == "<>" => Ok(String::new()),
        Some(s) => {
            let s = s.trim_start_matches('<').trim_end_matches('>');
            let full = if s.contains('@') { s.to_string() } else { format!("{s}@{}", settings.hostname) };
            Mailbox::parse(&full, true).map(|m| m.to_string()).map_err(|reason| SendmailError::BadSender { address: s.to_string(), reason })
        }
        None => Ok(format!("{}@{}", login_name(), settings.hostname)),
    }
}

/// What became of a submitted message.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Committed to the queue under this id.
    Queued(QueueId),
    /// A milter discarded it, or removed every recipient (logged).
    Discarded,
}

/// Reads a message from `input` and queues it as `o` says: the `-bm` mode.
/// Logs `queued` and asks a running daemon to try it now.
pub fn submit(settings: &Settings, o: &Options, input: impl Read) -> Result<Submitted, SendmailError> {
    let max = settings.config.limits.max_message_size;
    let text = read_message(input, o.ignore_dots, max)?;
    let mut sender = envelope_sender(settings, o.sender.as_deref())?;
    let unique = format!("{}.{:08x}", crate::time::now_unix(), rand::random::<u32>());
    let (text, header_rcpts) = prepare(&text, o, &sender, &settings.hostname, &crate::time::rfc5322_date(), &unique);
    let mut all = o.recipients.clone();
    all.extend(header_rcpts);
    let mut rcpts = resolve(settings, &all)?;
    if rcpts.is_empty() {
        return Err(SendmailError::NoRecipients);
    }
    let spool = Spool::open(&settings.data_dir.join("queue")).map_err(SendmailError::SpoolOpen)?;
    let id = if settings.config.local.sendmail_milters.is_empty() {
        crate::spool::enqueue(&spool, &sender, &rcpts, &text, "local").map_err(SendmailError::Queue)?
    } else {
        match filtered(settings, &spool, &text, &mut sender, &mut rcpts)? {
            Submitted::Queued(id) => id,
            Submitted::Discarded => return Ok(Submitted::Discarded),
        }
    };
    crate::maillog::queued(&[
        ("id", id.as_str()),
        ("from", &sender),
        ("size", &text.len().to_string()),
        ("nrcpt", &rcpts.len().to_string()),
        ("client", "local"),
        ("uid", &nix::unistd::getuid().to_string()),
    ]);
    // Best effort: a daemon that is not running finds it at start-up.
    let _ = crate::control::request(&settings.data_dir, &format!("kick {id}"));
    Ok(Submitted::Queued(id))
}

/// Queues through `local.sendmail_milters`.
fn filtered(
    settings: &Settings,
    spool: &Spool,
    text: &[u8],
    sender: &mut String,
    rcpts: &mut Vec<String>,
) -> Result<Submitted, SendmailError> {
    use crate::milter::{filter_local, rewrite_draft, Verdict};
    let cfgs = settings.config.milters_named(&settings.config.local.sendmail_milters);
    let mut draft = spool.draft().map_err(SendmailError::Queue)?;
    draft.write(text);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SendmailError::Runtime)?;
    let max = settings.config.limits.max_message_size;
    let out = rt.block_on(filter_local(&cfgs, &settings.hostname, &mut draft, sender, rcpts, max));
    match out.verdict {
        Verdict::Continue => {}
        Verdict::Discard => {
            crate::maillog::discarded(&[("id", draft.id.as_str()), ("from", sender), ("client", "local")]);
            return Ok(Submitted::Discarded);
        }
        Verdict::Reject(r) | Verdict::Close(r) => return Err(SendmailError::MilterRefused(r)),
    }
    let mut eight_bit = text.iter().any(|&b| b >= 0x80);
    if let Some(rw) = &out.rewrite {
        rewrite_draft(&mut draft, rw).map_err(SendmailError::Rewrite)?;
        eight_bit |= rw.body.as_ref().is_some_and(|b| b.iter().any(|&c| c >= 0x80));
    }
    let bare = |a: &str| a.trim().trim_start_matches('<').trim_end_matches('>').to_string();
    if let Some((from, _)) = &out.change_from {
        *sender = bare(from);
    }
    for d in &out.del_rcpts {
        rcpts.retain(|r| !r.eq_ignore_ascii_case(&bare(d)));
    }
    for (a, _) in &out.add_rcpts {
        let a = bare(a);
        if Mailbox::parse(&a, true).is_ok() && !rcpts.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
            rcpts.push(a);
        }
    }
    if rcpts.is_empty() {
        crate::maillog::discarded(&[
            ("id", draft.id.as_str()),
            ("from", sender),
            ("client", "local"),
            ("reason", "milters removed every recipient"),
        ]);
        return Ok(Submitted::Discarded);
    }
    let quarantine = out.quarantine.map(|(m, reason)| format!("quarantined by milter {m}: {reason}"));
    crate::spool::enqueue_draft(spool, draft, sender, rcpts, "local", eight_bit, quarantine)
        .map(Submitted::Queued)
        .map_err(SendmailError::Queue)
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

    #[test]
    fn address_lists() {
        assert_eq!(
            addresses("\"Doe, John\" <john@x.example>, jane@y.example (Jane), team: a@z, b@z;"),
            vec!["john@x.example", "jane@y.example", "a@z", "b@z"]
        );
    }

    #[test]
    fn prepare_removes_bcc_and_adds_headers() {
        let o = Options { from_headers: true, ..Default::default() };
        let text = b"To: a@x.example\r\nBcc: hidden@y.example,\r\n  other@y.example\r\nSubject: s\r\n\r\nBcc: body line\r\n";
        let (out, rcpts) = prepare(text, &o, "me@h", "h", "DATE", "u");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(rcpts, vec!["a@x.example", "hidden@y.example", "other@y.example"]);
        assert!(!out.contains("hidden"), "{out}");
        assert!(out.contains("Subject: s\r\n\r\nBcc: body line\r\n"));
        assert!(out.contains("From: me@h\r\n"));
        assert!(out.contains("Date: DATE\r\n"));
        assert!(out.contains("Message-ID: <u@h>\r\n"));
    }
}
