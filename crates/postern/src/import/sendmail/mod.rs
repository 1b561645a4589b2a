//! `postern import sendmail`: reads sendmail.mc (and optionally the
//! generated sendmail.cf, the access map source, aliases and a sasldb2)
//! and produces an [`Imported`](super::Imported).
//!
//! May touch: reads the source files named on the command line.

use std::path::PathBuf;

use super::Imported;

/// `postern import sendmail` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SendmailArgs {
    /// The m4 source (sendmail.mc).
    #[arg(long, value_name = "FILE")]
    pub mc: PathBuf,
    /// The access map source text (/etc/mail/access).
    #[arg(long, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// The aliases file (/etc/aliases).
    #[arg(long, value_name = "FILE")]
    pub aliases: Option<PathBuf>,
    /// A Cyrus SASL sasldb2 (users and passwords for users.json).
    #[arg(long, value_name = "FILE")]
    pub sasldb: Option<PathBuf>,
    /// The generated sendmail.cf (read for settings the .mc leaves to defaults).
    #[arg(long, value_name = "FILE")]
    pub cf: Option<PathBuf>,
    /// Common options.
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// Imports; `Err` is a message naming the file, line and problem.
pub fn import(_args: &SendmailArgs) -> Result<Imported, String> {
    Err("postern import sendmail is not implemented yet".into())
}
