//! The daemon's side of the mail log: the start banner and reopening the
//! log file (SIGHUP, `postern log reopen`, a changed `log.mail_log`).
//!
//! May touch: the mail log file.

use tokio::net::TcpListener;

use crate::config::Listener;
use crate::maillog;
use crate::settings::Settings;
use crate::state::Shared;

/// The first `start` line: version, config file, data dir, host name,
/// local domains and listeners, so one line tells what is running.
pub(super) fn banner(s: &Settings, bound: &[(TcpListener, Listener)]) {
    let mut domains: Vec<&str> = s.local_domains.iter().map(String::as_str).collect();
    domains.sort_unstable();
    let listeners: Vec<String> = bound
        .iter()
        .map(|(sock, l)| {
            let addr = sock.local_addr().map_or_else(|_| l.address.to_string(), |a| a.to_string());
            format!("{}:{addr}", l.role.name())
        })
        .collect();
    maillog::start(&[
        ("version", env!("CARGO_PKG_VERSION")),
        ("config", s.config_file.as_deref().unwrap_or("embedded default")),
        ("data_dir", &s.data_dir.display().to_string()),
        ("hostname", &s.hostname),
        ("local_domains", &domains.join(",")),
        ("listeners", &listeners.join(",")),
        ("pid", &std::process::id().to_string()),
    ]);
}

/// Opens the configured mail log again (a renamed file is replaced by a
/// new one; a changed path or format takes effect). On error the old file
/// is kept and the error is logged there and returned.
pub(super) fn reopen(shared: &Shared) -> Result<(), String> {
    let s = shared.settings();
    let log = &s.config.log;
    if maillog::current_target().is_some_and(|t| t != log.mail_log) {
        // The last line of the old file says where the log went.
        maillog::reload(&[("mail_log", &log.mail_log), ("result", "switching mail log")]);
    }
    match maillog::configure(&log.mail_log, log.format.into()) {
        Ok(changed) => {
            if changed {
                maillog::reload(&[("mail_log", &log.mail_log), ("result", "mail log switched")]);
            }
            Ok(())
        }
        Err(e) => {
            let text = format!("cannot open mail log {}: {e}", log.mail_log);
            maillog::error(&[("error", &text), ("action", "keeping the old log file")]);
            Err(text)
        }
    }
}
