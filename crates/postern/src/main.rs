//! postern: one binary, many faces. `postern serve` is the daemon;
//! `postern sendmail` / `postern queue` / `postern config` are the tools.
//! Invoked as `sendmail` or `mailq` (a symlink), it behaves like those.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use postern::config::EXAMPLE;
use postern::sendmail::exit;
use postern::settings::{Settings, Source};
use postern::{queuecmd, sendmail, server};

/// Where the config is looked for when neither --config nor POSTERN_CONFIG is given.
const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

#[derive(Parser)]
#[command(name = "postern", version, about = "postern: a mail transfer agent (ESMTP server, queue, local and relay delivery)",
    long_about = "postern: a mail transfer agent (ESMTP server, queue, local and relay delivery).\n\n\
Configuration: --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml if it exists, \
else the embedded default (SMTP on 127.0.0.1:2525, local domains localhost and the host name, \
Maildirs under DATA/mail, loopback clients may relay). State lives in the data directory: \
--data-dir, else $POSTERN_DATA_DIR, else `data_dir` in the config, else ./postern-data.\n\n\
Invoked as `sendmail` it is `postern sendmail`; as `mailq`, `postern queue list`; as `newaliases`, it checks the aliases file.")]
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
    /// Run the mail server (SIGTERM/SIGINT: drain and stop; SIGHUP: reload the config).
    Serve,
    /// Queue a message from standard input, like /usr/sbin/sendmail (`postern sendmail --help`).
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail options and recipients: -t, -i, -oi, -f ADDR, -F NAME, -bp, rcpt...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Inspect and manage the queue.
    Queue {
        #[command(subcommand)]
        action: QueueCmd,
    },
    /// Print or check configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Check the aliases file (like `newaliases`; postern reads it directly, nothing to rebuild).
    Aliases,
    /// Explain the relay decision for one recipient, with the same code the server runs.
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
        /// RCPT TO address.
        #[arg(long, value_name = "ADDR")]
        rcpt: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Manage SMTP AUTH users (DATA/users.json; the server picks up changes without restart).
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// The built-in certificate authority for client and server certificates (files in DATA/ca).
    Ca {
        #[command(subcommand)]
        action: CaCmd,
    },
    /// SMTP load generator for benchmarks (bench/run): sends N messages to any SMTP server and
    /// prints the rate and p50/p99 time per message. Loopback use only; not for production servers.
    Bench {
        /// Server address, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        server: postern::config::Endpoint,
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
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (prompts twice for the password, or reads one line with --password-stdin).
    Add {
        /// User name (also a local mailbox).
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// MAIL FROM addresses this user may use (auth.sender_login_match); repeatable.
        #[arg(long)]
        address: Vec<String>,
    },
    /// Change a user's password.
    Passwd {
        /// User name.
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    Del {
        /// User name.
        name: String,
    },
    /// List users and what each can log in with.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check a password (exit 0 if it matches, 1 if not).
    Verify {
        /// User name.
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Let a client certificate (by SHA-256 fingerprint) log in as NAME with EXTERNAL.
    Cert {
        /// User name.
        name: String,
        /// SHA-256 of the certificate (hex, as in the mail log's cert_sha256).
        sha256: String,
    },
    /// Import users from a Cyrus/sendmail sasldb2 (Berkeley DB); passwords are re-hashed.
    ImportSasldb {
        /// The sasldb2 file (e.g. /etc/sasldb2).
        file: PathBuf,
    },
    /// Import a Dovecot/htpasswd passwd-file (bcrypt, SHA512-CRYPT, SHA256-CRYPT, argon2 hashes are verified natively).
    ImportPasswd {
        /// The passwd-file.
        file: PathBuf,
    },
    /// Remove every stored plaintext-equivalent secret (after disabling CRAM-MD5).
    PurgePlain,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the CA: DATA/ca/ca.key (ECDSA P-256) and ca.crt. The server then trusts it for client certificates.
    Init {
        /// The CA's common name.
        #[arg(long, default_value = "postern CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// RSA key instead of ECDSA P-256 (for old clients).
        #[arg(long)]
        rsa: bool,
    },
    /// Issue a certificate signed by the CA, into DATA/ca/issued/.
    Issue {
        #[command(subcommand)]
        kind: IssueKind,
    },
    /// List issued certificates with serials and revocation state.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate by serial (hex) and rewrite DATA/ca/crl.pem; the server honours it at once.
    Revoke {
        /// Serial number as shown by `ca list`.
        serial: String,
    },
}

#[derive(Subcommand)]
enum IssueKind {
    /// A TLS server certificate (NAME is also a DNS SAN unless --san is given).
    Server {
        /// Common name and file name.
        name: String,
        /// Subject alternative names (DNS names, IP addresses or e-mail addresses); repeatable.
        #[arg(long)]
        san: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// RSA key instead of ECDSA P-256 (for old clients).
        #[arg(long)]
        rsa: bool,
    },
    /// A TLS client certificate, plus NAME.p12 (PKCS#12 for Outlook, Thunderbird, macOS Keychain).
    Client {
        /// Common name and file name.
        name: String,
        /// Subject alternative names (e-mail addresses, DNS names); repeatable.
        #[arg(long)]
        san: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// RSA key instead of ECDSA P-256 (for old clients).
        #[arg(long)]
        rsa: bool,
        /// Password for the PKCS#12 bundle (default: generated and printed).
        #[arg(long, env = "POSTERN_P12_PASSWORD")]
        p12_password: Option<String>,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List queued messages (same as `mailq`). `!` after the id marks a held message.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, per-recipient state and text.
    Show {
        /// Queue id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to try all (or one) queued messages now.
    Flush {
        /// Queue id; all messages when omitted.
        id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete messages from the queue without bouncing them.
    Delete {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put messages on hold: kept, never tried, until released.
    Hold {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Return messages to their senders now (pending recipients fail with a bounce).
    Bounce {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release held messages and try them now.
    Release {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print a complete, commented example configuration.
    Example,
    /// Validate a configuration file (default: --config, $POSTERN_CONFIG or /etc/postern/postern.toml).
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

fn source(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Source {
    let config = config.or_else(|| {
        let p = PathBuf::from(SYSTEM_CONFIG);
        p.exists().then_some(p)
    });
    Source { config, data_dir }
}

fn load(src: &Source) -> Result<Settings, i32> {
    Settings::load(src).map_err(|e| {
        eprintln!("postern: {e}");
        exit::CONFIG
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTERN_DEBUG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().and_then(|a| a.rsplit('/').next()).unwrap_or("postern").to_string();
    let env_src = || source(std::env::var_os("POSTERN_CONFIG").map(PathBuf::from), std::env::var_os("POSTERN_DATA_DIR").map(PathBuf::from));
    match name.as_str() {
        "sendmail" => {
            return match load(&env_src()) {
                Ok(s) => code(sendmail::run(&s, &argv[1..])),
                Err(c) => code(c),
            };
        }
        "mailq" => {
            return match load(&env_src()) {
                Ok(s) => code(queuecmd::list(&s, argv.iter().any(|a| a == "--json"))),
                Err(c) => code(c),
            };
        }
        "newaliases" => {
            return match load(&env_src()) {
                Ok(s) => {
                    println!("postern: {} aliases, nothing to rebuild", s.aliases.len());
                    code(exit::OK)
                }
                Err(c) => code(c),
            };
        }
        _ => {}
    }
    let cli = Cli::parse();
    let src = source(cli.config, cli.data_dir);
    match cli.command {
        Cmd::Serve => {
            init_tracing();
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("postern: cannot start runtime: {e}");
                    return code(exit::TEMPFAIL);
                }
            };
            match rt.block_on(server::serve(src)) {
                Ok(()) => code(exit::OK),
                Err(e) => {
                    eprintln!("postern: {e}");
                    code(exit::CONFIG)
                }
            }
        }
        Cmd::Sendmail { args } => match load(&src) {
            Ok(s) => code(sendmail::run(&s, &args)),
            Err(c) => code(c),
        },
        Cmd::Queue { action } => {
            let s = match load(&src) {
                Ok(s) => s,
                Err(c) => return code(c),
            };
            code(match action {
                QueueCmd::List { json } => queuecmd::list(&s, json),
                QueueCmd::Show { id, json } => queuecmd::show(&s, &id, json),
                QueueCmd::Flush { id, json } => queuecmd::flush(&s, id.as_deref(), json),
                QueueCmd::Delete { ids, json } => queuecmd::change(&s, "delete", &ids, json),
                QueueCmd::Hold { ids, json } => queuecmd::change(&s, "hold", &ids, json),
                QueueCmd::Release { ids, json } => queuecmd::change(&s, "release", &ids, json),
                QueueCmd::Bounce { ids, json } => queuecmd::change(&s, "bounce", &ids, json),
            })
        }
        Cmd::Config { action } => match action {
            ConfigCmd::Example => {
                print!("{EXAMPLE}");
                code(exit::OK)
            }
            ConfigCmd::Check { file } => {
                let Some(file) = file.or(src.config) else {
                    eprintln!("postern: no config file given (and {SYSTEM_CONFIG} does not exist); the embedded default is valid");
                    return code(exit::USAGE);
                };
                match Settings::load(&Source { config: Some(file.clone()), data_dir: src.data_dir.clone() }) {
                    Ok(s) => {
                        let open: Vec<&str> = s
                            .config
                            .listeners
                            .iter()
                            .map(|l| l.label())
                            .filter(|l| postern::policy::is_open_relay(&s, l))
                            .collect();
                        for l in &open {
                            eprintln!("{}: warning: OPEN RELAY: listener {l:?} relays mail from any client to any domain (see `postern explain`)", file.display());
                        }
                        println!("{}: ok{}", file.display(), if open.is_empty() { "" } else { " (with warnings)" });
                        code(exit::OK)
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        code(exit::CONFIG)
                    }
                }
            }
        },
        Cmd::Explain { listener, ip, tls, cert, auth, from, rcpt, json } => match load(&src) {
            Ok(s) => code(explain(&s, listener, ip, tls, cert, auth, &from, &rcpt, json)),
            Err(c) => code(c),
        },
        Cmd::User { action } => match load(&src) {
            Ok(s) => code(user_command(&s, action)),
            Err(c) => code(c),
        },
        Cmd::Ca { action } => match load(&src) {
            Ok(s) => code(ca_command(&s, action)),
            Err(c) => code(c),
        },
        Cmd::Bench { server, messages, concurrency, size, starttls, auth_user, password_file, reuse, from, to, deadline, json } => {
            let auth = match (auth_user, password_file) {
                (Some(u), Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(t) => Some((u, t.lines().next().unwrap_or("").to_string())),
                    Err(e) => {
                        eprintln!("postern: {}: {e}", f.display());
                        return code(exit::USAGE);
                    }
                },
                _ => None,
            };
            let plan = postern::loadgen::Plan { server, messages, concurrency, size, starttls, auth, reuse, from, to, deadline };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("postern: cannot start runtime: {e}");
                    return code(exit::TEMPFAIL);
                }
            };
            match rt.block_on(postern::loadgen::run(plan)) {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    code(if r.failed == 0 { exit::OK } else { exit::TEMPFAIL })
                }
                Ok(r) => {
                    println!(
                        "accepted {} failed {} in {:.2} s: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms{}",
                        r.accepted,
                        r.failed,
                        r.seconds,
                        r.rate,
                        r.p50_ms,
                        r.p99_ms,
                        r.first_error.map(|e| format!(" (first error: {e})")).unwrap_or_default()
                    );
                    code(if r.failed == 0 { exit::OK } else { exit::TEMPFAIL })
                }
                Err(e) => {
                    eprintln!("postern: bench: {e}");
                    code(exit::TEMPFAIL)
                }
            }
        }
        Cmd::Aliases => match load(&src) {
            Ok(s) => {
                println!("postern: {} aliases, nothing to rebuild", s.aliases.len());
                code(exit::OK)
            }
            Err(c) => code(c),
        },
    }
}

fn ca_command(s: &Settings, action: CaCmd) -> i32 {
    use postern::ca::{Ca, Kind};
    let ca = Ca::new(&s.data_dir);
    let notify = || {
        let _ = postern::control::request(&s.data_dir, "reload-tls");
    };
    let result = match action {
        CaCmd::Init { name, days, rsa } => ca.init(&name, days, rsa).map(|i| {
            println!("CA created: {} (sha256 {})", ca.cert_path().display(), i.sha256);
            println!("The server now trusts it for client certificates (tls.client_ca_files default).");
            notify();
        }),
        CaCmd::Issue { kind: IssueKind::Server { name, san, days, rsa } } => ca.issue(Kind::Server, &name, &san, days, rsa).map(|(i, crt, key)| {
            println!("serial {} {}\ncertificate {}\nkey {}", i.serial, i.subject, crt.display(), key.display());
        }),
        CaCmd::Issue { kind: IssueKind::Client { name, san, days, rsa, p12_password } } => {
            ca.issue(Kind::Client, &name, &san, days, rsa).and_then(|(i, crt, key)| {
                let generated = p12_password.is_none();
                let pw = p12_password.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
                let p12 = crt.with_extension("p12");
                ca.pkcs12(&crt, &key, &pw, &p12)?;
                println!("serial {} {}\ncertificate {}\nkey {}\npkcs12 {}", i.serial, i.subject, crt.display(), key.display(), p12.display());
                if generated {
                    println!("pkcs12 password {pw}");
                }
                Ok(())
            })
        }
        CaCmd::List { json } => ca.list().map(|list| {
            if json {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                println!("{:<8} {:<7} {:<30} {:<26} state", "serial", "kind", "subject", "not after");
                for i in list {
                    let state = match &i.revoked {
                        Some(t) => format!("revoked {t}"),
                        None => "valid".to_string(),
                    };
                    println!("{:<8} {:<7} {:<30} {:<26} {state}", i.serial, format!("{:?}", i.kind).to_lowercase(), i.subject, i.not_after);
                }
            }
        }),
        CaCmd::Revoke { serial } => ca.revoke(&serial).map(|i| {
            println!("revoked serial {} ({}); CRL rewritten: {}", i.serial, i.subject, ca.crl_path().display());
            notify();
        }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("postern ca: {e}");
            1
        }
    }
}

fn read_password(stdin: bool, twice: bool) -> Result<String, String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| format!("reading password: {e}"))?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        return if pw.is_empty() { Err("empty password".into()) } else { Ok(pw) };
    }
    let pw = rpassword::prompt_password("Password: ").map_err(|e| format!("reading password: {e} (use --password-stdin)"))?;
    if twice {
        let again = rpassword::prompt_password("Again: ").map_err(|e| format!("reading password: {e}"))?;
        if again != pw {
            return Err("passwords differ".into());
        }
    }
    if pw.is_empty() {
        return Err("empty password".into());
    }
    Ok(pw)
}

fn user_command(s: &Settings, action: UserCmd) -> i32 {
    use postern::users::UserDb;
    let path = s.data_dir.join("users.json");
    let cram = postern::auth::plaintext_secret_mechanisms_enabled(&s.config);
    let warn_plain = || {
        if cram {
            eprintln!("postern user: warning: CRAM-MD5/DIGEST-MD5 is enabled, so a plaintext-equivalent secret is stored in {}", path.display());
        }
    };
    let mut db = match UserDb::load(&path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("postern user: {e}");
            return exit::CONFIG;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&s.data_dir) {
        eprintln!("postern user: {}: {e}", s.data_dir.display());
        return exit::CANTCREAT;
    }
    let valid = |n: &str| postern::aliases::is_local_name(&n.to_ascii_lowercase());
    let result: Result<bool, String> = match action {
        UserCmd::Add { name, password_stdin, address } => {
            if !valid(&name) {
                Err(format!("{name:?} is not a valid user name (letters, digits, . _ - + =)"))
            } else if db.users.contains_key(&name.to_ascii_lowercase()) {
                Err(format!("user {name} exists (use `postern user passwd`)"))
            } else {
                read_password(password_stdin, true).and_then(|pw| {
                    db.set_password(&name, &pw, cram).map_err(|e| e.to_string())?;
                    if let Some(r) = db.users.get_mut(&name.to_ascii_lowercase()) {
                        r.addresses = address;
                    }
                    warn_plain();
                    println!("user {} added", name.to_ascii_lowercase());
                    Ok(true)
                })
            }
        }
        UserCmd::Passwd { name, password_stdin } => {
            if !db.users.contains_key(&name.to_ascii_lowercase()) {
                Err(format!("no user {name}"))
            } else {
                read_password(password_stdin, true).and_then(|pw| {
                    db.set_password(&name, &pw, cram).map_err(|e| e.to_string())?;
                    warn_plain();
                    println!("password of {} changed", name.to_ascii_lowercase());
                    Ok(true)
                })
            }
        }
        UserCmd::Del { name } => match db.users.remove(&name.to_ascii_lowercase()) {
            Some(_) => {
                println!("user {} deleted", name.to_ascii_lowercase());
                Ok(true)
            }
            None => Err(format!("no user {name}")),
        },
        UserCmd::List { json } => {
            if json {
                let v: Vec<_> = db
                    .users
                    .iter()
                    .map(|(n, r)| {
                        serde_json::json!({
                            "name": n,
                            "argon2": r.argon2.is_some(),
                            "scram": r.scram_sha256.is_some(),
                            "plaintext_secret": r.plain.is_some(),
                            "imported_hash": r.imported_hash.is_some(),
                            "addresses": r.addresses,
                            "certificates": r.certificates,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for (n, r) in &db.users {
                    let mut how = Vec::new();
                    if r.argon2.is_some() {
                        how.push("password");
                    }
                    if r.scram_sha256.is_some() {
                        how.push("scram");
                    }
                    if r.plain.is_some() {
                        how.push("cram-md5");
                    }
                    if r.imported_hash.is_some() {
                        how.push("imported-hash");
                    }
                    if !r.certificates.is_empty() {
                        how.push("certificate");
                    }
                    println!("{n}\t{}\t{}", how.join(","), r.addresses.join(","));
                }
            }
            Ok(false)
        }
        UserCmd::Verify { name, password_stdin } => match read_password(password_stdin, false) {
            Ok(pw) => {
                if db.verify(&name, &pw) {
                    println!("ok");
                    Ok(false)
                } else {
                    eprintln!("postern user: password does not match (or no such user)");
                    return 1;
                }
            }
            Err(e) => Err(e),
        },
        UserCmd::Cert { name, sha256 } => match db.users.get_mut(&name.to_ascii_lowercase()) {
            Some(r) => {
                let fp = sha256.replace(':', "").to_ascii_lowercase();
                if fp.len() != 64 || !fp.bytes().all(|c| c.is_ascii_hexdigit()) {
                    Err("expected a SHA-256 fingerprint (64 hex digits)".into())
                } else {
                    if !r.certificates.contains(&fp) {
                        r.certificates.push(fp);
                    }
                    println!("certificate added for {}", name.to_ascii_lowercase());
                    Ok(true)
                }
            }
            None => Err(format!("no user {name}")),
        },
        UserCmd::ImportSasldb { file } => db.import_sasldb(&file, cram).map_err(|e| e.to_string()).map(|names| {
            warn_plain();
            println!("imported {} user(s): {}", names.len(), names.join(" "));
            true
        }),
        UserCmd::ImportPasswd { file } => db.import_passwd_file(&file).map_err(|e| e.to_string()).map(|(ok, skipped)| {
            for sk in &skipped {
                eprintln!("postern user: skipped {sk}");
            }
            println!("imported {} user(s): {}", ok.len(), ok.join(" "));
            true
        }),
        UserCmd::PurgePlain => {
            let n = db.drop_plain();
            println!("removed {n} plaintext-equivalent secret(s)");
            Ok(n > 0)
        }
    };
    match result {
        Ok(true) => match db.save(&path) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("postern user: {e}");
                exit::CANTCREAT
            }
        },
        Ok(false) => exit::OK,
        Err(e) => {
            eprintln!("postern user: {e}");
            1
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    s: &Settings,
    listener: Option<String>,
    ip: std::net::IpAddr,
    tls: bool,
    cert: Option<PathBuf>,
    auth: Option<String>,
    from: &str,
    rcpt: &str,
    json: bool,
) -> i32 {
    use postern::policy::{check_rcpt, classify, Facts, RcptDecision};
    use postern_wire::address::parse_path;
    use postern_wire::Path;
    let listener = listener.unwrap_or_else(|| s.config.listeners.first().map(|l| l.label().to_string()).unwrap_or_default());
    let wrap = |a: &str| if a.starts_with('<') { a.to_string() } else { format!("<{a}>") };
    let sender = match parse_path(&wrap(from), true, false, true) {
        Ok((Path::Mailbox(m), _)) => Some(m),
        Ok(_) => None,
        Err(e) => {
            eprintln!("postern explain: --from {from}: {e}");
            return exit::USAGE;
        }
    };
    let rcpt_path = match parse_path(&wrap(rcpt), false, true, true) {
        Ok((p, _)) => p,
        Err(e) => {
            eprintln!("postern explain: --rcpt {rcpt}: {e}");
            return exit::USAGE;
        }
    };
    let identity = match &cert {
        Some(p) => {
            let chain = match postern::tls::load_certs(p) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    return exit::USAGE;
                }
            };
            match postern::tls::CertVerifier::load(s) {
                Ok(v) => v.identify(&chain),
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    return exit::CONFIG;
                }
            }
        }
        None => None,
    };
    let who = auth.map(|u| postern::auth::Authenticated::dangerous_assume(&u));
    let db = postern::users::UserDb::load(&s.data_dir.join("users.json")).unwrap_or_default();
    let facts = Facts {
        listener: &listener,
        client_ip: ip,
        tls: tls || cert.is_some(),
        authenticated: who.as_ref(),
        cert: identity.as_ref(),
        sender: sender.as_ref(),
        rcpt: &rcpt_path,
        user_db: Some(&db),
    };
    let class = format!("{:?}", classify(s, &rcpt_path)).to_ascii_lowercase();
    let d = check_rcpt(s, &facts);
    let (decision, reply) = match &d {
        RcptDecision::Accept { action, .. } => (format!("{action:?}").to_ascii_lowercase(), "250 2.1.5 Recipient ok".to_string()),
        RcptDecision::Reject { reply, .. } => ("reject".to_string(), reply.summary()),
    };
    let cert_text = identity.as_ref().map(|c| format!("{} ({})", c.cert.subject, c.verdict()));
    if json {
        let v = serde_json::json!({
            "decision": decision, "reply": reply, "rule": d.rule(), "origin": d.origin(),
            "recipient_class": class, "listener": listener, "client": ip.to_string(),
            "certificate": cert_text,
        });
        println!("{v}");
    } else {
        println!("decision: {decision}");
        println!("reply:    {reply}");
        println!("rule:     {} ({})", d.rule(), d.origin());
        println!("facts:    listener={listener} client={ip} tls={} auth={} recipient={class}", facts.tls, who.as_ref().map(|a| a.user()).unwrap_or("-"));
        if let Some(c) = cert_text {
            println!("cert:     {c}");
        }
    }
    exit::OK
}
