//! Where a running daemon can be found: `postern serve` records its config
//! file, data directory and pid in `DATA/daemon.json` (always) and in
//! `/run/postern/daemon.json` (when it can write there; `$POSTERN_RUN_DIR`
//! names another directory). A command started with no `--config`,
//! `--data-dir`, `$POSTERN_CONFIG`, `$POSTERN_DATA_DIR` and no
//! `/etc/postern/postern.toml` uses the running daemon's config and data
//! directory (`cli::source` decides), so `sendmail` from any directory
//! reaches the daemon's maildrop instead of a stray `./postern-data`.
//!
//! May touch: `/run/postern/daemon.json` (or `$POSTERN_RUN_DIR`),
//! `DATA/daemon.json`, `/proc` (is the recorded pid alive). No RFCs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's file name, in the run directory and the data directory.
const FILE: &str = "daemon.json";
/// The default run directory.
const RUN_DIR: &str = "/run/postern";

/// What a running daemon records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The config file it loaded (absolute), or none for the embedded default.
    pub config: Option<PathBuf>,
    /// Its data directory (absolute).
    pub data_dir: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// Its version.
    pub version: String,
}

/// The run directory: `$POSTERN_RUN_DIR`, else `/run/postern`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("POSTERN_RUN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(RUN_DIR))
}

/// A path made absolute (and real, when it exists).
pub fn absolute(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()))
}

impl DaemonRecord {
    /// The record for this process.
    pub fn this(config: Option<&Path>, data_dir: &Path) -> DaemonRecord {
        DaemonRecord {
            config: config.map(absolute),
            data_dir: absolute(data_dir),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Writes the record to the data directory (required) and the run
    /// directory (best effort: only root can create `/run/postern`).
    /// World-readable: it holds paths and a pid, no secrets, and every
    /// user's `sendmail` reads it.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        let put = |dir: &Path| -> std::io::Result<()> {
            let tmp = dir.join(format!(".{FILE}.{}", self.pid));
            std::fs::write(&tmp, &text)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&tmp, dir.join(FILE))
        };
        let run = run_dir();
        if std::fs::create_dir_all(&run).is_ok() {
            let _ = put(&run);
        }
        put(data_dir)
    }

    /// Removes this process's records (at a clean stop); a record of
    /// another pid (a second instance) stays.
    pub fn remove(data_dir: &Path) {
        for dir in [run_dir(), data_dir.to_path_buf()] {
            let p = dir.join(FILE);
            let ours = std::fs::read(&p)
                .ok()
                .and_then(|t| serde_json::from_slice::<DaemonRecord>(&t).ok())
                .is_some_and(|r| r.pid == std::process::id());
            if ours {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// The running daemon recorded in `dir` (a run or data directory), if
    /// its process is alive.
    pub fn read(dir: &Path) -> Option<DaemonRecord> {
        let r: DaemonRecord = serde_json::from_slice(&std::fs::read(dir.join(FILE)).ok()?).ok()?;
        r.is_alive().then_some(r)
    }

    /// The running daemon recorded in the run directory, if any.
    pub fn find() -> Option<DaemonRecord> {
        DaemonRecord::read(&run_dir())
    }

    /// True if the recorded pid is a running postern.
    fn is_alive(&self) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else { return false };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(e) => e == nix::errno::Errno::EPERM,
        };
        // A reused pid belongs to another program: its cmdline says so.
        alive && std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| String::from_utf8_lossy(&c).contains("postern")).unwrap_or(true)
    }

    /// The warning line when the config a command uses (`config`) differs
    /// from the daemon's; `None` when they agree.
    pub fn differs(&self, config: Option<&Path>) -> Option<String> {
        let mine = config.map(absolute);
        if mine == self.config {
            return None;
        }
        let name = |c: &Option<PathBuf>| c.as_ref().map_or("the embedded default".to_string(), |p| p.display().to_string());
        Some(format!(
            "postern: warning: this command uses config {} but the running daemon (pid {}) uses {} (data directory {})",
            name(&mine),
            self.pid,
            name(&self.config),
            self.data_dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_liveness_and_difference() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("p.toml");
        std::fs::write(&cfg, "").unwrap();
        let me = DaemonRecord::this(Some(&cfg), dir.path());
        let text = serde_json::to_vec(&me).unwrap();
        std::fs::write(dir.path().join(FILE), &text).unwrap();
        assert_eq!(DaemonRecord::read(dir.path()), Some(me.clone()));
        assert_eq!(me.differs(Some(&cfg)), None);
        let other = dir.path().join("other.toml");
        let w = me.differs(Some(&other)).unwrap();
        assert!(w.contains(&other.display().to_string()) && w.contains(&cfg.canonicalize().unwrap().display().to_string()), "{w}");
        assert!(me.differs(None).unwrap().contains("uses config the embedded default"));
        // A dead pid is no daemon.
        let dead = DaemonRecord { pid: 0x3fff_fff0, ..me };
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&dead).unwrap()).unwrap();
        assert_eq!(DaemonRecord::read(dir.path()), None);
    }
}
