//! What the daemon does for the sendmail modes that reach it over the
//! control socket: `-qR/-qS/-qI` (flush the matching messages) and `-bi` /
//! `newaliases` (re-read the aliases file), `-v` (a message's state), plus the aliases watch that
//! picks up an edited aliases file without SIGHUP or `newaliases`.
//!
//! May touch: the spool (reads the envelope list), the aliases file (read).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::aliases::Aliases;
use crate::control::FlushMatch;
use crate::maillog;
use crate::queue::Scheduler;
use crate::spool::{Place, QueueId, RcptStatus, Spool};
use crate::state::Shared;

/// How often the aliases file is checked for changes.
pub(super) const ALIASES_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Makes every active message matching `what` due now; returns how many.
pub(super) fn flush_matching(spool: &Spool, scheduler: &Scheduler, what: &FlushMatch) -> usize {
    let listing = match spool.list() {
        Ok(l) => l,
        Err(e) => {
            maillog::error(&[("error", &e.to_string())]);
            return 0;
        }
    };
    let has = |hay: &str, needle: &str| hay.to_ascii_lowercase().contains(&needle.to_ascii_lowercase());
    let mut n = 0;
    for (env, place) in listing.envelopes {
        let hit = place == Place::Active
            && match what {
                FlushMatch::Recipient(t) => env.recipients.iter().any(|r| r.status == RcptStatus::Pending && has(&r.address, t)),
                FlushMatch::Sender(t) => has(&env.sender, t),
                FlushMatch::Id(t) => has(env.id.as_str(), t),
            };
        if hit {
            scheduler.kick(env.id.clone());
            n += 1;
        }
    }
    n
}

/// A message's state for `sendmail -v`: from the spool while queued, from
/// the scheduler's memory once finished.
pub(super) fn status(spool: &Spool, scheduler: &Scheduler, id: &QueueId) -> Option<String> {
    let (env, place) = match spool.load(id) {
        Ok((env, Place::Active)) => (env, "active"),
        Ok((env, Place::Hold)) => (env, "hold"),
        Err(_) => (scheduler.finished(id)?, "done"),
    };
    let rcpts: Vec<_> = env
        .recipients
        .iter()
        .map(|r| {
            let status = match r.status {
                RcptStatus::Pending => "pending",
                RcptStatus::Delivered => "delivered",
                RcptStatus::Failed => "failed",
            };
            serde_json::json!({"to": r.address, "status": status, "attempts": r.attempts, "reply": r.last_reply})
        })
        .collect();
    Some(serde_json::json!({"place": place, "recipients": rcpts}).to_string())
}

/// The identity of the aliases file: changes when it is edited or replaced.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// Re-reads the aliases file into the running settings; logs
/// `reload aliases=N`, or the error with `action="keeping old aliases"`.
pub(super) fn reload_aliases(shared: &Shared) -> Result<usize, String> {
    let current = shared.settings();
    let path = current.aliases_path();
    let loaded = if path.exists() || current.config.local.aliases.is_some() { Aliases::load(&path) } else { Ok(Aliases::default()) };
    match loaded {
        Ok(aliases) => {
            let n = aliases.len();
            let mut new = (*current).clone();
            new.aliases = aliases;
            shared.settings.replace(new);
            maillog::reload(&[("aliases", &n.to_string()), ("file", &path.display().to_string())]);
            Ok(n)
        }
        Err(e) => {
            maillog::reload(&[("aliases", "error"), ("error", &e.to_string()), ("action", "keeping old aliases")]);
            Err(e.to_string())
        }
    }
}

/// Polls the aliases file every [`ALIASES_WATCH_INTERVAL`]; a changed
/// file (mtime, size or inode) is reloaded as by `newaliases`.
pub(super) async fn watch_aliases(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut last = stamp(&shared.settings().aliases_path());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ALIASES_WATCH_INTERVAL) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        let now = stamp(&shared.settings().aliases_path());
        if now != last {
            last = now;
            let _ = reload_aliases(&shared);
        }
    }
}
