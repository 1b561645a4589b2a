//! The control socket `DATA/control.sock` (root and the daemon's user only):
//! how `postern queue …`, `config reload`, `status`, `log reopen` and the
//! root-run sendmail modes (`-q`, `-bi`, `-v`) reach a running daemon. One
//! line in, one line out:
//!
//! ```text
//! flush            -> ok N        (every queued message is due now)
//! flush <ID>       -> ok          (that message is due now)
//! kick <ID>        -> ok          (a new or released message is waiting)
//! reload           -> ok changed=K,K [restart_needed=K] | partial changed=... tls=error error=... | error error=...
//! reload-tls       -> ok | error <text>  (certificates, CAs, CRLs only)
//! flush-match rcpt|sender|id <TEXT>
//!                  -> ok N        (messages whose pending recipient, sender
//!                                  or queue id contains TEXT are due now)
//! reload-aliases   -> ok N | error <text>  (N aliases now active)
//! status <ID>      -> ok <JSON> | error unknown id   (queued or recently finished:
//!                     {"place":"active|hold|done","recipients":[{"to","status","attempts","reply"}]})
//! dropped <NAME>   -> ok <ID> | error not picked up yet  (the queue id a drop file got)
//! reopen-log       -> ok | error <text>  (the mail log file, after rotation)
//! status           -> ok <JSON>   (`postern status`: one line, monitor::Status)
//! tlsrpt show|send [YYYY-MM-DD]
//!                  -> ok <JSON> | error <text>  (TLS reports: delivery::tlsrpt::command)
//! ```
//!
//! May touch: the control socket (mode 0600: only the daemon's user, or
//! root, may use it). What the commands do is the daemon's business: it
//! hands [`serve`] an implementation of [`Control`], so this module knows
//! nothing of the scheduler or the server state.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::spool::QueueId;

/// What the control socket can ask of a running daemon.
pub trait Control: Send + Sync + 'static {
    /// Makes every queued message due now; returns how many there are.
    fn flush_all(&self) -> usize;
    /// Makes one message due now (after a flush, a release, a local submission).
    fn kick(&self, id: QueueId);
    /// Reloads the configuration and TLS material; returns the answer
    /// (`ok changed=...`, `partial ... tls=error ...`, `error ...`), as logged.
    fn reload(&self) -> String;
    /// Reloads certificates, CAs and CRLs; `false` (logged) if they are broken.
    fn reload_tls(&self) -> bool;
    /// Makes due the active messages matching `what` (`sendmail -qR/-qS/-qI`); returns how many.
    fn flush_matching(&self, what: &FlushMatch) -> usize;
    /// Re-reads the aliases file (`newaliases`); the number of aliases, or why not (logged).
    fn reload_aliases(&self) -> Result<usize, String>;
    /// A queued or recently finished message's state as one line of JSON (`sendmail -v`).
    fn status(&self, id: &QueueId) -> Option<String>;
    /// Opens the mail log file again by name (after logrotate); `Err` says why not.
    fn reopen_log(&self) -> Result<(), String>;
    /// The daemon's status as one line of JSON (`postern status`).
    fn daemon_status(&self) -> String;
    /// `tlsrpt show|send [DAY]` (`postern tlsrpt`): the answer line.
    fn tlsrpt<'a>(&'a self, _args: Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>> {
        Box::pin(async { "error tlsrpt not available".to_string() })
    }
}

/// Which messages `flush-match` selects: case-insensitive substring matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushMatch {
    /// A pending recipient contains this text (`-qR`).
    Recipient(String),
    /// The sender contains this text (`-qS`).
    Sender(String),
    /// The queue id contains this text (`-qI`).
    Id(String),
}

/// Where the control socket lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Serves the control socket at `path` until shutdown.
pub async fn serve(path: PathBuf, control: Arc<dyn Control>, mut shutdown: watch::Receiver<bool>) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            crate::maillog::error(&[("error", &format!("control socket {}: {e}", path.display()))]);
            return;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let control = control.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, control.as_ref())).await;
        });
    }
}

async fn handle(stream: UnixStream, control: &dyn Control) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).take(1024).read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let answer = match (words.next(), words.next()) {
        (Some("flush"), None) => format!("ok {}", control.flush_all()),
        (Some("status"), Some(id)) => match QueueId::parse(id).and_then(|id| control.status(&id)) {
            Some(json) => format!("ok {json}"),
            None => "error unknown id".to_string(),
        },
        (Some("flush" | "kick"), Some(id)) => match QueueId::parse(id) {
            Some(id) => {
                control.kick(id);
                "ok".to_string()
            }
            None => "error bad queue id".to_string(),
        },
        (Some("flush-match"), Some(kind)) => match (kind, words.next()) {
            ("rcpt", Some(t)) => format!("ok {}", control.flush_matching(&FlushMatch::Recipient(t.to_string()))),
            ("sender", Some(t)) => format!("ok {}", control.flush_matching(&FlushMatch::Sender(t.to_string()))),
            ("id", Some(t)) => format!("ok {}", control.flush_matching(&FlushMatch::Id(t.to_string()))),
            _ => "error usage: flush-match rcpt|sender|id TEXT".to_string(),
        },
        (Some("reload-aliases"), None) => match control.reload_aliases() {
            Ok(n) => format!("ok {n}"),
            Err(e) => format!("error {e}"),
        },
        (Some("reload-tls"), None) => {
            if control.reload_tls() {
                "ok".to_string()
            } else {
                "error invalid TLS material, see the mail log".to_string()
            }
        }
        (Some("dropped"), Some(name)) => match crate::maildrop::pickup::queued_as(name) {
            Some(id) => format!("ok {id}"),
            None => "error not picked up yet".to_string(),
        },
        (Some("reopen-log"), None) => match control.reopen_log() {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error {e}"),
        },
        (Some("reload"), None) => control.reload(),
        (Some("status"), None) => format!("ok {}", control.daemon_status()),
        (Some("tlsrpt"), Some(sub)) => control.tlsrpt(std::iter::once(sub).chain(words).map(str::to_string).collect()).await,
        _ => "error unknown command".to_string(),
    };
    w.write_all(format!("{answer}\n").as_bytes()).await?;
    w.shutdown().await
}

/// Sends one command to a running daemon; `Err` if none is listening.
pub fn request(data_dir: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(data_dir))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}
