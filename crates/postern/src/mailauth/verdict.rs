//! Pure parts of verification: the results as our own types, the
//! `Authentication-Results:` header, removing forged ones, and the DMARC
//! policy decision. No I/O: `verify.rs` fills [`Results`] from DNS.
//!
//! May touch: nothing. RFCs: 8601 (Authentication-Results, §5 removal of
//! forged headers), 7489 §6.6.4 (p/sp/pct), 7208 §2.6 (SPF results).

use std::fmt::Write as _;

use postern_wire::{codes, Reply};

use crate::config::{DmarcQuarantine, MailAuth, RuleAction};

/// One method's result (RFC 8601 §2.7 result keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// SPF `~all`: probably not authorized.
    SoftFail,
    /// SPF `?all`: no statement; DKIM: a signature that could not be checked.
    Neutral,
    /// Nothing to check (no record, no signature, no From domain).
    None,
    /// A temporary (DNS) error: the answer may differ later.
    TempError,
    /// A permanent error in the published records or the signature.
    PermError,
}

impl Outcome {
    /// The RFC 8601 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }

    /// Parses a keyword (for `[[rule]]` criteria and tests).
    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Pass, Outcome::Fail, Outcome::SoftFail, Outcome::Neutral, Outcome::None, Outcome::TempError, Outcome::PermError]
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
    }
}

/// Which identity SPF checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfIdentity {
    /// The MAIL FROM address.
    MailFrom(String),
    /// The HELO name (null sender).
    Helo(String),
}

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSignature {
    /// Its result.
    pub result: Outcome,
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The first 8 characters of `b=` (RFC 6008), to tell signatures apart.
    pub b: String,
}

/// A DMARC policy (RFC 7489 §6.3 `p=`, `sp=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `none`: monitor only.
    None,
    /// `quarantine`.
    Quarantine,
    /// `reject`.
    Reject,
}

impl Policy {
    /// The RFC 7489 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    /// One step milder (RFC 7489 §6.6.4, a message outside `pct`).
    fn milder(self) -> Policy {
        match self {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        }
    }
}

/// Everything verification found out about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    /// SPF of the MAIL FROM (or HELO) identity.
    pub spf: Outcome,
    /// What SPF checked.
    pub spf_identity: SpfIdentity,
    /// One entry per DKIM-Signature field; empty: `dkim=none`.
    pub dkim: Vec<DkimSignature>,
    /// DMARC of the RFC5322.From domain.
    pub dmarc: Outcome,
    /// The RFC5322.From domain ("" when there is none or several).
    pub from_domain: String,
    /// The policy that applies to `from_domain` (`p=`, or `sp=` for a
    /// subdomain under the organizational record); `None` without a record.
    pub policy: Option<Policy>,
    /// `pct=` (0..=100).
    pub pct: u8,
    /// ARC chain validation (`cv=`): pass, fail or none.
    pub arc: Outcome,
}

impl Results {
    /// One DKIM result for the message: pass if any signature passed,
    /// else the first other result, `none` without signatures.
    pub fn dkim_summary(&self) -> Outcome {
        if self.dkim.iter().any(|s| s.result == Outcome::Pass) {
            Outcome::Pass
        } else {
            self.dkim.first().map_or(Outcome::None, |s| s.result)
        }
    }

    /// The results as rule keywords: spf, dkim (summary), dmarc, arc.
    pub fn keywords(&self) -> [&'static str; 4] {
        [self.spf.as_str(), self.dkim_summary().as_str(), self.dmarc.as_str(), self.arc.as_str()]
    }

    /// The mail-log field: `spf:pass,dkim:pass,dmarc:pass,arc:none`.
    pub fn log_field(&self) -> String {
        format!("spf:{},dkim:{},dmarc:{},arc:{}", self.spf.as_str(), self.dkim_summary().as_str(), self.dmarc.as_str(), self.arc.as_str())
    }

    /// The `Authentication-Results:` field (RFC 8601 §2.2), folded after
    /// each `;`, with CRLF at the end.
    pub fn header(&self, authserv_id: &str) -> String {
        let mut h = format!("Authentication-Results: {authserv_id}");
        let _ = match &self.spf_identity {
            SpfIdentity::MailFrom(a) => write!(h, ";\r\n\tspf={} smtp.mailfrom={}", self.spf.as_str(), pvalue(a)),
            SpfIdentity::Helo(n) => write!(h, ";\r\n\tspf={} smtp.helo={}", self.spf.as_str(), pvalue(n)),
        };
        if self.dkim.is_empty() {
            h.push_str(";\r\n\tdkim=none");
        }
        for s in &self.dkim {
            let _ = write!(h, ";\r\n\tdkim={} header.d={} header.s={}", s.result.as_str(), pvalue(&s.domain), pvalue(&s.selector));
            if !s.b.is_empty() {
                let _ = write!(h, " header.b={}", pvalue(&s.b));
            }
        }
        let _ = write!(h, ";\r\n\tdmarc={}", self.dmarc.as_str());
        if !self.from_domain.is_empty() {
            let _ = write!(h, " header.from={}", pvalue(&self.from_domain));
        }
        if let Some(p) = self.policy {
            let _ = write!(h, " policy.dmarc={}", p.as_str());
        }
        let _ = write!(h, ";\r\n\tarc={}\r\n", self.arc.as_str());
        h
    }
}

/// A property value (RFC 8601 §2.2 `pvalue`): as it is when it is a
/// token or an address, else a quoted string; never a line break.
fn pvalue(v: &str) -> String {
    let plain = !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"@.-_+=/!#$%&'*^`{|}~".contains(&b));
    if plain {
        v.to_string()
    } else {
        let cleaned: String =
            v.chars().filter(|c| !c.is_control()).flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect();
        format!("\"{cleaned}\"")
    }
}

/// The header block's fields without the `Authentication-Results:` fields
/// whose authserv-id is `ours` (RFC 8601 §5: a forgery of our results);
/// others are kept. `None`: nothing to remove.
pub fn strip_forged(text: &[u8], ours: &str) -> Option<Vec<u8>> {
    let head_end = header_end(text);
    let mut out = Vec::with_capacity(text.len());
    let mut removed = false;
    let mut pos = 0;
    while pos < head_end {
        // One field: its first line and its continuation lines.
        let mut end = line_end(text, pos);
        while end < head_end && matches!(text.get(end), Some(b' ' | b'\t')) {
            end = line_end(text, end);
        }
        let field = &text[pos..end];
        if is_our_results(field, ours) {
            removed = true;
        } else {
            out.extend_from_slice(field);
        }
        pos = end;
    }
    out.extend_from_slice(&text[head_end..]);
    removed.then_some(out)
}

/// Where the header block ends (the empty line stays with the body).
fn header_end(text: &[u8]) -> usize {
    let mut pos = 0;
    while pos < text.len() {
        if text[pos..].starts_with(b"\r\n") || text[pos..].starts_with(b"\n") {
            return pos;
        }
        pos = line_end(text, pos);
    }
    text.len()
}

/// The index after the line starting at `pos` (after its LF).
fn line_end(text: &[u8], pos: usize) -> usize {
    text[pos..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| pos + i + 1)
}

/// Is `field` an `Authentication-Results:` field with authserv-id `ours`?
fn is_our_results(field: &[u8], ours: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
    if !field[..colon].trim_ascii().eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let value = skip_cfws(&value);
    let id: String = value.chars().take_while(|c| !c.is_whitespace() && *c != ';' && *c != '(').collect();
    id.trim_matches('"').eq_ignore_ascii_case(ours)
}

/// Skips white space and (nested) comments (RFC 5322 §3.2.2 CFWS).
fn skip_cfws(s: &str) -> &str {
    let mut rest = s.trim_start();
    while rest.starts_with('(') {
        let mut depth = 0usize;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        cut = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = rest[cut..].trim_start();
    }
    rest
}

/// What the DMARC result means for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue it as usual.
    Accept,
    /// Queue it with an `X-Postern-Quarantine:` header carrying this reason.
    Header(String),
    /// Queue it on hold with this reason.
    Hold(String),
    /// Refuse it (550 5.7.1).
    Reject(Reply),
    /// Ask the client to try again (451 4.7.1).
    TempFail(Reply),
}

impl Action {
    /// A message-stage `[[rule]]`'s action: `hold` with `reason`, a refusal
    /// with its `reply` (`tempfail` as 451), `accept` (no reply).
    pub fn from_rule(action: RuleAction, reply: Option<&Reply>, reason: String) -> Action {
        match (action, reply) {
            (RuleAction::Hold, _) => Action::Hold(reason),
            (RuleAction::Tempfail, Some(r)) => Action::TempFail(r.clone()),
            (_, Some(r)) => Action::Reject(r.clone()),
            (_, None) => Action::Accept,
        }
    }
}

/// The policy decision (RFC 7489 §6.6.4, §6.7). `sample` in 0..100 picks
/// whether a message falls inside `pct=` (inside when `sample < pct`).
pub fn decide(cfg: &MailAuth, r: &Results, sample: u8) -> Action {
    let policy = match r.dmarc {
        Outcome::Fail => r.policy.unwrap_or(Policy::None),
        // A DNS error: the verdict is open. It matters only when a refusal
        // could follow: refuse for now rather than pass silently.
        Outcome::TempError if cfg.dmarc_reject && r.policy != Some(Policy::None) && r.policy != Some(Policy::Quarantine) => {
            return Action::TempFail(codes::dmarc_tempfail());
        }
        _ => return Action::Accept,
    };
    let policy = if sample < r.pct { policy } else { policy.milder() };
    let reason = format!("DMARC policy {} of {}", policy.as_str(), r.from_domain);
    match policy {
        Policy::None => Action::Accept,
        Policy::Reject if cfg.dmarc_reject => Action::Reject(codes::dmarc_rejected()),
        Policy::Reject | Policy::Quarantine => match cfg.dmarc_quarantine {
            DmarcQuarantine::Hold => Action::Hold(reason),
            DmarcQuarantine::Header => Action::Header(reason),
            DmarcQuarantine::None => Action::Accept,
        },
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
