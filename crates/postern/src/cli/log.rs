//! `postern log …`: the running daemon's mail log. `reopen` asks the
//! daemon (control socket) to open `log.mail_log` again by name, for
//! logrotate's `postrotate` (see contrib/logrotate.d/postern).
//!
//! May touch: the control socket, standard output.

use clap::Subcommand;

use super::sysexits as exit;
use crate::control;
use crate::settings::Settings;

/// `postern log ...`.
#[derive(Subcommand)]
pub enum LogCmd {
    /// Ask the running daemon to reopen the mail log file (after it was renamed, e.g. by
    /// logrotate); SIGHUP does the same and also reloads the config. Exit 0 when done,
    /// 69 if no daemon is running, 75 if the file cannot be opened (the old one is kept).
    Reopen,
}

/// Runs `postern log ACTION`; returns the exit code.
pub(super) fn run(s: &Settings, action: LogCmd) -> i32 {
    match action {
        LogCmd::Reopen => match control::request(&s.data_dir, "reopen-log") {
            Ok(a) if a == "ok" => exit::OK,
            Ok(a) => {
                eprintln!("postern: daemon says: {a}");
                exit::TEMPFAIL
            }
            Err(e) => {
                eprintln!("postern: cannot reach the daemon at {}: {e}", control::socket_path(&s.data_dir).display());
                exit::UNAVAILABLE
            }
        },
    }
}
