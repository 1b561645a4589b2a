//! `postern config example|check|show`: print the commented example
//! configuration, check a file for everything `serve` would refuse (and
//! warn about open relays), or print the effective configuration.
//!
//! May touch: the configuration file named and the files it names (read),
//! standard output.

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
    /// Check a config file for everything `serve` would refuse (exit 78), and warn.
    ///
    /// Reports all findings at once, each as file:line:column (the files it names are read as the current user: run it as root, like
    /// serve). Exit 78 on any error; warnings (exit 0) for files `user` cannot read after the
    /// privilege drop, a non-FQDN host name, open relays. Default file: --config,
    /// $POSTERN_CONFIG or /etc/postern/postern.toml. With --rcpt: also the delivery route of
    /// that address (in mail from --from): [[route]], next hops in order, TLS mode, client
    /// certificate, AUTH.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
        /// Show the route, next hops, TLS mode, client certificate and AUTH for this recipient.
        #[arg(long, value_name = "ADDR")]
        rcpt: Vec<String>,
        /// The envelope sender for --rcpt (sender-dependent routes); default: the null sender.
        #[arg(long, value_name = "ADDR", default_value = "", requires = "rcpt")]
        from: String,
    },
    /// Ask the running daemon to reload its config and TLS files (like SIGHUP).
    ///
    /// Prints its answer: `ok changed=...`, `partial ... tls=error`
    /// (exit 75: config in use, old certificate kept) or `error ...` (exit 78).
    Reload,
    /// Print the effective configuration (like `postconf`; -n: only non-defaults).
    ///
    /// TOML (or --json): every key with its value after defaults, secrets shown as <redacted>. Reads
    /// the same config as the daemon (--config, $POSTERN_CONFIG,
    /// /etc/postern/postern.toml, else the embedded default).
    Show {
        /// Only the keys whose value differs from the default (like `postconf -n`).
        #[arg(short = 'n', long = "non-default")]
        non_default: bool,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `postern config ACTION`; returns the exit code.
pub(super) fn run(action: ConfigCmd, src: &Source) -> i32 {
    match action {
        ConfigCmd::Example => {
            print!("{EXAMPLE}");
            exit::OK
        }
        ConfigCmd::Show { non_default, json } => show(src, non_default, json),
        ConfigCmd::Reload => reload(src),
        ConfigCmd::Check { file, rcpt, from } => {
            let Some(file) = file.or_else(|| src.config.clone()) else {
                eprintln!("postern: no config file given (and {SYSTEM_CONFIG} does not exist); the embedded default is valid");
                return exit::USAGE;
            };
            // Settings::load reports every problem of the file at once,
            // including those of files it names (client_file).
            match Settings::load(&Source { config: Some(file.clone()), data_dir: src.data_dir.clone() }) {
                Ok(s) => {
                    let from = from.trim_start_matches('<').trim_end_matches('>');
                    for to in &rcpt {
                        let to = to.trim_start_matches('<').trim_end_matches('>');
                        println!("{to} (from <{from}>):");
                        crate::delivery::plan::plan(&s, from, to).lines().iter().for_each(|l| println!("  {l}"));
                    }
                    check_loaded(&s, &file)
                }
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
    let others = [crate::policy::trusted_certificate_warning(&s.config), crate::policy::message::unverified_warning(&s.config)];
    let credentials = crate::delivery::credentials::config_warnings(&s.config);
    warnings.extend(credentials.into_iter().chain(others.into_iter().flatten()).map(|w| format!("{}: warning: {w}", file.display())));
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

/// `postern config show`: the effective config, or only its non-defaults.
fn show(src: &Source, non_default: bool, json: bool) -> i32 {
    use crate::config::show;
    let s = match Settings::load(src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let table = if non_default {
        show::non_default(&s.config)
    } else {
        // The derived defaults, as the daemon computes them.
        let mut c = s.config.clone();
        c.hostname = Some(s.hostname.clone());
        c.data_dir = Some(s.data_dir.clone());
        let mut domains: Vec<String> = s.local_domains.iter().cloned().collect();
        domains.sort();
        c.local.domains = Some(domains);
        c.local.maildir_root = Some(s.maildir_root);
        show::table(&c)
    };
    let text = if json {
        serde_json::to_string_pretty(&table).map(|t| t + "\n").map_err(|e| e.to_string())
    } else {
        toml::to_string(&table).map_err(|e| e.to_string())
    };
    match text {
        Ok(t) => {
            if !json {
                let from = src.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the embedded default".into());
                let what = if non_default { "keys that differ from the defaults" } else { "effective configuration, defaults filled in" };
                println!("# {what}; from {from}");
            }
            print!("{t}");
            exit::OK
        }
        Err(e) => {
            eprintln!("postern: config show: {e}");
            exit::CONFIG
        }
    }
}

/// `postern config reload`: the control socket's `reload`.
fn reload(src: &Source) -> i32 {
    let s = match Settings::load(src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    match crate::control::request(&s.data_dir, "reload") {
        Ok(answer) => {
            println!("reload {answer}");
            match answer.split_whitespace().next() {
                Some("ok") => exit::OK,
                Some("partial") => exit::TEMPFAIL,
                _ => exit::CONFIG,
            }
        }
        Err(e) => {
            eprintln!("postern: no daemon answers on {}: {e}", crate::control::socket_path(&s.data_dir).display());
            exit::UNAVAILABLE
        }
    }
}
