//! Scheduler tests without a network: attempts over a temporary spool, with
//! recipients routed to an LMTP socket that does not exist (so every
//! attempt defers at once) and local Maildirs. Message age is set through
//! the envelope's `created`, so no test sleeps.
//!
//! May touch: temporary directories (spool, Maildirs). No RFCs.

use std::path::Path;

use super::*;
use crate::config::Config;
use crate::settings::{Settings, Source};
use crate::spool::{enqueue, Envelope, RcptStatus};

const DOWN: &str = "x@down.example";

fn scheduler(dir: &Path, queue: &str) -> (Scheduler, Spool, mpsc::UnboundedReceiver<QueueId>) {
    let cfg = format!(
        "hostname = \"mx.test\"\n[local]\ndomains = [\"here.example\"]\nusers = [\"alice\"]\n[queue]\n{queue}\n\
         [[route]]\ndomains = [\"down.example\"]\ntransport = \"lmtp\"\nnext_hop = \"unix:{}\"\n",
        dir.join("no-such.sock").display()
    );
    let cfg = Config::parse(&cfg, "t").unwrap();
    let src = Source { config: None, data_dir: Some(dir.to_path_buf()) };
    let settings = Settings::from_config(cfg, &src).unwrap();
    let spool = Spool::open(&dir.join("queue")).unwrap();
    let users = Arc::new(UserStore::new(dir));
    let (tx, rx) = mpsc::unbounded_channel();
    (Scheduler::new(SettingsHandle::new(settings), users, spool.clone(), tx), spool, rx)
}

/// Queues a message from alice@here.example to `rcpts`, `age` seconds old.
fn queue_aged(spool: &Spool, rcpts: &[&str], age: u64) -> QueueId {
    let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
    let id = enqueue(spool, "alice@here.example", &rcpts, b"Subject: t\r\n\r\nbody\r\n", "local").unwrap();
    let (mut env, place) = spool.load(&id).unwrap();
    env.created -= age;
    spool.update(&env, place).unwrap();
    id
}

fn notices(spool: &Spool, except: &QueueId) -> Vec<(Envelope, String)> {
    let list = spool.list().unwrap().envelopes;
    list.into_iter()
        .filter(|(e, _)| e.id != *except)
        .map(|(e, _)| {
            let text = String::from_utf8(spool.read_body(&e.id).unwrap()).unwrap();
            (e, text)
        })
        .collect()
}

#[tokio::test]
async fn deferral_schedules_the_next_attempt_by_retry_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (s, spool, _rx) = scheduler(dir.path(), "retry_min = \"100s\"\nretry_max = \"1000s\"");
    let id = queue_aged(&spool, &[DOWN], 0);
    let before = now_unix();
    let next = s.attempt(&id).await.expect("still queued");
    // retry_delay(1, 100s, ..) is 100 s ± 10%.
    assert!((before + 90..=now_unix() + 110).contains(&next), "next attempt at +{}s", next - before);
    let (env, _) = spool.load(&id).unwrap();
    let r = &env.recipients[0];
    assert_eq!((r.status, r.attempts, r.next_attempt), (RcptStatus::Pending, 1, next));
    assert!(r.last_reply.as_deref().unwrap_or("").starts_with("4.4.1 connect to unix:"), "{:?}", r.last_reply);
    assert!(notices(&spool, &id).is_empty(), "no notice before delay_warning");
}

#[tokio::test]
async fn expiry_bounces_with_4_4_7_and_removes_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (s, spool, mut rx) = scheduler(dir.path(), "max_lifetime = \"1h\"");
    let id = queue_aged(&spool, &[DOWN], 3601);
    assert_eq!(s.attempt(&id).await, None, "finished: failed and bounced");
    assert!(matches!(spool.load(&id), Err(crate::spool::SpoolError::NotFound(_))));
    let n = notices(&spool, &id);
    assert_eq!(n.len(), 1);
    let (env, text) = &n[0];
    assert_eq!((env.sender.as_str(), env.recipients[0].address.as_str()), ("", "alice@here.example"));
    assert!(text.contains("Action: failed\r\nStatus: 4.4.7\r\n"), "{text}");
    assert!(text.contains("Diagnostic-Code: smtp; 4.4.7 delivery time expired; last reply: 4.4.1 connect to unix:"), "{text}");
    assert_eq!(rx.try_recv().ok(), Some(env.id.clone()), "the bounce is announced to the scheduler");
}

#[tokio::test]
async fn delay_warning_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (s, spool, _rx) = scheduler(dir.path(), "delay_warning = \"1h\"");
    let id = queue_aged(&spool, &[DOWN], 3700);
    assert!(s.attempt(&id).await.is_some());
    let n = notices(&spool, &id);
    assert_eq!(n.len(), 1);
    assert!(n[0].1.contains("Action: delayed\r\nStatus: 4.4.1\r\n"), "{}", n[0].1);
    let warned = spool.load(&id).unwrap().0.recipients[0].warned_at;
    assert!(warned > 0);
    // The next attempt within the interval sends nothing more.
    assert!(s.attempt(&id).await.is_some());
    assert_eq!(notices(&spool, &id).len(), 1);
}

#[tokio::test]
async fn unknown_local_mailbox_fails_without_a_transport_call() {
    let dir = tempfile::tempdir().unwrap();
    let (s, spool, _rx) = scheduler(dir.path(), "");
    let id = queue_aged(&spool, &["alice@here.example", "nobody@here.example"], 0);
    assert_eq!(s.attempt(&id).await, None);
    let n = notices(&spool, &id);
    assert_eq!(n.len(), 1, "one bounce, for nobody@");
    assert!(n[0].1.contains("Final-Recipient: rfc822; nobody@here.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"), "{}", n[0].1);
    assert_eq!(std::fs::read_dir(dir.path().join("mail/alice/new")).unwrap().count(), 1);
}

/// `queue.attempt_timeout` (F2): a next hop that accepts the connection and
/// then says nothing (every per-step timeout is minutes) holds the attempt
/// only until the overall deadline; the recipient is deferred with 4.4.7.
#[tokio::test]
async fn a_stalled_next_hop_is_cut_off_by_the_attempt_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (s, spool, _rx) = scheduler(dir.path(), "attempt_timeout = \"1s\"");
    let sock = tokio::net::UnixListener::bind(dir.path().join("no-such.sock")).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = sock.accept().await {
            held.push(conn);
        }
    });
    let id = queue_aged(&spool, &[DOWN], 0);
    let t = std::time::Instant::now();
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), s.attempt(&id)).await.expect("attempt still running");
    assert!(next.is_some(), "deferred, still queued");
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
    let (env, _) = spool.load(&id).unwrap();
    let r = &env.recipients[0];
    assert_eq!(r.status, RcptStatus::Pending);
    assert_eq!(r.last_reply.as_deref(), Some("4.4.7 delivery attempt timed out after 1s"));
    silent.abort();
}
