//! Config errors: a list of problems, each naming file, line, column and key.
//!
//! May touch: nothing (types only).

use std::fmt;
use std::path::PathBuf;

use super::validate::ValidationError;
use super::values::ValueError;

/// A configuration error. Apart from an unreadable file or a TOML syntax
/// error (after which nothing can be read), it lists every problem found;
/// its `Display` prints one problem per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML; parsing stops at the first such error.
    #[error("{0}")]
    Syntax(Box<Problem>),
    /// The file is TOML but some keys or values are wrong: every problem
    /// found, in file order.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems, in file order (none for `Read`).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Syntax(p) => std::slice::from_ref(&**p),
            ConfigError::Invalid(ps) => ps,
        }
    }
}

/// One problem at one place: `file:line:column: key `a.b`: what`.
#[derive(Debug)]
pub struct Problem {
    /// The file (the config file, or a file it names such as a `client_file`).
    pub file: String,
    /// 1-based line and column, when known.
    pub position: Option<Position>,
    /// The key (`table.key`, without array indices), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// A place in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in bytes), or `None` when only the line is known.
    pub column: Option<usize>,
}

/// What is wrong with a key or value.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    /// What the TOML parser or the schema says: a syntax error, an unknown
    /// key, a wrong type, an unknown value of an enum, a missing key.
    #[error("{0}")]
    Toml(String),
    /// A value with its own syntax (network, endpoint, duration, ...) that
    /// does not parse.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A cross-field check failed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A start-up check failed (`preflight`: the user, certificates,
    /// sockets, the host name).
    #[error("{0}")]
    Check(String),
    /// A file the config names cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file, as resolved against the data directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Problem {
    /// The problem as a compiler would print it with a severity:
    /// `file:line:column: warning: key `a.b`: what`.
    pub fn with_severity(&self, severity: &str) -> String {
        let text = self.to_string();
        let mut location = self.file.clone();
        if let Some(p) = self.position {
            location.push_str(&format!(":{}", p.line));
            if let Some(c) = p.column {
                location.push_str(&format!(":{c}"));
            }
        }
        let rest = text.strip_prefix(&location).and_then(|r| r.strip_prefix(": ")).unwrap_or(&text);
        format!("{location}: {severity}: {rest}")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.position {
            write!(f, ":{}", p.line)?;
            if let Some(c) = p.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// Displays problems one per line.
struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
