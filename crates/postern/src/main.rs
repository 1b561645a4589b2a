//! postern: one binary, many faces. `postern serve` is the daemon;
//! `postern sendmail` / `postern queue` / `postern config` are the tools.
//! Invoked as `sendmail`, `mailq` or `newaliases` (a symlink), it behaves
//! like those. Everything but choosing the face lives in `postern::cli`.
//!
//! May touch: what the chosen face touches (see `postern::cli`).

use std::process::ExitCode;

use postern::cli::{self, Face};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let face = Face::of(argv.first().map(String::as_str).unwrap_or("postern"));
    // `postern queue list | head -1`: a closed stdout ends quietly (141).
    cli::pipe::exit_quietly_on_broken_pipe();
    let args = argv.get(1..).unwrap_or_default();
    let code = match face {
        Face::Sendmail => cli::sendmail_face(args),
        Face::Mailq => cli::mailq_face(args),
        Face::Newaliases => cli::newaliases_face(),
        Face::Postern => cli::run(argv),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
