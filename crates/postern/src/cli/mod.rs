//! The command-line faces of the one `postern` binary: the clap grammar of
//! `postern SUBCOMMAND` and the dispatch to each face, plus the classic
//! faces chosen by the program name (`sendmail`, `mailq`, `newaliases`).
//! The faces use the library (settings, spool, config, policy, control
//! socket), never the SMTP session or server internals.
//!
//! May touch: standard input/output, whatever each face's module header
//! names (the spool, the control socket, `DATA/users.json`, `DATA/ca/`).
//!
//! Exit codes are sysexits(3), from [`sysexits`].

pub mod addrtest;
pub mod bench;
pub mod ca;
pub mod check;
mod check_mta_sts;
pub mod config;
pub mod directory;
pub mod directory_use;
pub mod dkim;
pub mod explain;
pub mod explain_auth;
pub mod explain_rdns;
pub mod explain_screen;
pub mod generate;
pub mod import;
pub mod log;
pub mod pipe;
pub mod queue;
mod queue_move;
pub mod select;
pub mod sendmail;
pub mod sendmail_bs;
pub mod sendmail_help;
pub mod sendmail_modes;
pub mod sendmail_verbose;
pub mod status;
pub mod sysexits;
pub mod tlsrpt;
pub mod user;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::{Settings, Source};
use sysexits as exit;

/// Where the config is looked for when neither --config nor POSTERN_CONFIG is given.
const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "postern: a mail transfer agent (ESMTP server, queue, local and relay delivery)",
    long_about = "postern: a mail transfer agent (ESMTP server, queue, local and relay delivery).\n\n\
Configuration: --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml if it exists, \
else the config and data directory of the running daemon (recorded in /run/postern/daemon.json), \
else the embedded default (SMTP on 127.0.0.1:2525, local domains localhost and the host name, \
Maildirs under DATA/mail, loopback clients may relay). State lives in the data directory: \
--data-dir, else $POSTERN_DATA_DIR, else `data_dir` in the config, else ./postern-data \
(which `sendmail` refuses: it never strands mail there). A command whose config differs from the \
running daemon's says so on stderr.\n\n\
Invoked as `sendmail` it is `postern sendmail`; as `mailq`, `postern queue list`; as `newaliases`, it checks the aliases file and makes the running daemon reload it."
)]
struct Cli {
    /// Configuration file (TOML). See `postern config example`.
    #[arg(long, short = 'c', global = true, env = "POSTERN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: queue, Maildirs, control socket.
    #[arg(long, global = true, env = "POSTERN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the mail server (SIGTERM/SIGINT: drain and stop; SIGHUP: reload the config and reopen the mail log).
    Serve,
    /// Queue a message from standard input, like /usr/sbin/sendmail (`postern sendmail --help`).
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail options and recipients: -t, -i, -f ADDR, -F NAME, -v, -bm, -bp, -bs, -bv, -bt, -bi, -q..., rcpt...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Inspect and manage the queue.
    Queue {
        #[command(subcommand)]
        action: queue::QueueCmd,
    },
    /// The mail log: `postern log reopen` after logrotate.
    Log {
        #[command(subcommand)]
        action: log::LogCmd,
    },
    /// The configuration: example, check (everything serve would refuse), show (effective, -n non-default), reload.
    Config {
        #[command(subcommand)]
        action: config::ConfigCmd,
    },
    /// Show the running daemon's listeners, queue and certificate expiry (a health check).
    ///
    /// Asks the daemon over DATA/control.sock (run as root or the daemon's user). Unhealthy: a
    /// listener down, a certificate expired or expiring within --cert-days, the oldest active or
    /// deferred message older than --max-age, an unreadable envelope. Exit 0 healthy; 1 unhealthy,
    /// each reason on stderr; 69 the daemon is not running; 78 config error.
    Status(status::StatusArgs),
    /// Check the aliases file and make the running daemon reload it (like `newaliases`, `sendmail -bi`).
    Aliases,
    /// Explain the relay decision for one recipient, with the same code the server runs (a
    /// configured [sql] or [ldap] directory is asked about virtual domains, as the server does; exit
    /// 75 when it cannot answer), and the inbound screen for --ip (DNSBL score per list, asked now;
    /// pregreet delay), rate limits and greylist state that would apply; then the delivery route the
    /// queue would take for --rcpt in mail from --from ([[route]] by recipient and sender domain,
    /// smarthost, MX or local), its next hops in order, TLS mode, client certificate and AUTH.
    Explain {
        /// Listener name or role (default: the first listener).
        #[arg(long)]
        listener: Option<String>,
        /// Client IP address.
        #[arg(long)]
        ip: std::net::IpAddr,
        /// The client uses TLS.
        #[arg(long)]
        tls: bool,
        /// The client's certificate (PEM chain); implies --tls. Verified against the configured client CAs.
        #[arg(long, value_name = "PEM")]
        cert: Option<PathBuf>,
        /// The client authenticated (SMTP AUTH) as this user.
        #[arg(long, value_name = "USER")]
        auth: Option<String>,
        /// MAIL FROM address ("<>" for the null sender).
        #[arg(long, value_name = "ADDR", default_value = "<>")]
        from: String,
        /// RCPT TO address (optional with --message).
        #[arg(long, value_name = "ADDR", required_unless_present = "message")]
        rcpt: Option<String>,
        /// A message file: print its SPF/DKIM/DMARC/ARC results, the message-stage
        /// [[rule]] that matches (spf/dkim/dmarc/arc criteria) and the decision, as
        /// the server computes them for mail from --ip with --helo and --from on
        /// --listener (DNS: [mx] nameservers).
        #[arg(long, value_name = "FILE")]
        message: Option<PathBuf>,
        /// The HELO name: judged by the [inbound.rdns] HELO checks; for --message
        /// also the SPF HELO identity (default there: the --from domain).
        #[arg(long, value_name = "NAME")]
        helo: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Manage SMTP AUTH users (DATA/users.json; the server picks up changes without restart).
    User {
        #[command(subcommand)]
        action: user::UserCmd,
    },
    /// The built-in certificate authority for client and server certificates (files in DATA/ca).
    Ca {
        #[command(subcommand)]
        action: ca::CaCmd,
    },
    /// DKIM signing keys: `dkim keygen DOMAIN` makes one and prints its DNS record, `dkim show DOMAIN` prints it again.
    Dkim {
        #[command(subcommand)]
        action: dkim::DkimCmd,
    },
    /// Ask the account directory ([ldap]) one question, like `postmap -q`: `directory lookup mailbox ADDR`.
    Directory {
        #[command(subcommand)]
        action: directory::DirectoryCmd,
    },
    /// Convert a sendmail or Postfix configuration: `import postfix --out DIR`, `import sendmail --mc FILE --out DIR`;
    /// writes postern.toml and a report of every source line (docs/migration.md).
    Import {
        #[command(subcommand)]
        action: import::ImportCmd,
    },
    /// TLS reports (RFC 8460, `[tls_rpt]`): `tlsrpt show [--day D]` prints a day's reports as JSON,
    /// `tlsrpt send [--day D]` queues them now for each domain's rua (docs/delivery.md "TLS reporting").
    Tlsrpt {
        #[command(subcommand)]
        action: tlsrpt::TlsrptCmd,
    },
    /// Self-tests: `check smarthost [ROUTE]` connects to the next hop as delivery would, step by step;
    /// `check mta-sts DOMAIN` shows a domain's MTA-STS policy and what it means for its MX hosts.
    Check {
        #[command(subcommand)]
        action: check::CheckCmd,
    },
    /// SMTP load generator for benchmarks (bench/run): sends N messages to any SMTP server and
    /// prints the rate and p50/p99 time per message. Loopback use only; not for production servers.
    Bench {
        /// Server address, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        server: crate::config::Endpoint,
        /// Messages to send in total.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Parallel clients.
        #[arg(long, default_value_t = 20)]
        concurrency: usize,
        /// Message size in octets.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// STARTTLS before MAIL (the server certificate is not checked).
        #[arg(long)]
        starttls: bool,
        /// AUTH PLAIN as this user (needs --password-file; needs --starttls unless the server allows plaintext).
        #[arg(long, value_name = "USER", requires = "password_file")]
        auth_user: Option<String>,
        /// File whose first line is the AUTH password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Keep a client's connection for its next message (default: a new connection per message).
        #[arg(long)]
        reuse: bool,
        /// Envelope sender.
        #[arg(long, default_value = "load@src.test")]
        from: String,
        /// Envelope recipient.
        #[arg(long, default_value = "rcpt@far.test")]
        to: String,
        /// Stop starting new messages after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        deadline: std::time::Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write man pages or shell completions generated from this grammar (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        action: generate::GenerateCmd,
    },
}

/// The clap grammar of `postern` (for man pages and completions, [`generate`]).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// The face a program name selects: a `sendmail`, `mailq` or `newaliases`
/// symlink acts like that program; any other name is `postern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// `postern SUBCOMMAND ...`: [`run`].
    Postern,
    /// `sendmail [options] [recipient ...]`: [`sendmail_face`].
    Sendmail,
    /// `mailq [--json]`: [`mailq_face`].
    Mailq,
    /// `newaliases`: [`newaliases_face`].
    Newaliases,
}

impl Face {
    /// The face for `argv[0]` (its last path component).
    pub fn of(argv0: &str) -> Face {
        match argv0.rsplit('/').next().unwrap_or(argv0) {
            "sendmail" => Face::Sendmail,
            "mailq" => Face::Mailq,
            "newaliases" => Face::Newaliases,
            _ => Face::Postern,
        }
    }
}

/// Settings for the classic faces, which take no `--config`: from
/// `$POSTERN_CONFIG` / `$POSTERN_DATA_DIR`, else the defaults.
fn env_settings() -> Result<Settings, i32> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    load(&source(var("POSTERN_CONFIG"), var("POSTERN_DATA_DIR"), true))
}

/// `sendmail ARGS...` (invoked through a `sendmail` symlink). Returns the exit code.
pub fn sendmail_face(args: &[String]) -> i32 {
    env_settings().map_or_else(|c| c, |s| sendmail_command(&s, args))
}

/// `mailq [--json]` (invoked through a `mailq` symlink). Returns the exit code.
pub fn mailq_face(args: &[String]) -> i32 {
    env_settings().map_or_else(|c| c, |s| queue::list(&s, args.iter().any(|a| a == "--json")))
}

/// `newaliases` (invoked through a symlink): checks the aliases file and
/// makes the running daemon reload it. Returns the exit code.
pub fn newaliases_face() -> i32 {
    env_settings().map_or_else(|c| c, |s| aliases_command(&s))
}

/// Where the config and data come from: --config / $POSTERN_CONFIG, else
/// /etc/postern/postern.toml if it exists; with neither and no data
/// directory named, the running daemon's config and data directory
/// (`crate::locate`), else the embedded default. `find_daemon` is false for
/// `serve` itself. When the daemon runs another config than the one
/// chosen, one warning line on stderr names both.
fn source(config: Option<PathBuf>, data_dir: Option<PathBuf>, find_daemon: bool) -> Source {
    let config = config.or_else(|| {
        let p = PathBuf::from(SYSTEM_CONFIG);
        p.exists().then_some(p)
    });
    let Some(daemon) = find_daemon.then(crate::locate::DaemonRecord::find).flatten() else {
        return Source { config, data_dir };
    };
    if config.is_none() && data_dir.is_none() {
        return Source { config: daemon.config, data_dir: Some(daemon.data_dir) };
    }
    if let Some(warning) = daemon.differs(config.as_deref()) {
        eprintln!("{warning}");
    }
    Source { config, data_dir }
}

fn load(src: &Source) -> Result<Settings, i32> {
    Settings::load(src).map_err(|e| {
        eprintln!("postern: {e}");
        exit::CONFIG
    })
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("POSTERN_DEBUG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A multi-threaded tokio runtime, or the exit code after saying why not.
fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("postern: cannot start runtime: {e}");
        exit::TEMPFAIL
    })
}

/// Prints clap's message (help, version, or the error with one "try
/// '--help'" line) and returns the exit code: 0 for help and version, 64
/// (EX_USAGE) for every usage error, like postern's own.
fn usage_error(e: &clap::Error) -> i32 {
    let _ = e.print();
    if e.use_stderr() {
        exit::USAGE
    } else {
        exit::OK
    }
}

/// `postern sendmail ...` and the `sendmail` face: `-bp` lists the queue
/// (as `mailq`), anything else submits a message from standard input.
fn sendmail_command(s: &Settings, args: &[String]) -> i32 {
    use sendmail::{Mode, HELP};
    match sendmail::parse_args(args) {
        Ok(Mode::Help) => {
            println!("{HELP}");
            exit::OK
        }
        Ok(Mode::ListQueue) => queue::list(s, false),
        Ok(Mode::Submit(o)) if !o.verbose => match sendmail::submit(s, &o, std::io::stdin().lock()) {
            Ok(_) => exit::OK,
            Err(e) => {
                eprintln!("postern sendmail: {e}");
                e.exit_code()
            }
        },
        Ok(mode) => sendmail_modes::run(s, mode),
        Err(e) => {
            eprintln!("postern sendmail: {e}\n{HELP}");
            e.exit_code()
        }
    }
}

fn aliases_command(s: &Settings) -> i32 {
    sendmail_modes::newaliases(s)
}

/// Loads the settings and runs `f` on them; a config error is printed and exits 78.
fn with_settings(src: &Source, f: impl FnOnce(&Settings) -> i32) -> i32 {
    match load(src) {
        Ok(s) => f(&s),
        Err(c) => c,
    }
}

/// `postern serve`: runs the daemon until SIGTERM/SIGINT.
fn serve(src: Source) -> i32 {
    init_tracing();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    match rt.block_on(crate::server::serve(src)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("postern: {e}");
            exit::CONFIG
        }
    }
}

/// Runs `postern [OPTIONS] COMMAND ...` (`argv[0]` included). Returns the
/// exit code: `--help`/`--version` 0, usage errors 64 ([`usage_error`]).
pub fn run(argv: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let find_daemon = !matches!(cli.command, Cmd::Serve);
    let src = source(cli.config, cli.data_dir, find_daemon);
    match cli.command {
        Cmd::Serve => serve(src),
        Cmd::Sendmail { args } => with_settings(&src, |s| sendmail_command(s, &args)),
        Cmd::Queue { action } => with_settings(&src, |s| queue::run(s, action)),
        Cmd::Config { action } => config::run(action, &src),
        Cmd::Log { action } => with_settings(&src, |s| log::run(s, action)),
        Cmd::Aliases => with_settings(&src, aliases_command),
        Cmd::Status(a) => with_settings(&src, |s| status::run(s, &a)),
        Cmd::Explain { listener, ip, tls, cert, auth, from, rcpt, message, helo, json } => with_settings(&src, |s| {
            let mut code = exit::OK;
            if let Some(file) = &message {
                let q = explain_auth::MessageQuery { file, ip, helo: helo.as_deref(), from: &from, listener: listener.as_deref(), tls };
                code = runtime().map_or_else(|c| c, |rt| explain_auth::run(&rt, s, &q, json));
            }
            match rcpt {
                Some(rcpt) if code == exit::OK => {
                    explain::run(s, &explain::Query { listener, ip, tls, cert, auth, from, rcpt, helo }, json)
                }
                _ => code,
            }
        }),
        Cmd::User { action } => with_settings(&src, |s| user::run(s, action)),
        // F5: a config that requires client certificates before any CA
        // exists is refused elsewhere; `ca init` is its fix, so it loads.
        Cmd::Ca { action } => match Settings::load_for_ca(&src) {
            Ok(s) => ca::run(&s, action),
            Err(e) => {
                eprintln!("postern: {e}");
                exit::CONFIG
            }
        },
        Cmd::Check { action } => with_settings(&src, |s| check::run(s, action)),
        Cmd::Dkim { action } => with_settings(&src, |s| dkim::run(s, action)),
        Cmd::Directory { action } => with_settings(&src, |s| directory::run(s, action)),
        Cmd::Bench { server, messages, concurrency, size, starttls, auth_user, password_file, reuse, from, to, deadline, json } => {
            let auth = match bench::login(auth_user, password_file) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let plan = crate::loadgen::Plan { server, messages, concurrency, size, starttls, auth, reuse, from, to, deadline };
            runtime().map_or_else(|c| c, |rt| bench::run(&rt, plan, json))
        }
        Cmd::Generate { action } => generate::run(action),
        Cmd::Import { action } => import::run(action),
        Cmd::Tlsrpt { action } => with_settings(&src, |s| tlsrpt::run(s, action)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faces_by_program_name() {
        assert_eq!(Face::of("/usr/sbin/sendmail"), Face::Sendmail);
        assert_eq!(Face::of("mailq"), Face::Mailq);
        assert_eq!(Face::of("/usr/bin/newaliases"), Face::Newaliases);
        assert_eq!(Face::of("/usr/local/bin/postern"), Face::Postern);
        assert_eq!(Face::of("sendmail.postfix"), Face::Postern);
    }

    /// Usage errors exit 64 (EX_USAGE), help and version 0.
    #[test]
    fn usage_errors_exit_64() {
        for (args, want) in [
            (&["postern", "frobnicate"][..], exit::USAGE),
            (&["postern"][..], exit::USAGE),
            (&["postern", "queue", "list", "--bogus"][..], exit::USAGE),
            (&["postern", "queue", "list", "--older-than", "soon"][..], exit::USAGE),
            (&["postern", "--help"][..], exit::OK),
            (&["postern", "queue", "--help"][..], exit::OK),
            (&["postern", "--version"][..], exit::OK),
        ] {
            let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            assert_eq!(run(argv), want, "{args:?}");
        }
    }

    #[test]
    fn grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
