//! AUTH through Dovecot (`auth.backend = "dovecot"`) against a fake Dovecot
//! auth server on a unix socket in a temp dir: OK, FAIL, `temp`, a dropped
//! connection, silence (timeout), Dovecot absent, the mechanism filter
//! before and after TLS, the throttle.
//!
//! The fake decides by the PLAIN user: `alice` with "secret pw" is OK,
//! `tempuser` gets `FAIL temp`, `dropuser` a closed connection,
//! `slowuser` no answer, `nologinuser` `OK nologin` (what Dovecot 2.3
//! sends for a passdb `nologin`); anything else FAIL.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::harness::{b64, Harness};

const MECHS: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nMECH\tSCRAM-SHA-256\tmutual-auth\n\
MECH\tSCRAM-SHA-256-PLUS\tmutual-auth\nMECH\tANONYMOUS\tanonymous\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n";

/// The fake server: its socket, and the AUTH/CONT lines it received.
struct FakeDovecot {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

fn decide(id: &str, data: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
    let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let (user, pw) = match parts.as_slice() {
        [_, u, p] => (String::from_utf8_lossy(u).into_owned(), String::from_utf8_lossy(p).into_owned()),
        _ => return Some(format!("FAIL\t{id}\treason=malformed\n")),
    };
    Some(match user.as_str() {
        "alice" if pw == "secret pw" => format!("OK\t{id}\tuser=alice\n"),
        "tempuser" => format!("FAIL\t{id}\tuser=tempuser\ttemp\treason=database down\n"),
        // Dovecot 2.3 answers a passdb `nologin` with OK ... nologin.
        "nologinuser" => format!("OK\t{id}\tuser=nologinuser\tnologin\treason=account closed\n"),
        "dropuser" | "slowuser" => return None,
        _ => format!("FAIL\t{id}\tuser={user}\treason=Password mismatch\n"),
    })
}

impl FakeDovecot {
    fn start() -> FakeDovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("auth-client");
        let listener = UnixListener::bind(&socket).expect("bind");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    if w.write_all(MECHS.as_bytes()).await.is_err() {
                        return;
                    }
                    while let Ok(Some(line)) = lines.next_line().await {
                        log.lock().unwrap().push(line.clone());
                        let f: Vec<&str> = line.split('\t').collect();
                        let answer = match f.as_slice() {
                            ["AUTH", id, _mech, rest @ ..] => match rest.iter().find_map(|p| p.strip_prefix("resp=")) {
                                Some(resp) => decide(id, resp),
                                None => Some(format!("CONT\t{id}\t\n")),
                            },
                            ["CONT", id, data] => decide(id, data),
                            _ => continue,
                        };
                        match answer {
                            Some(a) => {
                                if w.write_all(a.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            None if line.contains(&b64("\0dropuser\0x")) => return,
                            // slowuser: keep the connection, never answer.
                            None => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        FakeDovecot { _dir: dir, socket, seen }
    }

    fn config(&self, extra: &str) -> String {
        format!("[auth]\nbackend = \"dovecot\"\ndovecot_socket = \"unix:{}\"\ndovecot_timeout = \"1s\"\n{extra}", self.socket.display())
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}")))
}

/// Before TLS: no AUTH (538); under TLS: Dovecot's list ∩ postern's, in
/// postern's order, without -PLUS and ANONYMOUS.
#[tokio::test]
async fn dovecot_mechanisms_before_and_after_tls() {
    let d = FakeDovecot::start();
    let h = Harness::new(&d.config("")).await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.send(&plain("alice", "secret pw")).await;
    c.expect("538 5.7.11").await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.lines().any(|l| l.get(4..) == Some("AUTH SCRAM-SHA-256 PLAIN LOGIN")), "{ehlo}");
    // From a plaintext network before TLS: only what is not plaintext.
    let h = Harness::new(&d.config("plaintext_networks = [\"127.0.0.0/8\"]\n")).await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.lines().any(|l| l.get(4..) == Some("AUTH SCRAM-SHA-256")), "{ehlo}");
    c.send(&plain("alice", "secret pw")).await;
    // PLAIN is a plaintext mechanism: it needs TLS (RFC 4954 §6, 538).
    c.expect("538 5.7.11").await;
}

/// OK with an initial response, OK after a CONT, FAIL → 535, nologin → 535.
#[tokio::test]
async fn dovecot_ok_and_fail() {
    let d = FakeDovecot::start();
    let h = Harness::new(&d.config("")).await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send(&plain("bob", "wrong")).await;
    c.expect("535 5.7.8").await;
    c.send(&plain("nologinuser", "x")).await;
    c.expect("535 5.7.8").await;
    c.send("AUTH PLAIN").await;
    c.expect("334 ").await;
    c.send(&b64("\0alice\0secret pw")).await;
    c.expect("235 2.7.0").await;
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<friend@far.example>").await;
    c.expect("250 ").await;
    assert!(h.log_has("mechanism=PLAIN user=bob result=fail reason=\"dovecot: Password mismatch\""));
    assert!(h.log_has("user=nologinuser result=fail reason=\"nologin: account closed\""));
    assert!(h.log_has("mechanism=PLAIN user=alice result=ok backend=dovecot"));
    let seen = d.seen();
    let auth = seen.iter().find(|l| l.starts_with("AUTH\t")).expect("an AUTH line");
    assert!(auth.contains("\tPLAIN\tservice=smtp\tnologin\tsecured\tlip=127.0.0.1\trip=127.0.0.1\t"), "{auth}");
    assert!(seen.iter().any(|l| l.starts_with("VERSION\t1\t")) && seen.iter().any(|l| l.starts_with("CPID\t")), "{seen:?}");
}

/// `temp`, a dropped connection, silence, Dovecot absent: 454, never 535,
/// not authenticated, and not counted by the throttle.
#[tokio::test]
async fn dovecot_outage_is_454() {
    let d = FakeDovecot::start();
    let h = Harness::new(&d.config("max_failures_per_ip = 1\nban_exempt_networks = []\n")).await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    for user in ["tempuser", "dropuser", "slowuser", "tempuser"] {
        c.send(&plain(user, "x")).await;
        c.expect("454 4.7.0 Temporary authentication failure").await;
    }
    c.send("MAIL FROM:<alice@mx.test>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<friend@far.example>").await;
    c.expect("550 5.7.1").await;
    c.send("RSET").await;
    c.expect("250 ").await;
    // Not banned by the outages (max_failures_per_ip = 1).
    c.send(&plain("alice", "secret pw")).await;
    c.expect("235 ").await;
    assert!(h.log_has("user=tempuser result=tempfail reason=\"dovecot: database down\""));
    assert!(h.log_has("result=tempfail reason=\"dovecot did not answer within 1s\""));

    let gone = format!("[auth]\nbackend = \"dovecot\"\ndovecot_socket = \"unix:{}/none\"\n", d._dir.path().display());
    let h = Harness::new(&gone).await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.send(&plain("alice", "secret pw")).await;
    c.expect("454 4.7.0 Temporary authentication failure").await;
}

/// Failures through Dovecot count: a ban refuses even the right password.
#[tokio::test]
async fn dovecot_failures_count_for_the_throttle() {
    let d = FakeDovecot::start();
    let h = Harness::new(&d.config("max_failures_per_ip = 2\ndelay_after = 100\nban_exempt_networks = []\n")).await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    for _ in 0..2 {
        c.send(&plain("alice", "wrong")).await;
        c.expect("535 ").await;
    }
    c.send(&plain("alice", "secret pw")).await;
    c.expect("454 4.7.0 Too many authentication failures").await;
}

/// `auth.backend = "dovecot"` without a socket does not load.
#[test]
fn dovecot_socket_required() {
    let e = crate::config::Config::parse("[auth]\nbackend = \"dovecot\"\n", "t.toml").expect_err("loads without a socket");
    assert!(e.to_string().contains("auth.dovecot_socket"), "{e}");
}
