//! `postern import sendmail|postfix`: converts another MTA's configuration
//! (see docs/migration.md) and writes it with a report of every source line.
//!
//! May touch: reads the source files; writes the output directory;
//! standard output and error. Exit codes: 0 imported (and, with --verify,
//! no unexplained difference); 1 an unmapped restriction without
//! --allow-partial, or an unexplained difference; 66 a source file is
//! missing or unreadable; 78 a source file could not be understood.

use clap::Subcommand;

use super::sysexits as exit;
use crate::import::postfix::PostfixArgs;
use crate::import::sendmail::SendmailArgs;
use crate::import::{CommonArgs, Imported};

/// `postern import ...`.
#[derive(Subcommand)]
pub enum ImportCmd {
    /// Import a sendmail set-up: sendmail.mc (+ access, aliases, sasldb2, sendmail.cf).
    Sendmail(SendmailArgs),
    /// Import a Postfix set-up: main.cf, master.cf and the tables they name.
    Postfix(PostfixArgs),
}

/// Runs the command; returns the exit code.
pub fn run(cmd: ImportCmd) -> i32 {
    let (result, common) = match &cmd {
        ImportCmd::Sendmail(a) => (crate::import::sendmail::import(a), &a.common),
        ImportCmd::Postfix(a) => (crate::import::postfix::import(a), &a.common),
    };
    match result {
        Ok(imported) => finish(&imported, common),
        Err(e) => {
            eprintln!("postern import: {e}");
            exit::CONFIG
        }
    }
}

/// Writes the output and reports unmapped restrictions.
fn finish(imported: &Imported, common: &CommonArgs) -> i32 {
    let unmapped: Vec<_> = imported.report.unmapped_restrictions().collect();
    if !unmapped.is_empty() && !common.allow_partial {
        for e in &unmapped {
            eprintln!("postern import: {}: restriction not mapped: {}", e.source, e.text);
        }
        eprintln!("postern import: {} restriction(s) not mapped; nothing written (--allow-partial writes anyway)", unmapped.len());
        return 1;
    }
    if let Err(e) = imported.write_to(&common.out) {
        eprintln!("postern import: writing {}: {e}", common.out.display());
        return exit::CANTCREAT;
    }
    print!("{}", imported.report.render());
    exit::OK
}
