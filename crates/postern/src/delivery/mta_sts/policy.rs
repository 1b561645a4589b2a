//! The MTA-STS policy file (RFC 8461 §3.2), MX pattern matching (§4.1)
//! and the per-host decision (§5): what a policy asks of one MX host.
//!
//! May touch: nothing (pure). RFCs: 8461 §3.2, §4.1, §5.

/// Longest `max_age` (RFC 8461 §3.2: 31557600 s, about a year); larger
/// values are capped to it.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// `mode` (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only listed MX hosts, only over TLS that verifies.
    Enforce,
    /// Deliver as without a policy, but report what would have failed.
    Testing,
    /// The domain has no policy (a way to withdraw one).
    None,
}

impl Mode {
    /// The policy-file word.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode`.
    pub mode: Mode,
    /// `max_age` in seconds, at most [`MAX_AGE_LIMIT`].
    pub max_age: u64,
    /// `mx` patterns, lower-case A-labels (`mail.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    /// The policy's lines as served (TLS-RPT "policy-string").
    pub lines: Vec<String>,
}

/// Why a policy file is not a policy (TLS-RPT `sts-policy-invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `version: STSv1` is missing or another version.
    #[error("version is not STSv1")]
    Version,
    /// `mode` is missing or not enforce/testing/none.
    #[error("mode missing or not enforce, testing or none")]
    Mode,
    /// `max_age` is missing or not 1 to 10 digits.
    #[error("max_age missing or not a number")]
    MaxAge,
    /// `enforce` or `testing` without any `mx`.
    #[error("no mx pattern")]
    NoMx,
    /// An `mx` value is not a host name or `*.` wildcard.
    #[error("bad mx pattern {0:?}")]
    BadMx(String),
    /// A line is not `name: value`.
    #[error("line {0} is not 'name: value'")]
    Syntax(usize),
}

/// Parses a policy body (lines end in LF or CRLF; §3.2). Unknown fields
/// are ignored; of a repeated field other than `mx` the first counts. Pure.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let (mut version, mut mode, mut max_age, mut mx, mut lines) = (None, None, None, Vec::new(), Vec::new());
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue; // tolerate blank lines, e.g. a final newline
        }
        let (name, value) = line.split_once(':').ok_or(PolicyError::Syntax(n + 1))?;
        let value = value.trim_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(PolicyError::Syntax(n + 1));
        }
        lines.push(line.to_string());
        match name {
            "version" => {
                version.get_or_insert(value);
            }
            "mode" => {
                mode.get_or_insert(value);
            }
            "max_age" => {
                max_age.get_or_insert(value);
            }
            "mx" => mx.push(pattern(value).ok_or_else(|| PolicyError::BadMx(value.to_string()))?),
            _ => {} // §3.2: unknown fields are ignored
        }
    }
    if version != Some("STSv1") {
        return Err(PolicyError::Version);
    }
    let mode = match mode {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        _ => return Err(PolicyError::Mode),
    };
    let max_age = match max_age {
        Some(v) if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse::<u64>().map_err(|_| PolicyError::MaxAge)?.min(MAX_AGE_LIMIT)
        }
        _ => return Err(PolicyError::MaxAge),
    };
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::NoMx);
    }
    Ok(Policy { mode, max_age, mx, lines })
}

/// An `mx` value as a lower-case A-label pattern, or `None` when it is
/// not a host name with an optional leading `*.` (§3.2).
fn pattern(v: &str) -> Option<String> {
    let (wild, name) = match v.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let name = super::super::idna::to_ascii(name.trim_end_matches('.')).ok()?;
    let labels_ok = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'));
    labels_ok.then(|| if wild { format!("*.{name}") } else { name })
}

/// Does MX host `host` match `pattern` (§4.1)? A `*.` wildcard stands for
/// exactly one left-most label: `*.example.com` matches `mx.example.com`,
/// not `example.com` nor `a.b.example.com`. Case-insensitive; a trailing
/// dot is ignored; a UTF-8 host name is compared in its A-label form
/// (patterns are A-labels). Pure.
pub fn matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let host = super::super::idna::to_ascii(host).unwrap_or_else(|_| host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.strip_suffix(suffix).and_then(|h| h.strip_suffix('.')).is_some_and(|label| !label.is_empty() && !label.contains('.'))
        }
        None => host == pattern,
    }
}

/// What the domain's policy asks of one MX host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// No policy, or `mode: none`: as without MTA-STS.
    NoPolicy,
    /// `enforce`, host listed: TLS whose certificate verifies (WebPKI) for
    /// the host name, else this host fails; never cleartext.
    VerifiedTls,
    /// `enforce`, host not listed: do not connect.
    Skip,
    /// `testing`: deliver as without MTA-STS; report a host that is not
    /// listed (`listed: false`) and TLS that would not have verified.
    Report {
        /// The host matches a pattern.
        listed: bool,
    },
}

/// The per-host decision (§5): a pure function of the policy and the MX
/// host name. Where DANE applies to the host (secure TLSA records), DANE
/// decides instead (RFC 8461 §2; the caller combines the two).
pub fn requirement(policy: Option<&Policy>, host: &str) -> Requirement {
    let Some(p) = policy else { return Requirement::NoPolicy };
    let listed = p.mx.iter().any(|m| matches(m, host));
    match (p.mode, listed) {
        (Mode::None, _) => Requirement::NoPolicy,
        (Mode::Enforce, true) => Requirement::VerifiedTls,
        (Mode::Enforce, false) => Requirement::Skip,
        (Mode::Testing, listed) => Requirement::Report { listed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET\r\nmax_age: 86400\r\n";

    #[test]
    fn parses_good_policies() {
        let p = parse(GOOD).expect("good");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(p.lines.len(), 5);
        let lf = parse("version: STSv1\nmode: testing\nmx: mx.example\nmax_age: 604800\nextension: ignored\n").expect("lf");
        assert_eq!((lf.mode, lf.max_age), (Mode::Testing, 604800));
        let none = parse("version: STSv1\nmode: none\nmax_age: 0").expect("none needs no mx");
        assert_eq!((none.mode, none.max_age, none.mx.len()), (Mode::None, 0, 0));
        let capped = parse("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999").expect("capped");
        assert_eq!(capped.max_age, MAX_AGE_LIMIT);
        let first = parse("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 1").expect("first wins");
        assert_eq!(first.mode, Mode::Testing);
        let idn = parse("version: STSv1\nmode: enforce\nmx: mx.bücher.example\nmax_age: 1").expect("idn");
        assert_eq!(idn.mx, vec!["mx.xn--bcher-kva.example"]);
    }

    #[test]
    fn rejects_bad_policies() {
        let cases: &[(&str, PolicyError)] = &[
            ("mode: enforce\nmx: a.example\nmax_age: 1", PolicyError::Version),
            ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1", PolicyError::Version),
            ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1", PolicyError::Mode),
            ("version: STSv1\nmx: a.example\nmax_age: 1", PolicyError::Mode),
            ("version: STSv1\nmode: enforce\nmx: a.example", PolicyError::MaxAge),
            ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1", PolicyError::MaxAge),
            ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901", PolicyError::MaxAge),
            ("version: STSv1\nmode: enforce\nmax_age: 1", PolicyError::NoMx),
            ("version: STSv1\nmode: testing\nmax_age: 1", PolicyError::NoMx),
            ("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1", PolicyError::BadMx("*.*.example".into())),
            ("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1", PolicyError::BadMx("a b".into())),
            ("version: STSv1\nmode: enforce\nmx: \nmax_age: 1", PolicyError::BadMx("".into())),
            ("version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1", PolicyError::Syntax(2)),
            ("<html>not found</html>", PolicyError::Syntax(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref().err(), Some(want), "{text:?}");
        }
    }

    #[test]
    fn mx_patterns() {
        let table = [
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.Example.com.", true),
            ("mail.example.com", "mail2.example.com", false),
            ("*.example.com", "mx1.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "xexample.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "mx1.example.com.evil", false),
            ("mx.xn--bcher-kva.example", "mx.bücher.example", true),
            ("*.xn--bcher-kva.example", "MX.BÜCHER.example.", true),
        ];
        for (p, h, want) in table {
            assert_eq!(matches(p, h), want, "{p} vs {h}");
        }
    }

    #[test]
    fn per_host_requirement() {
        let mut p = parse(GOOD).expect("good");
        assert_eq!(requirement(None, "mail.example.com"), Requirement::NoPolicy);
        assert_eq!(requirement(Some(&p), "mail.example.com"), Requirement::VerifiedTls);
        assert_eq!(requirement(Some(&p), "mx7.example.net"), Requirement::VerifiedTls);
        assert_eq!(requirement(Some(&p), "evil.example.org"), Requirement::Skip);
        p.mode = Mode::Testing;
        assert_eq!(requirement(Some(&p), "mail.example.com"), Requirement::Report { listed: true });
        assert_eq!(requirement(Some(&p), "evil.example.org"), Requirement::Report { listed: false });
        p.mode = Mode::None;
        assert_eq!(requirement(Some(&p), "evil.example.org"), Requirement::NoPolicy);
    }
}
