//! Names made ahead of time, so that accepting a message costs one device
//! flush: the pool creates empty queue files `files/<ID>` in batches and
//! fsyncs `files/` once per batch; a message taken from the pool is
//! written into a file whose directory entry is already on disk, so its
//! commit needs only the file's own `fdatasync` (docs/queue-format.md,
//! "Durability"). An empty file is not a message (`queuefile.rs`); the ones
//! left when postern stops are removed at the next start.
//!
//! Recycled names: the queue file of a finished message is not unlinked but
//! kept as a name for a later message (as PostgreSQL recycles its WAL
//! segments): its trailer is marked free (`queuefile::mark_free`), it is
//! renamed `files/<new ID>`, and it joins the next batch, whose directory
//! fsync makes the new name durable. Creating a file (inode allocation) and
//! unlinking one (freeing its blocks, and on a file system mounted with
//! `discard` a synchronous discard) were a fifth of the daemon's CPU time
//! per message; overwriting blocks the file already has costs neither.
//! Why a crash loses nothing: the free mark is a page-cache write, so a
//! crash can leave a recycled name whose old trailer is still valid; its
//! embedded envelope then names the old id, not the file's, and start-up
//! removes it (that message was finished before it was recycled). A new
//! message written over a recycled file is acknowledged only after its own
//! trailer, at its own length, is flushed (`Spool::commit`, which cuts a
//! longer old file to size first). Files kept are bounded in number and
//! octets ([`RECYCLE_BYTES`]), so they never hold much of the disk.
//!
//! Only the daemon runs a pool ([`super::Spool::start_name_pool`]); CLI
//! commands that queue a message create its name directly and fsync the
//! directory, as does the daemon when the pool runs dry.
//!
//! May touch: `DATA/queue/files/` (creates empty files, renames finished
//! queue files to new names, fsyncs the directory).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{create_private, queuefile, sync_dir, QueueId};

/// Names kept ready; a refill starts when fewer than half are left.
pub(super) const POOL_SIZE: usize = 128;
/// At most this many octets of recycled files are kept (ready or waiting
/// for the next batch); a finished message's file that does not fit is
/// unlinked as before. 64 MiB: 60 one-megabyte messages in flight.
pub(super) const RECYCLE_BYTES: u64 = 64 << 20;

/// A name: its id, its open file, and the octets already in it (0 for a
/// new empty file; the old message's length for a recycled one).
pub(super) type Name = (QueueId, File, u64);

/// The pool of ready names.
#[derive(Debug, Default)]
pub(super) struct NamePool {
    /// Set by `start`: only then does `take` hand out names.
    enabled: AtomicBool,
    /// A refill thread is running.
    refilling: AtomicBool,
    /// Ready names, oldest first (ids increase, so arrival order is kept).
    ready: Mutex<VecDeque<Name>>,
    /// Recycled names not yet in a batch (their new name is not durable yet).
    recycled: Mutex<Vec<Name>>,
    /// Octets of the recycled files in `ready` and `recycled`.
    recycled_bytes: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    pub(super) fn stop(&self, messages: &Path) {
        self.enabled.store(false, Ordering::Release);
        let mut unused: Vec<_> = lock(&self.ready).drain(..).collect();
        unused.append(&mut lock(&self.recycled));
        *lock(&self.recycled_bytes) = 0;
        for (id, _, _) in unused {
            let _ = std::fs::remove_file(messages.join(id.as_str()));
        }
    }

    /// A ready name, its open file and the octets already in it, if the
    /// pool has one.
    pub(super) fn take(self: &Arc<Self>, messages: &Path, names_lock: &Arc<Mutex<()>>) -> Option<Name> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let got = lock(&self.ready).pop_front();
        if let Some((_, _, stale)) = &got {
            self.release(*stale);
        }
        self.refill_if_low(messages.to_path_buf(), names_lock.clone());
        got
    }

    /// Keeps the open queue file `file` (`len` octets, at `old`) of a
    /// finished message as a name for a later one: marks it free and
    /// renames it `files/<new ID>`. False if the pool does not want it (not
    /// running, or full) or either step failed: the caller unlinks it.
    pub(super) fn recycle(&self, messages: &Path, names_lock: &Mutex<()>, old: &Path, file: File, len: u64) -> bool {
        if !self.enabled.load(Ordering::Acquire) || lock(&self.recycled).len() >= POOL_SIZE {
            return false;
        }
        {
            let mut bytes = lock(&self.recycled_bytes);
            if *bytes + len > RECYCLE_BYTES {
                return false;
            }
            *bytes += len;
        }
        let renamed = queuefile::mark_free(&file, len).and_then(|()| {
            let _names = lock(names_lock);
            rename_to_new_id(old, messages)
        });
        let Ok(id) = renamed else {
            self.release(len);
            return false;
        };
        let mut recycled = lock(&self.recycled);
        if !self.enabled.load(Ordering::Acquire) {
            // Stopped meanwhile: `stop` will not see this one.
            drop(recycled);
            let _ = std::fs::remove_file(messages.join(id.as_str()));
            self.release(len);
            return true;
        }
        recycled.push((id, file, len));
        true
    }

    /// `n` octets of recycled files are no longer kept by the pool.
    fn release(&self, n: u64) {
        let mut bytes = lock(&self.recycled_bytes);
        *bytes = bytes.saturating_sub(n);
    }

    /// Names ready now (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.ready).len()
    }

    /// Is a refill running (tests)?
    #[cfg(test)]
    pub(super) fn refilling(&self) -> bool {
        self.refilling.load(Ordering::Acquire)
    }

    /// Recycled names ready or waiting (tests).
    #[cfg(test)]
    pub(super) fn recycled(&self) -> usize {
        lock(&self.ready).iter().filter(|n| n.2 > 0).count() + lock(&self.recycled).len()
    }

    fn refill_if_low(self: &Arc<Self>, messages: PathBuf, names_lock: Arc<Mutex<()>>) {
        if lock(&self.ready).len() >= POOL_SIZE / 2 {
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

    /// Takes recycled names, then creates new ones, up to [`POOL_SIZE`];
    /// fsyncs the directory once, then publishes them. Any error stops the
    /// batch: what was not published is removed, and commits create their
    /// own names meanwhile.
    fn refill(&self, messages: &Path, names_lock: &Mutex<()>) {
        let want = POOL_SIZE.saturating_sub(lock(&self.ready).len());
        let mut batch: Vec<Name> = {
            let mut recycled = lock(&self.recycled);
            let n = recycled.len().min(want);
            recycled.drain(..n).collect()
        };
        while batch.len() < want {
            let id = QueueId::generate();
            let path = messages.join(id.as_str());
            let created = {
                let _names = lock(names_lock);
                create_private(&path)
            };
            match created {
                Ok(f) => batch.push((id, f, 0)),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        // Ids grow with time: handed out in order, they keep arrival order.
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let published = sync_dir(messages).is_ok() && {
            let mut ready = lock(&self.ready);
            // Stopped meanwhile: nothing is handed out any more.
            self.enabled.load(Ordering::Acquire) && {
                ready.extend(batch.drain(..));
                true
            }
        };
        if !published {
            self.release(batch.iter().map(|n| n.2).sum());
            for (id, _, _) in batch {
                let _ = std::fs::remove_file(messages.join(id.as_str()));
            }
        }
    }
}

/// Renames `old` to `messages/<a new id>`, never over an existing file:
/// ids carry 16 random bits, so two made in the same microsecond (or after
/// the clock stepped back) can be equal, and a plain rename would replace
/// the other file, perhaps a message. A few tries, then the error.
fn rename_to_new_id(old: &Path, messages: &Path) -> std::io::Result<QueueId> {
    let mut last = std::io::Error::other("no id");
    for _ in 0..4 {
        let id = QueueId::generate();
        match rename_noreplace(old, &messages.join(id.as_str())) {
            Ok(()) => return Ok(id),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// `rename` that fails with `AlreadyExists` instead of replacing `new`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn rename_noreplace(old: &Path, new: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, old, AT_FDCWD, new, RenameFlags::RENAME_NOREPLACE).map_err(std::io::Error::from)
}

/// `rename` that fails with `AlreadyExists` instead of replacing `new`
/// (without `renameat2`: a hard link, which never replaces, then unlink).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn rename_noreplace(old: &Path, new: &Path) -> std::io::Result<()> {
    std::fs::hard_link(old, new)?;
    std::fs::remove_file(old)
}
