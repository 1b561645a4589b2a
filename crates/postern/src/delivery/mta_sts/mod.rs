//! MTA-STS (RFC 8461) for MX delivery: which MX hosts of a recipient
//! domain may be used and whether they must be reached over TLS whose
//! certificate verifies.
//!
//! For each domain [`MtaSts::apply`] looks up `_mta-sts.DOMAIN` TXT
//! ([`txt`]), fetches the policy over HTTPS when the TXT `id` is new or
//! the cached policy is half-way to expiry ([`fetch`]), parses it
//! ([`policy`]) and keeps it in memory and in `DATA/mta-sts/` ([`cache`]).
//! A cached unexpired policy is used whenever the TXT record is missing or
//! the fetch fails (§5.1). Under `mode: enforce` MX hosts the policy does
//! not list are dropped (none left: deferred 4.7.5) and the others get a
//! WebPKI-verifying TLS client: no STARTTLS or a bad certificate fails
//! that host, never cleartext. `testing` delivers as without a policy and
//! reports what would have failed; `none` is as without. Every outcome
//! goes to the TLS-RPT sink (`delivery::tlsrpt`) and failures to the mail
//! log as `mta_sts` lines. DANE, where it applies to a host, takes
//! precedence (the caller combines [`policy::requirement`] with DANE's).
//!
//! May touch: DNS, outbound HTTPS to `mta-sts.DOMAIN` ([`fetch`]),
//! `DATA/mta-sts/` ([`cache`]), the mail log. RFCs: 8461, 8460 §4.3.

pub mod cache;
pub mod check;
pub mod fetch;
pub mod policy;
pub mod txt;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use postern_wire::Enhanced;

use self::cache::{decide, Cache, Cached, Step, Store};
use self::fetch::{Discovery, Network};
use self::policy::{Mode, Requirement};
use self::txt::TxtError;
use super::smtp::ConnError;
use super::tlsrpt::{FailureType, PolicyType, SessionResult, TlsReports};
use super::{Attempt, DeliveryReply};
use crate::config::OutboundTls;
use crate::settings::Settings;
use crate::tls::ClientTls;

/// The MTA-STS state of MX delivery: where policies come from, the cache,
/// and the TLS clients a policy asks for.
pub struct MtaSts {
    discovery: Box<dyn Discovery>,
    cache: Mutex<Cache>,
    store: Option<Store>,
    /// `enforce`: WebPKI verification against `mta_sts.ca_files`.
    enforce_tls: Arc<ClientTls>,
    /// `testing`: `mx.tls` with the same CAs, so the log and the report
    /// say whether the certificate would have verified; `None` when
    /// `mx.tls = "none"`.
    testing_tls: Option<Arc<ClientTls>>,
    backoff: Duration,
    /// One fetch per domain at a time.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl MtaSts {
    /// From `[mta_sts]` and `[mx]`; `Ok(None)` when off (or when no CA
    /// file is configured and the system bundle is missing: logged).
    /// `Err` names an unusable CA file or DNS configuration.
    pub fn new(s: &Settings) -> Result<Option<MtaSts>, String> {
        let c = &s.config.mta_sts;
        if !c.enabled {
            return Ok(None);
        }
        let Some((net, cas)) = network(s)? else { return Ok(None) };
        let mx = &s.config.mx;
        let build = |p: OutboundTls| ClientTls::build(p, &cas, None).map(Arc::new).map_err(|e| format!("mta_sts.ca_files: {e}"));
        let testing_tls = match mx.tls {
            OutboundTls::None => None,
            OutboundTls::Verify => Some(build(OutboundTls::Verify)?),
            OutboundTls::Encrypt => Some(build(OutboundTls::Encrypt)?),
            OutboundTls::May | OutboundTls::Dane => Some(build(OutboundTls::May)?),
        };
        let store = Store::new(s.data_dir.join("mta-sts"));
        Ok(Some(MtaSts::with(
            Box::new(net),
            Some(store),
            build(OutboundTls::Verify)?,
            testing_tls,
            c.max_policies,
            c.fetch_failure_backoff,
        )))
    }

    /// With another source of policies (tests); loads `store`.
    pub fn with(
        discovery: Box<dyn Discovery>,
        store: Option<Store>,
        enforce_tls: Arc<ClientTls>,
        testing_tls: Option<Arc<ClientTls>>,
        max_policies: usize,
        backoff: Duration,
    ) -> MtaSts {
        let mut cache = Cache::new(max_policies);
        if let Some(st) = &store {
            let now = crate::time::now_unix();
            for c in st.load(now, max_policies) {
                cache.insert(Arc::new(c), now);
            }
        }
        MtaSts { discovery, cache: Mutex::new(cache), store, enforce_tls, testing_tls, backoff, fetching: Mutex::new(HashMap::new()) }
    }

    /// The policy in force for `domain` (an A-label), fetched when needed.
    /// Fetch failures are logged and reported; `None`: no policy.
    pub async fn policy(&self, domain: &str, reports: &dyn TlsReports) -> Option<Arc<Cached>> {
        let txt = match self.discovery.txt(domain).await {
            Ok(records) => txt::policy_id(&records),
            Err(e) => Err(TxtError::Dns(e)),
        };
        let step = self.step(domain, &txt);
        if let (Err(e @ (TxtError::Several(_) | TxtError::Bad { .. })), _) = (&txt, &step) {
            let using = if matches!(step, Step::UseCached(_)) { "cached" } else { "none" };
            crate::maillog::mta_sts(&[("domain", domain), ("result", "txt-invalid"), ("error", &e.to_string()), ("using", using)]);
        }
        let Step::Fetch { .. } = step else { return step_policy(step) };
        // One fetch per domain: later deliveries wait, then find it cached.
        let gate = {
            let mut g = lock(&self.fetching);
            if g.len() > 1024 {
                g.retain(|_, m| Arc::strong_count(m) > 1);
            }
            g.entry(domain.to_string()).or_default().clone()
        };
        let _held = gate.lock().await;
        match self.step(domain, &txt) {
            Step::Fetch { id, fallback } => self.fetch(domain, &id, fallback, reports).await,
            other => step_policy(other),
        }
    }

    fn step(&self, domain: &str, txt: &Result<String, TxtError>) -> Step {
        let now = crate::time::now_unix();
        let c = lock(&self.cache);
        let failed = txt.as_ref().is_ok_and(|id| c.failed_recently(domain, id, now));
        decide(c.get(domain), txt, now, failed)
    }

    async fn fetch(&self, domain: &str, id: &str, fallback: Option<Arc<Cached>>, reports: &dyn TlsReports) -> Option<Arc<Cached>> {
        let now = crate::time::now_unix();
        let failure = match self.discovery.fetch(domain).await {
            Ok(body) => match policy::parse(&body) {
                Ok(p) => {
                    let c = Arc::new(Cached::new(domain, id, now, p));
                    let evicted = lock(&self.cache).insert(c.clone(), now);
                    self.persist(&c, evicted).await;
                    let p = &c.policy;
                    crate::maillog::mta_sts(&[
                        ("domain", domain),
                        ("result", "fetched"),
                        ("id", id),
                        ("mode", p.mode.as_str()),
                        ("max_age", &p.max_age.to_string()),
                        ("mx", &p.mx.join(",")),
                    ]);
                    return Some(c);
                }
                Err(e) => (FailureType::StsPolicyInvalid, e.to_string()),
            },
            Err(e) => (e.failure_type(), e.to_string()),
        };
        lock(&self.cache).mark_failed(domain, id, now + self.backoff.as_secs(), now);
        let using = if fallback.is_some() { "cached" } else { "none" };
        let (kind, detail) = failure;
        crate::maillog::mta_sts(&[
            ("domain", domain),
            ("result", "fetch-error"),
            ("type", kind.as_str()),
            ("error", &detail),
            ("using", using),
        ]);
        let (lines, mx) = fallback.as_ref().map(|c| (c.policy.lines.clone(), c.policy.mx.clone())).unwrap_or_default();
        reports.record(&SessionResult {
            policy_domain: domain,
            policy_type: PolicyType::Sts,
            policy_strings: &lines,
            mx_patterns: &mx,
            mx_host: &format!("mta-sts.{domain}"),
            ip: None,
            result: Err(kind),
            detail: &detail,
        });
        fallback
    }

    /// Writes the new entry and removes evicted ones, off the async threads.
    async fn persist(&self, c: &Arc<Cached>, evicted: Vec<String>) {
        let Some(store) = self.store.clone() else { return };
        let c = c.clone();
        let done = tokio::task::spawn_blocking(move || {
            for d in evicted {
                store.remove(&d);
            }
            store.save(&c)
        })
        .await;
        if let Ok(Err(e)) = done {
            crate::maillog::error(&[("error", &format!("MTA-STS cache: {e}")), ("action", "policy kept in memory only")]);
        }
    }

    /// Applies `domain`'s policy to its MX hosts (in order): returns the
    /// hosts to try and the per-host TLS, or the deferral when an
    /// `enforce` policy lists none of them.
    pub async fn apply(
        &self,
        domain: &str,
        hosts: Vec<String>,
        reports: Arc<dyn TlsReports>,
    ) -> Result<(Vec<String>, Applied), DeliveryReply> {
        // Address literals have no policy; DNS names are A-labels (RFC 8461 §4.1).
        let Some(ascii) = (!domain.starts_with('[')).then(|| super::idna::to_ascii(domain).ok()).flatten() else {
            return Ok((hosts, Applied::none()));
        };
        let Some(cached) = self.policy(&ascii, &*reports).await else { return Ok((hosts, Applied::none())) };
        if cached.policy.mode == Mode::None {
            return Ok((hosts, Applied::none()));
        }
        let applied = Applied(Some(Inner {
            domain: ascii,
            cached: cached.clone(),
            enforce_tls: self.enforce_tls.clone(),
            testing_tls: self.testing_tls.clone(),
            reports,
        }));
        let mut kept = Vec::with_capacity(hosts.len());
        for h in &hosts {
            let req = policy::requirement(Some(&cached.policy), h);
            if matches!(req, Requirement::Skip | Requirement::Report { listed: false }) {
                let why = "MX host not in the policy's mx patterns".to_string();
                applied.report(h, None, "mx-mismatch", Err((FailureType::ValidationFailure, why)));
            }
            if req != Requirement::Skip {
                kept.push(h.clone());
            }
        }
        if kept.is_empty() {
            let text = format!(
                "MTA-STS policy of {domain} (mode enforce, mx {}) lists none of its MX hosts ({})",
                cached.policy.mx.join(" "),
                hosts.join(" ")
            );
            return Err(DeliveryReply::status_only(Enhanced(4, 7, 5), text));
        }
        Ok((kept, applied))
    }
}

/// The DNS/HTTPS side for the settings, and the CA files it trusts;
/// `Ok(None)` (logged) when no CA file is configured and the system bundle
/// is missing.
fn network(s: &Settings) -> Result<Option<(Network, Vec<PathBuf>)>, String> {
    let c = &s.config.mta_sts;
    let cas: Vec<PathBuf> = if c.ca_files.is_empty() {
        let system = PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE);
        if !system.exists() {
            crate::maillog::error(&[
                ("error", &format!("MTA-STS needs CA certificates: {} is missing and mta_sts.ca_files is empty", system.display())),
                ("action", "MTA-STS off"),
            ]);
            return Ok(None);
        }
        vec![system]
    } else {
        c.ca_files.iter().map(|p| s.resolve(p)).collect()
    };
    let mx = &s.config.mx;
    let net = Network::new(&mx.nameservers, &cas, c.https_port, c.fetch_timeout, mx.dangerous_allow_loopback)?;
    Ok(Some((net, cas)))
}

fn step_policy(step: Step) -> Option<Arc<Cached>> {
    match step {
        Step::UseCached(c) => Some(c),
        Step::Fetch { fallback, .. } => fallback,
        Step::NoPolicy => None,
    }
}

/// The TLS client a policy asks for on one host; `tag` keeps its pooled
/// connections apart from the others.
pub struct HostTls {
    /// "sts-enforce" or "sts-testing".
    pub tag: &'static str,
    /// The client.
    pub tls: Arc<ClientTls>,
}

/// A domain's policy as applied to one delivery.
pub struct Applied(Option<Inner>);

struct Inner {
    domain: String,
    cached: Arc<Cached>,
    enforce_tls: Arc<ClientTls>,
    testing_tls: Option<Arc<ClientTls>>,
    reports: Arc<dyn TlsReports>,
}

impl Applied {
    /// No policy: every host as without MTA-STS.
    pub fn none() -> Applied {
        Applied(None)
    }

    fn requirement(&self, host: &str) -> Requirement {
        policy::requirement(self.0.as_ref().map(|i| &i.cached.policy), host)
    }

    /// The TLS client for `host`, when the policy asks for one; `None`:
    /// the MX default (`mx.tls`).
    pub fn tls_for(&self, host: &str) -> Option<HostTls> {
        let inner = self.0.as_ref()?;
        match self.requirement(host) {
            Requirement::VerifiedTls => Some(HostTls { tag: "sts-enforce", tls: inner.enforce_tls.clone() }),
            Requirement::Report { .. } => inner.testing_tls.clone().map(|tls| HostTls { tag: "sts-testing", tls }),
            Requirement::NoPolicy | Requirement::Skip => None,
        }
    }

    /// Reports one session with `host` (RFC 8460) and logs a failure.
    pub fn record(&self, host: &str, ip: IpAddr, result: &Result<Attempt, ConnError>) {
        // A host delivered with `mx.tls` = "none" under `testing` tried no
        // TLS on purpose: nothing to report.
        if self.tls_for(host).is_some() {
            if let Some(outcome) = session_outcome(result) {
                self.report(host, Some(ip), "tls-failure", outcome);
            }
        }
    }

    fn report(&self, host: &str, ip: Option<IpAddr>, what: &str, outcome: Result<(), (FailureType, String)>) {
        let Some(inner) = &self.0 else { return };
        let p = &inner.cached.policy;
        let (result, detail) = match &outcome {
            Ok(()) => (Ok(()), ""),
            Err((kind, detail)) => {
                let ip_text = ip.map(|i| i.to_string()).unwrap_or_default();
                crate::maillog::mta_sts(&[
                    ("domain", &inner.domain),
                    ("mode", p.mode.as_str()),
                    ("host", host),
                    ("ip", &ip_text),
                    ("result", what),
                    ("type", kind.as_str()),
                    ("detail", detail),
                    ("action", if p.mode == Mode::Enforce { "host refused" } else { "reported only" }),
                ]);
                (Err(*kind), detail.as_str())
            }
        };
        inner.reports.record(&SessionResult {
            policy_domain: &inner.domain,
            policy_type: PolicyType::Sts,
            policy_strings: &p.lines,
            mx_patterns: &p.mx,
            mx_host: host,
            ip,
            result,
            detail,
        });
    }
}

/// What one session says about TLS (RFC 8460 result types), from what the
/// SMTP client returned; `None` when it ended before TLS was tried (a
/// refused connection, a 4xx greeting). Pure.
pub fn session_outcome(r: &Result<Attempt, ConnError>) -> Option<Result<(), (FailureType, String)>> {
    match r {
        Ok(a) => {
            let note = a.tls.as_deref().unwrap_or("none");
            if note == "none" || note.starts_with("none,") {
                return Some(Err((FailureType::StarttlsNotSupported, "no STARTTLS: delivered without TLS".into())));
            }
            if let Some(i) = note.find("unverified (") {
                let why = note[i + "unverified (".len()..].split(')').next().unwrap_or("").to_string();
                return Some(Err((classify(&why), why)));
            }
            note.contains("verified").then_some(Ok(()))
        }
        Err(e @ (ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. })) => {
            Some(Err((FailureType::StarttlsNotSupported, e.to_string())))
        }
        Err(e @ ConnError::Handshake { reason, .. }) => Some(Err((classify(reason), e.to_string()))),
        Err(_) => None,
    }
}

/// The RFC 8460 result type of a certificate error text (rustls' or
/// `tls::VerifyError`'s). Pure.
pub fn classify(reason: &str) -> FailureType {
    let r = reason.to_ascii_lowercase();
    if r.contains("not valid for name") || r.contains("notvalidforname") || r.contains("certificate not valid for") {
        FailureType::CertificateHostMismatch
    } else if r.contains("expired") {
        FailureType::CertificateExpired
    } else if r.contains("unknown issuer") || r.contains("unknownissuer") {
        FailureType::CertificateNotTrusted
    } else {
        FailureType::ValidationFailure
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests;
