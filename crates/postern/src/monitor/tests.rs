//! The metrics endpoint in-process, the status JSON shape, the health
//! verdict and the queue reading.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{self, Scrape};
use super::queue_status;
use super::status::{problems, CertStatus, ListenerStatus, QueueStatus, Status};
use crate::spool::{enqueue, Spool};

struct Fixed;

impl Scrape for Fixed {
    fn scrape(&self, openmetrics: bool) -> String {
        if openmetrics {
            "om_page\n# EOF\n".into()
        } else {
            "text_page 1\n".into()
        }
    }
}

/// Starts the endpoint on a loopback port; returns its address and the shutdown sender.
async fn endpoint() -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(http::serve(l, Arc::new(Fixed), rx));
    (addr, tx)
}

/// Sends `request` raw and returns the whole answer.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn endpoint_answers() {
    let (addr, _stop) = endpoint().await;
    // (request, status line start, must contain)
    let cases: &[(&[u8], &str, &str)] = &[
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200", "content-type: text/plain; version=0.0.4; charset=utf-8"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200", "text_page 1"),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200",
            "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404", "not found"),
        (b"GET /metrics/../etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404", ""),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "HTTP/1.1 405", "allow: GET, HEAD"),
        (b"BREW /metrics HTCPCP/1.0\r\n\r\n", "HTTP/1.1 400", ""),
    ];
    for (req, status, needle) in cases {
        let answer = exchange(addr, req).await;
        assert!(answer.starts_with(status), "{:?}: {answer}", String::from_utf8_lossy(req));
        assert!(answer.to_ascii_lowercase().contains(&needle.to_ascii_lowercase()), "{:?}: {answer}", String::from_utf8_lossy(req));
    }
}

#[tokio::test]
async fn oversized_request_is_refused() {
    let (addr, _stop) = endpoint().await;
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    // Few headers (hyper's own cap is 100), but one of 40 KB.
    req.extend_from_slice(format!("X-Filler: {}\r\n\r\n", "a".repeat(40_000)).as_bytes());
    assert!(req.len() > http::MAX_REQUEST * 4);
    let answer = exchange(addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(!answer.contains("text_page"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_dropped() {
    let (addr, _stop) = endpoint().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /met").await.unwrap();
    let mut out = Vec::new();
    // The paused clock jumps past the header timeout; the server closes.
    let r = tokio::time::timeout(http::HEADER_TIMEOUT * 3, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection still open after the header timeout");
}

fn status() -> Status {
    Status {
        version: "0.1.0".into(),
        pid: 42,
        started: 1_000,
        uptime_seconds: 9,
        config_file: Some("/etc/postern/postern.toml".into()),
        data_dir: "/var/lib/postern".into(),
        hostname: "mx.example".into(),
        metrics_address: Some("127.0.0.1:9325".into()),
        listeners: vec![ListenerStatus { name: "smtp".into(), role: "smtp".into(), address: "127.0.0.1:25".into(), up: true }],
        queue: QueueStatus { active: 1, deferred: 2, hold: 0, oldest_age_seconds: Some(60), ..QueueStatus::default() },
        certificates: vec![CertStatus::new("server", "/etc/ssl/mx.pem", "CN=mx.example", Some(1_000 + 90 * 86400), 1_000)],
    }
}

#[test]
fn status_json_shape() {
    let v = serde_json::to_value(status()).unwrap();
    for key in [
        "version",
        "pid",
        "started",
        "uptime_seconds",
        "config_file",
        "data_dir",
        "hostname",
        "metrics_address",
        "listeners",
        "queue",
        "certificates",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["listeners"][0]["up"], true);
    assert_eq!(v["queue"]["deferred"], 2);
    assert_eq!(v["queue"]["oldest_age_seconds"], 60);
    assert_eq!(v["certificates"][0]["kind"], "server");
    assert_eq!(v["certificates"][0]["days_left"], 90);
    // The JSON is one line: the control socket answers one line.
    let line = serde_json::to_string(&status()).unwrap();
    assert!(!line.contains('\n'));
    assert_eq!(serde_json::from_str::<Status>(&line).unwrap(), status());
}

#[test]
fn health_verdicts() {
    let now = 1_000;
    let day = 86400;
    let max_age = Duration::from_secs(day as u64);
    let with = |f: &dyn Fn(&mut Status)| {
        let mut s = status();
        f(&mut s);
        s
    };
    // (status, expected problem text, or "" for healthy)
    let cases: Vec<(Status, &str)> = vec![
        (status(), ""),
        (with(&|s| s.listeners[0].up = false), "listener smtp (smtp) on 127.0.0.1:25 is down"),
        (with(&|s| s.queue.oldest_age_seconds = Some(2 * day as u64)), "oldest queued message is 2d old (more than --max-age 1d)"),
        (with(&|s| s.queue.oldest_age_seconds = Some(day as u64)), ""),
        (
            with(&|s| s.certificates[0] = CertStatus::new("server", "a.pem", "", Some(now - 1), now)),
            "server certificate a.pem expired 0 day(s) ago",
        ),
        (
            with(&|s| s.certificates[0] = CertStatus::new("client", "c.pem", "", Some(now + 3 * day), now)),
            "client certificate c.pem expires in 3 day(s)",
        ),
        (with(&|s| s.certificates[0] = CertStatus::new("client", "c.pem", "", Some(now + 8 * day), now)), ""),
        (with(&|s| s.certificates[0].not_after = None), ""),
        (with(&|s| s.queue.corrupt = 1), "1 queue envelope(s) cannot be read (postern queue list)"),
    ];
    for (i, (s, want)) in cases.iter().enumerate() {
        let got = problems(s, now, max_age, 7);
        if want.is_empty() {
            assert!(got.is_empty(), "case {i}: {got:?}");
        } else {
            assert_eq!(got, vec![want.to_string()], "case {i}");
        }
    }
}

#[test]
fn queue_states() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let a = enqueue(&spool, "a@x", &["b@y".into()], b"Subject: a\r\n\r\nx\r\n", "local").unwrap();
    let d = enqueue(&spool, "a@x", &["c@y".into()], b"Subject: d\r\n\r\nxx\r\n", "local").unwrap();
    let h = enqueue(&spool, "a@x", &["e@y".into()], b"Subject: h\r\n\r\nxxx\r\n", "local").unwrap();
    let (mut env, place) = spool.load(&d).unwrap();
    env.recipients[0].attempts = 1;
    env.created -= 100;
    spool.update(&env, place).unwrap();
    spool.move_to(&h, crate::spool::Place::Hold).unwrap();
    let now = crate::time::now_unix() as i64;
    let q = queue_status(&spool, now);
    assert_eq!((q.active, q.deferred, q.hold), (1, 1, 1), "{q:?} ({a})");
    assert!(q.oldest_age_seconds.unwrap() >= 100, "{q:?}");
    assert!(q.active_bytes > 0 && q.deferred_bytes > q.active_bytes && q.hold_bytes > q.deferred_bytes, "{q:?}");
}

#[test]
fn ca_certificates_listed_until_expiry_or_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::ca::Ca::new(dir.path());
    ca.init("Test CA", 365, false).unwrap();
    ca.issue(crate::ca::Kind::Client, "alice", &[], 5, false).unwrap();
    let (bob, _, _) = ca.issue(crate::ca::Kind::Client, "bob", &[], 90, false).unwrap();
    ca.issue(crate::ca::Kind::Client, "carol", &[], 20, false).unwrap();
    ca.revoke(&bob.serial).unwrap();
    let now = chrono::Utc::now().timestamp();
    let certs = super::ca_certificates(dir.path(), now);
    let got: Vec<(&str, &str, i64)> = certs.iter().map(|c| (c.kind.as_str(), c.name.as_str(), c.days_left.unwrap())).collect();
    assert_eq!(got[0].0, "ca");
    assert!(got[0].2 >= 364, "{got:?}");
    // bob is revoked: gone. alice expires in 5 days: unhealthy at the default 7.
    let names: Vec<(&str, &str)> = got[1..].iter().map(|(k, n, _)| (*k, *n)).collect();
    assert_eq!(names, [("ca_issued", "alice"), ("ca_issued", "carol")], "{got:?}");
    assert!((4..=5).contains(&got[1].2) && (19..=20).contains(&got[2].2), "{got:?}");
    let left = (certs[1].not_after.unwrap() - now) / 86400;
    let s = Status { certificates: certs, ..Status::default() };
    let p = problems(&s, now, Duration::from_secs(86400), 7);
    assert_eq!(p, vec![format!("ca_issued certificate alice expires in {left} day(s)")]);
}
