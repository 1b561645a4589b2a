//! The MTA-STS flow over a fake DNS/HTTPS ([`Discovery`]): fetch, cache,
//! the cached policy against a stripped TXT record, id changes, restarts,
//! host filtering; and the TLS result of a session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fetch::{Discovery, FetchError};
use super::*;
use crate::config::Endpoint;
use crate::delivery::BoxFuture;

struct World {
    txt: Result<Vec<String>, String>,
    body: Option<Result<String, FetchError>>,
    fetches: usize,
}

impl Default for World {
    fn default() -> Self {
        World { txt: Ok(Vec::new()), body: None, fetches: 0 }
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn set(&self, txt: &[&str], body: Option<Result<&str, FetchError>>) {
        let mut w = self.0.lock().unwrap();
        w.txt = Ok(txt.iter().map(|s| s.to_string()).collect());
        w.body = body.map(|b| b.map(str::to_string));
    }
    fn fetches(&self) -> usize {
        self.0.lock().unwrap().fetches
    }
}

impl Discovery for Fake {
    fn txt<'a>(&'a self, _domain: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        let r = self.0.lock().unwrap().txt.clone();
        Box::pin(async move { r })
    }
    fn fetch<'a>(&'a self, _domain: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        let mut w = self.0.lock().unwrap();
        w.fetches += 1;
        let r = w.body.clone().unwrap_or(Err(FetchError::Status(404)));
        Box::pin(async move { r })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Option<&'static str>)>>);

impl TlsReports for Recorder {
    fn record(&self, r: &SessionResult<'_>) {
        assert_eq!(r.policy_type, PolicyType::Sts);
        self.0.lock().unwrap().push((r.mx_host.to_string(), r.result.err().map(|f| f.as_str())));
    }
}

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 86400\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n";

fn sts(fake: &Fake, store: Option<Store>) -> MtaSts {
    let tls = Arc::new(ClientTls::build(OutboundTls::May, &[], None).expect("tls"));
    MtaSts::with(Box::new(fake.clone()), store, tls.clone(), Some(tls), 100, Duration::from_secs(300))
}

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn enforce_filters_hosts_and_survives_a_stripped_txt_record() {
    let fake = Fake::default();
    let reports: Arc<Recorder> = Arc::new(Recorder::default());
    let m = sts(&fake, None);
    fake.set(&["v=STSv1; id=one;"], Some(Ok(ENFORCE)));
    let all = hosts(&["evil.example.net", "mx1.example.com", "a.backup.example.com"]);
    let (kept, applied) = m.apply("Example.COM", all.clone(), reports.clone()).await.expect("hosts left");
    assert_eq!(kept, hosts(&["mx1.example.com", "a.backup.example.com"]));
    assert_eq!(applied.tls_for("mx1.example.com").map(|t| t.tag), Some("sts-enforce"));
    assert_eq!(reports.0.lock().unwrap().as_slice(), &[("evil.example.net".to_string(), Some("validation-failure"))]);
    // Same id: no second fetch.
    m.apply("example.com", all.clone(), reports.clone()).await.expect("cached");
    assert_eq!(fake.fetches(), 1);
    // The attacker strips the TXT record and blocks HTTPS: still enforced.
    fake.set(&[], None);
    let err = m.apply("example.com", hosts(&["evil.example.net"]), reports.clone()).await.err().expect("deferred");
    assert_eq!(err.enhanced, Some(Enhanced(4, 7, 5)));
    assert!(err.text.contains("lists none of its MX hosts"), "{}", err.text);
    assert_eq!(fake.fetches(), 1);
}

#[tokio::test]
async fn id_change_refetches_and_failures_fall_back() {
    let fake = Fake::default();
    let reports: Arc<Recorder> = Arc::new(Recorder::default());
    let m = sts(&fake, None);
    fake.set(&["v=STSv1; id=one"], Some(Ok(ENFORCE)));
    m.apply("example.com", hosts(&["mx1.example.com"]), reports.clone()).await.expect("ok");
    // A new id: refetched; the new policy is testing.
    fake.set(&["v=STSv1; id=two"], Some(Ok(TESTING)));
    let (kept, applied) = m.apply("example.com", hosts(&["other.example.net"]), reports.clone()).await.expect("testing keeps hosts");
    assert_eq!(fake.fetches(), 2);
    assert_eq!(kept, hosts(&["other.example.net"]));
    assert_eq!(applied.tls_for("other.example.net").map(|t| t.tag), Some("sts-testing"));
    // Id three cannot be fetched (invalid policy): the cached one stays,
    // and no refetch within the backoff.
    fake.set(&["v=STSv1; id=three"], Some(Ok("<html>")));
    m.apply("example.com", hosts(&["mx1.example.com"]), reports.clone()).await.expect("ok");
    m.apply("example.com", hosts(&["mx1.example.com"]), reports.clone()).await.expect("ok");
    assert_eq!(fake.fetches(), 3);
    let got = reports.0.lock().unwrap().clone();
    assert!(got.contains(&("mta-sts.example.com".to_string(), Some("sts-policy-invalid"))), "{got:?}");
    // Mode none withdraws the policy.
    fake.set(&["v=STSv1; id=four"], Some(Ok("version: STSv1\nmode: none\nmax_age: 86400\n")));
    let (_, applied) = m.apply("example.com", hosts(&["x.example.net"]), reports.clone()).await.expect("ok");
    assert!(applied.tls_for("x.example.net").is_none());
}

#[tokio::test]
async fn no_txt_no_policy_and_literals_skip() {
    let fake = Fake::default();
    let reports: Arc<Recorder> = Arc::new(Recorder::default());
    let m = sts(&fake, None);
    fake.set(&["v=spf1 -all"], Some(Ok(ENFORCE)));
    let (kept, applied) = m.apply("example.com", hosts(&["evil.example.net"]), reports.clone()).await.expect("no policy");
    assert_eq!(kept, hosts(&["evil.example.net"]));
    assert!(applied.tls_for("evil.example.net").is_none());
    // A fetch failure without a cached policy: no policy.
    fake.set(&["v=STSv1; id=1"], Some(Err(FetchError::Certificate { host: "mta-sts.example.com".into(), reason: "bad".into() })));
    let (kept, _) = m.apply("example.com", hosts(&["evil.example.net"]), reports.clone()).await.expect("no policy");
    assert_eq!(kept.len(), 1);
    assert_eq!(reports.0.lock().unwrap().last().cloned(), Some(("mta-sts.example.com".into(), Some("sts-webpki-invalid"))));
    m.apply("[192.0.2.1]", hosts(&["192.0.2.1"]), reports.clone()).await.expect("literal");
    assert_eq!(fake.fetches(), 1);
}

#[tokio::test]
async fn a_restart_keeps_the_policy() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::default();
    let reports: Arc<Recorder> = Arc::new(Recorder::default());
    fake.set(&["v=STSv1; id=one"], Some(Ok(ENFORCE)));
    sts(&fake, Some(Store::new(dir.path().to_path_buf())))
        .apply("example.com", hosts(&["mx1.example.com"]), reports.clone())
        .await
        .expect("ok");
    assert!(dir.path().join("example.com.json").exists());
    // A new process, TXT stripped: the policy from disk applies.
    fake.set(&[], None);
    let m = sts(&fake, Some(Store::new(dir.path().to_path_buf())));
    assert!(m.apply("example.com", hosts(&["evil.example.net"]), reports.clone()).await.is_err());
    assert_eq!(fake.fetches(), 1);
}

#[test]
fn session_outcomes() {
    let ep = Endpoint::Tcp("192.0.2.1".into(), 25);
    let att = |tls: &str| Ok(Attempt { outcomes: vec![], tls: Some(tls.into()), dsn: false, relay: None });
    let kind = |r: Result<Attempt, ConnError>| session_outcome(&r).map(|o| o.err().map(|(k, _)| k));
    assert_eq!(kind(att("TLSv1.3 TLS13_AES_256_GCM_SHA384 verified")), Some(None));
    assert_eq!(kind(att("none")), Some(Some(FailureType::StarttlsNotSupported)));
    assert_eq!(
        kind(att("TLSv1.3 X unverified (certificate not valid for mx.example.com)")),
        Some(Some(FailureType::CertificateHostMismatch))
    );
    assert_eq!(kind(att("TLSv1.3 X unverified (unknown issuer)")), Some(Some(FailureType::CertificateNotTrusted)));
    assert_eq!(kind(att("TLSv1.2 X unverified (certificate expired)")), Some(Some(FailureType::CertificateExpired)));
    assert_eq!(kind(Err(ConnError::NoStartTls(ep.clone()))), Some(Some(FailureType::StarttlsNotSupported)));
    let hs = |reason: &str| Err(ConnError::Handshake { ep: ep.clone(), reason: reason.into() });
    assert_eq!(
        kind(hs("invalid peer certificate: certificate not valid for name \"mx\"; certificate is only valid for x")),
        Some(Some(FailureType::CertificateHostMismatch))
    );
    assert_eq!(kind(hs("invalid peer certificate: UnknownIssuer")), Some(Some(FailureType::CertificateNotTrusted)));
    assert_eq!(kind(hs("received fatal alert: HandshakeFailure")), Some(Some(FailureType::ValidationFailure)));
    assert_eq!(kind(Err(ConnError::Connect { ep, reason: "refused".into() })), None);
}
