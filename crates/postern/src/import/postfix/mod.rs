//! `postern import postfix`: reads main.cf, master.cf and the `hash:`,
//! `texthash:` and `cidr:` tables they name (their source text) and
//! produces an [`Imported`](super::Imported).
//!
//! May touch: reads the files under the configuration directory.

use std::path::PathBuf;

use super::Imported;

/// `postern import postfix` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PostfixArgs {
    /// The Postfix configuration directory (main.cf, master.cf).
    #[arg(long, value_name = "DIR", default_value = "/etc/postfix")]
    pub config_dir: PathBuf,
    /// Common options.
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// Imports; `Err` is a message naming the file, line and problem.
pub fn import(_args: &PostfixArgs) -> Result<Imported, String> {
    Err("postern import postfix is not implemented yet".into())
}
