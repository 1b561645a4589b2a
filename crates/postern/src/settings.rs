//! Settings: the loaded configuration plus what is derived from it (host
//! name, data directory, local domains, users, aliases). Built once per load
//! or reload; sessions hold an `Arc` of the settings they started with.
//!
//! May touch: the config file and the aliases file (read only).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::aliases::Aliases;
use crate::config::{ClientCertMode, Config, ConfigError, KeyPath, Position, Problem, ProblemKind, ValidationError};

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
    /// The `[[dkim]]` signing keys, loaded (failures kept, see preflight).
    pub dkim: crate::mailauth::keys::KeySet,
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
}

/// The machine's host name.
pub fn system_hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".to_string())
}

impl Settings {
    /// Loads the config named by `source` (or the embedded default).
    /// The files the config names (`client_file`) are read as part of the
    /// load, so their problems are reported with the config's own; so is a
    /// required client certificate without any client CA (F5).
    pub fn load(source: &Source) -> Result<Settings, SettingsError> {
        Settings::load_checking(source, true)
    }

    /// [`Settings::load`] without the client-CA check, for `postern ca`:
    /// `postern ca init` is how that problem gets fixed.
    pub fn load_for_ca(source: &Source) -> Result<Settings, SettingsError> {
        Settings::load_checking(source, false)
    }

    fn load_checking(source: &Source, client_ca: bool) -> Result<Settings, SettingsError> {
        let config = match &source.config {
            Some(p) => Config::load_checked(p, |c| {
                let data_dir = data_dir_of(source, c);
                let mut problems = read_client_files(c, &data_dir);
                if client_ca {
                    problems.extend(required_without_ca(c, &data_dir));
                }
                problems
            })?,
            None => Config::default(),
        };
        Settings::derive(config, source)
    }

    /// Derives settings from a parsed config, reading the files it names.
    pub fn from_config(mut config: Config, source: &Source) -> Result<Settings, SettingsError> {
        let data_dir = data_dir_of(source, &config);
        let mut problems = read_client_files(&mut config, &data_dir);
        problems.extend(required_without_ca(&config, &data_dir));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems).into());
        }
        Settings::derive(config, source)
    }

    /// Derives settings from a config whose files were read.
    fn derive(config: Config, source: &Source) -> Result<Settings, SettingsError> {
        let hostname = config.hostname.clone().unwrap_or_else(system_hostname).to_ascii_lowercase();
        let data_dir = data_dir_of(source, &config);
        let local_domains: HashSet<String> = match &config.local.domains {
            Some(d) => d.iter().flat_map(|d| both_forms(d)).collect(),
            None => ["localhost".to_string(), hostname.clone()].into_iter().collect(),
        };
        let relay_domains = config
            .relay
            .domains
            .iter()
            // A route limited to some senders does not open its domains to everyone.
            .chain(config.routes.iter().filter(|r| r.senders.is_empty()).flat_map(|r| r.domains.iter()))
            .flat_map(|d| both_forms(d))
            .filter(|d| !local_domains.contains(d))
            .collect();
        let users: HashSet<String> =
            ["postmaster".to_string()].into_iter().chain(config.local.users.iter().map(|u| u.to_ascii_lowercase())).collect();
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
        // Role names (root, abuse, MAILER-DAEMON...) reach postmaster unless defined.
        let aliases = aliases.with_role_defaults(&users);
        let maildir_root = config.local.maildir_root.as_ref().map(|p| resolve(&data_dir, p)).unwrap_or_else(|| data_dir.join("mail"));
        let config_file = source.config.as_ref().map(|p| p.display().to_string());
        let dkim = crate::mailauth::keys::KeySet::load(&config.dkim, |p| resolve(&data_dir, p));
        Ok(Settings { config, hostname, data_dir, local_domains, relay_domains, users, aliases, maildir_root, config_file, dkim })
    }

    /// True if `domain` (lower-case; U-label or A-label form) is delivered here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    /// A config path: absolute as is, relative to the data directory otherwise.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.data_dir, p)
    }

    /// The aliases file: `local.aliases` (relative to the data directory),
    /// else `DATA/aliases` (which may be missing: no aliases).
    pub fn aliases_path(&self) -> PathBuf {
        self.config.local.aliases.as_ref().map(|p| self.resolve(p)).unwrap_or_else(|| self.data_dir.join("aliases"))
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

/// The data directory when nothing names one (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "postern-data";

/// The data directory: `--data-dir` / `POSTERN_DATA_DIR`, the config's
/// `data_dir`, or `./postern-data`.
fn data_dir_of(source: &Source, config: &Config) -> PathBuf {
    source.data_dir.clone().or_else(|| config.data_dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// True if client certificates can verify: `tls.client_ca_files` names at
/// least one file, or (by default) the built-in CA exists. The same facts
/// as `tls::files::client_ca_paths`, known before the settings are.
pub fn has_client_ca(config: &Config, data_dir: &Path) -> bool {
    match &config.tls.client_ca_files {
        Some(v) => !v.is_empty(),
        None => data_dir.join("ca/ca.crt").exists(),
    }
}

/// F5: `client_certificates = "required"` or `require_client_certificates_from`
/// without any client CA would never verify a certificate: a load error
/// (the built-in CA lives in the data directory, so it is checked here).
fn required_without_ca(config: &Config, data_dir: &Path) -> Vec<Problem> {
    if has_client_ca(config, data_dir) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let k = if l.client_certificates == ClientCertMode::Required {
            "client_certificates"
        } else if !l.require_client_certificates_from.is_empty() {
            "require_client_certificates_from"
        } else {
            continue;
        };
        let at = KeyPath::root().key("listener").index(i).key(k);
        let kind = ProblemKind::Invalid(ValidationError::RequiredWithoutClientCa(l.label().to_string()));
        problems.push(config.problem_at(&at, &format!("listener.{k}"), kind));
    }
    problems
}

/// Reads every rule's `client_file` into its `client_file_networks`; returns
/// every problem (unreadable files, bad lines) instead of stopping at one.
fn read_client_files(config: &mut Config, data_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut networks = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let Some(f) = &rule.get_ref().client_file else {
            networks.push(Vec::new());
            continue;
        };
        let path = resolve(data_dir, f);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(source) => {
                let at = KeyPath::root().key("rule").index(i).key("client_file");
                problems.push(config.problem_at(&at, "rule.client_file", ProblemKind::Unreadable { path, source }));
                networks.push(Vec::new());
                continue;
            }
        };
        let mut nets = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line.parse() {
                Ok(cidr) => nets.push(cidr),
                Err(e) => problems.push(Problem {
                    file: path.display().to_string(),
                    position: Some(Position { line: n + 1, column: None }),
                    key: None,
                    kind: ProblemKind::Value(e),
                }),
            }
        }
        networks.push(nets);
    }
    for (rule, nets) in config.rules.iter_mut().zip(networks) {
        rule.get_mut().client_file_networks = nets;
    }
    problems
}

/// A configured domain in the forms a client may write it: lower-case as
/// written, its A-label form (`xn--…`) and its U-label form, so
/// `bücher.example` in the config matches `xn--bcher-kva.example` in an
/// address and the other way round (RFC 5890).
fn both_forms(d: &str) -> Vec<String> {
    let mut v = vec![d.to_ascii_lowercase()];
    if let Ok(ascii) = crate::idna::to_ascii(d) {
        let unicode = crate::idna::to_unicode(&ascii);
        for f in [ascii, unicode] {
            if !v.contains(&f) {
                v.push(f);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_file_problems_join_the_config_problems() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nets.txt"), "# ok\n10.0.0.0/8\n10.0.0.0/99\n").unwrap();
        let cfg = dir.path().join("p.toml");
        let text = "[[rule]]\naction = \"reject\"\nclient_file = \"missing.txt\"\n[[rule]]\naction = \"reject\"\nclient_file = \"nets.txt\"\n[local]\nsendmail_milters = [\"x\"]\n";
        std::fs::write(&cfg, text).unwrap();
        let source = Source { config: Some(cfg.clone()), data_dir: Some(dir.path().into()) };
        let got = Settings::load(&source).unwrap_err().to_string();
        let (c, d) = (cfg.display(), dir.path().display());
        let want = [
            format!("{c}:3:15: key `rule.client_file`: cannot read {d}/missing.txt: No such file or directory (os error 2)"),
            format!("{c}:8:21: key `local.sendmail_milters`: no [[milter]] named \"x\""),
            format!("{d}/nets.txt:3: bad prefix length \"99\""),
        ];
        assert_eq!(got.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn idn_domains_match_in_both_forms() {
        let config = Config::parse(
            "[local]\ndomains = [\"bücher.example\", \"xn--mnchen-3ya.example\"]\n[relay]\ndomains = [\"Straße.example\"]\n",
            "t",
        )
        .unwrap();
        let s = Settings::from_config(config, &Source { config: None, data_dir: Some("/x".into()) }).unwrap();
        assert!(s.is_local_domain("bücher.example"));
        assert!(s.is_local_domain("xn--bcher-kva.example"));
        assert!(s.is_local_domain("münchen.example"));
        assert!(s.is_local_domain("xn--mnchen-3ya.example"));
        assert!(s.relay_domains.contains("straße.example"));
        assert!(s.relay_domains.contains("xn--strae-oqa.example"), "{:?}", s.relay_domains);
        assert!(!s.is_local_domain("other.example"));
    }

    #[test]
    fn client_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nets.txt"), "192.0.2.0/24 # docs\n").unwrap();
        let config = Config::parse("[[rule]]\naction = \"reject\"\nclient_file = \"nets.txt\"\n", "t").unwrap();
        let s = Settings::from_config(config, &Source { config: None, data_dir: Some(dir.path().into()) }).unwrap();
        assert!(s.config.rules[0].get_ref().client_file_networks[0].contains("192.0.2.7".parse().unwrap()));
    }

    /// F5: "required" without a client CA is a load error naming the key;
    /// with the built-in CA (or `tls.client_ca_files`) it loads.
    #[test]
    fn required_client_certificates_need_a_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("p.toml");
        let text = "[[listener]]\naddress = \"127.0.0.1:25\"\nclient_certificates = \"required\"\n\
                    [[listener]]\nname = \"partners\"\naddress = \"127.0.0.1:26\"\nrequire_client_certificates_from = [\"10.0.0.0/8\"]\n\
                    [[listener]]\naddress = \"127.0.0.1:27\"\nclient_certificates = \"optional\"\n";
        std::fs::write(&cfg, text).unwrap();
        let source = Source { config: Some(cfg.clone()), data_dir: Some(dir.path().into()) };
        let got = Settings::load(&source).unwrap_err().to_string();
        let c = cfg.display();
        let hint = "but no client CA is configured: set tls.client_ca_files or run `postern ca init`";
        let want = [
            format!("{c}:3:23: key `listener.client_certificates`: listener \"smtp\" requires client certificates, {hint}"),
            format!(
                "{c}:7:36: key `listener.require_client_certificates_from`: listener \"partners\" requires client certificates, {hint}"
            ),
        ];
        assert_eq!(got.lines().collect::<Vec<_>>(), want);
        // Explicitly no CA files: the same.
        let none = Config::parse(&format!("{text}[tls]\nclient_ca_files = []\n"), "t").unwrap();
        assert!(Settings::from_config(none, &source).is_err());
        // A CA file named, or the built-in CA: fine.
        let named = Config::parse(&format!("{text}[tls]\nclient_ca_files = [\"ca.pem\"]\n"), "t").unwrap();
        assert!(Settings::from_config(named, &source).is_ok());
        // `postern ca` still loads it: `ca init` is the fix.
        assert!(Settings::load_for_ca(&source).is_ok());
        crate::ca::Ca::new(dir.path()).init("Test CA", 30, false).unwrap();
        assert!(Settings::load(&source).is_ok());
    }
}
