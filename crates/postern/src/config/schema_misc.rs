//! Small config types split off `schema.rs` (kept under 600 lines):
//! `queue.sync`, the `[log]` table (`mail_log`, `format`) and the `[metrics]` table, each field with its meaning and default.
//!
//! May touch: nothing (types only).

use serde::{Deserialize, Serialize};

/// How a commit is made durable before the 250 (`queue.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fdatasync the message's queue file, whose name was made (and
    /// `messages/` fsynced) ahead of time: one device flush per message. A
    /// name made on the spot adds an fsync of `messages/`, shared by
    /// concurrent commits.
    #[default]
    Fsync,
    /// One `syncfs(2)` of the spool's file system, shared by every commit
    /// under way: file data and directory entries in a single device
    /// flush. Fastest when the spool has its own file system; on one shared
    /// with heavy writers each flush also waits for their data.
    Syncfs,
}

/// The operator's mail log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Where the mail log goes: "-" for standard error (default) or a file path.
    pub mail_log: String,
    /// Line format of the mail log: "logfmt" (default: `time event key=value ...`)
    /// or "json" (one object per line: `time`, `event`, then the same keys,
    /// every value a string). Takes effect on reload (SIGHUP).
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log { mail_log: "-".into(), format: LogFormat::default() }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time event key=value key="value with spaces"`.
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl From<LogFormat> for crate::maillog::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Logfmt => crate::maillog::Format::Logfmt,
            LogFormat::Json => crate::maillog::Format::Json,
        }
    }
}

/// The Prometheus metrics endpoint (`[metrics]`, docs/operations.md "Metrics").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Where `GET /metrics` is served (Prometheus text format), e.g.
    /// "127.0.0.1:9325". Default: none, no endpoint. It has no
    /// authentication: bind it to loopback or a management network.
    pub address: Option<std::net::SocketAddr>,
}
