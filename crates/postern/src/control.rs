//! The control socket `DATA/control.sock`: how `postern sendmail` and
//! `postern queue …` reach a running daemon. One line in, one line out:
//!
//! ```text
//! flush            -> ok N        (every queued message is due now)
//! flush <ID>       -> ok          (that message is due now)
//! kick <ID>        -> ok          (a new or released message is waiting)
//! reload           -> ok changed=K,K [restart_needed=K] | partial changed=... tls=error error=... | error error=...
//! reload-tls       -> ok | error <text>  (certificates, CAs, CRLs only)
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
        (Some("flush" | "kick"), Some(id)) => match QueueId::parse(id) {
            Some(id) => {
                control.kick(id);
                "ok".to_string()
            }
            None => "error bad queue id".to_string(),
        },
        (Some("reload-tls"), None) => {
            if control.reload_tls() {
                "ok".to_string()
            } else {
                "error invalid TLS material, see the mail log".to_string()
            }
        }
        (Some("reload"), None) => control.reload(),
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
