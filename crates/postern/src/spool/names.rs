//! Names made ahead of time, so that accepting a message costs one device
//! flush: the pool creates empty queue files `files/<ID>` in batches and
//! fsyncs `files/` once per batch; a message taken from the pool is
//! written into a file whose directory entry is already on disk, so its
//! commit needs only the file's own `fdatasync` (docs/queue-format.md,
//! "Durability"). An empty file is not a message (`queuefile.rs`); the ones
//! left when postern stops are removed at the next start.
//!
//! Only the daemon runs a pool ([`super::Spool::start_name_pool`]); CLI
//! commands that queue a message create its name directly and fsync the
//! directory, as does the daemon when the pool runs dry.
//!
//! May touch: `DATA/queue/files/` (creates empty files, fsyncs the directory).

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{create_private, sync_dir, QueueId};

/// Names kept ready; a refill starts when fewer than half are left.
pub(super) const POOL_SIZE: usize = 128;

/// The pool of ready names.
#[derive(Debug, Default)]
pub(super) struct NamePool {
    /// Set by `start`: only then does `take` hand out names.
    enabled: AtomicBool,
    /// A refill thread is running.
    refilling: AtomicBool,
    /// Ready names, oldest first (ids increase, so arrival order is kept).
    ready: Mutex<VecDeque<(QueueId, File)>>,
}

impl NamePool {
    /// Starts handing out names (and makes the first batch).
    pub(super) fn start(self: &Arc<Self>, messages: PathBuf, names_lock: Arc<Mutex<()>>) {
        self.enabled.store(true, Ordering::Release);
        self.refill_if_low(messages, names_lock);
    }

    /// Stops handing out names and removes the ready ones (at shutdown, so
    /// a stopped postern leaves no empty files behind; the ones a crash
    /// leaves go at the next start).
    pub(super) fn stop(&self, messages: &std::path::Path) {
        self.enabled.store(false, Ordering::Release);
        let ready: Vec<_> = self.ready.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for (id, _) in ready {
            let _ = std::fs::remove_file(messages.join(id.as_str()));
        }
    }

    /// A ready name and its open, empty file, if the pool has one.
    pub(super) fn take(self: &Arc<Self>, messages: &std::path::Path, names_lock: &Arc<Mutex<()>>) -> Option<(QueueId, File)> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let got = self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        self.refill_if_low(messages.to_path_buf(), names_lock.clone());
        got
    }

    /// Names ready now (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn refill_if_low(self: &Arc<Self>, messages: PathBuf, names_lock: Arc<Mutex<()>>) {
        if self.ready.lock().unwrap_or_else(|p| p.into_inner()).len() >= POOL_SIZE / 2 {
            return;
        }
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        let spawned = std::thread::Builder::new().name("spool-names".into()).spawn(move || {
            pool.refill(&messages, &names_lock);
            pool.refilling.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.refilling.store(false, Ordering::Release);
        }
    }

    /// Creates names up to [`POOL_SIZE`], fsyncs the directory once, then
    /// publishes them. Any error stops the batch: what was created but not
    /// published is removed, and commits create their own names meanwhile.
    fn refill(&self, messages: &std::path::Path, names_lock: &Mutex<()>) {
        let want = POOL_SIZE.saturating_sub(self.ready.lock().unwrap_or_else(|p| p.into_inner()).len());
        let mut batch = Vec::with_capacity(want);
        for _ in 0..want {
            let id = QueueId::generate();
            let path = messages.join(id.as_str());
            let created = {
                let _names = names_lock.lock().unwrap_or_else(|p| p.into_inner());
                create_private(&path)
            };
            match created {
                Ok(f) => batch.push((id, f)),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        if sync_dir(messages).is_err() {
            for (id, _) in batch {
                let _ = std::fs::remove_file(messages.join(id.as_str()));
            }
            return;
        }
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if self.enabled.load(Ordering::Acquire) {
            ready.extend(batch);
        } else {
            // Stopped meanwhile.
            for (id, _) in batch {
                let _ = std::fs::remove_file(messages.join(id.as_str()));
            }
        }
    }
}
