//! The daemon's pickup: takes drop files from `DATA/maildrop` into the
//! queue. It scans at start (mail dropped while the daemon was stopped),
//! whenever a datagram arrives on the public `DATA/pickup.sock` (every
//! `sendmail` sends one), and every `local.pickup_interval` as a fallback.
//!
//! Each file is opened without following links and must be a regular
//! file with one link; its owner's uid is the submitter (the only identity
//! trusted: a uid written inside the file is refused). Then the same checks
//! as the `sendmail` face (size, address syntax, local recipients), the
//! `local.sendmail_milters`, the durable queue commit, a `queued ...
//! client=local uid=N` line, and only then the file is removed. A file that
//! can never be queued is moved to `DATA/maildrop/.bad/` with an `error`
//! line; a temporary failure (disk full, a milter's 4xx) leaves it for the
//! next scan.
//!
//! May touch: `DATA/maildrop`, `DATA/pickup.sock`, the spool, the milters'
//! sockets, the mail log.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, watch};

use super::compose::{compose, ComposeError, Headers};
use super::{bad_dir, dir, parse, wake_socket, DropError, MAX_ENVELOPE};
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{QueueId, Spool};
use crate::state::SettingsHandle;

/// How many drop-name -> queue-id pairs [`queued_as`] remembers.
const REMEMBERED: usize = 256;

/// The last drop files queued, newest last: `sendmail -v` asks for its
/// message's queue id by drop name (control command `dropped NAME`).
static PICKED: std::sync::Mutex<std::collections::VecDeque<(String, QueueId)>> = std::sync::Mutex::new(std::collections::VecDeque::new());

/// The queue id a recently picked-up drop file got, if any.
pub fn queued_as(name: &str) -> Option<QueueId> {
    let g = PICKED.lock().unwrap_or_else(|p| p.into_inner());
    g.iter().rev().find(|(n, _)| n == name).map(|(_, id)| id.clone())
}

fn remember(name: &str, id: &QueueId) {
    let mut g = PICKED.lock().unwrap_or_else(|p| p.into_inner());
    if g.len() >= REMEMBERED {
        g.pop_front();
    }
    g.push_back((name.to_string(), id.clone()));
}

/// A temporary drop file older than this was abandoned.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// What became of one drop file.
#[derive(Debug)]
pub enum Picked {
    /// Queued under this id (the file is removed).
    Queued(QueueId),
    /// A milter discarded it (logged; the file is removed).
    Discarded,
    /// It can never be queued: moved aside.
    Bad(String),
    /// Try again at the next scan (the file stays).
    Later(String),
}

impl From<DropError> for Picked {
    fn from(e: DropError) -> Picked {
        Picked::Bad(e.to_string())
    }
}

impl From<ComposeError> for Picked {
    fn from(e: ComposeError) -> Picked {
        Picked::Bad(e.to_string())
    }
}

/// Runs the pickup until shutdown. `queued` is the scheduler's channel.
pub async fn run(settings: SettingsHandle, spool: Spool, queued: mpsc::UnboundedSender<QueueId>, mut shutdown: watch::Receiver<bool>) {
    let data_dir = settings.current().data_dir.clone();
    if let Err(e) = super::prepare_dirs(&data_dir) {
        maillog::error(&[("error", &format!("maildrop {}: {e}", dir(&data_dir).display())), ("action", "local users cannot submit")]);
    }
    let sock_path = wake_socket(&data_dir);
    let _ = std::fs::remove_file(&sock_path);
    let sock = match UnixDatagram::bind(&sock_path) {
        Ok(s) => {
            // Public: any local user may wake the pickup (it only scans).
            let _ = std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666));
            Some(s)
        }
        Err(e) => {
            maillog::error(&[("error", &format!("pickup socket {}: {e}", sock_path.display())), ("action", "scanning on a timer only")]);
            None
        }
    };
    let mut buf = [0u8; 16];
    loop {
        let s = settings.current();
        scan(&s, &spool, &queued).await;
        let interval = s.config.local.pickup_interval.max(Duration::from_secs(1));
        let wake = async {
            match &sock {
                Some(sock) => {
                    let _ = sock.recv(&mut buf).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|v| *v) => break,
        }
    }
    let _ = std::fs::remove_file(&sock_path);
}

/// One scan: up to `local.pickup_batch` files, one at a time.
async fn scan(settings: &std::sync::Arc<Settings>, spool: &Spool, queued: &mpsc::UnboundedSender<QueueId>) {
    let d = dir(&settings.data_dir);
    let Ok(rd) = std::fs::read_dir(&d) else { return };
    let all: Vec<String> = rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    // A `.tmp-` file a day old is a `sendmail` that died while writing.
    for stale in all.iter().filter(|n| n.starts_with(".tmp-")) {
        let age = std::fs::symlink_metadata(d.join(stale)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > STALE_TEMP) {
            move_aside(&settings.data_dir, stale, "unfinished drop file (the sendmail writing it died)");
        }
    }
    let mut names: Vec<String> = all.into_iter().filter(|n| super::is_drop_name(n)).collect();
    names.sort();
    names.truncate(settings.config.local.pickup_batch.max(1));
    for name in names {
        let (s, sp) = (settings.clone(), spool.clone());
        let handle = tokio::runtime::Handle::current();
        let n = name.clone();
        let picked = tokio::task::spawn_blocking(move || take(&s, &sp, &n, &handle)).await;
        match picked {
            Ok(Picked::Queued(id)) => {
                let _ = queued.send(id);
            }
            Ok(Picked::Discarded) => {}
            Ok(Picked::Bad(why)) => move_aside(&settings.data_dir, &name, &why),
            Ok(Picked::Later(why)) => {
                maillog::error(&[("drop", &name), ("error", &why), ("action", "will retry")]);
            }
            Err(e) => maillog::error(&[("drop", &name), ("error", &format!("pickup task: {e}"))]),
        }
    }
}

/// Moves a bad drop file to `.bad/`, with an `error` line.
fn move_aside(data_dir: &Path, name: &str, why: &str) {
    let to = bad_dir(data_dir).join(name);
    let action = match std::fs::rename(dir(data_dir).join(name), &to) {
        Ok(()) => format!("moved to {}", to.display()),
        Err(e) => format!("cannot move it aside: {e}"),
    };
    maillog::error(&[("drop", name), ("error", why), ("action", &action)]);
}

/// Reads one drop file: no links followed, a regular file with one link,
/// bounded; returns the owner's uid and the bytes.
pub fn read_drop(path: &Path, max_message: u64) -> Result<(u32, Vec<u8>), DropError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| DropError::Io { what, path, source }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(io("open"))?;
    let meta = f.metadata().map_err(io("stat"))?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(DropError::NotPlain);
    }
    let cap = max_message + MAX_ENVELOPE as u64;
    if meta.len() > cap {
        return Err(DropError::TooBig(max_message));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(cap + 1).read_to_end(&mut bytes).map_err(io("read"))?;
    if bytes.len() as u64 > cap {
        return Err(DropError::TooBig(max_message));
    }
    Ok((meta.uid(), bytes))
}

/// Takes one drop file into the queue (blocking: file I/O, fsync, and the
/// milter conversation on `handle`).
pub fn take(settings: &Settings, spool: &Spool, name: &str, handle: &tokio::runtime::Handle) -> Picked {
    let path = dir(&settings.data_dir).join(name);
    let max = settings.config.limits.max_message_size;
    let (uid, bytes) = match read_drop(&path, max) {
        Ok(v) => v,
        // Gone meanwhile (another scan): nothing to do.
        Err(DropError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Picked::Discarded,
        Err(e) => return e.into(),
    };
    let drop = match parse(&bytes, max) {
        Ok(d) => d,
        Err(e) => return e.into(),
    };
    let e = &drop.envelope;
    let h = Headers { from_headers: e.from_headers, full_name: e.full_name.as_deref(), uid };
    let c = match compose(settings, e.sender.as_deref(), &e.recipients, &drop.message, h) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let uid_s = uid.to_string();
    // DKIM: local submissions are ours to sign; a failure leaves the drop file for the next scan.
    let mut dkim = None;
    let mut size = c.text.len();
    let picked = if settings.config.local.sendmail_milters.is_empty() {
        let text = match crate::mailauth::sign::sign(&settings.dkim, &c.text, &c.sender) {
            Ok(Some(s)) => {
                dkim = Some(s.labels.join(","));
                std::borrow::Cow::Owned([s.header.as_bytes(), &c.text].concat())
            }
            Ok(None) => std::borrow::Cow::Borrowed(&c.text),
            Err(e) => return Picked::Later(e.to_string()),
        };
        size = text.len();
        match crate::spool::enqueue(spool, &c.sender, &c.rcpts, &text, "local") {
            Ok(id) => Picked::Queued(id),
            Err(e) => Picked::Later(e.to_string()),
        }
    } else {
        filtered(settings, spool, c.text.clone(), c.sender.clone(), c.rcpts.clone(), &uid_s, handle, &mut dkim)
    };
    if let Picked::Queued(id) = &picked {
        let (size, nrcpt) = (size.to_string(), c.rcpts.len().to_string());
        let mut fields = vec![
            ("id", id.as_str()),
            ("from", c.sender.as_str()),
            ("size", size.as_str()),
            ("nrcpt", nrcpt.as_str()),
            ("client", "local"),
            ("uid", uid_s.as_str()),
            ("drop", name),
        ];
        if let Some(d) = &dkim {
            fields.push(("dkim", d));
        }
        maillog::queued(&fields);
        remember(name, id);
    }
    if matches!(picked, Picked::Queued(_) | Picked::Discarded) {
        // Only now: the message is durable in the queue (or was discarded, logged).
        if let Err(e) = std::fs::remove_file(&path) {
            maillog::error(&[("drop", name), ("error", &format!("cannot remove after queueing: {e}"))]);
        }
    }
    picked
}

/// Queues through `local.sendmail_milters` (Postfix `non_smtpd_milters`),
/// DKIM-signing after their changes (`dkim`: the signatures made).
#[allow(clippy::too_many_arguments)]
fn filtered(
    settings: &Settings,
    spool: &Spool,
    text: Vec<u8>,
    mut sender: String,
    mut rcpts: Vec<String>,
    uid: &str,
    handle: &tokio::runtime::Handle,
    dkim: &mut Option<String>,
) -> Picked {
    use crate::milter::{filter_local, rewrite_draft, Verdict};
    let cfgs = settings.config.milters_named(&settings.config.local.sendmail_milters);
    let mut draft = match spool.draft() {
        Ok(d) => d,
        Err(e) => return Picked::Later(e.to_string()),
    };
    draft.write(&text);
    let max = settings.config.limits.max_message_size;
    let out = handle.block_on(filter_local(&cfgs, &settings.hostname, &mut draft, &sender, &rcpts, max));
    match out.verdict {
        Verdict::Continue => {}
        Verdict::Discard => {
            maillog::discarded(&[("id", draft.id.as_str()), ("from", &sender), ("client", "local"), ("uid", uid)]);
            return Picked::Discarded;
        }
        Verdict::Reject(r) | Verdict::Close(r) if r.is_permanent() => return Picked::Bad(format!("refused by a milter: {}", r.summary())),
        Verdict::Reject(r) | Verdict::Close(r) => return Picked::Later(format!("a milter said: {}", r.summary())),
    }
    let mut eight_bit = text.iter().any(|&b| b >= 0x80);
    if let Some(rw) = &out.rewrite {
        if let Err(e) = rewrite_draft(&mut draft, rw) {
            return Picked::Later(e.to_string());
        }
        eight_bit |= rw.body.as_ref().is_some_and(|b| b.iter().any(|&c| c >= 0x80));
    }
    let bare = |a: &str| a.trim().trim_start_matches('<').trim_end_matches('>').to_string();
    if let Some((from, _)) = &out.change_from {
        sender = bare(from);
    }
    for d in &out.del_rcpts {
        rcpts.retain(|r| !r.eq_ignore_ascii_case(&bare(d)));
    }
    for (a, _) in &out.add_rcpts {
        let a = bare(a);
        if postern_wire::Mailbox::parse(&a, true).is_ok() && !rcpts.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
            rcpts.push(a);
        }
    }
    if rcpts.is_empty() {
        maillog::discarded(&[
            ("id", draft.id.as_str()),
            ("from", &sender),
            ("client", "local"),
            ("uid", uid),
            ("reason", "milters removed every recipient"),
        ]);
        return Picked::Discarded;
    }
    match crate::mailauth::sign::sign_draft(&settings.dkim, &mut draft, &sender) {
        Ok(d) => *dkim = d,
        Err(e) => return Picked::Later(e),
    }
    let quarantine = out.quarantine.map(|(m, reason)| format!("quarantined by milter {m}: {reason}"));
    match crate::spool::enqueue_draft(spool, draft, &sender, &rcpts, "local", eight_bit, quarantine) {
        Ok(id) => Picked::Queued(id),
        Err(e) => Picked::Later(e.to_string()),
    }
}
