//! The queue on disk. This module is the only one that touches the spool
//! directory, and the only one that calls fsync on it. Files: `envelope.rs`
//! (the envelope format, `enqueue`), `groupsync.rs` (shared fsyncs),
//! `recover.rs` (listing, start-up recovery); ids, drafts, commit and the
//! other file operations are here.
//!
//! May touch: `DATA/queue/` (read/write). Layout and durability rules are in
//! `docs/queue-format.md`:
//!
//! ```text
//! queue/tmp/<id>.eml, <id>.json   being written; removed at start-up
//! queue/messages/<id>.eml         message text, CRLF, written once, never changed
//! queue/active/<id>.json          envelope of a message the scheduler works on
//! queue/hold/<id>.json            envelope of a message on hold
//! ```
//!
//! A message exists once its envelope is in `active/` or `hold/`. Commit
//! order: write + fsync both temp files, rename the body into `messages/`,
//! rename the envelope into `active/`, fsync both directories; only then
//! may the SMTP server say 250.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod envelope;
mod groupsync;
mod recover;

pub use envelope::{enqueue, enqueue_draft, enqueue_notice, Envelope, RcptStatus, Recipient, ENVELOPE_VERSION};
use envelope::{envelope_bytes, parse_envelope};
use groupsync::GroupSync;
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
}

/// How a commit is made durable (`queue.sync`); a config type.
pub use crate::config::SyncMode;

/// A message being received: its text goes to `tmp/<id>.eml`.
#[derive(Debug)]
pub struct Draft {
    /// The queue id this message will get.
    pub id: QueueId,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
    error: Option<io::Error>,
}

impl Draft {
    /// Appends text. Errors are remembered and reported by [`Spool::commit`],
    /// so the SMTP session can keep reading the client's data.
    ///
    /// These are plain blocking writes into a 64 KiB buffer: page-cache
    /// writes that do not wait for the disk; the fsync happens in `commit`,
    /// which callers run on a blocking thread.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(bytes) {
                self.error = Some(e);
            } else {
                self.written += bytes.len() as u64;
            }
        }
    }

    /// Octets written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes what was written and opens the text for reading (milters
    /// read the message back to send it in chunks).
    pub fn reader(&mut self) -> Result<File, SpoolError> {
        let path = self.path.clone();
        if let Some(e) = self.error.take() {
            return Err(SpoolError::Io { what: "write", path, source: e });
        }
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(io_err("write", &path))?;
        }
        File::open(&path).map_err(io_err("read", &path))
    }

    /// Replaces the text with what `fill` writes (a milter changed headers or
    /// the body). The new text goes to a second temp file that is renamed
    /// over the first, so a failure leaves the old text in place; nothing is
    /// durable until [`Spool::commit`].
    pub fn rewrite(&mut self, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), SpoolError> {
        let new_path = self.path.with_extension("eml.new");
        let result = (|| {
            let f = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(&new_path)?;
            let mut out = BufWriter::with_capacity(64 * 1024, f);
            let mut counter = CountingWriter { inner: &mut out, count: 0 };
            fill(&mut counter)?;
            let count = counter.count;
            out.flush()?;
            fs::rename(&new_path, &self.path)?;
            Ok((out, count))
        })();
        match result {
            Ok((out, count)) => {
                self.out = Some(out);
                self.written = count;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&new_path);
                Err(SpoolError::Io { what: "rewrite", path: self.path.clone(), source: e })
            }
        }
    }
}

/// Counts octets on their way to a writer.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        // A draft that was not committed leaves no debris.
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Spool {
    /// Opens (creating if needed) the spool under `root` (`DATA/queue`).
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        // Created 0700 whatever the umask, and an existing spool made under a
        // wide umask (F13) is narrowed: nothing but postern reads queued mail.
        for p in std::iter::once(root.to_path_buf()).chain(["tmp", "messages", "active", "hold"].map(|d| root.join(d))) {
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
        })
    }

    /// The same spool with another durability mode (the server sets `queue.sync`).
    pub fn with_sync(mut self, mode: SyncMode) -> Spool {
        self.mode = mode;
        self
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, d: &str) -> PathBuf {
        self.root.join(d)
    }

    /// Path of a message's text.
    pub fn body_path(&self, id: &QueueId) -> PathBuf {
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

    /// Starts a new message.
    pub fn draft(&self) -> Result<Draft, SpoolError> {
        let id = QueueId::generate();
        let path = self.dir("tmp").join(format!("{id}.eml"));
        let f = {
            let _names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            create_private(&path).map_err(io_err("create", &path))?
        };
        Ok(Draft { id, path, out: Some(BufWriter::with_capacity(64 * 1024, f)), written: 0, error: None })
    }

    /// Makes a draft durable with its envelope. Blocking (fsyncs): call from
    /// a blocking thread. On error nothing is left behind.
    pub fn commit(&self, draft: Draft, env: &Envelope) -> Result<(), SpoolError> {
        self.commit_to(draft, env, Place::Active)
    }

    /// [`Spool::commit`] into `place`: `Hold` for a quarantined message.
    pub fn commit_to(&self, mut draft: Draft, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let result = self.commit_inner(&mut draft, env, place);
        if result.is_err() {
            let _ = fs::remove_file(self.body_path(&draft.id));
            let _ = fs::remove_file(self.env_path(&draft.id, place));
            let _ = fs::remove_file(self.dir("tmp").join(format!("{}.json", draft.id)));
        }
        // Drop removes tmp/<id>.eml if it is still there.
        result
    }

    fn commit_inner(&self, draft: &mut Draft, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let path = draft.path.clone();
        if let Some(e) = draft.error.take() {
            return Err(SpoolError::Io { what: "write", path, source: e });
        }
        let out = draft.out.as_mut().ok_or_else(|| SpoolError::Io {
            what: "write",
            path: path.clone(),
            source: io::Error::other("draft already closed"),
        })?;
        out.flush().map_err(io_err("write", &path))?;
        let per_file = self.mode == SyncMode::Fsync;
        if per_file {
            // fdatasync: the data and the size of a new file; its name
            // becomes durable with the directory fsync below.
            out.get_ref().sync_data().map_err(io_err("fsync", &path))?;
        }
        let env_tmp = self.dir("tmp").join(format!("{}.json", draft.id));
        let env_bytes = envelope_bytes(env).map_err(io_err("serialise", &env_tmp))?;
        let mut env_file = {
            let _names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            create_private(&env_tmp).map_err(io_err("create", &env_tmp))?
        };
        env_file.write_all(&env_bytes).map_err(io_err("write", &env_tmp))?;
        if per_file {
            env_file.sync_data().map_err(io_err("fsync", &env_tmp))?;
        }
        drop(env_file);
        let body = self.body_path(&draft.id);
        let env_path = self.env_path(&draft.id, place);
        {
            let _names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            fs::rename(&path, &body).map_err(io_err("rename", &path))?;
            draft.out = None; // the temp file is gone; Drop must not remove anything
            fs::rename(&env_tmp, &env_path).map_err(io_err("rename", &env_tmp))?;
        }
        // Group commit: one flush serves every commit whose renames
        // happened before it started.
        match self.mode {
            SyncMode::Fsync => {
                let dirs = [self.dir("messages"), self.dir("active")];
                self.group.sync(&|| dirs.iter().try_for_each(|d| sync_dir(d)))?;
                if place == Place::Hold {
                    // Rare (quarantine): its own fsync, outside the group.
                    sync_dir(&self.dir("hold"))?;
                }
            }
            SyncMode::Syncfs => {
                let root = self.root_dir.clone();
                let path = self.root.clone();
                self.group.sync(&|| nix::unistd::syncfs(root.as_ref()).map_err(|e| io_err("syncfs", &path)(e.into())))?;
            }
        }
        Ok(())
    }

    /// Rewrites an envelope atomically (temp file, fsync, rename, fsync dir).
    /// Fails with `NotFound` if the envelope is no longer where it was
    /// (deleted or put on hold meanwhile).
    pub fn update(&self, env: &Envelope, place: Place) -> Result<(), SpoolError> {
        let path = self.env_path(&env.id, place);
        if !path.exists() {
            return Err(SpoolError::NotFound(env.id.clone()));
        }
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

    /// Reads an envelope, wherever it is.
    pub fn load(&self, id: &QueueId) -> Result<(Envelope, Place), SpoolError> {
        for place in [Place::Active, Place::Hold] {
            let path = self.env_path(id, place);
            match fs::read(&path) {
                Ok(bytes) => return parse_envelope(&path, &bytes).map(|e| (e, place)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Err(SpoolError::NotFound(id.clone()))
    }

    /// Reads a message's text.
    pub fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, SpoolError> {
        let p = self.body_path(id);
        fs::read(&p).map_err(io_err("read", &p))
    }

    /// Removes a message (envelope first, so a crash leaves only an orphan
    /// body that start-up cleans).
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let (_, place) = self.load(id)?;
        let env = self.env_path(id, place);
        fs::remove_file(&env).map_err(io_err("remove", &env))?;
        let body = self.body_path(id);
        match fs::remove_file(&body) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &body)(e)),
            _ => Ok(()),
        }
        // No directory fsync: if a crash undoes this removal, the message
        // is delivered again (a duplicate), never lost.
    }

    /// Moves an envelope between `active/` and `hold/`.
    pub fn move_to(&self, id: &QueueId, to: Place) -> Result<bool, SpoolError> {
        let (_, place) = self.load(id)?;
        if place == to {
            return Ok(false);
        }
        let from = self.env_path(id, place);
        let dest = self.env_path(id, to);
        fs::rename(&from, &dest).map_err(io_err("rename", &from))?;
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
