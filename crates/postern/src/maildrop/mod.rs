//! The maildrop: how `sendmail`, run by any local user, hands a message to
//! the daemon (Postfix's `postdrop` + `pickup`). `DATA/maildrop` is public
//! (mode 3733: anyone may create a file, nobody but the daemon may list,
//! read or remove other people's files; the set-group-id bit gives every
//! file the daemon's group, so a 0640 file is readable by it). The face
//! writes one drop file (a small envelope and the message, see
//! docs/queue-format.md) under a temporary name, syncs it, renames it into
//! place and wakes the daemon through the public datagram socket
//! `DATA/pickup.sock`. The daemon's pickup ([`pickup`]) checks everything
//! again, trusting nothing in the file but taking the submitter's identity
//! from the file's owner, queues it with the normal durable commit, and
//! only then removes the drop file. Bad files are moved to
//! `DATA/maildrop/.bad/`, never deleted silently.
//!
//! May touch: `DATA/maildrop` (the face writes, the pickup reads and
//! removes), `DATA/pickup.sock`, the spool (pickup only), the mail log.

pub mod compose;
pub mod pickup;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The first line of every drop file: the format and its version.
pub const MAGIC: &str = "POSTERN-DROP 1";
/// The envelope part of a drop file is at most this large.
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// A drop file's mode: the owner (the submitter) and the daemon's group read it.
const FILE_MODE: u32 = 0o640;
/// The maildrop's mode: sticky, set-group-id, world-writable but not listable.
pub const DIR_MODE: u32 = 0o3733;

/// The maildrop directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("maildrop")
}

/// Where bad drop files are moved (private to the daemon).
pub fn bad_dir(data_dir: &Path) -> PathBuf {
    dir(data_dir).join(".bad")
}

/// The public wake-up socket: any datagram makes the pickup scan now.
pub fn wake_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("pickup.sock")
}

/// What went wrong with a drop file (writing it, or reading it back).
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory has no maildrop (the daemon never ran there).
    #[error("no maildrop at {} (has `postern serve` run with this data directory?)", .0.display())]
    NoMaildrop(PathBuf),
    /// Not a regular file, or one with more than one link (a link to someone else's file).
    #[error("not a regular file with one link")]
    NotPlain,
    /// Larger than `limits.max_message_size` plus the envelope.
    #[error("larger than limits.max_message_size ({0} bytes)")]
    TooBig(u64),
    /// The first line is not [`MAGIC`].
    #[error("not a drop file (no `{MAGIC}` line)")]
    BadMagic,
    /// The envelope has no end, or the message is shorter than its `size`.
    #[error("truncated")]
    Truncated,
    /// A field the format does not have. `uid` is one: the owner is the submitter.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A field given twice, or a value that is not allowed.
    #[error("bad field {0:?}")]
    BadField(String),
}

/// The envelope of a drop file: what the command line said. Nothing in
/// it is trusted; the pickup checks each value again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropEnvelope {
    /// `-f`/`-r` as given (`Some("")` for the null sender).
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// `-t`.
    pub from_headers: bool,
    /// Recipients as given on the command line.
    pub recipients: Vec<String>,
}

/// A parsed drop file.
#[derive(Debug, PartialEq, Eq)]
pub struct DropFile {
    /// The envelope.
    pub envelope: DropEnvelope,
    /// The message (CRLF text).
    pub message: Vec<u8>,
}

/// Encodes a drop file; a value with a line break is refused.
pub fn encode(env: &DropEnvelope, message: &[u8]) -> Result<Vec<u8>, DropError> {
    let mut head = format!("{MAGIC}\nsize {}\n", message.len());
    let mut field = |k: &str, v: &str| {
        if v.contains(['\n', '\r', '\0']) {
            return Err(DropError::BadField(k.to_string()));
        }
        head.push_str(&format!("{k} {v}\n"));
        Ok(())
    };
    if let Some(s) = &env.sender {
        field("sender", s)?;
    }
    if let Some(n) = &env.full_name {
        field("name", n)?;
    }
    if env.from_headers {
        field("flag", "t")?;
    }
    for r in &env.recipients {
        field("rcpt", r)?;
    }
    head.push('\n');
    if head.len() > MAX_ENVELOPE {
        return Err(DropError::BadField("rcpt".into()));
    }
    let mut out = head.into_bytes();
    out.extend_from_slice(message);
    Ok(out)
}

/// Parses a drop file; `max_message` is `limits.max_message_size`.
pub fn parse(bytes: &[u8], max_message: u64) -> Result<DropFile, DropError> {
    let window = &bytes[..bytes.len().min(MAX_ENVELOPE)];
    let end = window.windows(2).position(|w| w == b"\n\n").ok_or(if bytes.len() >= MAX_ENVELOPE {
        DropError::BadField("envelope too large".into())
    } else {
        DropError::Truncated
    })?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| DropError::BadField("not UTF-8".into()))?;
    let message = &bytes[end + 2..];
    let mut lines = head.split('\n');
    if lines.next() != Some(MAGIC) {
        return Err(DropError::BadMagic);
    }
    let mut env = DropEnvelope::default();
    let mut size: Option<u64> = None;
    for line in lines {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        let dup = |set: bool| if set { Err(DropError::BadField(k.to_string())) } else { Ok(()) };
        match k {
            "size" => {
                dup(size.is_some())?;
                size = Some(v.parse().map_err(|_| DropError::BadField(k.to_string()))?);
            }
            "sender" => {
                dup(env.sender.is_some())?;
                env.sender = Some(v.to_string());
            }
            "name" => {
                dup(env.full_name.is_some())?;
                env.full_name = Some(v.to_string());
            }
            "flag" if v == "t" => env.from_headers = true,
            "rcpt" if !v.is_empty() => env.recipients.push(v.to_string()),
            "flag" | "rcpt" => return Err(DropError::BadField(k.to_string())),
            _ => return Err(DropError::UnknownField(k.chars().take(40).collect())),
        }
    }
    let size = size.ok_or(DropError::BadField("size".into()))?;
    if size > max_message {
        return Err(DropError::TooBig(max_message));
    }
    if (message.len() as u64) < size {
        return Err(DropError::Truncated);
    }
    if (message.len() as u64) > size {
        return Err(DropError::BadField("size".into()));
    }
    Ok(DropFile { envelope: env, message: message.to_vec() })
}

/// A fresh random name: 32 hex digits (the pickup takes nothing else).
fn fresh_name() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// True for a name the face gives a finished drop file.
pub fn is_drop_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes a drop file into `data_dir`'s maildrop: temporary name, write,
/// fsync, rename, then the directory entry made durable. Returns its name.
/// Runs as the submitting user.
pub fn write(data_dir: &Path, env: &DropEnvelope, message: &[u8]) -> Result<String, DropError> {
    let dir = dir(data_dir);
    if !dir.is_dir() {
        return Err(DropError::NoMaildrop(dir));
    }
    let bytes = encode(env, message)?;
    let name = fresh_name();
    let tmp = dir.join(format!(".tmp-{name}"));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DropError::Io { what, path, source }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    let done = (|| {
        // Whatever the umask: the daemon reads it through the group.
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).map_err(io("chmod", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        // The data must be on disk before the name says the file is complete.
        f.sync_all().map_err(io("fsync", &tmp))?;
        let path = dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // The rename must be durable before we exit 0. A user cannot open
        // the unlistable maildrop to fsync it; syncfs (the whole file
        // system, through the file) is the way that needs no read right.
        match std::fs::File::open(&dir) {
            Ok(d) => d.sync_all().map_err(io("fsync", &dir)),
            Err(_) => nix::unistd::syncfs(&f).map_err(|e| DropError::Io { what: "syncfs", path: path.clone(), source: e.into() }),
        }
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map(|()| name)
}

/// Wakes a running daemon's pickup (best effort: without a daemon, the
/// file waits and the pickup finds it at start).
pub fn wake(data_dir: &Path) {
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = s.send_to(b"w", wake_socket(data_dir));
    }
}

/// Makes the data directory traversable (0711) and the maildrop public
/// (3733, group of the daemon), with a private `.bad` (0700). Called by the
/// daemon after it dropped privileges (it owns them), and by root's
/// `sendmail` before the daemon first ran. Everything else in the data
/// directory stays private: postern creates it 0700/0600.
pub fn prepare_dirs(data_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(data_dir)?;
    set(data_dir, 0o711)?;
    let d = dir(data_dir);
    std::fs::DirBuilder::new().mode(DIR_MODE).create(&d).or_else(|e| if d.is_dir() { Ok(()) } else { Err(e) })?;
    set(&d, DIR_MODE)?;
    let bad = bad_dir(data_dir);
    std::fs::DirBuilder::new().mode(0o700).create(&bad).or_else(|e| if bad.is_dir() { Ok(()) } else { Err(e) })?;
    set(&bad, 0o700)
}

#[cfg(test)]
mod tests;
