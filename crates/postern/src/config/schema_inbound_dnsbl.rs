//! The `[inbound.dnsbl]` and `[inbound.pregreet]` tables: DNS block/allow
//! list scores and the pre-greeting test (docs/inbound-dnsbl.md), and the
//! list syntax of Postfix's `postscreen_dnsbl_sites`
//! (`domain[=d.d.d.d][*weight]`, each `d` a number or `[a..b;c]`).
//!
//! May touch: nothing (types and pure parsing). RFCs: 5782 (DNSBL query
//! names and answers).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::values::{duration, lenient, show_duration, Cidr, ValueError};

/// What to do with a client the check refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScreenAction {
    /// Refuse with a 5xx reply (at connect: a 554 greeting, then only QUIT).
    Reject,
    /// Refuse with a 4xx reply (at connect: 421 and close).
    Tempfail,
    /// Only write a log line; the session goes on.
    Log,
}

/// When the DNSBL verdict is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsblStage {
    /// Before the greeting (postscreen): a listed client gets a 554 greeting.
    Connect,
    /// At each RCPT (Postfix `reject_rbl_client`): the log shows sender and recipient.
    Rcpt,
}

/// DNS block and allow lists.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dnsbl {
    /// The lists, in postscreen's `postscreen_dnsbl_sites` syntax:
    /// `domain[=filter][*weight]`; the filter is `d.d.d.d` where each `d` is
    /// a number or `[2..11]`/`[2;4;9..11]`; the weight (default 1) may be
    /// negative for an allow list. Default `[]` (off).
    pub lists: Vec<DnsblSite>,
    /// A client whose summed weight reaches this score is refused. Default 1.
    pub threshold: i32,
    /// A client whose score is at or below this (negative) value is allow-
    /// listed: never refused by a DNSBL, and not delayed by the pregreet
    /// test (postscreen_dnsbl_whitelist_threshold). Default 0 (off; use a
    /// negative number to enable).
    pub allowlist_threshold: i32,
    /// One deadline for all lists, queried in parallel; a list that has not
    /// answered by then counts as not listing the client. Default "2s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
    /// "reject" (554 5.7.1), "tempfail" (4xx) or "log". Default "reject".
    pub action: ScreenAction,
    /// "connect" (554 greeting) or "rcpt" (554 5.7.1 per recipient). Default "rcpt".
    pub stage: DnsblStage,
    /// Clients never looked up, besides `relay.networks` (always exempt)
    /// and, at the rcpt stage, authenticated or verified-certificate
    /// clients. Default loopback (127.0.0.0/8, ::1).
    pub exempt_networks: Vec<Cidr>,
    /// Longest time an answer is cached (the DNS TTL is used when shorter).
    /// Default "1h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub max_cache_ttl: Duration,
}

impl Default for Dnsbl {
    fn default() -> Self {
        Dnsbl {
            lists: Vec::new(),
            threshold: 1,
            allowlist_threshold: 0,
            timeout: Duration::from_secs(2),
            action: ScreenAction::Reject,
            stage: DnsblStage::Rcpt,
            exempt_networks: Cidr::loopback(),
            max_cache_ttl: Duration::from_secs(3600),
        }
    }
}

/// What to do with a client that talked before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PregreetAction {
    /// A 554 5.5.1 greeting, then only QUIT.
    Reject,
    /// A 421 4.7.0 greeting and close (RFC 5321 §3.1: the only way to end
    /// a session at the greeting).
    Drop,
    /// Only write a log line.
    Log,
}

/// The pipelining test's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PipeliningAction {
    /// Not checked.
    Ignore,
    /// A log line per violation.
    Log,
    /// A 554 5.5.1 reply, then only QUIT.
    Reject,
}

/// The pre-greeting test (postscreen's pregreet and pipelining tests).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pregreet {
    /// How long the server waits before its 220 greeting; a client that
    /// sends anything meanwhile talked first. Default "0s" (off).
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub greet_delay: Duration,
    /// "reject" (554 5.5.1 greeting), "drop" (421 and close) or "log".
    /// Default "reject".
    pub action: PregreetAction,
    /// Commands sent with HELO/EHLO before its reply, or after HELO
    /// (no PIPELINING offered) before the previous reply: "ignore", "log"
    /// or "reject". Default "ignore".
    pub pipelining: PipeliningAction,
    /// A client that waited is not delayed again for this long. Default "24h".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub pass_ttl: Duration,
    /// Most clients remembered as passed (the oldest are forgotten). Default 100000.
    pub pass_cache_size: usize,
    /// Clients never delayed, besides `relay.networks` (always exempt).
    /// Default loopback (127.0.0.0/8, ::1).
    pub exempt_networks: Vec<Cidr>,
}

impl Default for Pregreet {
    fn default() -> Self {
        Pregreet {
            greet_delay: Duration::ZERO,
            action: PregreetAction::Reject,
            pipelining: PipeliningAction::Ignore,
            pass_ttl: Duration::from_secs(24 * 3600),
            pass_cache_size: 100_000,
            exempt_networks: Cidr::loopback(),
        }
    }
}

/// One octet of a return-code filter: the values it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OctetSet(pub Vec<(u8, u8)>);

impl OctetSet {
    /// True if `v` is in one of the ranges.
    pub fn contains(&self, v: u8) -> bool {
        self.0.iter().any(|&(a, b)| a <= v && v <= b)
    }
}

/// One `lists` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblSite {
    /// The list's DNS zone, without trailing dot.
    pub domain: String,
    /// The answers that count (`None`: any A record).
    pub filter: Option<[OctetSet; 4]>,
    /// Added to the score when the list answers (negative: allow list).
    pub weight: i32,
    text: String,
}

impl DnsblSite {
    /// True if the answer `a` passes the filter.
    pub fn matches(&self, a: std::net::Ipv4Addr) -> bool {
        match &self.filter {
            None => true,
            Some(f) => a.octets().iter().zip(f.iter()).all(|(o, s)| s.contains(*o)),
        }
    }
}

fn octet_set(s: &str) -> Result<OctetSet, String> {
    let num = |t: &str| t.parse::<u8>().map_err(|_| format!("{t:?} is not a number from 0 to 255"));
    let Some(inner) = s.strip_prefix('[') else {
        let v = num(s)?;
        return Ok(OctetSet(vec![(v, v)]));
    };
    let inner = inner.strip_suffix(']').ok_or_else(|| format!("{s:?}: missing ]"))?;
    let mut out = Vec::new();
    for item in inner.split(';') {
        let (a, b) = match item.split_once("..") {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(item)?, num(item)?),
        };
        if a > b {
            return Err(format!("range {item:?} goes backwards"));
        }
        out.push((a, b));
    }
    Ok(OctetSet(out))
}

/// Splits `d.d.d.d` on the dots outside `[...]` (which hold `a..b` ranges).
fn split_octets(f: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in f.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                out.push(&f[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&f[start..]);
    out
}

fn parse_site(text: &str) -> Result<DnsblSite, String> {
    let (rest, weight) = match text.rsplit_once('*') {
        Some((r, w)) => (r, w.parse::<i32>().map_err(|_| format!("weight {w:?} is not an integer"))?),
        None => (text, 1),
    };
    let (domain, filter) = match rest.split_once('=') {
        Some((d, f)) => {
            let parts = split_octets(f);
            if parts.len() != 4 {
                return Err(format!("filter {f:?} needs four octets d.d.d.d"));
            }
            let sets = [octet_set(parts[0])?, octet_set(parts[1])?, octet_set(parts[2])?, octet_set(parts[3])?];
            (d, Some(sets))
        }
        None => (rest, None),
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if domain.is_empty() || !domain.split('.').all(label_ok) {
        return Err(format!("{domain:?} is not a domain name"));
    }
    if weight == 0 {
        return Err("weight 0 would never count".into());
    }
    Ok(DnsblSite { domain, filter, weight, text: text.to_string() })
}

impl FromStr for DnsblSite {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_site(s.trim()).map_err(|reason| ValueError::DnsblSite { text: s.into(), reason })
    }
}

impl fmt::Display for DnsblSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for DnsblSite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient(d, str::parse, || DnsblSite { domain: "invalid".into(), filter: None, weight: 1, text: String::new() })
    }
}

impl Serialize for DnsblSite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_syntax() {
        // (text, domain, weight, answers that match, answers that do not)
        type Case<'a> = (&'a str, &'a str, i32, &'a [[u8; 4]], &'a [[u8; 4]]);
        let ok: &[Case] = &[
            ("bl.example", "bl.example", 1, &[[127, 0, 0, 2], [1, 2, 3, 4]], &[]),
            ("zen.example=127.0.0.[2..11]*3", "zen.example", 3, &[[127, 0, 0, 2], [127, 0, 0, 11]], &[[127, 0, 0, 1], [127, 0, 0, 12]]),
            ("wl.example=127.0.[0..255].0*-2", "wl.example", -2, &[[127, 0, 9, 0]], &[[127, 0, 9, 1]]),
            ("x.example=127.0.0.[2;4;10..11]", "x.example", 1, &[[127, 0, 0, 4], [127, 0, 0, 10]], &[[127, 0, 0, 3]]),
            ("BL.Example.*2", "bl.example", 2, &[[127, 0, 0, 2]], &[]),
        ];
        for (text, domain, weight, yes, no) in ok {
            let s: DnsblSite = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((s.domain.as_str(), s.weight), (*domain, *weight), "{text}");
            assert_eq!(s.to_string(), *text);
            for a in *yes {
                assert!(s.matches((*a).into()), "{text} {a:?}");
            }
            for a in *no {
                assert!(!s.matches((*a).into()), "{text} {a:?}");
            }
        }
        let bad: &[(&str, &str)] = &[
            ("", "not a domain"),
            ("bl.example*x", "weight \"x\""),
            ("bl.example*0", "weight 0"),
            ("bl.example=127.0.0", "four octets"),
            ("bl.example=127.0.0.256", "0 to 255"),
            ("bl.example=127.0.0.[5..2]", "backwards"),
            ("bl.example=127.0.0.[2..5", "missing ]"),
            ("bl ex.example", "not a domain"),
        ];
        for (text, why) in bad {
            let e = text.parse::<DnsblSite>().expect_err(text).to_string();
            assert!(e.contains(why) && e.contains("bad DNSBL site"), "{text}: {e}");
        }
    }

    #[test]
    fn bad_site_names_file_line_and_key() {
        let text = "[inbound.dnsbl]\nlists = [\"ok.example\", \"bad.example=1.2.3\"]\n";
        let e = crate::config::Config::parse(text, "t.toml").expect_err("bad list").to_string();
        assert!(e.contains("t.toml") && e.contains(":2") && e.contains("lists") && e.contains("four octets"), "{e}");
    }
}
