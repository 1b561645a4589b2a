//! Small config types split off `schema.rs` (kept under 600 lines):
//! `queue.sync` and the `[log]` table, each field with its meaning and default.
//!
//! May touch: nothing (types only).

use serde::{Deserialize, Serialize};

/// How a commit is made durable before the 250 (`queue.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fdatasync each new file, then fsync `messages/` and `active/`
    /// (the directory fsyncs shared by concurrent commits).
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
}

impl Default for Log {
    fn default() -> Self {
        Log { mail_log: "-".into() }
    }
}
