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
                Ok(s) => {
                    let open: Vec<&str> =
                        s.config.listeners.iter().map(|l| l.label()).filter(|l| crate::policy::is_open_relay(&s, l)).collect();
                    for l in &open {
                        eprintln!(
                            "{}: warning: OPEN RELAY: listener {l:?} relays mail from any client to any domain (see `postern explain`)",
                            file.display()
                        );
                    }
                    let credentials = crate::delivery::credentials::config_warning(&s.config.relay);
                    if let Some(w) = &credentials {
                        eprintln!("{}: warning: {w}", file.display());
                    }
                    let certificates = crate::policy::trusted_certificate_warning(&s.config);
                    if let Some(w) = &certificates {
                        eprintln!("{}: warning: {w}", file.display());
                    }
                    let warned = !open.is_empty() || credentials.is_some() || certificates.is_some();
                    println!("{}: ok{}", file.display(), if warned { " (with warnings)" } else { "" });
                    exit::OK
                }
                Err(e) => {
                    eprintln!("{e}");
                    exit::CONFIG
                }
            }
        }
    }
}
