//! sendmail's access map in its source text form (`/etc/mail/access`, the
//! file `makemap` compiles): `TAG:key  value` lines, `#` comments. Also the
//! pieces of sendmail syntax its keys use: IP prefixes by octets
//! (`Connect:10.1` is 10.1.0.0/16) and certificate DNs in OpenSSL's
//! one-line form with sendmail's xtext escapes (`/C=US/O=Example+20Corp/CN=CA`,
//! `+XX` a hex byte).
//!
//! May touch: nothing (text in, entries out).

use std::net::{IpAddr, Ipv6Addr};

/// One line of the access file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// 1-based line.
    pub line: usize,
    /// The line as written (trimmed).
    pub text: String,
    /// The tag (`Connect`, `From`, `To`, `CERTISSUER`, `CERTSUBJECT`,
    /// `Srv_Features`, ...); "" for an untagged key.
    pub tag: String,
    /// The key after the tag.
    pub key: String,
    /// What the value says.
    pub action: AccessAction,
}

/// The right-hand side of an access entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessAction {
    /// `RELAY`.
    Relay,
    /// `OK`.
    Ok,
    /// `REJECT`.
    Reject,
    /// `DISCARD`.
    Discard,
    /// `SKIP`.
    Skip,
    /// `SUBJECT` (CERTISSUER: go on to the CERTSUBJECT entry).
    Subject,
    /// `ERROR:[D.S.N:]"NNN text"` (or without quotes): the SMTP code and text.
    Error {
        /// The reply code (4xx or 5xx).
        code: u16,
        /// The text after the code.
        text: String,
    },
    /// Anything else (e.g. the flags of `Srv_Features:`).
    Other(String),
}

/// Parses the access file text. Lines without a value are an error
/// (`makemap` refuses them too).
pub fn parse(text: &str) -> Result<Vec<AccessEntry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => return Err((i + 1, format!("{line:?}: key without a value"))),
        };
        let (tag, key) = match key.split_once(':') {
            Some((t, k)) if is_tag(t) => (t.to_string(), k.to_string()),
            _ => (String::new(), key.to_string()),
        };
        out.push(AccessEntry { line: i + 1, text: line.to_string(), tag, key, action: action(value) });
    }
    Ok(out)
}

/// Is this a tag (and not, say, the `IPv6` of an untagged IPv6 key)?
fn is_tag(t: &str) -> bool {
    !t.eq_ignore_ascii_case("ipv6") && !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value of an entry.
pub fn action(value: &str) -> AccessAction {
    let upper = value.to_ascii_uppercase();
    match upper.as_str() {
        "RELAY" => AccessAction::Relay,
        "OK" => AccessAction::Ok,
        "REJECT" => AccessAction::Reject,
        "DISCARD" => AccessAction::Discard,
        "SKIP" => AccessAction::Skip,
        "SUBJECT" => AccessAction::Subject,
        _ if upper.starts_with("ERROR:") => {
            let rest = value[6..].trim();
            // An optional D.S.N: before the quoted reply.
            let rest = match rest.split_once(':') {
                Some((dsn, r)) if dsn.split('.').count() == 3 && dsn.chars().all(|c| c.is_ascii_digit() || c == '.') => r,
                _ => rest,
            };
            let rest = rest.trim().trim_matches('"');
            let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
            match code.parse::<u16>() {
                Ok(code) if (400..600).contains(&code) => AccessAction::Error { code, text: text.trim().to_string() },
                _ => AccessAction::Other(value.to_string()),
            }
        }
        _ => AccessAction::Other(value.to_string()),
    }
}

/// A `Connect:` (or untagged) key as a CIDR, when it is an address or an
/// IPv4 prefix by whole octets (`127.0.0` is 127.0.0.0/24) or an `IPv6:`
/// address; `None` for host and domain names (matched by reverse DNS).
pub fn network(key: &str) -> Option<String> {
    if let Some(v6) = key.strip_prefix("IPv6:").or_else(|| key.strip_prefix("ipv6:")) {
        return v6.parse::<Ipv6Addr>().ok().map(|a| format!("{a}/128"));
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.is_empty() || parts.len() > 4 || parts.iter().any(|p| p.is_empty() || p.len() > 3 || p.parse::<u8>().is_err()) {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = p.parse().ok()?;
    }
    Some(format!("{}/{}", IpAddr::from(octets), parts.len() * 8))
}

/// Decodes sendmail's xtext (`+XX` is the byte 0xXX).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A DN as sendmail's `${cert_issuer}`/`${cert_subject}` show it (OpenSSL
/// one-line form, xtext-escaped: `/C=US/O=Example+20Corp/CN=CA`) turned into
/// postern's DN pattern (RFC 4514 text in the certificate's order, values
/// escaped: `C=US, O=Example Corp, CN=CA`). `None` when it is not that form.
pub fn dn_pattern(key: &str) -> Option<String> {
    let dn = xtext_decode(key)?;
    let body = dn.strip_prefix('/')?;
    let mut rdns: Vec<String> = Vec::new();
    for part in body.split('/') {
        match part.split_once('=') {
            Some((t, v)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') => {
                rdns.push(format!("{t}={}", escape_value(v)));
            }
            // A '/' inside a value: the one-line form is ambiguous there;
            // keep it as part of the previous value.
            _ => {
                let last = rdns.last_mut()?;
                last.push('/');
                last.push_str(&escape_value(part));
            }
        }
    }
    (!rdns.is_empty()).then(|| rdns.join(", "))
}

/// RFC 4514 escaping of one attribute value (and `*`, which is a wildcard
/// in postern's patterns, kept as written: sendmail keys have no wildcards
/// and certificates rarely have `*` in a DN).
fn escape_value(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') || edge {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
