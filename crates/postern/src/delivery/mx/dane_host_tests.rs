//! In-process: what one attempt at an MX host does under each DANE
//! verdict, against a plaintext SMTP peer on loopback (STARTTLS not
//! offered), and what is counted for TLS reporting.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::super::MxDelivery;
use crate::config::Config;
use crate::delivery::dane::HostTls;
use crate::delivery::mta_sts::Applied;
use crate::delivery::tlsrpt::{FailureType, SessionResult, TlsReports};
use crate::delivery::{Message, Outcome};
use crate::settings::{Settings, Source};
use crate::spool::QueueId;
use crate::tls::dane::Tlsa;

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Result<(), FailureType>)>>);

impl TlsReports for Recorder {
    fn record(&self, r: &SessionResult<'_>) {
        // Hosts without DANE are reported as "no-policy-found" (TLS-RPT's
        // own concern); this recorder keeps the DANE ones.
        if r.policy_type.as_str() != "tlsa" {
            assert_eq!(r.policy_type.as_str(), "no-policy-found");
            return;
        }
        self.0.lock().unwrap().push((r.mx_host.to_string(), r.result));
    }
}

/// A plaintext SMTP peer without STARTTLS; returns its port and every
/// command line it was sent.
async fn plaintext_peer() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 plain ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                let mut in_data = false;
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            w.write_all(b"250 2.0.0 taken\r\n").await.unwrap();
                        }
                        continue;
                    }
                    log.lock().unwrap().push(cmd.clone());
                    let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-plain\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go\r\n"
                        }
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 ok\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, seen)
}

fn delivery(port: u16) -> (MxDelivery, Arc<Recorder>) {
    let text = format!("[mx]\ntls = \"dane\"\nnameservers = [\"127.0.0.1:9\"]\nport = {port}\ndangerous_allow_loopback = true\n");
    let cfg = Config::parse(&text, "t").unwrap();
    let s = Settings::from_config(cfg, &Source { config: None, data_dir: Some("/nonexistent".into()) }).unwrap();
    let mut m = MxDelivery::new(&s).unwrap();
    let rec = Arc::new(Recorder::default());
    m.reports = rec.clone();
    (m, rec)
}

fn message() -> Message {
    Message {
        id: QueueId::generate(),
        sender: "a@here.example".into(),
        body: Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec()),
        eight_bit: false,
        smtputf8: false,
        dsn: Default::default(),
        requiretls: false,
        tls_required_no: false,
    }
}

fn ee() -> Tlsa {
    Tlsa { usage: 3, selector: 1, matching: 1, data: vec![1; 32] }
}

const RCPT: &[&str] = &["u@far.example"];

#[tokio::test]
async fn dane_host_without_starttls_gets_nothing() {
    let (port, seen) = plaintext_peer().await;
    let (m, rec) = delivery(port);
    let rcpts: Vec<String> = RCPT.iter().map(|s| s.to_string()).collect();
    let ip = "127.0.0.1".parse().unwrap();
    let r = m.try_host("far.example", "mx.far.example", ip, (&HostTls::Dane(vec![ee()]), true), &Applied::none(), &message(), &rcpts).await;
    let (why, dane) = r.expect_err("no STARTTLS: no session");
    assert!(dane && why.contains("STARTTLS"), "{why}");
    assert!(!seen.lock().unwrap().iter().any(|c| c.starts_with("MAIL")), "sent in clear: {:?}", seen.lock().unwrap());
    assert_eq!(*rec.0.lock().unwrap(), vec![("mx.far.example".to_string(), Err(FailureType::StarttlsNotSupported))]);

    // "encrypt" (only unusable records) refuses cleartext too.
    let r = m.try_host("far.example", "mx.far.example", ip, (&HostTls::Encrypt(vec![]), true), &Applied::none(), &message(), &rcpts).await;
    assert!(r.is_err());
    assert!(!seen.lock().unwrap().iter().any(|c| c.starts_with("MAIL")));

    // No DANE for this host: opportunistic, delivered in clear, not reported.
    let before = rec.0.lock().unwrap().len();
    let a = m
        .try_host("far.example", "mx.far.example", ip, (&HostTls::Opportunistic, true), &Applied::none(), &message(), &rcpts)
        .await
        .expect("session");
    assert!(matches!(a.outcomes[0], Outcome::Delivered(_)), "{:?}", a.outcomes);
    assert_eq!(a.tls.as_deref(), Some("none"));
    assert_eq!(rec.0.lock().unwrap().len(), before);
}

#[tokio::test]
async fn dnssec_failure_defers_without_connecting() {
    let (port, seen) = plaintext_peer().await;
    let (m, rec) = delivery(port);
    let rcpts: Vec<String> = RCPT.iter().map(|s| s.to_string()).collect();
    let verdict = HostTls::Defer { failure: FailureType::DnssecInvalid, reason: "SERVFAIL".into() };
    let r = m
        .try_host("far.example", "mx.far.example", "127.0.0.1".parse().unwrap(), (&verdict, true), &Applied::none(), &message(), &rcpts)
        .await;
    assert_eq!(r.err(), Some(("SERVFAIL".to_string(), true)));
    assert!(seen.lock().unwrap().is_empty(), "connected: {:?}", seen.lock().unwrap());
    assert_eq!(*rec.0.lock().unwrap(), vec![("mx.far.example".to_string(), Err(FailureType::DnssecInvalid))]);
}

#[tokio::test]
async fn requiretls_needs_a_securely_found_mx_host() {
    let (port, seen) = plaintext_peer().await;
    let (m, _rec) = delivery(port);
    let rcpts: Vec<String> = RCPT.iter().map(|s| s.to_string()).collect();
    let ip = "127.0.0.1".parse().unwrap();
    let msg = Message { requiretls: true, ..message() };
    // Insecure MX answer, no MTA-STS: fails 5.7.30 before any connection.
    let a = m
        .try_host("far.example", "mx.far.example", ip, (&HostTls::Opportunistic, false), &Applied::none(), &msg, &rcpts)
        .await
        .expect("a verdict, not a deferral");
    match &a.outcomes[0] {
        Outcome::Failed(r) => assert!(r.to_string().contains("5.7.30"), "{r}"),
        o => panic!("{o:?}"),
    }
    assert!(seen.lock().unwrap().is_empty(), "no connection: {:?}", seen.lock().unwrap());
    // A secure MX answer passes this gate (the TLS gate then refuses cleartext).
    let a = m
        .try_host("far.example", "mx.far.example", ip, (&HostTls::Opportunistic, true), &Applied::none(), &msg, &rcpts)
        .await
        .expect("session");
    assert!(matches!(&a.outcomes[0], Outcome::Failed(r) if r.to_string().contains("5.7.30")), "{:?}", a.outcomes);
    assert!(!seen.lock().unwrap().iter().any(|c| c.starts_with("MAIL")), "sent in clear: {:?}", seen.lock().unwrap());
}
