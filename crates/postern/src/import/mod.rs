//! `postern import sendmail|postfix`: converts another MTA's configuration
//! into a postern configuration and a report that accounts for every
//! source line (mapped to which postern key or rule, or not mapped and
//! why), and ([`parity`]) replays a table of SMTP sessions against the
//! source daemon and postern to show the decisions are the same.
//!
//! Layout: [`postfix`] (main.cf, master.cf, the tables they name) and
//! [`sendmail`] (sendmail.mc, access, aliases, sasldb) each produce an
//! [`Imported`]; [`parity`] is shared.
//!
//! May touch: reads the source configuration files; writes the output
//! directory (through [`Imported::write_to`]); [`parity`] connects to the
//! daemons it is given.

pub mod parity;
pub mod parity_table;
pub mod postfix;
pub mod sendmail;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a source or output file, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// What became of one source line (or setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Mapped to a postern key or rule (`target` names it, e.g.
    /// `relay.smarthost` or `[[rule]] #3`), at `at` in the output when known.
    Mapped {
        /// The postern key, rule or file.
        target: String,
        /// Where in the written output.
        at: Option<Loc>,
    },
    /// Nothing to do: a default postern already has, or a setting with no
    /// effect on mail decisions (e.g. a log level).
    Default {
        /// Why it needs nothing.
        why: String,
    },
    /// Not mapped: `restriction` says whether it decides acceptance (an
    /// unmapped restriction fails the import without `--allow-partial`).
    NotMapped {
        /// Why not.
        reason: String,
        /// What the operator should do.
        advice: String,
        /// Does it accept or refuse mail (a restriction)?
        restriction: bool,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where in the source.
    pub source: Loc,
    /// The source text (trimmed), for the reader.
    pub text: String,
    /// What became of it.
    pub fate: Fate,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per meaningful source line, in source order.
    pub entries: Vec<Entry>,
}

impl Report {
    /// Unmapped restrictions (these fail the import without `--allow-partial`).
    pub fn unmapped_restrictions(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| matches!(e.fate, Fate::NotMapped { restriction: true, .. }))
    }

    /// The report as text, one entry a line: `SOURCE  mapped -> TARGET (OUT)`,
    /// `SOURCE  default: WHY`, `SOURCE  NOT MAPPED: REASON; do: ADVICE`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let fate = match &e.fate {
                Fate::Mapped { target, at: Some(at) } => format!("mapped -> {target} ({at})"),
                Fate::Mapped { target, at: None } => format!("mapped -> {target}"),
                Fate::Default { why } => format!("default: {why}"),
                Fate::NotMapped { reason, advice, restriction } => {
                    format!("NOT MAPPED{}: {reason}; do: {advice}", if *restriction { " (restriction)" } else { "" })
                }
            };
            out.push_str(&format!("{}\t{}\t{}\n", e.source, e.text, fate));
        }
        out
    }
}

/// The result of an import.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// postern.toml text.
    pub config: String,
    /// aliases file text, when the source had aliases.
    pub aliases: Option<String>,
    /// users.json text, when a password source was given.
    pub users: Option<String>,
    /// Extra files (e.g. a CA bundle or a relay_clientcerts list), by name
    /// relative to the output directory.
    pub extra: Vec<(String, String)>,
    /// The report.
    pub report: Report,
}

impl Imported {
    /// Writes `postern.toml`, `aliases`, `users.json` (0600), the extra
    /// files and `import-report.txt` into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("postern.toml"), &self.config)?;
        if let Some(a) = &self.aliases {
            std::fs::write(dir.join("aliases"), a)?;
        }
        if let Some(u) = &self.users {
            crate::private_file::write(&dir.join("users.json"), "tmp", u.as_bytes())?;
        }
        for (name, text) in &self.extra {
            std::fs::write(dir.join(name), text)?;
        }
        std::fs::write(dir.join("import-report.txt"), self.report.render())
    }
}

/// Options every importer takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Where to write postern.toml, aliases, users.json and import-report.txt.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write the output even when a restriction could not be mapped (the
    /// report lists it); without this such an import fails (exit 1).
    #[arg(long)]
    pub allow_partial: bool,
    /// After importing, replay the parity table of sessions against the
    /// source daemon at HOST:PORT (its port 25 listener; see --verify-submission
    /// and --verify-smtps) and against postern running the imported
    /// configuration, and report every difference.
    #[arg(long, value_name = "HOST:PORT")]
    pub verify: Option<std::net::SocketAddr>,
    /// The source daemon's submission (587-style) listener, for --verify.
    #[arg(long, value_name = "HOST:PORT", requires = "verify")]
    pub verify_submission: Option<std::net::SocketAddr>,
    /// The source daemon's implicit-TLS (465-style) listener, for --verify.
    #[arg(long, value_name = "HOST:PORT", requires = "verify")]
    pub verify_smtps: Option<std::net::SocketAddr>,
    /// The parity table (TOML, `[[probe]]` entries); default: one generated
    /// from the imported configuration.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub probes: Option<PathBuf>,
    /// Client certificates for the probes, for --verify: DIR/trusted.crt and
    /// .key (issued by the CA the configuration trusts), look-alike.* (a CA
    /// with the same subject, another key), self-signed.*; missing kinds are
    /// left out of the generated table.
    #[arg(long, value_name = "DIR", requires = "verify")]
    pub probe_certs: Option<PathBuf>,
    /// A login that works on both sides (the source's SASL backend and
    /// postern's auth backend), for --verify's AUTH probes (also tried with a
    /// wrong password). Without it the table has no AUTH probes.
    #[arg(long, value_name = "USER:PASSWORD", requires = "verify")]
    pub probe_auth: Option<String>,
}
