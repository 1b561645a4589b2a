//! In-process server tests: the real server on 127.0.0.1:0, scripted dialogs
//! from `tests/dialogs/*.txt` with byte-exact replies, plus pipelining,
//! recipient limits and spool checks.
//!
//! Dialog format: `S: text` is one expected reply line (CRLF added);
//! `C: text` one client line (CRLF added). Consecutive `C:` lines are sent
//! in ONE write (so every group is a pipelining test), then the following
//! `S:` lines are read and compared exactly. `C+:` sends raw text with
//! `\r`, `\n` escapes and no CRLF added. `{ID}` in an `S:` line matches a
//! queue id; `{BIG n}` and `{LONGLINE n}` in a `C:` line generate data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use postern::server::{start, Running};
use postern::settings::Source;

const CONFIG: &str = r#"
hostname = "mx.test"
[[listener]]
address = "127.0.0.1:0"
[limits]
max_message_size = 10000
max_recipients = 60
max_errors = 12
[local]
domains = ["mx.test", "localhost"]
users = ["alice", "bob"]
[relay]
networks = ["192.0.2.0/24"]
[mail_auth]
verify = false
[queue]
retry_min = "1s"
retry_max = "2s"
"#;

struct Server {
    running: Option<Running>,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("postern.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("aliases"), "staff: alice, bob\n").unwrap();
    let running = start(Source { config: Some(cfg), data_dir: Some(data) }).await.unwrap();
    let addr = running.addrs[0];
    Server { running: Some(running), addr, dir }
}

impl Server {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

fn unescape(s: &str) -> Vec<u8> {
    s.replace("\\r", "\r").replace("\\n", "\n").into_bytes()
}

fn expand_client_line(line: &str) -> Vec<u8> {
    if let Some(n) = line.strip_prefix("{BIG ").and_then(|r| r.strip_suffix('}')) {
        let n: usize = n.parse().unwrap();
        let mut v = Vec::new();
        while v.len() < n {
            v.extend_from_slice(&[b'x'; 98]);
            v.extend_from_slice(b"\r\n");
        }
        return v;
    }
    if let Some(n) = line.strip_prefix("{LONGLINE ").and_then(|r| r.strip_suffix('}')) {
        let mut v = vec![b'X'; n.parse().unwrap()];
        v.extend_from_slice(b"\r\n");
        return v;
    }
    let mut v = line.as_bytes().to_vec();
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads `n` reply lines (CRLF-terminated), with a timeout.
async fn read_lines(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines.len() < n {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            lines.push(String::from_utf8_lossy(&buf[..pos]).into_owned());
            buf.drain(..pos + 2);
            continue;
        }
        let mut chunk = [0u8; 8192];
        let got = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timeout waiting for reply; have {lines:?}"))
            .unwrap();
        if got == 0 {
            panic!("connection closed; have {lines:?}, buffer {:?}", String::from_utf8_lossy(buf));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    lines
}

fn matches(expected: &str, got: &str) -> bool {
    match expected.split_once("{ID}") {
        Some((pre, post)) => {
            got.len() == pre.len() + 16 + post.len()
                && got.starts_with(pre)
                && got.ends_with(post)
                && got[pre.len()..pre.len() + 16].bytes().all(|c| c.is_ascii_hexdigit())
        }
        None => expected == got,
    }
}

async fn run_dialog(path: &Path, addr: std::net::SocketAddr) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut pending_c: Vec<u8> = Vec::new();
    let mut pending_s: Vec<String> = Vec::new();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut steps: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("S:") {
            pending_s.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            continue;
        }
        if !pending_s.is_empty() {
            steps.push((std::mem::take(&mut pending_c), std::mem::take(&mut pending_s)));
        }
        if let Some(rest) = line.strip_prefix("C+:") {
            pending_c.extend(unescape(rest.strip_prefix(' ').unwrap_or(rest)));
        } else if let Some(rest) = line.strip_prefix("C:") {
            pending_c.extend(expand_client_line(rest.strip_prefix(' ').unwrap_or(rest)));
        } else {
            panic!("{name}: bad line {line:?}");
        }
    }
    steps.push((pending_c, pending_s));
    for (c, s) in steps {
        if !c.is_empty() {
            stream.write_all(&c).await.unwrap();
        }
        let got = read_lines(&mut stream, &mut buf, s.len()).await;
        for (want, got) in s.iter().zip(&got) {
            assert!(matches(want, got), "{name}: expected {want:?}, got {got:?} (all: {got:?})");
        }
    }
    // Nothing unexpected after the script.
    let mut rest = [0u8; 1024];
    let extra = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut rest)).await;
    if let Ok(Ok(n)) = extra {
        assert_eq!(n, 0, "{name}: unexpected extra output {:?}", String::from_utf8_lossy(&rest[..n]));
    }
    assert!(buf.is_empty(), "{name}: unexpected extra output {:?}", String::from_utf8_lossy(&buf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_files() {
    let srv = server().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dialogs");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 8, "dialog files missing");
    for f in files {
        run_dialog(&f, srv.addr).await;
    }
    srv.stop().await;
}

async fn connect_ehlo(addr: std::net::SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    read_lines(&mut s, &mut buf, 1).await;
    s.write_all(b"EHLO c.example\r\n").await.unwrap();
    read_lines(&mut s, &mut buf, 9).await;
    (s, buf)
}

/// Files with content: the empty ones in `files/` are queue-file names
/// made ahead of time (docs/queue-format.md), not messages.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.metadata().is_ok_and(|m| m.len() > 0)).count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_mail_50_rcpt_data_in_one_write() {
    let srv = server().await;
    let (mut s, mut buf) = connect_ehlo(srv.addr).await;
    let mut batch = b"MAIL FROM:<p@c.example>\r\n".to_vec();
    // Every tenth recipient is unknown: replies must stay in order.
    let rcpt = |i: usize| {
        if i % 10 == 9 {
            format!("nobody{i}")
        } else if i.is_multiple_of(2) {
            "alice".into()
        } else {
            "staff".into()
        }
    };
    for i in 0..50 {
        batch.extend_from_slice(format!("RCPT TO:<{}@mx.test>\r\n", rcpt(i)).as_bytes());
    }
    batch.extend_from_slice(b"RCPT TO:<bob@mx.test>\r\nDATA\r\n");
    s.write_all(&batch).await.unwrap();
    let lines = read_lines(&mut s, &mut buf, 53).await;
    assert_eq!(lines[0], "250 2.1.0 Sender ok");
    for (i, l) in lines[1..51].iter().enumerate() {
        let want =
            if i % 10 == 9 { format!("550 5.1.1 <nobody{i}@mx.test>: No such user here") } else { "250 2.1.5 Recipient ok".to_string() };
        assert_eq!(l, &want, "rcpt {i}");
    }
    assert_eq!(lines[51], "250 2.1.5 Recipient ok");
    assert_eq!(lines[52], "354 2.0.0 End data with <CR><LF>.<CR><LF>");
    s.write_all(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n").await.unwrap();
    let lines = read_lines(&mut s, &mut buf, 2).await;
    assert!(lines[0].starts_with("250 2.0.0 Ok: queued as "), "{lines:?}");
    assert_eq!(lines[1], "221 2.0.0 Bye");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_accepted_recipients_pipelined_and_delivered() {
    let srv = server().await;
    let (mut s, mut buf) = connect_ehlo(srv.addr).await;
    let mut batch = b"MAIL FROM:<p@c.example>\r\n".to_vec();
    for _ in 0..25 {
        batch.extend_from_slice(b"RCPT TO:<alice@mx.test>\r\nRCPT TO:<staff@mx.test>\r\n");
    }
    batch.extend_from_slice(b"DATA\r\n");
    s.write_all(&batch).await.unwrap();
    let lines = read_lines(&mut s, &mut buf, 52).await;
    assert!(lines[1..51].iter().all(|l| l == "250 2.1.5 Recipient ok"), "{lines:?}");
    assert_eq!(lines[51], "354 2.0.0 End data with <CR><LF>.<CR><LF>");
    s.write_all(b"Subject: fifty\r\n\r\nbody\r\n.\r\n").await.unwrap();
    let lines = read_lines(&mut s, &mut buf, 1).await;
    assert!(lines[0].starts_with("250 2.0.0 Ok: queued as "), "{lines:?}");
    // Duplicates collapse: alice once, bob once.
    let data = srv.data();
    for _ in 0..100 {
        if count_files(&data.join("mail/alice/new")) == 1 && count_files(&data.join("mail/bob/new")) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count_files(&data.join("mail/alice/new")), 1);
    assert_eq!(count_files(&data.join("mail/bob/new")), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_recipients_get_452() {
    let srv = server().await;
    let (mut s, mut buf) = connect_ehlo(srv.addr).await;
    let mut batch = b"MAIL FROM:<p@c.example>\r\n".to_vec();
    for _ in 0..61 {
        batch.extend_from_slice(b"RCPT TO:<alice@mx.test>\r\n");
    }
    s.write_all(&batch).await.unwrap();
    let lines = read_lines(&mut s, &mut buf, 62).await;
    assert_eq!(lines[60], "250 2.1.5 Recipient ok");
    assert_eq!(lines[61], "452 4.5.3 Too many recipients");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_leave_no_debris() {
    let srv = server().await;
    let (mut s, mut buf) = connect_ehlo(srv.addr).await;
    s.write_all(b"MAIL FROM:<p@c.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n").await.unwrap();
    read_lines(&mut s, &mut buf, 3).await;
    let mut big = Vec::new();
    for _ in 0..200 {
        big.extend_from_slice(&[b'y'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b".\r\n");
    s.write_all(&big).await.unwrap();
    let l = read_lines(&mut s, &mut buf, 1).await;
    assert_eq!(l[0], "552 5.3.4 Message size exceeds fixed maximum message size");
    let q = srv.data().join("queue");
    assert_eq!(count_files(&q.join("tmp")), 0);
    assert_eq!(count_files(&q.join("files")), 0);
    assert_eq!(count_files(&q.join("active")), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_header_and_maildir_copy() {
    let srv = server().await;
    let (mut s, mut buf) = connect_ehlo(srv.addr).await;
    s.write_all(b"MAIL FROM:<p@c.example>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\n").await.unwrap();
    read_lines(&mut s, &mut buf, 3).await;
    s.write_all(b"Subject: r\r\n\r\n..leading dot\r\n.\r\n").await.unwrap();
    let l = read_lines(&mut s, &mut buf, 1).await;
    let id = l[0].rsplit(' ').next().unwrap().to_string();
    let new = srv.data().join("mail/bob/new");
    for _ in 0..100 {
        if count_files(&new) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let f = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(f).unwrap();
    let want_prefix = format!(
        "Return-Path: <p@c.example>\nDelivered-To: bob@mx.test\nReceived: from c.example ([127.0.0.1])\n\tby mx.test (postern) with ESMTP id {id}\n\tfor <bob@mx.test>;\n\t"
    );
    assert!(text.starts_with(&want_prefix), "{text}");
    assert!(text.ends_with("\nSubject: r\n\n.leading dot\n"), "{text}");
    srv.stop().await;
}
