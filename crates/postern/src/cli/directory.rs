//! `postern directory lookup …`: asks the configured account directory
//! (`[ldap]`, `[sql]`) one question with the code the server uses, like
//! Postfix's `postmap -q`, to debug filters, queries and outages.
//!
//! May touch: the directory's server (through `Services`), standard input
//! (a password), standard output and error.
//!
//! Exit codes: 0 found / accepted; 1 not found / rejected; 75 (EX_TEMPFAIL)
//! the directory could not answer (the reason is printed; this is what the
//! server turns into a 4xx reply); 78 no directory configured.

use clap::Subcommand;

use super::sysexits as exit;
use crate::directory::{Directory, DirectoryError, Lookup};
use crate::services::Services;
use crate::settings::Settings;

/// `postern directory ...`.
#[derive(Subcommand)]
pub enum DirectoryCmd {
    /// Ask the directory one question (exit 0 found, 1 not found, 75 directory unavailable).
    Lookup {
        #[command(subcommand)]
        what: LookupCmd,
    },
}

/// What to look up.
#[derive(Subcommand)]
pub enum LookupCmd {
    /// Check LOGIN's password as SMTP AUTH would (LDAP: a bind); prints the canonical login.
    PasswordCheck {
        /// The login.
        login: String,
        /// Read the password from standard input (one line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Is DOMAIN a virtual domain of the directory? (For this and the others: `-` reads one key
    /// a line from standard input and prints `KEY<TAB>answer` for each, like `postmap -q -`.)
    Domain {
        /// The domain.
        domain: String,
    },
    /// Does the mailbox ADDRESS exist?
    Mailbox {
        /// The address (local@domain).
        address: String,
    },
    /// The targets of the alias ADDRESS, one a line.
    Alias {
        /// The address (local@domain).
        address: String,
    },
    /// The logins allowed to send as ADDRESS (auth.sender_login_match), one a line.
    SenderLogins {
        /// The address (local@domain).
        address: String,
    },
}

/// Runs `postern directory ...`.
pub fn run(s: &Settings, action: DirectoryCmd) -> i32 {
    let DirectoryCmd::Lookup { what } = action;
    let Some(dir) = Services::new(s).directory.clone() else {
        eprintln!("postern: no account directory is configured (add an [ldap] table: docs/directory.md)");
        return exit::CONFIG;
    };
    let password = match &what {
        LookupCmd::PasswordCheck { password_stdin, .. } => match super::user::read_password(*password_stdin, false) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("postern: {e}");
                return exit::NOINPUT;
            }
        },
        _ => None,
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(lookup(dir.as_ref(), &what, password.as_deref().unwrap_or_default()))
}

/// Lower-case, as the server asks (addresses and domains arrive lower-case).
fn key(k: &str) -> String {
    k.trim().to_ascii_lowercase()
}

async fn lookup(dir: &dyn Directory, what: &LookupCmd, password: &str) -> i32 {
    let (kind, arg) = match what {
        LookupCmd::PasswordCheck { login, .. } => {
            let login = key(login);
            let answer = match dir.verify(&login, password) {
                Some(check) => check.await,
                // A backend that hands out hashes: check it as users.json's are.
                None => dir.password(&login).await.map(|e| e.filter(|e| verify_stored(&e.hash, password)).map(|e| e.user)),
            };
            let answer = answer.map(|user| user.map(|u| format!("accepted as {u}")));
            return report(dir, answer, "rejected (no such login or wrong password)");
        }
        LookupCmd::Domain { domain } => (Kind::Domain, domain),
        LookupCmd::Mailbox { address } => (Kind::Mailbox, address),
        LookupCmd::Alias { address } => (Kind::Alias, address),
        LookupCmd::SenderLogins { address } => (Kind::SenderLogins, address),
    };
    if arg != "-" {
        return report(dir, ask(dir, kind, &key(arg)).await, kind.missing());
    }
    // `-`: one key a line from standard input, one answer line each
    // (`KEY<TAB>answer`), flushed at once: a long-lived client of the
    // directory, as the server is (its connection is kept and re-opened
    // after an outage).
    let mut worst = exit::OK;
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let k = key(&line);
        if k.is_empty() {
            continue;
        }
        let text = match ask(dir, kind, &k).await {
            Ok(Some(v)) => v.replace('\n', ","),
            Ok(None) => {
                worst = worst.max(1);
                "NOT FOUND".to_string()
            }
            Err(e) => {
                worst = exit::TEMPFAIL;
                format!("UNAVAILABLE {e}")
            }
        };
        println!("{k}\t{text}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    worst
}

/// The questions that take one key.
#[derive(Clone, Copy)]
enum Kind {
    Domain,
    Mailbox,
    Alias,
    SenderLogins,
}

impl Kind {
    fn missing(self) -> &'static str {
        match self {
            Kind::Domain => "not a domain of this directory",
            Kind::Mailbox => "no such mailbox",
            Kind::Alias => "not an alias",
            Kind::SenderLogins => "no logins listed",
        }
    }
}

/// One answer: `Some(text)` found (lines), `None` not found.
async fn ask(dir: &dyn Directory, kind: Kind, k: &str) -> Lookup<Option<String>> {
    let list = |v: Vec<String>| (!v.is_empty()).then(|| v.join("\n"));
    match kind {
        Kind::Domain => dir.domain(k).await.map(|b| b.then(|| "yes".to_string())),
        Kind::Mailbox => dir.mailbox(k).await.map(|b| b.then(|| "exists".to_string())),
        Kind::Alias => dir.alias(k).await.map(list),
        Kind::SenderLogins => dir.sender_logins(k).await.map(list),
    }
}

/// A stored `{SCHEME}hash` or bare crypt string.
fn verify_stored(hash: &str, password: &str) -> bool {
    let bare = match hash.strip_prefix('{').and_then(|h| h.split_once('}')) {
        Some((_, rest)) => rest,
        None => hash,
    };
    crate::users::verify_hash(bare, password)
}

/// Prints the answer (found: standard output, exit 0; not found: standard
/// error, exit 1) or the outage (exit 75).
fn report(dir: &dyn Directory, answer: Lookup<Option<String>>, missing: &str) -> i32 {
    match answer {
        Ok(Some(text)) => {
            println!("{text}");
            exit::OK
        }
        Ok(None) => {
            eprintln!("{}: {missing}", dir.name());
            1
        }
        Err(DirectoryError::Unavailable { backend, reason }) => {
            eprintln!("postern: {backend} directory unavailable (temporary failure, the server answers 4xx): {reason}");
            exit::TEMPFAIL
        }
    }
}
