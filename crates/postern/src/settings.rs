//! Settings: the loaded configuration plus what is derived from it (host
//! name, data directory, local domains, users, aliases). Built once per load
//! or reload; sessions hold an `Arc` of the settings they started with.
//!
//! May touch: the config file and the aliases file (read only).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::aliases::{is_local_name, Aliases};
use crate::config::{Config, ConfigError};

/// Where the config comes from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The config file, or `None` for the embedded default.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `POSTERN_DATA_DIR`, which win over the file.
    pub data_dir: Option<PathBuf>,
}

/// Everything a session or delivery needs to know about configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The parsed configuration.
    pub config: Config,
    /// Our host name.
    pub hostname: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Local domains, lower-case.
    pub local_domains: HashSet<String>,
    /// Relay domains, lower-case.
    pub relay_domains: HashSet<String>,
    /// Local mailbox names, lower-case (always includes `postmaster`).
    pub users: HashSet<String>,
    /// The aliases.
    pub aliases: Aliases,
    /// Root of the Maildirs.
    pub maildir_root: PathBuf,
    /// The config file name (for rule origins), if any.
    pub config_file: Option<String>,
}

/// An error building settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The aliases file is wrong.
    #[error(transparent)]
    Aliases(#[from] crate::aliases::AliasError),
    /// Something else, named.
    #[error("{0}")]
    Other(String),
}

/// The machine's host name.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Settings {
    /// Loads the config named by `source` (or the embedded default).
    pub fn load(source: &Source) -> Result<Settings, SettingsError> {
        let config = match &source.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        Settings::from_config(config, source)
    }

    /// Derives settings from a parsed config.
    pub fn from_config(config: Config, source: &Source) -> Result<Settings, SettingsError> {
        let file = source.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(default config)".into());
        let hostname = config.hostname.clone().unwrap_or_else(system_hostname).to_ascii_lowercase();
        let data_dir = source
            .data_dir
            .clone()
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("postern-data"));
        let local_domains: HashSet<String> = match &config.local.domains {
            Some(d) => d.iter().map(|d| d.to_ascii_lowercase()).collect(),
            None => ["localhost".to_string(), hostname.clone()].into_iter().collect(),
        };
        let relay_domains = config
            .relay
            .domains
            .iter()
            .chain(config.routes.iter().flat_map(|r| r.domains.iter()))
            .map(|d| d.to_ascii_lowercase())
            .filter(|d| !local_domains.contains(d))
            .collect();
        let mut config = config;
        for (i, rule) in config.rules.iter_mut().enumerate() {
            let r = rule.get_mut();
            if let Some(f) = r.client_file.clone() {
                let path = resolve(&data_dir, &f);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| SettingsError::Other(format!("{file}: [[rule]] #{}: client_file {}: {e}", i + 1, path.display())))?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let cidr = line.parse().map_err(|e| SettingsError::Other(format!("{}:{}: {e}", path.display(), n + 1)))?;
                    r.client_file_networks.push(cidr);
                }
            }
        }
        let mut users = HashSet::from(["postmaster".to_string()]);
        for u in &config.local.users {
            let u = u.to_ascii_lowercase();
            if !is_local_name(&u) {
                return Err(SettingsError::Other(format!(
                    "{file}: key `local.users`: {u:?} is not a valid mailbox name (letters, digits, . _ - + =)"
                )));
            }
            users.insert(u);
        }
        let aliases = match &config.local.aliases {
            Some(p) => Aliases::load(&resolve(&data_dir, p))?,
            None => {
                let p = data_dir.join("aliases");
                if p.exists() {
                    Aliases::load(&p)?
                } else {
                    Aliases::default()
                }
            }
        };
        let maildir_root =
            config.local.maildir_root.as_ref().map(|p| resolve(&data_dir, p)).unwrap_or_else(|| data_dir.join("mail"));
        let config_file = source.config.as_ref().map(|p| p.display().to_string());
        Ok(Settings { config, hostname, data_dir, local_domains, relay_domains, users, aliases, maildir_root, config_file })
    }

    /// True if `domain` (lower-case) is delivered here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    /// A config path: absolute as is, relative to the data directory otherwise.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.data_dir, p)
    }

    /// True if the local name is a user or alias we know.
    pub fn knows_local(&self, name: &str) -> bool {
        self.users.contains(name) || self.aliases.contains(name)
    }
}

/// Relative paths in the config are relative to the data directory.
fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}
