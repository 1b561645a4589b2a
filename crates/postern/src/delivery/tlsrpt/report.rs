//! The aggregate report of one policy domain and day as RFC 8460 §4.4
//! JSON, its file name (§5.1), the `_smtp._tls` TXT record (§3) and the
//! UTC day arithmetic.
//!
//! May touch: nothing (pure). RFCs: 8460 §3, §4.4, §5.1.

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use super::counts::{Day, PolicyCounts};

/// Who sends the report (the `[tls_rpt]` settings, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// "organization-name".
    pub organization: String,
    /// "contact-info".
    pub contact: String,
    /// The `From:` and envelope sender.
    pub from: String,
    /// The submitter's domain (`TLS-Report-Submitter`, file name).
    pub domain: String,
}

/// The UTC day of a unix time.
pub fn day_of(unix: u64) -> NaiveDate {
    Utc.timestamp_opt(unix as i64, 0).single().map(|t| t.date_naive()).unwrap_or_default()
}

/// The unix time a UTC day starts.
pub fn day_start(day: NaiveDate) -> u64 {
    day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp().max(0) as u64).unwrap_or(0)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A fresh report id: `YYYY-MM-DD.<domain>.<random>@<submitter>`.
pub fn report_id(day: &str, domain: &str, submitter: &str) -> String {
    format!("{day}.{domain}.{:016x}@{submitter}", rand::random::<u64>())
}

fn policy_json(p: &PolicyCounts, domain: &str) -> Value {
    let mut policy = json!({ "policy-type": p.policy_type, "policy-domain": domain });
    if !p.policy_strings.is_empty() {
        policy["policy-string"] = json!(p.policy_strings);
    }
    if !p.mx_host.is_empty() {
        policy["mx-host"] = json!(p.mx_host);
    }
    let mut entry = json!({
        "policy": policy,
        "summary": {
            "total-successful-session-count": p.successes,
            "total-failure-session-count": p.failures,
        },
    });
    if !p.details.is_empty() {
        let rows: Vec<Value> = p
            .details
            .iter()
            .map(|d| {
                let mut row = json!({
                    "result-type": d.result_type,
                    "receiving-mx-hostname": d.receiving_mx_hostname,
                    "failed-session-count": d.count,
                });
                if let Some(ip) = d.sending_mta_ip {
                    row["sending-mta-ip"] = json!(ip.to_string());
                }
                if let Some(ip) = d.receiving_ip {
                    row["receiving-ip"] = json!(ip.to_string());
                }
                if !d.reason.is_empty() {
                    row["failure-reason-code"] = json!(d.reason);
                }
                row
            })
            .collect();
        entry["failure-details"] = Value::Array(rows);
    }
    entry
}

/// The report of `domain` for `day` (RFC 8460 §4.4); `None` if nothing
/// was counted for it.
pub fn build(day: &Day, domain: &str, who: &Submitter, report_id: &str) -> Option<Value> {
    let policies = day.domains.get(domain)?;
    let date = parse_day(&day.day)?;
    let start = day_start(date);
    let iso = |t: u64| Utc.timestamp_opt(t as i64, 0).single().map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    Some(json!({
        "organization-name": who.organization,
        "date-range": { "start-datetime": iso(start), "end-datetime": iso(start + 86_399) },
        "contact-info": who.contact,
        "report-id": report_id,
        "policies": policies.iter().map(|p| policy_json(p, domain)).collect::<Vec<_>>(),
    }))
}

/// The attachment's name (RFC 8460 §5.1):
/// `submitter!policy-domain!begin!end!unique.json.gz`, times in unix seconds.
pub fn filename(who: &Submitter, domain: &str, day: NaiveDate, unique: &str) -> String {
    let start = day_start(day);
    let unique: String = unique.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("{}!{domain}!{start}!{}!{unique}.json.gz", who.domain, start + 86_399)
}

/// Where a domain wants its reports (RFC 8460 §3 `rua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// `mailto:` — the address (percent-decoded, without `?…`).
    Mailto(String),
    /// `https:` — not supported here: logged and skipped.
    Https(String),
}

/// Why a domain gets no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// No `v=TLSRPTv1` record.
    #[error("no TLSRPTv1 record")]
    NoRecord,
    /// More than one (RFC 8460 §3: then the domain has none).
    #[error("{0} TLSRPTv1 records (must be one)")]
    Several(usize),
    /// The record has no usable `rua`.
    #[error("record without a valid rua")]
    NoRua,
}

/// Picks the one `v=TLSRPTv1` record among the TXT strings of
/// Most `rua` addresses used for one domain.
pub const MAX_RUA: usize = 10;

/// `_smtp._tls.DOMAIN` and parses its `rua` (RFC 8460 §3: records that do
/// not start with the version are ignored; more than one means none).
pub fn parse_txt(records: &[String]) -> Result<Vec<Rua>, TxtError> {
    let ours: Vec<&String> = records.iter().filter(|r| version_ok(r)).collect();
    let record = match ours.as_slice() {
        [] => return Err(TxtError::NoRecord),
        [one] => one,
        many => return Err(TxtError::Several(many.len())),
    };
    let mut out = Vec::new();
    for field in record.split(';').skip(1) {
        let Some((k, v)) = field.split_once('=') else { continue };
        if !k.trim().eq_ignore_ascii_case("rua") {
            continue; // extensions (RFC 8460 §3 "ext") are ignored
        }
        for uri in v.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
            if scheme.eq_ignore_ascii_case("mailto") {
                let addr = percent_decode(rest.split('?').next().unwrap_or(""));
                if addr.contains('@') && !addr.bytes().any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>') {
                    out.push(Rua::Mailto(addr));
                }
            } else if scheme.eq_ignore_ascii_case("https") {
                out.push(Rua::Https(uri.to_string()));
            }
        }
    }
    if out.is_empty() {
        return Err(TxtError::NoRua);
    }
    // A domain cannot make us mail its report to any number of third
    // parties: the first MAX_RUA addresses are used.
    out.truncate(MAX_RUA);
    Ok(out)
}

/// `v=TLSRPTv1` as the first field (case-sensitive value, spaces allowed around).
fn version_ok(r: &str) -> bool {
    let first = r.split(';').next().unwrap_or("");
    match first.split_once('=') {
        Some((k, v)) => k.trim() == "v" && v.trim() == "TLSRPTv1",
        None => false,
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::tlsrpt::{FailureType, PolicyType, SessionResult};

    fn who() -> Submitter {
        Submitter {
            organization: "Example Sender".into(),
            contact: "postmaster@sender.example".into(),
            from: "tlsrpt@sender.example".into(),
            domain: "sender.example".into(),
        }
    }

    #[test]
    fn days() {
        let d = parse_day("2026-12-05").unwrap();
        assert_eq!(day_start(d), 1_796_428_800);
        assert_eq!(day_of(1_796_428_800), d);
        assert_eq!(day_of(1_796_428_800 - 1), parse_day("2026-12-04").unwrap());
        assert_eq!(day_of(1_796_428_800 + 86_399), d);
        assert!(parse_day("2026-13-01").is_none());
    }

    #[test]
    fn json_has_the_rfc_8460_shape() {
        let mut day = Day::new("2026-12-05");
        let none: Vec<String> = Vec::new();
        let mut r = SessionResult {
            policy_domain: "rcpt.example",
            policy_type: PolicyType::NoPolicyFound,
            policy_strings: &none,
            mx_patterns: &none,
            mx_host: "mx.rcpt.example",
            ip: Some("192.0.2.9".parse().unwrap()),
            result: Ok(()),
            detail: "",
        };
        day.record(&r, None, 10);
        day.record(&r, None, 10);
        r.result = Err(FailureType::StarttlsNotSupported);
        r.detail = "TLS required but mx does not offer STARTTLS";
        day.record(&r, Some("192.0.2.1".parse().unwrap()), 10);
        let v = build(&day, "rcpt.example", &who(), "id-1@sender.example").unwrap();
        // Round trip through text, as a receiver would read it.
        let v: Value = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(v["organization-name"], "Example Sender");
        assert_eq!(v["contact-info"], "postmaster@sender.example");
        assert_eq!(v["report-id"], "id-1@sender.example");
        assert_eq!(v["date-range"]["start-datetime"], "2026-12-05T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2026-12-05T23:59:59Z");
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "no-policy-found");
        assert_eq!(p["policy"]["policy-domain"], "rcpt.example");
        assert!(p["policy"].get("policy-string").is_none());
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "starttls-not-supported");
        assert_eq!(f["sending-mta-ip"], "192.0.2.1");
        assert_eq!(f["receiving-mx-hostname"], "mx.rcpt.example");
        assert_eq!(f["receiving-ip"], "192.0.2.9");
        assert_eq!(f["failed-session-count"], 1);
        assert!(build(&day, "other.example", &who(), "x").is_none());
    }

    #[test]
    fn file_name() {
        let d = parse_day("2026-12-05").unwrap();
        assert_eq!(filename(&who(), "rcpt.example", d, "ab-12!x"), "sender.example!rcpt.example!1796428800!1796515199!ab-12x.json.gz");
    }

    #[test]
    fn txt_records() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        type Row<'a> = (&'a [&'a str], Result<Vec<Rua>, TxtError>);
        let table: &[Row] = &[
            (&["v=TLSRPTv1; rua=mailto:tls@rcpt.example"], Ok(vec![Rua::Mailto("tls@rcpt.example".into())])),
            (
                &["v=TLSRPTv1;rua=mailto:a@x.example,mailto:b@y.example"],
                Ok(vec![Rua::Mailto("a@x.example".into()), Rua::Mailto("b@y.example".into())]),
            ),
            (&["v=TLSRPTv1; rua=https://reports.example/tls"], Ok(vec![Rua::Https("https://reports.example/tls".into())])),
            (&["v=TLSRPTv1; rua=mailto:a%2Bb@x.example?subject=x"], Ok(vec![Rua::Mailto("a+b@x.example".into())])),
            (&["v=spf1 -all", "v=TLSRPTv1; ext=1; rua=mailto:t@x.example"], Ok(vec![Rua::Mailto("t@x.example".into())])),
            (&["v=spf1 -all"], Err(TxtError::NoRecord)),
            (&[], Err(TxtError::NoRecord)),
            (&["rua=mailto:t@x.example; v=TLSRPTv1"], Err(TxtError::NoRecord)),
            (&["v=TLSRPTv2; rua=mailto:t@x.example"], Err(TxtError::NoRecord)),
            (&["v=TLSRPTv1; rua=mailto:a@x.example", "v=TLSRPTv1; rua=mailto:b@x.example"], Err(TxtError::Several(2))),
            (&["v=TLSRPTv1; rua=ftp://x"], Err(TxtError::NoRua)),
            (&["v=TLSRPTv1; rua=mailto:not-an-address"], Err(TxtError::NoRua)),
            (&["v=TLSRPTv1"], Err(TxtError::NoRua)),
            (&["v=TLSRPTv1; rua=mailto:%"], Err(TxtError::NoRua)),
        ];
        for (records, want) in table {
            assert_eq!(&parse_txt(&s(records)), want, "{records:?}");
        }
    }
}
