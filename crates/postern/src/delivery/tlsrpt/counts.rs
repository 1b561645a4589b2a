//! One day's TLS counts (RFC 8460 §4.4): per policy domain, per policy,
//! the successful sessions and the failures grouped by (result type,
//! sending MTA address, receiving MX host, receiving address, reason).
//! Bounded: at most `max_domains` domains a day, [`MAX_POLICIES`] policies
//! a domain and [`MAX_DETAILS`] failure groups a policy; past the last two
//! a session still counts in the totals, only its detail row is dropped.
//!
//! This is also the file format of `DATA/tlsrpt/YYYY-MM-DD.json`
//! (serde, versioned).
//!
//! May touch: nothing (pure). RFCs: 8460 §4.3, §4.4.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{PolicyType, SessionResult};

/// The file format's version.
pub const VERSION: u32 = 1;
/// Most policies counted per domain (DANE: one per MX host with TLSA records).
pub const MAX_POLICIES: usize = 64;
/// Most failure groups ("failure-details" rows) per policy.
pub const MAX_DETAILS: usize = 100;
/// Longest `failure-reason-code` kept (characters).
const MAX_REASON: usize = 200;

/// The counts of one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    /// The file format's version ([`VERSION`]).
    pub version: u32,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Per policy domain (A-labels, lower case).
    pub domains: BTreeMap<String, Vec<PolicyCounts>>,
    /// Sessions not counted because `max_domains` was reached.
    #[serde(default)]
    pub dropped: u64,
    /// Domains whose report was queued (or that want none): the daily run
    /// does not send them again.
    #[serde(default)]
    pub done: BTreeSet<String>,
}

/// One policy of one domain (one "policies" entry of the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCounts {
    /// "sts", "tlsa" or "no-policy-found".
    pub policy_type: String,
    /// The policy's text lines ("policy-string").
    pub policy_strings: Vec<String>,
    /// "mx-host": the STS patterns, or the MX host of TLSA records.
    pub mx_host: Vec<String>,
    /// Sessions that negotiated TLS as the policy wants.
    pub successes: u64,
    /// Sessions that failed.
    pub failures: u64,
    /// The failures, grouped.
    pub details: Vec<FailureCounts>,
}

/// One "failure-details" row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCounts {
    /// "result-type".
    pub result_type: String,
    /// "sending-mta-ip": our address toward the receiving host.
    pub sending_mta_ip: Option<IpAddr>,
    /// "receiving-mx-hostname".
    pub receiving_mx_hostname: String,
    /// "receiving-ip".
    pub receiving_ip: Option<IpAddr>,
    /// "failure-reason-code": our error text, shortened.
    pub reason: String,
    /// "failed-session-count".
    pub count: u64,
}

/// The policy domain as reported: A-labels, lower case, no trailing dot.
pub fn normalize_domain(d: &str) -> String {
    let d = d.trim_end_matches('.');
    crate::delivery::idna::to_ascii(d).unwrap_or_else(|_| d.to_ascii_lowercase())
}

fn shorten(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_REASON).collect()
}

impl Day {
    /// An empty day.
    pub fn new(day: &str) -> Day {
        Day { version: VERSION, day: day.to_string(), ..Day::default() }
    }

    /// Counts one session; `sending_ip` is our address toward the host.
    /// `false` when the domain limit dropped it.
    pub fn record(&mut self, r: &SessionResult<'_>, sending_ip: Option<IpAddr>, max_domains: usize) -> bool {
        let domain = normalize_domain(r.policy_domain);
        // An address literal has no DNS to publish a policy or a rua in.
        if domain.is_empty() || domain.starts_with('[') {
            return false;
        }
        if !self.domains.contains_key(&domain) && self.domains.len() >= max_domains {
            self.dropped += 1;
            return false;
        }
        let mx_host: Vec<String> = match r.policy_type {
            PolicyType::Sts => r.mx_patterns.to_vec(),
            PolicyType::Tlsa => vec![r.mx_host.to_ascii_lowercase()],
            PolicyType::NoPolicyFound => Vec::new(),
        };
        let policies = self.domains.entry(domain).or_default();
        let ty = r.policy_type.as_str();
        let found = policies.iter().position(|p| p.policy_type == ty && p.policy_strings == r.policy_strings && p.mx_host == mx_host);
        let i = match found {
            Some(i) => i,
            None if policies.len() >= MAX_POLICIES => {
                self.dropped += 1;
                return false;
            }
            None => {
                policies.push(PolicyCounts {
                    policy_type: ty.to_string(),
                    policy_strings: r.policy_strings.to_vec(),
                    mx_host,
                    successes: 0,
                    failures: 0,
                    details: Vec::new(),
                });
                policies.len() - 1
            }
        };
        let p = &mut policies[i];
        let Err(failure) = r.result else {
            p.successes += 1;
            return true;
        };
        p.failures += 1;
        let row = FailureCounts {
            result_type: failure.as_str().to_string(),
            sending_mta_ip: sending_ip,
            receiving_mx_hostname: r.mx_host.to_ascii_lowercase(),
            receiving_ip: r.ip,
            reason: shorten(r.detail),
            count: 1,
        };
        let same = |d: &FailureCounts| {
            d.result_type == row.result_type
                && d.sending_mta_ip == row.sending_mta_ip
                && d.receiving_mx_hostname == row.receiving_mx_hostname
                && d.receiving_ip == row.receiving_ip
                && d.reason == row.reason
        };
        match p.details.iter().position(same) {
            Some(j) => p.details[j].count += 1,
            None if p.details.len() < MAX_DETAILS => p.details.push(row),
            None => {} // counted in `failures`, no row of its own
        }
        true
    }

    /// Has anything been counted?
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::tlsrpt::FailureType;

    fn result<'a>(domain: &'a str, ty: PolicyType, strings: &'a [String], host: &'a str, r: Result<(), FailureType>) -> SessionResult<'a> {
        SessionResult {
            policy_domain: domain,
            policy_type: ty,
            policy_strings: strings,
            mx_patterns: &[],
            mx_host: host,
            ip: Some("192.0.2.7".parse().unwrap()),
            result: r,
            detail: "no STARTTLS",
        }
    }

    #[test]
    fn counts_successes_and_groups_failures() {
        let mut d = Day::new("2026-12-05");
        let none: Vec<String> = Vec::new();
        let me = Some("198.51.100.1".parse().unwrap());
        for _ in 0..3 {
            assert!(d.record(&result("Example.ORG.", PolicyType::NoPolicyFound, &none, "mx.example.org", Ok(())), me, 10));
        }
        let fail = Err(FailureType::StarttlsNotSupported);
        d.record(&result("example.org", PolicyType::NoPolicyFound, &none, "mx.example.org", fail), me, 10);
        d.record(&result("example.org", PolicyType::NoPolicyFound, &none, "MX.example.org", fail), me, 10);
        d.record(&result("example.org", PolicyType::NoPolicyFound, &none, "mx2.example.org", fail), me, 10);
        let p = &d.domains["example.org"];
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].successes, p[0].failures), (3, 3));
        assert_eq!(p[0].details.len(), 2, "{:?}", p[0].details);
        assert_eq!(p[0].details[0].count, 2);
        assert_eq!(p[0].details[0].result_type, "starttls-not-supported");
        assert_eq!(p[0].details[0].sending_mta_ip, me);
        assert!(p[0].mx_host.is_empty());
    }

    #[test]
    fn sts_and_tlsa_policies_are_separate_entries() {
        let mut d = Day::new("2026-12-05");
        let sts = vec!["version: STSv1".to_string(), "mode: enforce".to_string(), "mx: *.example.net".to_string()];
        let pats = vec!["*.example.net".to_string()];
        let mut r = result("example.net", PolicyType::Sts, &sts, "a.example.net", Ok(()));
        r.mx_patterns = &pats;
        d.record(&r, None, 10);
        r.result = Err(FailureType::CertificateExpired);
        d.record(&r, None, 10);
        let tlsa = vec!["3 1 1 abcd".to_string()];
        d.record(&result("example.net", PolicyType::Tlsa, &tlsa, "a.example.net", Ok(())), None, 10);
        d.record(&result("example.net", PolicyType::Tlsa, &tlsa, "b.example.net", Err(FailureType::TlsaInvalid)), None, 10);
        let p = &d.domains["example.net"];
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].policy_type.as_str(), p[0].successes, p[0].failures), ("sts", 1, 1));
        assert_eq!(p[0].mx_host, pats);
        assert_eq!(p[0].policy_strings, sts);
        assert_eq!(p[1].mx_host, vec!["a.example.net".to_string()]);
        assert_eq!((p[2].policy_type.as_str(), p[2].failures), ("tlsa", 1));
        assert_eq!(p[2].details[0].result_type, "tlsa-invalid");
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Day::new("2026-12-05");
        let none: Vec<String> = Vec::new();
        for i in 0..5 {
            let dom = format!("d{i}.example");
            d.record(&result(&dom, PolicyType::NoPolicyFound, &none, "mx", Ok(())), None, 3);
        }
        assert_eq!((d.domains.len(), d.dropped), (3, 2));
        // Failure rows stop at MAX_DETAILS; the total still counts.
        let hosts: Vec<String> = (0..MAX_DETAILS + 20).map(|i| format!("mx{i}.d0.example")).collect();
        for h in &hosts {
            d.record(&result("d0.example", PolicyType::NoPolicyFound, &none, h, Err(FailureType::ValidationFailure)), None, 3);
        }
        let p = &d.domains["d0.example"][0];
        assert_eq!((p.details.len(), p.failures), (MAX_DETAILS, (MAX_DETAILS + 20) as u64));
        // Policies stop at MAX_POLICIES.
        for i in 0..MAX_POLICIES + 1 {
            let s = vec![format!("3 1 1 {i:04x}")];
            d.record(&result("d1.example", PolicyType::Tlsa, &s, "mx", Ok(())), None, 3);
        }
        // d1 already had its no-policy-found entry: two TLSA sets did not fit.
        assert_eq!(d.domains["d1.example"].len(), MAX_POLICIES);
        assert_eq!(d.dropped, 2 + 2);
    }

    #[test]
    fn unicode_domains_are_counted_as_a_labels() {
        let mut d = Day::new("2026-12-05");
        d.record(&result("bücher.example", PolicyType::NoPolicyFound, &[], "mx", Ok(())), None, 3);
        assert!(d.domains.contains_key("xn--bcher-kva.example"));
    }
}
