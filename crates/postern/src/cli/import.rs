//! `postern import sendmail|postfix`: converts another MTA's configuration
//! (see docs/migration.md) and writes it with a report of every source line.
//!
//! May touch: reads the source files; writes the output directory;
//! standard output and error; with --verify, starts `postern serve` on the
//! imported configuration (see import::verify). Exit codes: 0 imported
//! (and, with --verify, no unexplained difference); 1 an unmapped
//! restriction without --allow-partial, or an unexplained difference; 66 a
//! source file is missing or unreadable; 70 the imported configuration does
//! not load (a bug) or --verify could not run; 78 a source file could not
//! be understood.

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
        ImportCmd::Postfix(a) => match crate::import::postfix::import_checked(a) {
            Ok(i) => (Ok(i), &a.common),
            Err(e) => {
                eprintln!("postern import: {e}");
                return match e {
                    crate::import::postfix::ImportError::Missing(_) => exit::NOINPUT,
                    crate::import::postfix::ImportError::Invalid(_) => exit::CONFIG,
                    crate::import::postfix::ImportError::Bug(_) => exit::SOFTWARE,
                };
            }
        },
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
    if common.verify.is_none() {
        return exit::OK;
    }
    let outcome = match crate::import::verify::run(&imported.config, common) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern import: --verify: {e}");
            return exit::SOFTWARE;
        }
    };
    let path = crate::import::verify::report_path(&common.out);
    if let Err(e) = std::fs::write(&path, &outcome.report) {
        eprintln!("postern import: writing {}: {e}", path.display());
        return exit::CANTCREAT;
    }
    for d in &outcome.differences {
        match &d.explained {
            Some(why) => println!("parity: {} {}: source {} postern {} (explained: {why})", d.probe, d.step, d.source, d.postern),
            None => println!("parity: {} {}: source {} postern {} UNEXPLAINED", d.probe, d.step, d.source, d.postern),
        }
    }
    let unexplained = outcome.unexplained();
    println!(
        "parity: {} probes, {} differences, {} unexplained (details: {})",
        outcome.probes,
        outcome.differences.len(),
        unexplained,
        path.display()
    );
    if unexplained > 0 {
        1
    } else {
        exit::OK
    }
}
