//! Slow-reader and slot-exhaustion limits (review findings F2, F3) on
//! tokio's paused clock: a client that never reads is dropped after
//! `limits.write_timeout` or at shutdown; a session ends after
//! `limits.session_lifetime`; commands without mail are capped by
//! `limits.max_junk_commands`.

use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Duration, Instant};

use super::harness::Harness;

/// Pipelines NOOPs into a session whose 1 KiB pipe is never read, until
/// the session drops its end; returns how long that took.
async fn never_read(h: &Harness, after: impl FnOnce() + Send + 'static) -> Duration {
    let io = h.connect_raw("smtp", 1024);
    let (_rd, mut wr) = tokio::io::split(io);
    let t = Instant::now();
    let writer = tokio::spawn(async move { while wr.write_all(b"NOOP\r\n").await.is_ok() {} });
    tokio::time::sleep(Duration::from_secs(1)).await;
    after();
    // Without a write deadline the session (and this writer) waits forever.
    timeout(Duration::from_secs(3600), writer).await.expect("session still stuck in its write").expect("writer task");
    t.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let h = Harness::new("[limits]\ncommand_timeout = \"2h\"\nwrite_timeout = \"1m\"\nmax_junk_commands = 1000000\n").await;
    let took = never_read(&h, || {}).await;
    assert!(took >= Duration::from_secs(60) && took < Duration::from_secs(62), "took {took:?}");
    assert!(h.log_has("reason=\"write timeout\""));
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_session_stuck_in_a_write() {
    let h = Harness::new("[limits]\nmax_junk_commands = 1000000\n").await;
    let tx = h.shutdown_handle();
    let took = never_read(&h, move || {
        let _ = tx.send(true);
    })
    .await;
    // Signalled at 1 s; the write then gets 5 s of grace, not write_timeout (5m).
    assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_session_ends_after_its_lifetime_however_busy() {
    let h = Harness::new("[limits]\ncommand_timeout = \"5m\"\nsession_lifetime = \"10m\"\n").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    let t = Instant::now();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(4 * 60)).await;
        c.send("MAIL FROM:<a@b.example>\r\nRSET").await;
        c.expect("250 2.1.0").await;
        c.expect("250 2.0.0").await;
    }
    // At 8 min the next command may come until 13 min, but the lifetime
    // ends at 10 (the harness waits at most 20 s for a reply).
    tokio::time::sleep(Duration::from_secs(110)).await;
    c.expect("421 4.4.2 Session time limit exceeded").await;
    assert!(t.elapsed() < Duration::from_secs(10 * 60 + 20), "{:?}", t.elapsed());
}

#[tokio::test]
async fn commands_without_mail_are_capped_and_a_message_restarts_the_count() {
    let h = Harness::new("[limits]\nmax_junk_commands = 3\n").await;
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example\r\nNOOP").await;
    c.expect_last("250 ").await;
    c.expect("250 2.0.0").await;
    c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send("Subject: t\r\n\r\nbody\r\n.").await;
    c.expect("250 2.0.0 Ok: queued as ").await;
    c.send("NOOP\r\nRSET\r\nVRFY alice\r\nHELP").await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.0.0").await;
    c.expect("252 ").await;
    c.expect("421 4.7.0 Too many commands without mail, closing connection").await;
    assert!(h.log_has("too many commands without mail"));
}
