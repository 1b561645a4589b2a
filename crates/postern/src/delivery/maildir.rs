//! Local delivery into Maildirs (the maildir(5) layout: `tmp/`, `new/`,
//! `cur/`). The message is written to `tmp/` and renamed into `new/`; then
//! one `syncfs(2)` of the mailboxes' file system makes the file and its name
//! durable before we call it delivered (and before the queue forgets it).
//! Deliveries running at the same time share that flush (group commit, the
//! `GroupSync` type, one per device): with 20 deliveries in flight one device flush
//! serves them all, where a file fsync plus a `new/` fsync cost two each.
//!
//! May touch: the Maildir root (create directories, write messages). The
//! stored copy gets `Return-Path:` and `Delivered-To:` on top and LF line
//! ends, as mail readers expect of Maildir files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::reply::made;
use super::{Attempt, BoxFuture, Message, Outcome, Transport};
use crate::aliases::is_local_name;

/// The Maildir transport.
pub struct Maildir {
    /// Root: mailboxes are `root/<user>/`.
    pub root: PathBuf,
    /// Our host name (for unique file names).
    pub hostname: String,
    /// The static local domains (`local.domains`), whose mailboxes are
    /// `root/<user>/`; any other domain reaching this transport is a
    /// virtual domain of the account directory, whose mailboxes are
    /// `root/<domain>/<user>/` (so `alice@a.example` and `alice@b.example`
    /// stay apart). `None` (a `[[route]]` Maildir): always `root/<user>/`.
    pub static_domains: Option<std::collections::HashSet<String>>,
}

impl Transport for Maildir {
    fn name(&self) -> String {
        "maildir".into()
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let root = self.root.clone();
            let host = self.hostname.clone();
            let statics = self.static_domains.clone();
            let msg = msg.clone();
            let rcpts = rcpts.to_vec();
            let n = rcpts.len();
            let outcomes = tokio::task::spawn_blocking(move || {
                // The devices the delivered files are on, each with the
                // oldest flush-error generation read before writing.
                let mut flushes: Vec<(Arc<DeviceFlush>, u64)> = Vec::new();
                let mut outcomes: Vec<Outcome> = rcpts
                    .iter()
                    .map(|r| {
                        let (o, placed) = deliver_one(&mailbox_root(&root, statics.as_ref(), r), &host, &msg, r);
                        if let Some((dev, gen)) = placed {
                            match flushes.iter_mut().find(|(d, _)| Arc::ptr_eq(d, &dev)) {
                                Some((_, g)) => *g = (*g).min(gen),
                                None => flushes.push((dev, gen)),
                            }
                        }
                        o
                    })
                    .collect();
                // Nothing is delivered until it is on disk.
                if let Some(e) = flushes.iter().find_map(|(d, gen)| d.flush(*gen).err()) {
                    for (o, r) in outcomes.iter_mut().zip(&rcpts) {
                        if matches!(o, Outcome::Delivered(_)) {
                            *o = if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
                                Outcome::Deferred(made::mailbox_full(r, &e))
                            } else {
                                Outcome::Deferred(made::maildir_write_failed(r, &root, &e))
                            };
                        }
                    }
                }
                outcomes
            })
            .await
            .unwrap_or_else(|e| vec![Outcome::Deferred(made::maildir_task_failed(&e)); n]);
            Attempt { outcomes, tls: None, dsn: false, relay: None }
        })
    }
}

/// The directory holding `rcpt`'s mailbox: `root`, or `root/<domain>` for
/// a virtual domain (see [`Maildir::static_domains`]). A domain that could
/// name another directory (`/`, a leading dot, `..`) stays in `root/`,
/// where the mailbox-name check still applies.
fn mailbox_root(root: &Path, statics: Option<&std::collections::HashSet<String>>, rcpt: &str) -> PathBuf {
    let domain = rcpt.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    let safe = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    match statics {
        Some(s) if safe && !s.contains(&domain) => root.join(domain),
        _ => root.to_path_buf(),
    }
}

/// Places one message; a delivered outcome comes with the flush (and the
/// generation read before writing) that must succeed before it counts.
fn deliver_one(root: &Path, host: &str, msg: &Message, rcpt: &str) -> (Outcome, Option<(Arc<DeviceFlush>, u64)>) {
    let user = rcpt.rsplit_once('@').map(|(l, _)| l).unwrap_or(rcpt).to_ascii_lowercase();
    if !is_local_name(&user) {
        return (Outcome::Failed(made::mailbox_name_not_allowed(rcpt)), None);
    }
    let dir = root.join(&user);
    match place_in_maildir(&dir, host, msg, rcpt) {
        Ok((file, flush)) => (Outcome::Delivered(made::delivered_to_maildir(&file)), Some(flush)),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => (Outcome::Deferred(made::mailbox_full(rcpt, &e)), None),
        Err(e) => (Outcome::Deferred(made::maildir_write_failed(rcpt, &dir, &e)), None),
    }
}

fn unique_name(host: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let host: String = host.chars().map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    format!(
        "{}.M{}P{}Q{}R{:08x}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// Writes one message into the Maildir `dir` and makes it durable; returns
/// the file in `new/`.
pub fn write_maildir(dir: &Path, host: &str, msg: &Message, rcpt: &str) -> std::io::Result<PathBuf> {
    let (dest, (flush, gen)) = place_in_maildir(dir, host, msg, rcpt)?;
    flush.flush(gen)?;
    Ok(dest)
}

/// The shared flush of one file system (device): a handle on a directory
/// of it, opened once, before any file this flush covers was written (the
/// kernel reports a write-back error to each handle opened before it), and
/// the group commit that lets concurrent deliveries share one `syncfs`.
/// Its own group per device: a leader flushes only its device.
pub(crate) struct DeviceFlush {
    dev: u64,
    dir: File,
    group: crate::spool::GroupSync,
}

impl DeviceFlush {
    /// The flush for device `dev` (made on first use, with a handle on
    /// `dir`, a directory of that device).
    fn of(dev: u64, dir: &Path) -> std::io::Result<Arc<DeviceFlush>> {
        static DEVICES: std::sync::Mutex<Vec<Arc<DeviceFlush>>> = std::sync::Mutex::new(Vec::new());
        let mut devices = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = devices.iter().find(|d| d.dev == dev) {
            return Ok(d.clone());
        }
        let d = Arc::new(DeviceFlush { dev, dir: File::open(dir)?, group: Default::default() });
        devices.push(d.clone());
        Ok(d)
    }

    /// `syncfs`, shared with every delivery that placed its file before
    /// the flush started; fails if any flush of this device failed since
    /// `gen` was read.
    fn flush(&self, gen: u64) -> std::io::Result<()> {
        self.group
            .sync(gen, &|| {
                nix::unistd::syncfs(&self.dir).map_err(|e| crate::spool::SpoolError::Io {
                    what: "syncfs",
                    path: PathBuf::new(),
                    source: e.into(),
                })
            })
            .map_err(|e| match e {
                crate::spool::SpoolError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })
    }
}

/// Writes one message into the Maildir `dir`: `tmp/`, then renamed into
/// `new/`. Not durable until the returned flush succeeds.
fn place_in_maildir(dir: &Path, host: &str, msg: &Message, rcpt: &str) -> std::io::Result<(PathBuf, (Arc<DeviceFlush>, u64))> {
    use std::io::ErrorKind::NotFound;
    use std::os::unix::fs::MetadataExt;
    let name = unique_name(host);
    let tmp = dir.join("tmp").join(&name);
    // The directories are made when a delivery finds them missing (the
    // first one, or after a user removed them): one look at cur/ (which
    // nothing here would notice missing otherwise), and tmp/ and new/ when
    // the create or the rename finds them gone.
    if fs::symlink_metadata(dir.join("cur")).is_err() {
        // Best effort: delivery needs only tmp/ and new/ (checked below),
        // and a mailbox postern may not write into still takes mail.
        let _ = make_maildir(dir);
    }
    let open = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp);
    let mut f = match open() {
        Err(e) if e.kind() == NotFound => {
            make_maildir(dir)?;
            open()?
        }
        r => r?,
    };
    let placed = (|| {
        // The device the file is on (tmp/ and new/ share it: a rename does
        // not cross devices), and its error generation before anything is
        // written.
        let flush = DeviceFlush::of(f.metadata()?.dev(), &dir.join("tmp"))?;
        let gen = flush.group.generation();
        let mut out = Vec::with_capacity(msg.body.len() + 128);
        out.extend_from_slice(format!("Return-Path: <{}>\nDelivered-To: {}\n", msg.sender, rcpt).as_bytes());
        crlf_to_lf(&msg.body, &mut out);
        f.write_all(&out)?;
        let dest = dir.join("new").join(format!("{name},S={}", out.len()));
        match fs::rename(&tmp, &dest) {
            Err(e) if e.kind() == NotFound => {
                make_maildir(dir)?;
                fs::rename(&tmp, &dest)?;
            }
            r => r?,
        }
        Ok((dest, (flush, gen)))
    })();
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed
}

/// Makes the Maildir's directories: 0700 whatever the umask (review F13),
/// a mailbox is private to its owner (the messages are 0600).
fn make_maildir(dir: &Path) -> std::io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join(sub))?;
    }
    Ok(())
}

/// Maildir files have Unix line ends: every CR LF becomes LF (a lone CR
/// stays). The text between line ends is copied a run at a time.
fn crlf_to_lf(input: &[u8], out: &mut Vec<u8>) {
    let mut from = 0;
    for at in memchr::memmem::find_iter(input, b"\r\n") {
        out.extend_from_slice(&input[from..at]);
        from = at + 1; // the LF starts the next run
    }
    out.extend_from_slice(&input[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        for (input, want) in [
            (&b""[..], &b""[..]),
            (b"a\r\nb\r\n", b"a\nb\n"),
            (b"\r\n\r\n", b"\n\n"),
            (b"a\rb\r\r\nc\n\r", b"a\rb\r\nc\n\r"),
            (b"no line end", b"no line end"),
        ] {
            let mut out = b"X".to_vec();
            crlf_to_lf(input, &mut out);
            assert_eq!(out[1..], *want, "{:?}", String::from_utf8_lossy(input));
        }
    }
    use crate::spool::QueueId;
    use std::sync::Arc;

    fn test_message() -> Message {
        Message {
            id: QueueId::generate(),
            sender: "s@x.example".into(),
            body: Arc::new(b"Subject: hi\r\n\r\nbody\r\n".to_vec()),
            eight_bit: false,
            smtputf8: false,
            dsn: Default::default(),
            requiretls: false,
            tls_required_no: false,
        }
    }

    #[test]
    fn virtual_domains_get_their_own_directory() {
        let root = Path::new("/m");
        let statics: std::collections::HashSet<String> = ["here.example".to_string()].into();
        for (rcpt, statics, want) in [
            ("alice@here.example", Some(&statics), "/m"),
            ("alice@A.example", Some(&statics), "/m/a.example"),
            ("alice@b.example", Some(&statics), "/m/b.example"),
            ("alice@b.example", None, "/m"),
            ("alice@..", Some(&statics), "/m"),
            ("alice@.hidden", Some(&statics), "/m"),
            ("alice@a/b", Some(&statics), "/m"),
            ("alice", Some(&statics), "/m"),
        ] {
            assert_eq!(mailbox_root(root, statics, rcpt), Path::new(want), "{rcpt}");
        }
    }

    #[test]
    fn writes_new_file_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let msg = test_message();
        let (out, flush) = deliver_one(dir.path(), "h", &msg, "alice@localhost");
        assert!(matches!(out, Outcome::Delivered(_)), "{out:?}");
        let (flush, gen) = flush.expect("a delivered file comes with its flush");
        flush.flush(gen).unwrap();
        let files: Vec<_> = fs::read_dir(dir.path().join("alice/new")).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        let text = fs::read_to_string(files[0].path()).unwrap();
        assert_eq!(text, "Return-Path: <s@x.example>\nDelivered-To: alice@localhost\nSubject: hi\n\nbody\n");
        assert!(fs::read_dir(dir.path().join("alice/tmp")).unwrap().next().is_none());
        assert!(matches!(deliver_one(dir.path(), "h", &msg, "../x@localhost"), (Outcome::Failed(_), None)));
    }

    /// The directories are made when missing, not checked every time: a
    /// mailbox whose directories were removed (all, or any one alone) gets
    /// them back with the next delivery.
    #[test]
    fn missing_directories_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let msg = test_message();
        let mbox = dir.path().join("carol");
        let count = |sub: &str| fs::read_dir(mbox.join(sub)).map(|d| d.count()).unwrap_or(0);
        write_maildir(&mbox, "h", &msg, "carol@localhost").unwrap();
        for sub in ["new", "tmp", "cur"] {
            let before = if sub == "new" { 0 } else { count("new") };
            fs::remove_dir_all(mbox.join(sub)).unwrap();
            write_maildir(&mbox, "h", &msg, "carol@localhost").unwrap();
            assert_eq!((count("new"), count("tmp")), (before + 1, 0), "{sub}/ removed");
            assert!(mbox.join(sub).is_dir(), "{sub}/ made again");
        }
        fs::remove_dir_all(&mbox).unwrap();
        write_maildir(&mbox, "h", &msg, "carol@localhost").unwrap();
        assert_eq!((count("new"), count("tmp")), (1, 0));
        assert!(mbox.join("cur").is_dir());
    }

    #[test]
    fn mailboxes_are_private_whatever_the_umask() {
        use nix::sys::stat::{umask, Mode};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let msg = test_message();
        let old = umask(Mode::empty());
        let path = write_maildir(&dir.path().join("root/bob"), "h", &msg, "bob@localhost");
        umask(old);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path.unwrap()), 0o600, "message");
        for d in ["root", "root/bob", "root/bob/tmp", "root/bob/new", "root/bob/cur"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
    }
}
