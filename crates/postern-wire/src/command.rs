//! SMTP command parsing (RFC 5321 §4.1.1) with ESMTP parameters:
//! SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531),
//! BDAT (RFC 3030), AUTH= (RFC 4954 §5), DSN's RET/ENVID/NOTIFY/ORCPT (RFC 3461,
//! parsed here so later layers can honour them), REQUIRETLS (RFC 8689 §2).
//!
//! Input is one command line without its CRLF. No I/O, no policy.

use crate::address::{parse_path, AddressError, Path};
use crate::reply::{codes, Enhanced, Reply};

/// `BODY=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Body {
    /// `7BIT` (or no BODY parameter).
    #[default]
    SevenBit,
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BINARYMIME` (RFC 3030): only valid with BDAT.
    BinaryMime,
}

/// Parameters of MAIL FROM.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` declared message size (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` present (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `AUTH=<mailbox>` or `AUTH=<>` as xtext-decoded text (RFC 4954 §5).
    pub auth: Option<String>,
    /// `RET=FULL|HDRS` (RFC 3461 §4.3), upper-cased.
    pub ret: Option<String>,
    /// `ENVID=` xtext-decoded (RFC 3461 §4.4).
    pub envid: Option<String>,
    /// `REQUIRETLS` present (RFC 8689 §2: a keyword without a value; the
    /// session decides whether it may be used, the parser only reads it).
    pub requiretls: bool,
}

/// Parameters of RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461 §4.1), upper-cased, comma-separated values.
    pub notify: Option<String>,
    /// `ORCPT=` (RFC 3461 §4.2), xtext-decoded.
    pub orcpt: Option<String>,
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain-or-literal`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `LHLO domain` (RFC 2033; accepted only by LMTP servers).
    Lhlo(String),
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The reverse path; `Path::Null` for `<>`.
        from: Path,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The recipient: a mailbox or bare `<Postmaster>`.
        to: Path,
        /// ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// True when this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [topic]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// Mechanism name, upper-cased.
        mechanism: String,
        /// The initial response as sent (base64 or `=`).
        initial: Option<String>,
    },
}

impl Command {
    /// The verb as used in logs and the per-verb table.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Lhlo(_) => "LHLO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

impl MailParams {
    /// The parameters as MAIL FROM sends them, each with a leading space, in
    /// a fixed order (SIZE, BODY, SMTPUTF8, AUTH, RET, ENVID, REQUIRETLS); xtext where
    /// RFC 3461/4954 ask for it. `parse_command` reads them back unchanged.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(n) = self.size {
            out.push_str(&format!(" SIZE={n}"));
        }
        match self.body {
            Body::SevenBit => {}
            Body::EightBitMime => out.push_str(" BODY=8BITMIME"),
            Body::BinaryMime => out.push_str(" BODY=BINARYMIME"),
        }
        if self.smtputf8 {
            out.push_str(" SMTPUTF8");
        }
        if let Some(a) = &self.auth {
            out.push_str(&format!(" AUTH={}", xtext_encode(a)));
        }
        if let Some(r) = &self.ret {
            out.push_str(&format!(" RET={r}"));
        }
        if let Some(e) = &self.envid {
            out.push_str(&format!(" ENVID={}", xtext_encode(e)));
        }
        if self.requiretls {
            out.push_str(" REQUIRETLS");
        }
        out
    }
}

impl RcptParams {
    /// The parameters as RCPT TO sends them, each with a leading space
    /// (NOTIFY, then ORCPT in xtext).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(n) = &self.notify {
            out.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &self.orcpt {
            out.push_str(&format!(" ORCPT={}", xtext_encode(o)));
        }
        out
    }
}

/// `<>`, `<Postmaster>` or `<local@domain>`.
fn encode_path(p: &Path) -> String {
    match p {
        Path::Null => "<>".into(),
        Path::Postmaster => "<Postmaster>".into(),
        Path::Mailbox(m) => format!("<{m}>"),
    }
}

impl Command {
    /// The command line (without CRLF) that [`parse_command`] parses back
    /// to `self` (checked by a unit test and the `command` fuzz target). The
    /// SMTP client builds its MAIL/RCPT parameters with
    /// [`MailParams::encode`] and [`RcptParams::encode`].
    pub fn encode(&self) -> String {
        match self {
            Command::Ehlo(d) | Command::Helo(d) | Command::Lhlo(d) => format!("{} {d}", self.verb()),
            Command::Mail { from, params } => format!("MAIL FROM:{}{}", encode_path(from), params.encode()),
            Command::Rcpt { to, params } => format!("RCPT TO:{}{}", encode_path(to), params.encode()),
            Command::Bdat { size, last: true } => format!("BDAT {size} LAST"),
            Command::Bdat { size, last: false } => format!("BDAT {size}"),
            Command::Vrfy(s) | Command::Expn(s) => format!("{} {s}", self.verb()),
            Command::Auth { mechanism, initial: Some(i) } => format!("AUTH {mechanism} {i}"),
            Command::Auth { mechanism, initial: None } => format!("AUTH {mechanism}"),
            Command::Data | Command::Rset | Command::Noop | Command::Quit | Command::Help | Command::StartTls => self.verb().to_string(),
        }
    }
}

/// Why a command line did not parse; each maps to a precise reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The verb is not one we know.
    #[error("unknown command")]
    Unknown,
    /// The line contains NUL or other control characters, or is not UTF-8.
    #[error("invalid characters in command")]
    BadChars,
    /// Arguments missing or malformed.
    #[error("syntax error in arguments")]
    Syntax,
    /// MAIL FROM path is malformed.
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    /// RCPT TO path is malformed.
    #[error("bad recipient address: {0}")]
    Recipient(AddressError),
    /// An ESMTP parameter we do not implement.
    #[error("unrecognized parameter {0}")]
    UnknownParam(String),
    /// A known parameter with a bad value.
    #[error("bad value for parameter {0}")]
    BadParam(String),
}

impl ParseError {
    /// The reply for this error (RFC 5321 §4.2.4, RFC 3463).
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Unknown => codes::unknown_command(),
            ParseError::BadChars => codes::syntax_params().with_text("Invalid characters in command"),
            ParseError::Syntax => codes::syntax_params(),
            ParseError::Sender(AddressError::NeedsUtf8) | ParseError::Recipient(AddressError::NeedsUtf8) => {
                Reply::new(553, Enhanced(5, 6, 7), "Non-ASCII address requires SMTPUTF8")
            }
            ParseError::Sender(e) => Reply::new(501, Enhanced(5, 1, 7), format!("Bad sender address syntax: {e}")),
            ParseError::Recipient(e) => Reply::new(501, Enhanced(5, 1, 3), format!("Bad recipient address syntax: {e}")),
            ParseError::UnknownParam(p) => codes::unknown_parameter().with_text(format!("Unsupported parameter {p}")),
            ParseError::BadParam(p) => Reply::new(501, Enhanced(5, 5, 4), format!("Bad value for parameter {p}")),
        }
    }
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::BadChars)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::BadChars);
    }
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb_up = verb.to_ascii_uppercase();
    let no_arg = |c: Command| if arg.trim().is_empty() { Ok(c) } else { Err(ParseError::Syntax) };
    match verb_up.as_str() {
        "EHLO" | "HELO" | "LHLO" => {
            let d = arg.trim();
            if d.is_empty() || d.contains(' ') && verb_up != "HELO" {
                return Err(ParseError::Syntax);
            }
            let d = d.to_string();
            Ok(match verb_up.as_str() {
                "EHLO" => Command::Ehlo(d),
                "HELO" => Command::Helo(d),
                _ => Command::Lhlo(d),
            })
        }
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_arg(Command::Data),
        "BDAT" => parse_bdat(arg),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" if !arg.trim().is_empty() => Ok(Command::Vrfy(arg.trim().to_string())),
        "EXPN" if !arg.trim().is_empty() => Ok(Command::Expn(arg.trim().to_string())),
        "VRFY" | "EXPN" => Err(ParseError::Syntax),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls),
        "AUTH" => {
            let mut it = arg.split(' ').filter(|s| !s.is_empty());
            let mechanism = it.next().ok_or(ParseError::Syntax)?.to_ascii_uppercase();
            let initial = it.next().map(str::to_string);
            if it.next().is_some() {
                return Err(ParseError::Syntax);
            }
            Ok(Command::Auth { mechanism, initial })
        }
        _ => Err(ParseError::Unknown),
    }
}

/// Strips a case-insensitive keyword like `FROM:`; tolerates a space after the colon.
/// `get`, not indexing: a multi-byte character across the keyword's
/// length (`MAIL FRORį:`) must not panic (found by `fuzz/` target `command`).
fn strip_keyword<'a>(arg: &'a str, kw: &str) -> Option<&'a str> {
    if !arg.get(..kw.len())?.eq_ignore_ascii_case(kw) {
        return None;
    }
    arg.get(kw.len()..)
}

fn params(rest: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    rest.split(' ').filter(|s| !s.is_empty()).map(|p| match p.find('=') {
        Some(i) => (p[..i].to_ascii_uppercase(), Some(&p[i + 1..])),
        None => (p.to_ascii_uppercase(), None),
    })
}

fn parse_mail(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(arg, "FROM:").ok_or(ParseError::Syntax)?;
    // SMTPUTF8 decides whether a UTF-8 path is allowed, so look at params first.
    let utf8 = rest.split(' ').any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
    let (from, rest) = parse_path(rest, true, false, utf8).map_err(ParseError::Sender)?;
    let mut p = MailParams::default();
    for (key, value) in params(rest) {
        let bad = || ParseError::BadParam(key.clone());
        match (key.as_str(), value) {
            ("SIZE", Some(v)) if p.size.is_none() => {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                p.size = Some(v.parse().map_err(|_| bad())?);
            }
            ("BODY", Some(v)) => {
                p.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(bad()),
                }
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("AUTH", Some(v)) => p.auth = Some(xtext_decode(v).ok_or_else(bad)?),
            ("RET", Some(v)) => {
                let v = v.to_ascii_uppercase();
                if v != "FULL" && v != "HDRS" {
                    return Err(bad());
                }
                p.ret = Some(v);
            }
            ("ENVID", Some(v)) => p.envid = Some(xtext_decode(v).ok_or_else(bad)?),
            // RFC 8689 §2: no value; given twice is as malformed as SIZE twice.
            ("REQUIRETLS", None) if !p.requiretls => p.requiretls = true,
            ("SIZE" | "BODY" | "AUTH" | "RET" | "ENVID" | "SMTPUTF8" | "REQUIRETLS", _) => return Err(bad()),
            _ => return Err(ParseError::UnknownParam(key)),
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn parse_rcpt(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(arg, "TO:").ok_or(ParseError::Syntax)?;
    // A UTF-8 recipient is syntactically fine here; the session checks it
    // against the transaction's SMTPUTF8 flag.
    let (to, rest) = parse_path(rest, false, true, true).map_err(ParseError::Recipient)?;
    let mut p = RcptParams::default();
    for (key, value) in params(rest) {
        let bad = || ParseError::BadParam(key.clone());
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let v = v.to_ascii_uppercase();
                let items: Vec<&str> = v.split(',').collect();
                let valid = items.iter().all(|i| matches!(*i, "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"));
                if !valid || (items.contains(&"NEVER") && items.len() > 1) {
                    return Err(bad());
                }
                p.notify = Some(v);
            }
            ("ORCPT", Some(v)) => p.orcpt = Some(xtext_decode(v).ok_or_else(bad)?),
            ("NOTIFY" | "ORCPT", None) => return Err(bad()),
            _ => return Err(ParseError::UnknownParam(key)),
        }
    }
    Ok(Command::Rcpt { to, params: p })
}

fn parse_bdat(arg: &str) -> Result<Command, ParseError> {
    let mut it = arg.split(' ').filter(|s| !s.is_empty());
    let size = it.next().ok_or(ParseError::Syntax)?;
    if size.len() > 20 || !size.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::Syntax);
    }
    let size = size.parse().map_err(|_| ParseError::Syntax)?;
    let last = match it.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax),
    };
    if it.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(Command::Bdat { size, last })
}

/// Decodes RFC 3461 §4 xtext (`+XX` hex escapes). Each escape is `+` and
/// exactly two hex digits (either case): not `from_str_radix`, which also
/// takes a sign (`++1`, found by the `xtext` fuzz target).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let digit = |j: usize| b.get(j).and_then(|&c| char::from(c).to_digit(16));
            out.push(u8::try_from(digit(i + 1)? * 16 + digit(i + 2)?).ok()?);
            i += 3;
        } else if (33..=126).contains(&b[i]) && b[i] != b'=' {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes text as RFC 3461 xtext.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if (33..=126).contains(&c) && c != b'+' && c != b'=' {
            out.push(c as char);
        } else {
            out.push_str(&format!("+{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
