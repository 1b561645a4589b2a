//! The queue on disk. This module is the only one that touches the spool
//! directory, and the only one that calls fsync on it. Files: `queuefile.rs`
//! (the one-file-per-message format), `draft.rs` (a message being
//! received), `names.rs` (names made ahead so a commit is one flush),
//! `envelope.rs` (the envelope format, `enqueue`), `groupsync.rs` (shared
//! fsyncs), `recover.rs` (listing, start-up recovery); ids, commit and the
//! other file operations are here.
//!
//! May touch: `DATA/queue/` (read/write). Layout and durability rules are in
//! `docs/queue-format.md`:
//!
//! ```text
//! queue/files/<id>           queue file: text, envelope at arrival, trailer; written once
//! queue/messages/<id>.eml    text of a message queued by postern before format 2
//! queue/corrupt/             queue files set aside (no trailer, checksum mismatch)
//! queue/active/<id>.json     the envelope, once it changed since arrival (always, before format 2)
//! queue/hold/<id>.json       envelope of a message on hold
//! queue/tmp/                 envelope updates and milter rewrites being written; emptied at start-up
//! ```
//!
//! A message exists once its queue file is complete (format 2), or while
//! its envelope is in `active/` or `hold/` (before format 2). Commit: the
//! text, the envelope and the trailer are written into the queue file, whose
//! name was made and fsynced ahead of time, then one `fdatasync`; only then
//! may the SMTP server say 250.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod draft;
mod envelope;
mod groupsync;
mod names;
mod queuefile;
mod read;
mod recover;

pub use draft::Draft;
use names::NamePool;

use envelope::envelope_bytes;
pub use envelope::{enqueue, enqueue_draft, enqueue_notice, Envelope, RcptStatus, Recipient, ENVELOPE_VERSION};
pub(crate) use groupsync::GroupSync;
pub use recover::Listing;

/// A queue id: 16 upper-case hex digits, time-ordered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(String);

impl QueueId {
    /// A fresh id: microseconds since the epoch (12 hex digits, wraps after
    /// ~8900 years) plus a per-process counter mixed with randomness.
    pub fn generate() -> QueueId {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0) as u64;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
        let r: u64 = rand::random::<u16>() as u64;
        QueueId(format!("{:012X}{:04X}", micros & 0xFFFF_FFFF_FFFF, (n.wrapping_mul(0x9E37) ^ r) & 0xFFFF))
    }

    /// Parses user input (CLI); only ids of our shape are accepted, so an
    /// id can never name a path outside the queue.
    pub fn parse(s: &str) -> Option<QueueId> {
        let s = s.trim().to_ascii_uppercase();
        (s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit())).then_some(QueueId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which directory an envelope is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// `active/`: scheduled for delivery.
    Active,
    /// `hold/`: kept until released.
    Hold,
}

impl Place {
    /// Where a message is while its queue file holds its only envelope:
    /// hold if a milter quarantined it on arrival, else active.
    fn at_arrival(env: &Envelope) -> Place {
        if env.quarantine.is_some() {
            Place::Hold
        } else {
            Place::Active
        }
    }
}

/// Errors from the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file system operation failed (full disk, permissions, I/O).
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An envelope file could not be parsed.
    #[error("corrupt envelope {path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
    /// A queue file whose text is damaged or incomplete (its checksum does
    /// not match, or its trailer is gone while its envelope file is there):
    /// never delivered; the queue sets it aside in `corrupt/`.
    #[error("damaged queue file {path}: {message}")]
    Damaged {
        /// The queue file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No such message in the queue.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
}

impl SpoolError {
    /// True for "no space left on device" and quota errors.
    pub fn is_no_space(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if source.raw_os_error() == Some(libc_enospc()) || source.raw_os_error() == Some(libc_edquot()))
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}
fn libc_edquot() -> i32 {
    nix::errno::Errno::EDQUOT as i32
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { what, path, source }
}

/// fsync a directory so renames into it are durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Writes `bytes` to `path` and fsyncs it (new file).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    write_new(path, bytes, true)
}

/// Where format-2 queue files live. Not `messages/`: a postern older than
/// format 2 removes files there that have no envelope, so a rollback would
/// delete mail; it never looks in `files/` (the mail waits for the upgrade).
const FILES: &str = "files";
/// Where start-up and delivery set aside queue files they cannot use (no
/// valid trailer, a checksum mismatch), for the operator.
const CORRUPT: &str = "corrupt";

/// Mode of every file in the spool, set at creation so the umask never
/// widens it (review F13): queued mail is private to postern.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the spool's directories.
pub const DIR_MODE: u32 = 0o700;

/// Opens a new private file (`create_new`, [`FILE_MODE`]).
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Writes a new file, fdatasync'd when `sync`.
fn write_new(path: &Path, bytes: &[u8], sync: bool) -> Result<(), SpoolError> {
    let mut f = create_private(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    if sync {
        f.sync_data().map_err(io_err("fsync", path))?;
    }
    Ok(())
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    group: std::sync::Arc<GroupSync>,
    mode: SyncMode,
    /// The spool root, open for `syncfs`.
    root_dir: std::sync::Arc<File>,
    /// Held while creating or renaming names in the spool directories. The
    /// kernel serialises those per directory anyway, but its lock spins
    /// on the CPU while waiting; with many sessions committing at once that
    /// spinning took half of a 2-core machine. Waiting here sleeps instead.
    names: std::sync::Arc<std::sync::Mutex<()>>,
    /// Queue-file names made ahead of time (the daemon only).
    pool: std::sync::Arc<NamePool>,
}

/// How a commit is made durable (`queue.sync`); a config type.
pub use crate::config::SyncMode;

impl Spool {
    /// Opens (creating if needed) the spool under `root` (`DATA/queue`).
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        // Created 0700 whatever the umask, and an existing spool made under a
        // wide umask (F13) is narrowed: nothing but postern reads queued mail.
        for p in std::iter::once(root.to_path_buf()).chain(["tmp", "messages", FILES, "active", "hold", CORRUPT].map(|d| root.join(d))) {
            fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(&p).map_err(io_err("create directory", &p))?;
            let mode = fs::metadata(&p).map_err(io_err("stat", &p))?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err("chmod", &p))?;
            }
        }
        let root_dir = File::open(root).map_err(io_err("open", root))?;
        Ok(Spool {
            root: root.to_path_buf(),
            group: Default::default(),
            mode: SyncMode::Fsync,
            root_dir: std::sync::Arc::new(root_dir),
            names: Default::default(),
            pool: Default::default(),
        })
    }

    /// The same spool with another durability mode (the server sets `queue.sync`).
    pub fn with_sync(mut self, mode: SyncMode) -> Spool {
        self.mode = mode;
        self
    }

    /// Starts making queue-file names ahead of time (`names.rs`), so that a
    /// commit costs one flush. The daemon calls this after [`Spool::recover`];
    /// CLI commands do not (their names would outlive them).
    pub fn start_name_pool(&self) {
        self.pool.start(self.dir(FILES), self.names.clone());
    }

    /// Stops the name pool and removes its unused names (daemon shutdown).
    pub fn stop_name_pool(&self) {
        self.pool.stop(&self.dir(FILES));
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, d: &str) -> PathBuf {
        self.root.join(d)
    }

    /// Path of a message's queue file (format 2).
    pub fn body_path(&self, id: &QueueId) -> PathBuf {
        self.dir(FILES).join(id.as_str())
    }

    /// Path of the text of a message queued before format 2.
    fn legacy_body_path(&self, id: &QueueId) -> PathBuf {
        self.dir("messages").join(format!("{id}.eml"))
    }

    fn env_path(&self, id: &QueueId, place: Place) -> PathBuf {
        let d = match place {
            Place::Active => "active",
            Place::Hold => "hold",
        };
        self.dir(d).join(format!("{id}.json"))
    }

    /// Free bytes on the spool's file system (for `queue.min_free_space`).
    pub fn free_space(&self) -> Option<u64> {
        let s = nix::sys::statvfs::statvfs(&self.root).ok()?;
        Some(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Starts a new message, in a name from the pool when there is one.
    pub fn draft(&self) -> Result<Draft, SpoolError> {
        let messages = self.dir(FILES);
        let (id, f, stale, fresh_name) = match self.pool.take(&messages, &self.names) {
            Some((id, f, stale)) => (id, f, stale, false),
            None => {
                let id = QueueId::generate();
                let path = messages.join(id.as_str());
                let _names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                let f = create_private(&path).map_err(io_err("create", &path))?;
                (id, f, 0, true)
            }
        };
        Ok(Draft {
            path: messages.join(id.as_str()),
            id,
            out: Some(BufWriter::with_capacity(64 * 1024, f)),
            written: 0,
            crc: crc32fast::Hasher::new(),
            error: None,
            stale,
            fresh_name,
            sync_gen: self.group.generation(),
        })
    }

    /// Makes a draft durable with its envelope. Blocking (fsyncs): call from
    /// a blocking thread. On error nothing is left behind.
    pub fn commit(&self, draft: Draft, env: &Envelope) -> Result<(), SpoolError> {
        self.commit_to(draft, env, Place::Active)
    }

    /// [`Spool::commit`] into `place`: `Hold` for a quarantined message
    /// (its envelope says `quarantine`, which keeps it on hold).
    pub fn commit_to(&self, mut draft: Draft, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let result = self.commit_inner(&mut draft, env, place);
        if result.is_err() {
            let _ = fs::remove_file(&draft.path);
            let _ = fs::remove_file(self.env_path(&draft.id, place));
        }
        // Drop removes the queue file if it is still open.
        result
    }

    fn commit_inner(&self, draft: &mut Draft, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let path = draft.path.clone();
        if let Some(e) = draft.error.take() {
            return Err(SpoolError::Io { what: "write", path, source: e });
        }
        let env_bytes = queuefile::embedded_envelope_bytes(env).map_err(io_err("serialise", &path))?;
        let trailer = queuefile::Trailer {
            text_len: draft.written,
            env_len: u32::try_from(env_bytes.len()).map_err(|_| io_err("serialise", &path)(io::Error::other("envelope too large")))?,
            text_crc: draft.crc.clone().finalize(),
            env_crc: crc32fast::hash(&env_bytes),
        };
        let mut out = draft.out.take().ok_or_else(|| SpoolError::Io {
            what: "write",
            path: path.clone(),
            source: io::Error::other("draft already closed"),
        })?;
        let written = out.write_all(&env_bytes).and_then(|()| out.write_all(&trailer.encode())).and_then(|()| out.flush());
        let file = out.into_inner().map_err(|e| e.into_error());
        // From here on Drop would not remove the file: commit_to does on error.
        let file = written.and(file).map_err(io_err("write", &path))?;
        let total = draft.written + env_bytes.len() as u64 + queuefile::TRAILER_LEN as u64;
        if draft.stale > total {
            // A recycled file longer than this message: its old octets go
            // before the flush, which makes the new size durable with the data.
            file.set_len(total).map_err(io_err("truncate", &path))?;
        }
        if place == Place::Hold && env.quarantine.is_none() {
            // Held from the start without a quarantine reason: the envelope
            // file in hold/ says so (rare; its own fsyncs).
            let tmp = self.dir("tmp").join(format!("{}.json", draft.id));
            let bytes = envelope_bytes(env).map_err(io_err("serialise", &tmp))?;
            write_synced(&tmp, &bytes)?;
            let held = self.env_path(&draft.id, Place::Hold);
            fs::rename(&tmp, &held).map_err(io_err("rename", &tmp))?;
            sync_dir(&self.dir("hold"))?;
        }
        match self.mode {
            SyncMode::Fsync => {
                // fdatasync: the text, the envelope and the file's size. The
                // name was fsynced when the pool made it; one made on the spot
                // (or a rewrite's) needs `files/` fsynced too, shared by
                // concurrent commits.
                file.sync_data().map_err(io_err("fsync", &path))?;
                if draft.fresh_name {
                    let files = self.dir(FILES);
                    self.group.sync(draft.sync_gen, &|| sync_dir(&files))?;
                }
            }
            SyncMode::Syncfs => {
                let root = self.root_dir.clone();
                let rootp = self.root.clone();
                self.group.sync(draft.sync_gen, &|| nix::unistd::syncfs(root.as_ref()).map_err(|e| io_err("syncfs", &rootp)(e.into())))?;
            }
        }
        // Someone removed the name while we wrote or flushed (a clean-up script that
        // deletes empty files): the text would have no name on disk. Refuse
        // the commit (the client gets a 4xx and retries) rather than 250.
        if file.metadata().map_err(io_err("stat", &path))?.nlink() == 0 {
            return Err(io_err("commit", &path)(io::Error::other("the queue file was removed while it was written")));
        }
        Ok(())
    }

    /// Does the message still exist (its queue file, or its envelope for a
    /// message queued before format 2)?
    fn exists(&self, id: &QueueId) -> bool {
        self.body_path(id).exists() || (self.legacy_body_path(id).exists() && self.envelope_file(id).is_some())
    }

    /// Where the message's envelope file is, if it has one (hold wins).
    fn envelope_file(&self, id: &QueueId) -> Option<Place> {
        [Place::Hold, Place::Active].into_iter().find(|&p| self.env_path(id, p).exists())
    }

    /// Rewrites an envelope atomically (temp file, fsync, rename, fsync dir).
    /// Fails with `NotFound` if the message is no longer where it was
    /// (deleted or put on hold meanwhile).
    pub fn update(&self, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        if !self.exists(&env.id) || self.current_place(&env.id)? != place {
            return Err(SpoolError::NotFound(env.id.clone()));
        }
        self.write_envelope(env, place)
    }

    /// Writes `place/<ID>.json`: temp file, fsync, rename, fsync dir.
    fn write_envelope(&self, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let path = self.env_path(&env.id, place);
        let tmp = self.dir("tmp").join(format!("{}.json.{}", env.id, rand::random::<u32>()));
        let bytes = envelope_bytes(env).map_err(io_err("serialise", &tmp))?;
        let written = write_synced(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename", &tmp)));
        if written.is_err() {
            // A full disk fails every retry's update: leave no temp file
            // behind each time (the soak found thousands in tmp/).
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(path.parent().unwrap_or(&self.root))
    }

    /// Where a message is: its envelope file's place, else (format 2, the
    /// envelope as accepted) hold if it arrived quarantined, else active.
    fn current_place(&self, id: &QueueId) -> Result<Place, SpoolError> {
        match self.envelope_file(id) {
            Some(place) => Ok(place),
            None => Ok(self.load(id)?.1),
        }
    }

    /// Moves a message whose queue file is damaged (checksum mismatch) out
    /// of the queue into `corrupt/`, with its envelope files, for the
    /// operator: it is not delivered, and not retried for ever either.
    pub fn set_aside(&self, id: &QueueId) -> Result<(), SpoolError> {
        let corrupt = self.dir(CORRUPT);
        let qf = self.body_path(id);
        fs::rename(&qf, corrupt.join(id.as_str())).map_err(io_err("rename", &qf))?;
        for place in [Place::Active, Place::Hold] {
            let p = self.env_path(id, place);
            if p.exists() {
                fs::rename(&p, corrupt.join(format!("{id}.json"))).map_err(io_err("rename", &p))?;
            }
        }
        sync_dir(&corrupt)
    }

    /// [`Spool::set_aside`], and one `error` line in the mail log saying
    /// what is wrong (`error`) and what was done. True if it was set aside.
    pub fn set_aside_logged(&self, id: &QueueId, error: &str) -> bool {
        let (done, action) = match self.set_aside(id) {
            Ok(()) => (true, "set aside in queue/corrupt/".to_string()),
            Err(e) => (false, format!("could not set it aside: {e}")),
        };
        crate::maillog::error(&[("id", id.as_str()), ("error", error), ("action", &action)]);
        done
    }

    /// Removes a message: its queue file first (the message is gone), then
    /// its envelope files; for a message queued before format 2 the
    /// envelope first, then the text. The daemon keeps the queue file as a
    /// name for a later message (`names.rs`, recycled names) instead of
    /// unlinking it. No directory fsync: if a crash undoes the removal the
    /// message is delivered again (a duplicate), never lost; an envelope left
    /// without its queue file is removed at start-up.
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let gone = |r: io::Result<()>, p: &Path| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", p)(e)),
            _ => Ok(()),
        };
        let envelopes = || {
            [Place::Active, Place::Hold].into_iter().try_for_each(|place| {
                let p = self.env_path(id, place);
                gone(fs::remove_file(&p), &p)
            })
        };
        let qf = self.body_path(id);
        // Recycling is an optimisation: whatever stands in its way (the file
        // not writable, no descriptor left, a read error, a second hard
        // link) leaves the removal as it always was, an unlink.
        let unlink = || {
            if fs::metadata(&qf).is_ok_and(|m| m.len() == 0) {
                // A name made ahead: not a message.
                return Err(SpoolError::NotFound(id.clone()));
            }
            fs::remove_file(&qf).map_err(io_err("remove", &qf))?;
            envelopes()
        };
        match OpenOptions::new().read(true).write(true).open(&qf) {
            Ok(f) => {
                let Ok(meta) = f.metadata() else { return unlink() };
                match queuefile::read_trailer(&f) {
                    Ok(Some(_)) if meta.nlink() == 1 => {
                        if !self.pool.recycle(&self.dir(FILES), &self.names, &qf, f, meta.len()) {
                            fs::remove_file(&qf).map_err(io_err("remove", &qf))?;
                        }
                        envelopes()
                    }
                    Ok(None) if queuefile::is_free(&f).unwrap_or(false) || self.envelope_file(id).is_none() => {
                        // A name made ahead or recycled, or a message being
                        // written: not a message.
                        Err(SpoolError::NotFound(id.clone()))
                    }
                    // A damaged acknowledged message (`queue delete`), a
                    // read error, a linked file: unlinked.
                    _ => unlink(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A message queued before format 2: envelope first, then the text.
                if self.envelope_file(id).is_none() {
                    return Err(SpoolError::NotFound(id.clone()));
                }
                envelopes()?;
                let legacy = self.legacy_body_path(id);
                gone(fs::remove_file(&legacy), &legacy)
            }
            Err(_) => unlink(),
        }
    }

    /// Moves a message between `active/` and `hold/`.
    pub fn move_to(&self, id: &QueueId, to: Place) -> Result<bool, SpoolError> {
        let (env, place) = self.load(id)?;
        if place == to {
            return Ok(false);
        }
        let from = self.env_path(id, place);
        let dest = self.env_path(id, to);
        if from.exists() {
            fs::rename(&from, &dest).map_err(io_err("rename", &from))?;
            // Both directories: a crash must not bring the old name back
            // (hold wins over active when both exist).
            sync_dir(dest.parent().unwrap_or(&self.root))?;
            sync_dir(from.parent().unwrap_or(&self.root))?;
        } else {
            // Format 2, never updated: its envelope is the one in the queue
            // file; the new place gets an envelope file of its own (released
            // from a quarantine: without the reason, which would hold it).
            let mut env = env;
            if to == Place::Active {
                env.quarantine = None;
            }
            self.write_envelope(&env, to)?;
            if to == Place::Hold && from.exists() {
                // The scheduler wrote a newer envelope meanwhile (some
                // recipients done): that one is held, not the arrival's.
                fs::rename(&from, &dest).map_err(io_err("rename", &from))?;
                sync_dir(dest.parent().unwrap_or(&self.root))?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod recycle_tests;
#[cfg(test)]
mod tests;
