//! `postern check mta-sts DOMAIN`: a domain's MTA-STS policy as MX
//! delivery would find it, step by step (TXT record, HTTPS fetch, policy,
//! cached copy, what it means for each MX host), without sending mail and
//! without changing the cache.
//!
//! May touch: DNS, outbound HTTPS to `mta-sts.DOMAIN` (through
//! [`super::fetch`]), reads `DATA/mta-sts/DOMAIN.json`. RFCs: 8461.

use super::cache::Store;
use super::fetch::Discovery;
use super::policy::{self, Requirement};
use super::txt::{self, TxtError};
use crate::delivery::mx::{Hosts, MxResolver};
use crate::settings::Settings;

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Informational (no policy, nothing cached).
    Info,
    /// Broken: the domain must fix it.
    Fail,
    /// The DNS did not answer: try again.
    Temp,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "OK  ",
            Verdict::Info => "INFO",
            Verdict::Fail => "FAIL",
            Verdict::Temp => "TEMP",
        }
    }
}

/// The steps, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step.
    pub steps: Vec<(Verdict, String)>,
}

impl Report {
    fn push(&mut self, v: Verdict, text: impl Into<String>) {
        self.steps.push((v, text.into()));
    }

    /// The report as text, one line per step.
    pub fn text(&self) -> String {
        self.steps.iter().map(|(v, t)| format!("{} {t}\n", v.word())).collect()
    }

    /// 69 when something is broken, else 75 when the DNS did not answer, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.steps.iter().any(|(v, _)| *v == Verdict::Fail) {
            69
        } else if self.steps.iter().any(|(v, _)| *v == Verdict::Temp) {
            75
        } else {
            0
        }
    }
}

/// Runs the check for `domain`; `Err` for a configuration that cannot be used.
pub async fn check(s: &Settings, domain: &str) -> Result<Report, String> {
    let ascii = crate::delivery::idna::to_ascii(domain.trim_end_matches('.'))?;
    let (net, _) = super::network(s)?.ok_or("MTA-STS is off: no CA bundle, and mta_sts.ca_files is empty")?;
    let mut r = Report::default();
    if !s.config.mta_sts.enabled {
        r.push(Verdict::Info, "[mta_sts] enabled = false: MX delivery ignores the policy shown here");
    }
    let mut policy = None;
    match net.txt(&ascii).await {
        Err(e) => r.push(Verdict::Temp, format!("TXT _mta-sts.{ascii}: {e}")),
        Ok(records) => match txt::policy_id(&records) {
            Err(TxtError::Absent) => {
                r.push(Verdict::Info, format!("TXT _mta-sts.{ascii}: no v=STSv1 record: the domain has no MTA-STS policy"))
            }
            Err(e) => r.push(Verdict::Fail, format!("TXT _mta-sts.{ascii}: {e} (treated as no policy; a cached one still applies)")),
            Ok(id) => {
                r.push(Verdict::Ok, format!("TXT _mta-sts.{ascii}: id={id}"));
                match net.fetch(&ascii).await {
                    Err(e) => r.push(
                        Verdict::Fail,
                        format!("fetch https://mta-sts.{ascii}/.well-known/mta-sts.txt: {e} ({})", e.failure_type().as_str()),
                    ),
                    Ok(body) => match policy::parse(&body) {
                        Err(e) => r.push(Verdict::Fail, format!("policy: {e} (sts-policy-invalid)")),
                        Ok(p) => {
                            r.push(Verdict::Ok, format!("policy: mode={} max_age={} mx={}", p.mode.as_str(), p.max_age, p.mx.join(",")));
                            policy = Some(p);
                        }
                    },
                }
            }
        },
    }
    match Store::new(s.data_dir.join("mta-sts")).read(&ascii) {
        Some(c) => {
            let left = c.expires.saturating_sub(crate::time::now_unix());
            let v = if left > 0 { Verdict::Ok } else { Verdict::Info };
            r.push(v, format!("cached: id={} mode={} expires in {left}s", c.id, c.policy.mode.as_str()));
            if policy.is_none() && left > 0 {
                policy = Some(c.policy);
            }
        }
        None => r.push(Verdict::Info, "cached: none"),
    }
    let resolver = MxResolver::new(&s.config.mx.nameservers).map_err(|e| e.to_string())?;
    match resolver.hosts(&ascii).await {
        Ok(Hosts::Try(hosts)) => {
            for h in hosts {
                let what = match policy::requirement(policy.as_ref(), &h) {
                    Requirement::NoPolicy => "as without MTA-STS (mx.tls)",
                    Requirement::VerifiedTls => "verified TLS required",
                    Requirement::Skip => "not listed in the policy: refused",
                    Requirement::Report { listed: true } => "testing: delivered, TLS failures reported",
                    Requirement::Report { listed: false } => "testing: not listed, delivered and reported",
                };
                let v = if what.starts_with("not listed") { Verdict::Fail } else { Verdict::Ok };
                r.push(v, format!("MX {h}: {what}"));
            }
        }
        Ok(Hosts::NullMx) => r.push(Verdict::Info, format!("MX: {ascii} has a null MX (accepts no mail)")),
        Ok(Hosts::NoDomain) => r.push(Verdict::Fail, format!("MX: {ascii} does not exist")),
        Err(e) => r.push(Verdict::Temp, format!("MX: {e}")),
    }
    Ok(r)
}
