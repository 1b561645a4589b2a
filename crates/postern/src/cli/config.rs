//! `postern config example|check`: print the commented example
//! configuration, or validate a file and warn about open relays.
//!
//! May touch: the configuration file named (read), standard output.

use super::sysexits as exit;
use std::path::PathBuf;

use clap::Subcommand;

use super::SYSTEM_CONFIG;
use crate::config::EXAMPLE;
use crate::settings::{Settings, Source};

/// `postern config ...`.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print a complete, commented example configuration.
    Example,
    /// Validate a configuration file (default: --config, $POSTERN_CONFIG or /etc/postern/postern.toml).
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

/// Runs `postern config ACTION`; returns the exit code.
pub(super) fn run(action: ConfigCmd, src: &Source) -> i32 {
    match action {
        ConfigCmd::Example => {
            print!("{EXAMPLE}");
            exit::OK
        }
        ConfigCmd::Check { file } => {
            let Some(file) = file.or_else(|| src.config.clone()) else {
                eprintln!("postern: no config file given (and {SYSTEM_CONFIG} does not exist); the embedded default is valid");
                return exit::USAGE;
            };
            // Settings::load reports every problem of the file at once,
            // including those of files it names (client_file).
            match Settings::load(&Source { config: Some(file.clone()), data_dir: src.data_dir.clone() }) {
                Ok(s) => check_loaded(&s, &file),
                Err(e) => {
                    eprintln!("{e}");
                    exit::CONFIG
                }
            }
        }
    }
}

/// The checks past loading: what `serve` would refuse ([`crate::preflight`],
/// the same function serve runs), then the warnings. Returns the exit code.
fn check_loaded(s: &Settings, file: &std::path::Path) -> i32 {
    let report = crate::preflight::check(s);
    for e in &report.errors {
        eprintln!("{e}");
    }
    let mut warnings: Vec<String> = report.warnings.iter().map(|w| w.with_severity("warning")).collect();
    for l in s.config.listeners.iter().map(|l| l.label()).filter(|l| crate::policy::is_open_relay(s, l)) {
        warnings.push(format!(
            "{}: warning: OPEN RELAY: listener {l:?} relays mail from any client to any domain (see `postern explain`)",
            file.display()
        ));
    }
    let others = [crate::delivery::credentials::config_warning(&s.config.relay), crate::policy::trusted_certificate_warning(&s.config)];
    warnings.extend(others.into_iter().flatten().map(|w| format!("{}: warning: {w}", file.display())));
    for w in &warnings {
        eprintln!("{w}");
    }
    if !report.errors.is_empty() {
        let n = report.errors.len();
        eprintln!("{}: {n} error{}, serve would refuse to start", file.display(), if n == 1 { "" } else { "s" });
        return exit::CONFIG;
    }
    println!("{}: ok{}", file.display(), if warnings.is_empty() { "" } else { " (with warnings)" });
    exit::OK
}
