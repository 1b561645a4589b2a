//! Turning a local submission into an envelope and a message: the header
//! fixes (Received, From, Date, Message-ID, Bcc removal with `-t`), the
//! envelope sender, and recipient resolution through the aliases. Shared
//! by the `sendmail` face (which checks a submission before dropping it)
//! and the pickup (which decides, trusting only the drop file's owner).
//!
//! May touch: nothing (pure, apart from the user database lookup of a uid's
//! login name). RFC 5322 §3.4 (address lists), §3.6 (required fields).

use postern_wire::address::AddressError;
use postern_wire::Mailbox;

use crate::policy::local_targets;
use crate::settings::Settings;

/// Why a submission cannot be queued.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
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
}

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

/// The login name of `uid`, or `uidN` when it has none.
pub fn login_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name).unwrap_or_else(|| format!("uid{uid}"))
}

/// What a submission says about its headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    /// `-t`: recipients come from To/Cc/Bcc, and Bcc is removed.
    pub from_headers: bool,
    /// `-F`: the full name for a generated From: field.
    pub full_name: Option<&'a str>,
    /// The submitting user (the drop file's owner), for `Received:`.
    pub uid: u32,
}

/// Prepares the message: removes Bcc (with -t), adds Received, From, Date
/// and Message-ID when missing. Returns the new text and recipients found
/// in headers (with -t).
pub fn prepare(text: &[u8], h: Headers<'_>, sender: &str, hostname: &str, date: &str, unique: &str) -> (Vec<u8>, Vec<String>) {
    let fs = fields(text);
    let mut header_rcpts = Vec::new();
    let mut out = Vec::with_capacity(text.len() + 256);
    out.extend_from_slice(format!("Received: by {hostname} (postern sendmail, from userid {});\r\n\t{date}\r\n", h.uid).as_bytes());
    let has = |n: &str| fs.iter().any(|f| f.name == n);
    if !has("from") {
        let from = match h.full_name {
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
        if h.from_headers && matches!(f.name.as_str(), "to" | "cc" | "bcc") {
            header_rcpts.extend(addresses(&f.value));
        }
        if h.from_headers && f.name == "bcc" {
            out.extend_from_slice(&text[pos..f.start]);
            pos = f.end;
        }
    }
    out.extend_from_slice(&text[pos..]);
    (out, header_rcpts)
}

/// Resolves recipients to delivery addresses (aliases expanded). Bare
/// names get the host name. Errors name the bad address.
pub fn resolve(settings: &Settings, rcpts: &[String]) -> Result<Vec<String>, ComposeError> {
    let mut out: Vec<String> = Vec::new();
    for r in rcpts.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()) {
        let full = if r.contains('@') { r.to_string() } else { format!("{r}@{}", settings.hostname) };
        let m = Mailbox::parse(&full, true).map_err(|reason| ComposeError::BadRecipient { address: r.to_string(), reason })?;
        let targets = if settings.is_local_domain(&m.domain) {
            match local_targets(settings, &m.local.to_ascii_lowercase(), &m.domain) {
                Some(t) => t,
                None => return Err(ComposeError::NoSuchUser(m)),
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
/// bare name gets the host name), else `uid`'s login name at the host name.
pub fn envelope_sender(settings: &Settings, given: Option<&str>, uid: u32) -> Result<String, ComposeError> {
    match given {
        Some(s) if s.is_empty() || s == "<>" => Ok(String::new()),
        Some(s) => {
            let s = s.trim_start_matches('<').trim_end_matches('>');
            let full = if s.contains('@') { s.to_string() } else { format!("{s}@{}", settings.hostname) };
            Mailbox::parse(&full, true).map(|m| m.to_string()).map_err(|reason| ComposeError::BadSender { address: s.to_string(), reason })
        }
        None => Ok(format!("{}@{}", login_name(uid), settings.hostname)),
    }
}

/// A submission checked and composed: sender, resolved recipients, text.
#[derive(Debug)]
pub struct Composed {
    /// The envelope sender ("" for the null sender).
    pub sender: String,
    /// Resolved recipients (aliases expanded), at least one.
    pub rcpts: Vec<String>,
    /// The message with the added header fields.
    pub text: Vec<u8>,
}

/// Composes a submission: the sender (`given`, or `uid`'s login name),
/// the header fixes, and the recipients (`rcpts` plus, with `-t`, the
/// header ones), resolved. The one function both the face and the pickup run.
pub fn compose(settings: &Settings, given: Option<&str>, rcpts: &[String], text: &[u8], h: Headers<'_>) -> Result<Composed, ComposeError> {
    let sender = envelope_sender(settings, given, h.uid)?;
    let unique = format!("{}.{:08x}", crate::time::now_unix(), rand::random::<u32>());
    let (text, header_rcpts) = prepare(text, h, &sender, &settings.hostname, &crate::time::rfc5322_date(), &unique);
    let mut all = rcpts.to_vec();
    all.extend(header_rcpts);
    let rcpts = resolve(settings, &all)?;
    if rcpts.is_empty() {
        return Err(ComposeError::NoRecipients);
    }
    Ok(Composed { sender, rcpts, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists() {
        assert_eq!(
            addresses("\"Doe, John\" <john@x.example>, jane@y.example (Jane), team: a@z, b@z;"),
            vec!["john@x.example", "jane@y.example", "a@z", "b@z"]
        );
    }

    #[test]
    fn prepare_removes_bcc_and_adds_headers() {
        let h = Headers { from_headers: true, full_name: None, uid: 33 };
        let text = b"To: a@x.example\r\nBcc: hidden@y.example,\r\n  other@y.example\r\nSubject: s\r\n\r\nBcc: body line\r\n";
        let (out, rcpts) = prepare(text, h, "me@h", "h", "DATE", "u");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(rcpts, vec!["a@x.example", "hidden@y.example", "other@y.example"]);
        assert!(!out.contains("hidden"), "{out}");
        assert!(out.contains("Subject: s\r\n\r\nBcc: body line\r\n"));
        assert!(out.starts_with("Received: by h (postern sendmail, from userid 33);\r\n"), "{out}");
        assert!(out.contains("From: me@h\r\n"));
        assert!(out.contains("Date: DATE\r\n"));
        assert!(out.contains("Message-ID: <u@h>\r\n"));
    }
}
