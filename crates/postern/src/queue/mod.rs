//! The scheduler: decides when each queued message is tried, runs delivery
//! attempts with bounded concurrency (`attempt.rs`), records per-recipient
//! results in the envelope, sends DSNs (`dsn.rs`), bounces failures and
//! expired mail, and removes finished messages.
//!
//! Dependencies point one way: `queue -> {state, delivery, bounce, spool}`.
//!
//! May touch: the spool (through `Spool`), transports. Retry timing is the
//! pure function [`retry_delay`] (`retry.rs`).

mod attempt;
mod directory;
mod dsn;
mod due;
pub mod moveout;
mod retry;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::delivery::Transports;
use crate::maillog;
use crate::spool::{Envelope, Place, QueueId, Spool};
use crate::state::SettingsHandle;
use crate::time::now_unix;
use crate::users::UserStore;
use due::DueQueue;

pub use retry::retry_delay;

/// The scheduler handle.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SettingsHandle,
    users: Arc<UserStore>,
    spool: Spool,
    queued: mpsc::UnboundedSender<QueueId>,
    /// Next attempt (unix seconds) of each message we know about.
    due: Mutex<DueQueue>,
    running: Mutex<HashSet<QueueId>>,
    wake: Notify,
    transports: Transports,
    /// The last finished envelopes, newest last (`sendmail -v` asks for them).
    finished: Mutex<std::collections::VecDeque<Envelope>>,
    /// The account directory, for virtual domains (`queue/directory.rs`).
    directory: std::sync::OnceLock<Arc<dyn crate::directory::Directory>>,
}

/// How many finished envelopes [`Scheduler::finished`] remembers.
const FINISHED_KEPT: usize = 256;

impl Scheduler {
    /// A scheduler over `spool`, reading the current settings from
    /// `settings` at every attempt and local mailboxes from `users`;
    /// notices it queues are announced on `queued`.
    pub fn new(settings: SettingsHandle, users: Arc<UserStore>, spool: Spool, queued: mpsc::UnboundedSender<QueueId>) -> Scheduler {
        Scheduler {
            inner: Arc::new(Inner {
                settings,
                users,
                spool,
                queued,
                due: Mutex::new(DueQueue::default()),
                running: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                transports: Transports::default(),
                finished: Mutex::new(std::collections::VecDeque::new()),
                directory: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Re-reads the active queue from disk; with `force`, everything is due now.
    /// Returns how many messages were scheduled.
    pub fn rescan(&self, force: bool) -> usize {
        // One envelope at a time: a large queue is never all in memory.
        let mut n = 0;
        let visited = self.inner.spool.visit(|env, place| {
            if place != Place::Active {
                return;
            }
            let mut due = lock(&self.inner.due);
            if force {
                due.insert(env.id, 0);
            } else {
                let at = env.next_attempt().unwrap_or(0);
                due.insert_if_absent(env.id, at);
            }
            n += 1;
        });
        match visited {
            Ok(bad) => {
                for e in bad {
                    maillog::error(&[("error", &e.to_string()), ("action", "left in place")]);
                }
            }
            Err(e) => {
                maillog::error(&[("error", &e.to_string())]);
                return 0;
            }
        }
        self.inner.wake.notify_one();
        n
    }

    /// The final envelope of a recently finished message (kept in memory,
    /// the last few hundred), for `sendmail -v`.
    pub fn finished(&self, id: &QueueId) -> Option<Envelope> {
        lock(&self.inner.finished).iter().rev().find(|e| &e.id == id).cloned()
    }

    fn remember_finished(&self, env: &Envelope) {
        let mut f = lock(&self.inner.finished);
        if f.len() >= FINISHED_KEPT {
            f.pop_front();
        }
        f.push_back(env.clone());
    }

    /// Makes one message due now (after a flush or release).
    pub fn kick(&self, id: QueueId) {
        lock(&self.inner.due).insert(id, 0);
        self.inner.wake.notify_one();
    }

    /// The TLS-RPT counters of MX delivery (`delivery::tlsrpt`).
    pub fn tls_reporter(&self, s: &crate::settings::Settings) -> Arc<crate::delivery::tlsrpt::Reporter> {
        self.inner.transports.tls_reporter(s)
    }

    /// The scheduling loop.
    pub async fn run(self, mut queued: mpsc::UnboundedReceiver<QueueId>, mut shutdown: watch::Receiver<bool>) {
        self.rescan(false);
        // TLS-RPT: saves the counts, sends the daily reports into this queue.
        let handle = self.inner.settings.clone();
        let tlsrpt = tokio::spawn(crate::delivery::tlsrpt::task::run(
            self.tls_reporter(&handle.current()),
            move || handle.current(),
            self.inner.spool.clone(),
            self.inner.queued.clone(),
            shutdown.clone(),
        ));
        let concurrency = self.inner.settings.current().config.queue.concurrency;
        let sem = Arc::new(Semaphore::new(concurrency));
        loop {
            while let Ok(id) = queued.try_recv() {
                lock(&self.inner.due).insert(id, 0);
            }
            let now = now_unix();
            let ready: Vec<QueueId> = {
                let due = lock(&self.inner.due);
                let running = lock(&self.inner.running);
                due.ready(now, sem.available_permits(), &running)
            };
            for id in ready {
                let Ok(permit) = sem.clone().try_acquire_owned() else { break };
                lock(&self.inner.due).remove(&id);
                lock(&self.inner.running).insert(id.clone());
                let me = self.clone();
                tokio::spawn(async move {
                    let next = me.attempt(&id).await;
                    lock(&me.inner.running).remove(&id);
                    if let Some(at) = next {
                        lock(&me.inner.due).insert(id, at);
                    }
                    drop(permit);
                    me.inner.wake.notify_one();
                });
            }
            let sleep = {
                let next = lock(&self.inner.due).earliest();
                match next {
                    Some(at) if at <= now => Duration::from_millis(200), // waiting for a permit
                    Some(at) => Duration::from_secs((at - now).min(60)),
                    None => Duration::from_secs(60),
                }
            };
            tokio::select! {
                Some(id) = queued.recv() => { lock(&self.inner.due).insert(id, 0); }
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
        }
        // Let attempts in flight finish briefly; anything cut short is retried after restart.
        let _ = tokio::time::timeout(Duration::from_secs(3), sem.acquire_many(concurrency as u32)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), tlsrpt).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
