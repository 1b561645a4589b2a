//! RFC 5321 §4.1.2 paths and mailboxes, with RFC 6531 (SMTPUTF8) extensions.
//!
//! `Reverse-path = Path / "<>"`, `Forward-path = Path`,
//! `Path = "<" [ A-d-l ":" ] Mailbox ">"`. Source routes (A-d-l) are accepted
//! and ignored as §4.1.1.3 and appendix C require. Size limits from §4.5.3.1.

use std::fmt;

/// Why a path or mailbox did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is not enclosed in angle brackets.
    #[error("path must be enclosed in <>")]
    NoBrackets,
    /// The local part is missing, malformed or longer than 64 octets.
    #[error("bad local part")]
    LocalPart,
    /// The domain is missing, malformed or longer than 255 octets.
    #[error("bad domain")]
    Domain,
    /// The whole path is longer than 256 octets (§4.5.3.1.3).
    #[error("path too long")]
    TooLong,
    /// Non-ASCII octets without the SMTPUTF8 parameter (RFC 6531 §3.4).
    #[error("non-ASCII address requires SMTPUTF8")]
    NeedsUtf8,
    /// Characters after the closing bracket, or a bad source route.
    #[error("syntax error in path")]
    Syntax,
}

/// A mailbox `local@domain`. The domain is stored lower-cased; an address
/// literal keeps its brackets (`[192.0.2.1]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox {
    /// The local part exactly as sent, including quotes if it was quoted.
    pub local: String,
    /// The domain, lower-cased, or an address literal in brackets.
    pub domain: String,
}

impl Mailbox {
    /// Parses `local@domain` (no brackets). `utf8` allows RFC 6531 addresses.
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        if !utf8 && !s.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        let at = local_part_end(s)?;
        let local = &s[..at];
        if s.as_bytes().get(at) != Some(&b'@') {
            return Err(AddressError::Domain);
        }
        let domain = &s[at + 1..];
        if local.len() > 64 {
            return Err(AddressError::LocalPart);
        }
        check_domain(domain)?;
        Ok(Mailbox { local: local.to_string(), domain: domain.to_ascii_lowercase() })
    }

    /// True if the address contains non-ASCII octets (needs SMTPUTF8 downstream).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Returns the index of the `@` that ends the local part.
fn local_part_end(s: &str) -> Result<usize, AddressError> {
    let b = s.as_bytes();
    if b.first() == Some(&b'"') {
        // Quoted-string = DQUOTE *QcontentSMTP DQUOTE; quoted-pairSMTP = %d92 %d32-126
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    match b.get(i + 1) {
                        Some(c) if (32..=126).contains(c) => i += 2,
                        _ => return Err(AddressError::LocalPart),
                    }
                    continue;
                }
                b'"' => return if i + 1 < b.len() { Ok(i + 1) } else { Err(AddressError::Domain) },
                c if c >= 0x80 || (32..=126).contains(&c) => i += 1,
                _ => return Err(AddressError::LocalPart),
            }
        }
        return Err(AddressError::LocalPart);
    }
    // Dot-string = Atom *("." Atom)
    let end = s.rfind('@').ok_or(AddressError::Domain)?;
    let local = &s[..end];
    if local.is_empty() || local.split('.').any(|atom| atom.is_empty() || !atom.bytes().all(is_atext)) {
        return Err(AddressError::LocalPart);
    }
    Ok(end)
}

/// RFC 5322 atext, plus any non-ASCII octet (RFC 6531 UTF8-non-ascii).
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80
}

/// Checks `Domain / address-literal`.
pub fn check_domain(d: &str) -> Result<(), AddressError> {
    if d.is_empty() || d.len() > 255 {
        return Err(AddressError::Domain);
    }
    if let Some(lit) = d.strip_prefix('[') {
        let inner = lit.strip_suffix(']').ok_or(AddressError::Domain)?;
        let ok = if let Some(v6) = inner.strip_prefix("IPv6:") {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            inner.parse::<std::net::Ipv4Addr>().is_ok()
        };
        return if ok { Ok(()) } else { Err(AddressError::Domain) };
    }
    let d = d.strip_suffix('.').unwrap_or(d);
    for label in d.split('.') {
        let lb = label.as_bytes();
        if lb.is_empty() || lb.len() > 63 {
            return Err(AddressError::Domain);
        }
        if !lb.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c >= 0x80) {
            return Err(AddressError::Domain);
        }
        if lb[0] == b'-' || lb[lb.len() - 1] == b'-' {
            return Err(AddressError::Domain);
        }
    }
    Ok(())
}

/// A parsed `Path` argument. `None` is the null reverse-path `<>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path used by bounces (§4.5.5).
    Null,
    /// `<Postmaster>` without a domain, allowed in RCPT (§4.1.1.3).
    Postmaster,
    /// A mailbox.
    Mailbox(Mailbox),
}

/// Parses a path like `<a@b>` at the start of `s`; returns the path and the rest
/// (parameters). `allow_null` for MAIL, `allow_postmaster` for RCPT.
pub fn parse_path(s: &str, allow_null: bool, allow_postmaster: bool, utf8: bool) -> Result<(Path, &str), AddressError> {
    let s = s.trim_start_matches(' ');
    if !s.starts_with('<') {
        return Err(AddressError::NoBrackets);
    }
    let close = find_close(s).ok_or(AddressError::NoBrackets)?;
    let inner = &s[1..close];
    let rest = &s[close + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(AddressError::Syntax);
    }
    if close + 1 > 256 {
        return Err(AddressError::TooLong);
    }
    if inner.is_empty() {
        return if allow_null { Ok((Path::Null, rest)) } else { Err(AddressError::LocalPart) };
    }
    if allow_postmaster && inner.eq_ignore_ascii_case("postmaster") {
        return Ok((Path::Postmaster, rest));
    }
    // A-d-l = At-domain *( "," At-domain ) ":" — accepted and ignored.
    let mailbox = if inner.starts_with('@') {
        let colon = inner.find(':').ok_or(AddressError::Syntax)?;
        for hop in inner[..colon].split(',') {
            let d = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
            check_domain(d)?;
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    Ok((Path::Mailbox(Mailbox::parse(mailbox, utf8)?), rest))
}

/// Finds the `>` closing the path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Result<Mailbox, AddressError> {
        Mailbox::parse(s, false)
    }

    /// Input, then the expected (local part, domain) or error.
    type Case<'a> = (&'a str, Result<(&'a str, &'a str), AddressError>);

    #[test]
    fn mailboxes() {
        let table: &[Case] = &[
            ("a@b.example", Ok(("a", "b.example"))),
            ("First.Last@EXAMPLE.Com", Ok(("First.Last", "example.com"))),
            ("\"odd @ local\"@x.org", Ok(("\"odd @ local\"", "x.org"))),
            ("\"a\\\"b\"@x.org", Ok(("\"a\\\"b\"", "x.org"))),
            ("u@[192.0.2.1]", Ok(("u", "[192.0.2.1]"))),
            ("u@[IPv6:2001:db8::1]", Ok(("u", "[ipv6:2001:db8::1]"))),
            ("u@[300.1.1.1]", Err(AddressError::Domain)),
            ("a..b@x", Err(AddressError::LocalPart)),
            (".a@x", Err(AddressError::LocalPart)),
            ("a@", Err(AddressError::Domain)),
            ("@x", Err(AddressError::LocalPart)),
            ("a@-x.org", Err(AddressError::Domain)),
            ("a@x..org", Err(AddressError::Domain)),
            ("a b@x", Err(AddressError::LocalPart)),
            ("noat", Err(AddressError::Domain)),
            ("üser@x.org", Err(AddressError::NeedsUtf8)),
        ];
        for (input, want) in table {
            let got = mb(input).map(|m| (m.local, m.domain));
            let want = want.clone().map(|(l, d)| (l.to_string(), d.to_string()));
            assert_eq!(got, want, "input {input:?}");
        }
        assert_eq!(Mailbox::parse(&format!("{}@x", "a".repeat(65)), false), Err(AddressError::LocalPart));
        assert!(Mailbox::parse("üser@bücher.de", true).unwrap().is_utf8());
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("<>", true, false, false), Ok((Path::Null, "")));
        assert_eq!(parse_path("<>", false, false, false), Err(AddressError::LocalPart));
        assert_eq!(parse_path("<Postmaster>", false, true, false), Ok((Path::Postmaster, "")));
        assert_eq!(parse_path("<postmaster>", false, false, false), Err(AddressError::Domain));
        let (p, rest) = parse_path("<@relay.example,@r2.example:u@d.example> SIZE=10", true, false, false).unwrap();
        assert_eq!(p, Path::Mailbox(Mailbox { local: "u".into(), domain: "d.example".into() }));
        assert_eq!(rest, " SIZE=10");
        assert_eq!(parse_path("u@d", true, false, false), Err(AddressError::NoBrackets));
        assert_eq!(parse_path("<u@d", true, false, false), Err(AddressError::NoBrackets));
        assert_eq!(parse_path("<u@d>x", true, false, false), Err(AddressError::Syntax));
        assert_eq!(parse_path(" <u@d>", true, false, false).unwrap().1, "");
        let long = format!("<{}@{}.org>", "a".repeat(60), "b".repeat(200));
        assert_eq!(parse_path(&long, true, false, false), Err(AddressError::TooLong));
        let (p, _) = parse_path("<\"a>b\"@d.org>", true, false, false).unwrap();
        assert_eq!(p, Path::Mailbox(Mailbox { local: "\"a>b\"".into(), domain: "d.org".into() }));
    }
}
