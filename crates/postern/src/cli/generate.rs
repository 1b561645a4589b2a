//! `postern generate man|completions DIR` (hidden; used by packaging): man
//! pages and shell completions generated from the clap grammar, so they
//! can never drift from `--help`.
//!
//! Pages, all in section 8 (system administration, like Postfix's and
//! sendmail's daemons): `postern.8`, one `postern-SUB.8` per subcommand at
//! every level (`postern-queue.8`, `postern-queue-list.8`, ...), and
//! `sendmail.8`, `mailq.8`, `newaliases.8` for the classic faces. The
//! sendmail page's option list is [`super::sendmail::HELP`], the text
//! `sendmail --help` prints, so the two stay one.
//!
//! May touch: the output directory named (creates it and writes files).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, Subcommand, ValueEnum};
use clap_complete::Shell as CompleteShell;

use super::sysexits as exit;

/// `postern generate ...`.
#[derive(Subcommand)]
pub enum GenerateCmd {
    /// Write the man pages (postern.8, postern-SUBCOMMAND.8, sendmail.8, mailq.8, newaliases.8) into DIR.
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Write the completion script for SHELL into DIR (postern.bash, _postern, postern.fish).
    Completions {
        /// The shell.
        shell: Shell,
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (install as /usr/share/bash-completion/completions/postern).
    Bash,
    /// zsh (install as /usr/share/zsh/vendor-completions/_postern).
    Zsh,
    /// fish (install as /usr/share/fish/vendor_completions.d/postern.fish).
    Fish,
}

/// Runs `postern generate ACTION`; returns the exit code.
pub(super) fn run(action: GenerateCmd) -> i32 {
    let (dir, result) = match action {
        GenerateCmd::Man { dir } => {
            let r = man_pages(&dir);
            (dir, r)
        }
        GenerateCmd::Completions { shell, dir } => {
            let r = completions(shell, &dir);
            (dir, r)
        }
    };
    match result {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("postern generate: {}: {e}", dir.display());
            exit::CANTCREAT
        }
    }
}

/// Writes the completion script for `shell` into `dir`; returns its path.
pub fn completions(shell: Shell, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let shell = match shell {
        Shell::Bash => CompleteShell::Bash,
        Shell::Zsh => CompleteShell::Zsh,
        Shell::Fish => CompleteShell::Fish,
    };
    let mut cmd = without_hidden(super::command());
    Ok(vec![clap_complete::generate_to(shell, &mut cmd, "postern", dir)?])
}

/// `cmd` without its hidden subcommands (clap_complete would offer them).
fn without_hidden(cmd: Command) -> Command {
    let subs: Vec<Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let args: Vec<Arg> = cmd.get_arguments().cloned().collect();
    let mut out = Command::new("postern").version(env!("CARGO_PKG_VERSION")).args(args).subcommands(subs).subcommand_required(true);
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    out
}

/// Text shared by every page: where things are and where to read on.
const FILES: &str = "\
/etc/postern/postern.toml\tthe configuration (`postern config example` prints every key)
/var/lib/postern\tthe data directory of the Debian package: queue/, mail/ (Maildirs), users.json, ca/, control.sock";

/// Environment variables the faces read.
const ENVIRONMENT: &str = "\
POSTERN_CONFIG\tconfiguration file, when --config is not given
POSTERN_DATA_DIR\tdata directory, when --data-dir is not given
POSTERN_DEBUG\ttracing filter for debugging output on standard error (e.g. debug)";

/// Writes every man page into `dir`; returns their paths.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut root = super::command()
        .disable_help_subcommand(true)
        .mut_subcommand("sendmail", |c| c.long_about(sendmail_description("postern sendmail")));
    root.build();
    let mut pages = Vec::new();
    let mut names = Vec::new();
    collect(&root, &mut pages, &mut names);
    // postern(8) lists every page; the others point back to it and to the faces.
    let see_also = |own: &str| -> String {
        let listed: Vec<&str> = if own == "postern" { names.iter().map(String::as_str).collect() } else { vec!["postern"] };
        let faces = ["sendmail", "mailq", "newaliases"];
        listed.into_iter().chain(faces).filter(|n| *n != own).map(|n| format!("{n}(8)")).collect::<Vec<_>>().join(", ")
    };
    let mut out = Vec::new();
    for cmd in pages {
        let name = display_name(&cmd);
        let verbatim = (name == "postern-sendmail").then_some(super::sendmail::HELP);
        out.push(write(dir, &name, &render(cmd, verbatim, &see_also(&name))?)?);
    }
    for cmd in faces() {
        let name = cmd.get_name().to_string();
        let verbatim = (name == "sendmail").then_some(super::sendmail::HELP);
        out.push(write(dir, &name, &render(cmd, verbatim, &see_also(&name))?)?);
    }
    Ok(out)
}

/// `cmd` and all its visible subcommands, depth first, with their page names.
fn collect(cmd: &Command, pages: &mut Vec<Command>, names: &mut Vec<String>) {
    names.push(display_name(cmd));
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages, names);
    }
}

/// `postern-queue-list` for `postern queue list` (clap sets it on build).
fn display_name(cmd: &Command) -> String {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{name}.8"));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(text.as_bytes())?;
    f.flush()?;
    Ok(path)
}

/// The page for `cmd`: clap's sections, then `verbatim` (a `--help` text
/// whose columns must stay) as SENDMAIL OPTIONS, FILES, ENVIRONMENT and SEE ALSO.
fn render(cmd: Command, verbatim: Option<&str>, see_also: &str) -> std::io::Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).section("8").manual("postern").source(format!("postern {}", env!("CARGO_PKG_VERSION"))).render(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if let Some(v) = verbatim {
        let _ = writeln!(text, ".SH \"SENDMAIL OPTIONS\"\n.nf");
        for line in v.lines() {
            let _ = writeln!(text, "{}", escape(line));
        }
        let _ = writeln!(text, ".fi");
    }
    for (title, body) in [("FILES", FILES), ("ENVIRONMENT", ENVIRONMENT)] {
        let _ = writeln!(text, ".SH {title}");
        for line in body.lines() {
            let (term, def) = line.split_once('\t').unwrap_or((line, ""));
            let _ = writeln!(text, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(def));
        }
    }
    let _ = writeln!(text, ".SH \"SEE ALSO\"\n{}", escape(see_also));
    let _ = writeln!(
        text,
        ".PP\nOn a Debian system the guides are in /usr/share/doc/postern (operations.md, configuration.md, tls.md, relay.md)."
    );
    Ok(text)
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would
/// be read as a request.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The sendmail description: what the face is, then `--help`'s text.
fn sendmail_description(name: &str) -> String {
    format!(
        "{name} is postern's sendmail-compatible submission command: it reads one message from standard input \
and queues it in postern's data directory, then asks the running daemon to deliver it. Installed as \
/usr/sbin/sendmail (the Debian package diverts the previous one), it is what cron, PHP mail() and other \
programs call. SENDMAIL OPTIONS below is what --help prints."
    )
}

/// The classic faces chosen by the program name. Their arguments are not
/// parsed by clap (sendmail's `-oi`/`-fADDR` forms); these commands exist
/// only to render their pages.
fn faces() -> Vec<Command> {
    let version = env!("CARGO_PKG_VERSION");
    let sendmail = Command::new("sendmail")
        .version(version)
        .about("postern's sendmail-compatible mail submission (a link to postern)")
        .long_about(sendmail_description("sendmail"))
        .override_usage("sendmail [options] [recipient ...]")
        .disable_help_flag(true)
        .disable_version_flag(true);
    let mailq = Command::new("mailq")
        .version(version)
        .about("list postern's mail queue (a link to postern; the same as `postern queue list`)")
        .long_about(
            "mailq lists the messages in postern's queue: queue id, size, arrival time, sender, and each \
pending recipient with the reason of its last failed attempt, like Postfix's mailq. It is `postern queue list`; \
`postern queue --help` shows the other queue commands (show, delete, hold, release, flush).",
        )
        .disable_version_flag(true)
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Machine-readable output"));
    let newaliases = Command::new("newaliases")
        .version(version)
        .about("check postern's aliases file (a link to postern)")
        .long_about(
            "newaliases checks the aliases file named by `aliases` in the configuration and prints how many \
aliases it holds. postern reads the aliases(5) text file directly, so there is no database to rebuild; \
it is `postern aliases`.",
        )
        .disable_version_flag(true);
    vec![sendmail, mailq, newaliases]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_subcommand_and_face() {
        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(dir.path()).unwrap();
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in [
            "postern.8",
            "postern-serve.8",
            "postern-queue.8",
            "postern-queue-list.8",
            "postern-sendmail.8",
            "sendmail.8",
            "mailq.8",
            "newaliases.8",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        // Hidden commands (this one) get no page; `help` is not a command.
        assert!(!names.iter().any(|n| n.contains("generate") || n.contains("help")), "{names:?}");
        let main = std::fs::read_to_string(dir.path().join("postern.8")).unwrap();
        assert!(main.contains(".TH postern 8"), "{main}");
        assert!(main.contains("postern\\-queue(8)"), "subcommand list");
        assert!(main.contains(".SH \"SEE ALSO\""));
        let sendmail = std::fs::read_to_string(dir.path().join("sendmail.8")).unwrap();
        assert!(sendmail.contains("read recipients from To:"), "sendmail page carries --help's option list");
        let sub = std::fs::read_to_string(dir.path().join("postern-sendmail.8")).unwrap();
        assert!(sub.contains("read recipients from To:"));
    }

    #[test]
    fn completions_for_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        for (shell, file, needle) in [
            (Shell::Bash, "postern.bash", "queue"),
            (Shell::Zsh, "_postern", "#compdef postern"),
            (Shell::Fish, "postern.fish", "complete -c postern"),
        ] {
            let out = completions(shell, dir.path()).unwrap();
            assert_eq!(out, vec![dir.path().join(file)]);
            let text = std::fs::read_to_string(&out[0]).unwrap();
            assert!(text.contains(needle), "{file}: {needle}");
            assert!(!text.contains("shell completions generated"), "{file}: hidden command completed");
        }
    }

    #[test]
    fn escape_roff() {
        for (input, want) in [("a-b", "a\\-b"), (".x", "\\&.x"), ("'q", "\\&'q"), ("a\\b", "a\\eb")] {
            assert_eq!(escape(input), want, "{input}");
        }
    }
}
