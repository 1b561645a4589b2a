//! Sending one day's reports: for each policy domain counted that day,
//! look up `_smtp._tls.DOMAIN` TXT (RFC 8460 §3), build the JSON report,
//! gzip it into a mail and queue it through the normal queue
//! (`spool::enqueue`, like bounces) for the `mailto:` addresses. An
//! `https:` rua is logged and skipped. One `tlsrpt` mail log line per
//! domain. The caller hands the queue ids to the scheduler.
//!
//! May touch: DNS (`mx.nameservers` or the system's), the spool (a new
//! message), `DATA/tlsrpt/` through the reporter. RFCs: 8460 §3, §5.3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;
use serde::Serialize;

use super::counts::Day;
use super::mail::{self, Letter};
use super::report::{self, day_of, Rua, Submitter};
use super::store::Reporter;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{QueueId, Spool};

/// Time limit of one TXT lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// TXT lookups at once.
const LOOKUPS_AT_ONCE: usize = 16;

/// What became of one domain's report.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// The policy domain.
    pub domain: String,
    /// "queued", "skipped" (no report wanted or possible) or "failed"
    /// (temporary: tried again by the next daily run).
    pub result: &'static str,
    /// The queue id, when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The rua mailboxes, when queued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// The report id, when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// Why skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `[tls_rpt]` sender details, defaults filled in.
pub fn submitter(s: &Settings) -> Submitter {
    let c = &s.config.tls_rpt;
    let from = c.from.clone().unwrap_or_else(|| format!("postmaster@{}", s.hostname));
    let domain = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_else(|| s.hostname.clone());
    Submitter {
        organization: c.organization_name.clone().unwrap_or_else(|| s.hostname.clone()),
        contact: c.contact_info.clone().unwrap_or_else(|| from.clone()),
        from,
        domain,
    }
}

/// A resolver for TXT lookups: `mx.nameservers`, or the system's.
fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut b = crate::inbound::dns::builder(nameservers)?;
    b.options_mut().timeout = LOOKUP_TIMEOUT;
    Ok(b.build())
}

/// The TXT strings of `_smtp._tls.DOMAIN` (each record's strings joined);
/// empty for NXDOMAIN/NODATA, `Err` for a DNS failure.
async fn lookup(r: &TokioResolver, domain: &str) -> Result<Vec<String>, String> {
    let name = format!("_smtp._tls.{domain}.");
    match tokio::time::timeout(LOOKUP_TIMEOUT + Duration::from_secs(1), r.txt_lookup(name.as_str())).await {
        Err(_) => Err(format!("TXT {name}: timed out")),
        Ok(Ok(l)) => {
            Ok(l.iter().map(|t| t.txt_data().iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>()).collect())
        }
        // hickory reports SERVFAIL/REFUSED as NoRecordsFound too: only
        // NXDOMAIN and NOERROR mean "no record".
        Ok(Err(e)) => match e.proto().map(|p| p.kind()) {
            Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain | ResponseCode::NoError, .. }) => Ok(Vec::new()),
            _ => Err(format!("TXT {name}: {e}")),
        },
    }
}

fn skipped(domain: &str, reason: String) -> Sent {
    Sent { domain: domain.to_string(), result: "skipped", id: None, to: Vec::new(), report_id: None, reason: Some(reason) }
}

fn failed(domain: &str, reason: String) -> Sent {
    Sent { domain: domain.to_string(), result: "failed", reason: Some(reason), ..skipped(domain, String::new()) }
}

/// Builds and queues the report of `domain` for `rua`.
fn queue_one(s: &Settings, day: &Day, domain: &str, who: &Submitter, to: Vec<String>, spool: &Spool) -> Sent {
    let report_id = report::report_id(&day.day, domain, &who.domain);
    let (Some(json), Some(date)) = (report::build(day, domain, who, &report_id), report::parse_day(&day.day)) else {
        return skipped(domain, "nothing counted".into());
    };
    let unique = report_id.split('@').next().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
    let filename = report::filename(who, domain, date, &unique);
    let rfc_date = crate::time::rfc5322_date();
    let letter = Letter { domain, to: &to, report_id: &report_id, day: &day.day, filename: &filename, date: &rfc_date };
    let text = mail::build(who, &letter, json.to_string().as_bytes());
    // DKIM, when a `[[dkim]]` key covers the `from` domain (RFC 8460 §3 wants signed reports).
    let text = match crate::mailauth::sign::sign(&s.dkim, &text, &who.from) {
        Ok(Some(sig)) => [sig.header.as_bytes(), &text].concat(),
        Ok(None) => text,
        Err(e) => return failed(domain, format!("DKIM: {e}")),
    };
    match crate::spool::enqueue(spool, &who.from, &to, &text, "local") {
        Ok(id) => {
            Sent { domain: domain.to_string(), result: "queued", id: Some(id.to_string()), to, report_id: Some(report_id), reason: None }
        }
        Err(e) => failed(domain, format!("cannot queue: {e}")),
    }
}

/// What the lookup of one domain found.
async fn decide(r: Arc<TokioResolver>, domain: String) -> (String, Result<Vec<String>, Sent>) {
    let records = match lookup(&r, &domain).await {
        Ok(x) => x,
        Err(e) => return (domain.clone(), Err(failed(&domain, e))),
    };
    let ruas = match report::parse_txt(&records) {
        Ok(x) => x,
        Err(e) => return (domain.clone(), Err(skipped(&domain, format!("_smtp._tls.{domain}: {e}")))),
    };
    let mut to = Vec::new();
    for r in &ruas {
        match r {
            Rua::Mailto(a) => to.push(a.clone()),
            Rua::Https(u) => {
                maillog::tlsrpt(&[("domain", &domain), ("rua", u), ("result", "skipped"), ("reason", "https rua not supported")])
            }
        }
    }
    if to.is_empty() {
        return (domain.clone(), Err(skipped(&domain, "only https rua (not supported)".into())));
    }
    (domain, Ok(to))
}

/// Sends the reports of `day` (at `now`): domains not yet done. A past
/// day's finished domains are remembered (and the day file retired when
/// all are); today's reports are previews and remember nothing.
pub async fn send_day(reporter: &Reporter, s: &Settings, spool: &Spool, day: NaiveDate, now: u64) -> Vec<Sent> {
    let _one_at_a_time = reporter.sending.lock().await;
    let Some(mut counts) = reporter.day(day) else { return Vec::new() };
    let past = day < day_of(now);
    let who = submitter(s);
    let todo: Vec<String> = counts.domains.keys().filter(|d| !past || !counts.done.contains(*d)).cloned().collect();
    if todo.is_empty() {
        return Vec::new();
    }
    let r = match resolver(&s.config.mx.nameservers) {
        Ok(r) => Arc::new(r),
        Err(e) => return todo.iter().map(|d| failed(d, format!("DNS configuration: {e}"))).collect(),
    };
    let mut out = Vec::new();
    for chunk in todo.chunks(LOOKUPS_AT_ONCE) {
        let mut set = tokio::task::JoinSet::new();
        for d in chunk {
            set.spawn(decide(r.clone(), d.clone()));
        }
        let mut decided = Vec::new();
        while let Some(j) = set.join_next().await {
            if let Ok(x) = j {
                decided.push(x);
            }
        }
        decided.sort_by(|a, b| a.0.cmp(&b.0));
        for (domain, d) in decided {
            out.push(match d {
                Ok(to) => queue_one(s, &counts, &domain, &who, to, spool),
                Err(sent) => sent,
            });
        }
    }
    for x in &out {
        let mut f: Vec<(&str, &str)> = vec![("day", &counts.day), ("domain", &x.domain), ("result", x.result)];
        let to = x.to.join(",");
        if let Some(id) = &x.id {
            f.push(("report_id", x.report_id.as_deref().unwrap_or("")));
            f.push(("notice_id", id));
            f.push(("to", &to));
        }
        if let Some(r) = &x.reason {
            f.push(("reason", r));
        }
        maillog::tlsrpt(&f);
    }
    if past {
        let done: Vec<String> = out.iter().filter(|x| x.result != "failed").map(|x| x.domain.clone()).collect();
        if let Err(e) = reporter.mark_done(&mut counts, &done) {
            maillog::error(&[("error", &format!("tlsrpt: cannot record {} as sent: {e}", counts.day))]);
        }
    }
    out
}

/// The reports of `day` as they would be sent (`postern tlsrpt show`),
/// without DNS lookups: one JSON report per domain.
pub fn show_day(reporter: &Reporter, s: &Settings, day: NaiveDate) -> Vec<serde_json::Value> {
    let Some(counts) = reporter.day(day) else { return Vec::new() };
    let who = submitter(s);
    counts.domains.keys().filter_map(|d| report::build(&counts, d, &who, &format!("(preview)@{}", who.domain))).collect()
}

/// The ids of queued reports, for the scheduler.
pub fn queued_ids(sent: &[Sent]) -> Vec<QueueId> {
    sent.iter().filter_map(|x| x.id.as_deref()).filter_map(QueueId::parse).collect()
}
