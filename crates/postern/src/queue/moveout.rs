//! `postern queue move --to HOST:PORT`: drains this node's queue into
//! another node (before retiring this one) with nothing lost. Each message
//! is relayed over SMTP with its envelope (sender, pending recipients, DSN
//! parameters RET/ENVID/NOTIFY/ORCPT) by the delivery SMTP client
//! (opportunistic STARTTLS, no AUTH), and removed here only after the
//! target's 250. A recipient the target refuses or defers stays queued here,
//! untouched, and is reported.
//!
//! It never races the scheduler: the daemon holds [`SpoolLock`] while it
//! runs, and `queue move` takes the same lock, so a move needs the daemon
//! stopped and a daemon cannot start during a move (docs/scaling.md).
//!
//! May touch: the spool (through `Spool`), `DATA/queue/postern.lock`, outbound
//! SMTP to the target. RFC 5321, RFC 3461 §4 (DSN parameters passed on).

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Endpoint;
use crate::delivery::pool::route_dest;
use crate::delivery::smtp::Conn;
use crate::delivery::Outcome;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{Envelope, Place, QueueId, RcptStatus, Spool, SpoolError};

/// The lock the daemon holds while it runs and `queue move` while it moves
/// (an `flock` on `DATA/queue/postern.lock`, released when the process ends,
/// whatever way it ends).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// Why the spool lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a running daemon, or another move.
    #[error("{0} is locked: a postern daemon (or another `queue move`) is using this data directory")]
    Busy(PathBuf),
    /// The lock file cannot be opened.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl SpoolLock {
    /// Where the lock of the spool at `root` (`DATA/queue`) lives: in the
    /// spool directory, which the daemon may write after dropping privileges.
    pub fn path(root: &Path) -> PathBuf {
        root.join("postern.lock")
    }

    /// Takes the lock of the spool at `root` without waiting.
    pub fn acquire(root: &Path) -> Result<SpoolLock, LockError> {
        let path = SpoolLock::path(root);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| LockError::Io { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(SpoolLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Busy(path)),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }
}

/// The daemon's lock, taken at start: busy (another daemon, or a `queue
/// move` running) stops the start; a lock file that cannot be made is
/// logged and the daemon runs without it.
pub fn daemon_lock(spool: &Spool) -> std::io::Result<Option<SpoolLock>> {
    match SpoolLock::acquire(spool.root()) {
        Ok(l) => Ok(Some(l)),
        Err(e @ LockError::Busy(_)) => Err(std::io::Error::other(e.to_string())),
        Err(e) => {
            maillog::error(&[("error", &e.to_string()), ("action", "running without the spool lock")]);
            Ok(None)
        }
    }
}

/// What to do with one queued message. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Relay these pending recipients (indices into the envelope).
    Relay(Vec<usize>),
    /// Leave it here, for this reason.
    Keep(&'static str),
}

/// Held mail stays (a hold is a decision: release it first); mail without
/// a pending recipient stays (its bounce or notice is this node's to send).
pub fn plan(env: &Envelope, place: Place) -> Plan {
    if place == Place::Hold {
        return Plan::Keep("on hold (release it first)");
    }
    let pending: Vec<usize> = env.recipients.iter().enumerate().filter(|(_, r)| r.status == RcptStatus::Pending).map(|(i, _)| i).collect();
    if pending.is_empty() {
        return Plan::Keep("no pending recipient (a bounce or notice is owed: start the daemon once)");
    }
    Plan::Relay(pending)
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Relayed and removed here.
    Whole {
        /// The target's reply.
        reply: String,
    },
    /// Some recipients relayed (marked delivered here), the rest kept.
    Partly {
        /// Recipients relayed.
        moved: usize,
        /// Recipients still queued here.
        kept: usize,
        /// The target's reply (or the error) for a kept recipient.
        reply: String,
    },
    /// Nothing relayed; the message is queued here as before.
    Kept {
        /// Why.
        reason: String,
    },
}

impl Moved {
    /// True when nothing of the message stayed here.
    pub fn is_whole(&self) -> bool {
        matches!(self, Moved::Whole { .. })
    }
}

/// How a kept message's reason starts when the target could not be reached.
const CONNECT_FAILED: &str = "cannot connect to ";

/// One message moved (or not), with its id.
#[derive(Debug, Clone)]
pub struct Report {
    /// The message.
    pub id: QueueId,
    /// What happened.
    pub moved: Moved,
}

/// Moves `ids` (every queued message when `None`) to `to`, one SMTP
/// transaction each, one connection reused while it works. The caller
/// holds the [`SpoolLock`].
pub async fn move_all(settings: &Settings, spool: &Spool, to: &Endpoint, ids: Option<Vec<QueueId>>) -> Result<Vec<Report>, SpoolError> {
    let ids = match ids {
        Some(ids) => ids,
        None => spool.list()?.envelopes.into_iter().map(|(e, _)| e.id).collect(),
    };
    let dest = match route_dest(settings, to.clone()) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("cannot set up the connection: {e}");
            return Ok(ids.into_iter().map(|id| Report { id, moved: Moved::Kept { reason: reason.clone() } }).collect());
        }
    };
    let target = to.to_string();
    let mut conn: Option<Conn> = None;
    let mut out = Vec::new();
    // Once the target cannot be reached, the rest stay without a try each
    // (a silent target would cost a connect timeout per message).
    let mut unreachable: Option<String> = None;
    for id in ids {
        let moved = match &unreachable {
            Some(why) => {
                maillog::moved(&[("id", id.as_str()), ("to", &target), ("result", "kept"), ("reason", why)]);
                Moved::Kept { reason: why.clone() }
            }
            None => move_one(spool, &dest, &mut conn, &id, &target).await,
        };
        if conn.is_none() {
            if let Moved::Kept { reason } = &moved {
                if reason.starts_with(CONNECT_FAILED) {
                    unreachable = Some(reason.clone());
                }
            }
        }
        out.push(Report { id, moved });
    }
    if let Some(c) = conn {
        c.quit().await;
    }
    Ok(out)
}

async fn move_one(spool: &Spool, dest: &crate::delivery::smtp::Dest, conn: &mut Option<Conn>, id: &QueueId, target: &str) -> Moved {
    let kept = |reason: String| {
        maillog::moved(&[("id", id.as_str()), ("to", target), ("result", "kept"), ("reason", &reason)]);
        Moved::Kept { reason }
    };
    let (mut env, place) = match spool.load(id) {
        Ok(x) => x,
        Err(e) => return kept(e.to_string()),
    };
    let pending = match plan(&env, place) {
        Plan::Keep(why) => return kept(why.to_string()),
        Plan::Relay(p) => p,
    };
    let body = match spool.read_body(id) {
        Ok(b) => Arc::new(b),
        Err(e) => return kept(e.to_string()),
    };
    let msg = super::attempt::message(&env, body);
    let rcpts: Vec<String> = pending.iter().map(|&i| env.recipients[i].address.clone()).collect();
    if conn.is_none() {
        match Conn::open(dest).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return kept(format!("{CONNECT_FAILED}{target}: {e}")),
        }
    }
    let Some(c) = conn.as_mut() else { return kept("no connection".into()) };
    let outcomes = match c.transaction(&msg, &rcpts).await {
        Ok(o) => o,
        Err(e) => {
            *conn = None;
            return kept(format!("{target}: {e}"));
        }
    };
    let mut moved = 0;
    let mut last_refusal = None;
    for (&i, o) in pending.iter().zip(&outcomes) {
        let r = &mut env.recipients[i];
        match o {
            Outcome::Delivered(reply) => {
                r.status = RcptStatus::Delivered;
                r.last_reply = Some(format!("moved to {target}: {reply}"));
                r.remote_mta = Some(target.to_string());
                moved += 1;
            }
            Outcome::Deferred(reply) | Outcome::Failed(reply) => last_refusal = Some(reply.to_string()),
        }
    }
    let first_reply = outcomes.first().map(|o| o.reply().to_string()).unwrap_or_default();
    let owed = !env.is_finished();
    if moved == 0 {
        return kept(last_refusal.unwrap_or(first_reply));
    }
    let nrcpt = moved.to_string();
    if !owed {
        // Every recipient is the target's now: only then does the message go.
        if let Err(e) = spool.remove(id) {
            return kept(format!("relayed, but not removed here: {e} (remove it by hand: `postern queue delete {id}`)"));
        }
        maillog::moved(&[("id", id.as_str()), ("to", target), ("nrcpt", &nrcpt), ("result", "moved"), ("reply", &first_reply)]);
        return Moved::Whole { reply: first_reply };
    }
    // Recipients the target took are marked delivered (never sent twice);
    // the others stay pending here.
    let kept_n = pending.len() - moved;
    let reply = last_refusal.unwrap_or_else(|| "a bounce or notice is owed".into());
    if let Err(e) = spool.update(&env, place) {
        return kept(format!("{moved} recipients relayed, but the envelope was not updated: {e}"));
    }
    maillog::moved(&[
        ("id", id.as_str()),
        ("to", target),
        ("nrcpt", &nrcpt),
        ("result", "partly"),
        ("kept", &kept_n.to_string()),
        ("reply", &reply),
    ]);
    Moved::Partly { moved, kept: kept_n, reply }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    fn env(statuses: &[(RcptStatus, bool)]) -> Envelope {
        let recipients = statuses
            .iter()
            .enumerate()
            .map(|(i, (s, bounced))| {
                let mut r = Recipient::pending(format!("r{i}@example.net"), format!("r{i}@example.net"));
                r.status = *s;
                r.bounced = *bounced;
                r
            })
            .collect();
        Envelope {
            version: crate::spool::ENVELOPE_VERSION,
            id: QueueId::generate(),
            created: 0,
            sender: "a@example.org".into(),
            recipients,
            size: 0,
            eight_bit: false,
            smtputf8: false,
            client: String::new(),
            helo: None,
            ret: None,
            envid: None,
            quarantine: None,
            requiretls: false,
        }
    }

    #[test]
    fn what_moves() {
        use RcptStatus::*;
        type Case = (&'static [(RcptStatus, bool)], Place, Plan);
        let table: &[Case] = &[
            (&[(Pending, false)], Place::Active, Plan::Relay(vec![0])),
            (&[(Delivered, false), (Pending, false), (Failed, true), (Pending, false)], Place::Active, Plan::Relay(vec![1, 3])),
            (&[(Pending, false)], Place::Hold, Plan::Keep("on hold (release it first)")),
            (
                &[(Delivered, false), (Failed, false)],
                Place::Active,
                Plan::Keep("no pending recipient (a bounce or notice is owed: start the daemon once)"),
            ),
        ];
        for (rcpts, place, want) in table {
            assert_eq!(&plan(&env(rcpts), *place), want, "{rcpts:?} {place:?}");
        }
    }

    #[test]
    fn the_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SpoolLock::acquire(dir.path()).expect("first");
        assert!(matches!(SpoolLock::acquire(dir.path()), Err(LockError::Busy(_))));
        drop(first);
        SpoolLock::acquire(dir.path()).expect("free again");
    }
}
