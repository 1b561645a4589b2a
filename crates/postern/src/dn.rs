//! Distinguished names as parsed RDN sequences (F10): the certificate
//! subject and issuer are kept as a list of RDNs, each a set of
//! `type=value` attributes, never as one joined string that a value
//! containing `", O=..."` could fake. Text form: RFC 4514 escaping, in the
//! certificate's order (the order the mail log shows). Rule patterns
//! (`cert_subject`, `cert_issuer`) are parsed the same way and compared
//! attribute by attribute ([`Dn::matches`]).
//!
//! May touch: nothing (pure, a leaf). RFC 4514 (string form of DNs).

use std::fmt;

/// One `type=value` attribute of an RDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The attribute type as written (`CN`, `O`, `OU`, or a dotted OID);
    /// compared case-insensitively.
    pub name: String,
    /// The decoded value (no escapes).
    pub value: String,
}

/// A distinguished name: RDNs in order, each one or more attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dn {
    /// The RDNs, in the certificate's order (or the pattern's).
    pub rdns: Vec<Vec<Attr>>,
}

/// Why a DN text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// An RDN part without `=`.
    #[error("{0:?} is not type=value (a DN like \"O=Example, CN=host.example\"; escape , + = \\ with \\)")]
    NoEquals(String),
    /// An empty attribute type.
    #[error("empty attribute type in {0:?}")]
    EmptyType(String),
    /// A backslash at the end, or `\` followed by a bad hex pair.
    #[error("bad escape in {0:?}")]
    BadEscape(String),
}

impl Dn {
    /// Parses RFC 4514 text: RDNs separated by `,`, attributes of one RDN
    /// by `+`, `type=value`; `\` escapes a special character or gives two
    /// hex digits of one UTF-8 byte. Spaces around types and values are
    /// ignored unless escaped. The empty text is the empty DN.
    pub fn parse(text: &str) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        if text.trim().is_empty() {
            return Ok(Dn { rdns });
        }
        for rdn_text in split_unescaped(text, ',') {
            let mut rdn = Vec::new();
            for attr_text in split_unescaped(rdn_text, '+') {
                let Some(eq) = find_unescaped(attr_text, '=') else {
                    return Err(DnError::NoEquals(attr_text.trim().to_string()));
                };
                let name = attr_text[..eq].trim();
                if name.is_empty() {
                    return Err(DnError::EmptyType(attr_text.trim().to_string()));
                }
                let value = unescape(&attr_text[eq + 1..]).ok_or_else(|| DnError::BadEscape(attr_text.trim().to_string()))?;
                rdn.push(Attr { name: name.to_string(), value });
            }
            rdns.push(rdn);
        }
        Ok(Dn { rdns })
    }

    /// Does this pattern match `dn`? The same number of RDNs, in the same
    /// order; each RDN with the same number of attributes, each pattern
    /// attribute matching a different one of the RDN's: type equal
    /// (case-insensitive), value matching the pattern value, where `*`
    /// stands for any run of characters *within that one value*
    /// (case-insensitive). Nothing ever matches across RDNs.
    pub fn matches(&self, dn: &Dn) -> bool {
        self.rdns.len() == dn.rdns.len() && self.rdns.iter().zip(&dn.rdns).all(|(p, r)| rdn_matches(p, r))
    }

    /// The values of every attribute of this type, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.rdns.iter().flatten().filter(move |a| a.name.eq_ignore_ascii_case(name)).map(|a| a.value.as_str())
    }
}

/// RFC 4514 text: `, ` between RDNs, `+` inside one; special characters
/// escaped, so the text parses back to the same RDNs.
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", a.name)?;
                let n = a.value.chars().count();
                for (k, ch) in a.value.chars().enumerate() {
                    let edge = (k == 0 && (ch == ' ' || ch == '#')) || (k + 1 == n && ch == ' ');
                    if edge || matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
                        write!(f, "\\{ch}")?;
                    } else if ch.is_control() {
                        let mut buf = [0u8; 4];
                        for b in ch.encode_utf8(&mut buf).bytes() {
                            write!(f, "\\{b:02X}")?;
                        }
                    } else {
                        write!(f, "{ch}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn rdn_matches(pattern: &[Attr], rdn: &[Attr]) -> bool {
    if pattern.len() != rdn.len() {
        return false;
    }
    // Multi-valued RDNs are sets: each pattern attribute takes a different
    // attribute of the RDN (they are tiny; first fit with backtracking).
    fn assign(pattern: &[Attr], rdn: &[Attr], used: &mut Vec<bool>) -> bool {
        let Some((p, rest)) = pattern.split_first() else { return true };
        for (i, a) in rdn.iter().enumerate() {
            if !used[i] && p.name.eq_ignore_ascii_case(&a.name) && glob(&p.value, &a.value) {
                used[i] = true;
                if assign(rest, rdn, used) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    assign(pattern, rdn, &mut vec![false; rdn.len()])
}

/// `*` glob, case-insensitive, over one attribute value.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // Iterative wildcard match with one backtrack point (linear-ish).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Splits at `sep` where it is not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == sep {
            out.push(&text[start..i]);
            start = i + ch.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

fn find_unescaped(text: &str, want: char) -> Option<usize> {
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == want {
            return Some(i);
        }
    }
    None
}

/// Decodes escapes; trims unescaped spaces at both ends. `None` for a bad escape.
fn unescape(raw: &str) -> Option<String> {
    let raw = raw.trim_start_matches(' ');
    // Trailing spaces are trimmed unless the last one is escaped.
    let mut end = raw.trim_end_matches(' ').len();
    let kept = raw[..end].chars().rev().take_while(|&c| c == '\\').count();
    if kept % 2 == 1 && end < raw.len() {
        end += 1;
    }
    let raw = &raw[..end];
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.char_indices().peekable();
    while let Some((_, ch)) = it.next() {
        if ch != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let (_, next) = it.next()?;
        if let Some(hi) = next.to_digit(16) {
            let (_, lo) = it.next()?;
            let lo = lo.to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests;
