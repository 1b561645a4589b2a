//! `postern user …`: manage SMTP AUTH users in `DATA/users.json` (the
//! server re-reads the file when it changes, no restart needed).
//!
//! May touch: `DATA/users.json`, the terminal or standard input (passwords),
//! the sasldb2 / passwd files named for import (read), standard output.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::sysexits as exit;
use crate::settings::Settings;
use crate::users::{UserDb, UserError};
use clap::Subcommand;

/// `postern user ...`.
#[derive(Subcommand)]
pub enum UserCmd {
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
    /// Check a password (exit 0 if it matches, 1 if not). With auth.backend = "sql" or "ldap" the
    /// directory checks it (NAME is the full login; exit 75 when the directory cannot answer).
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

/// Why reading a password failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Standard input could not be read.
    #[error("reading password: {0}")]
    Stdin(#[source] std::io::Error),
    /// The terminal could not be read (no terminal: use `--password-stdin`).
    #[error("reading password: {0} (use --password-stdin)")]
    Terminal(#[source] std::io::Error),
    /// The second prompt could not be read.
    #[error("reading password: {0}")]
    Again(#[source] std::io::Error),
    /// The two prompts got different passwords.
    #[error("passwords differ")]
    Differ,
    /// An empty password is never stored.
    #[error("empty password")]
    Empty,
}

/// Why a `postern user` command failed (printed as `postern user: {error}`, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum UserCmdError {
    /// The name is not usable as a local mailbox.
    #[error("{0:?} is not a valid user name (letters, digits, . _ - + =)")]
    InvalidName(String),
    /// `user add` for a user that exists.
    #[error("user {0} exists (use `postern user passwd`)")]
    Exists(String),
    /// No user by that name.
    #[error("no user {0}")]
    NoSuchUser(String),
    /// `user cert` with something that is not a SHA-256 fingerprint.
    #[error("expected a SHA-256 fingerprint (64 hex digits)")]
    BadFingerprint,
    /// The password could not be read.
    #[error("{0}")]
    Password(#[from] PasswordError),
    /// The user database refused the change (hashing, import).
    #[error("{0}")]
    Db(#[from] UserError),
}

/// Reads a password from one line of standard input, or from the terminal
/// (prompting twice when `twice`).
pub fn read_password(stdin: bool, twice: bool) -> Result<String, PasswordError> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(PasswordError::Stdin)?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        return if pw.is_empty() { Err(PasswordError::Empty) } else { Ok(pw) };
    }
    let pw = rpassword::prompt_password("Password: ").map_err(PasswordError::Terminal)?;
    if twice {
        let again = rpassword::prompt_password("Again: ").map_err(PasswordError::Again)?;
        if again != pw {
            return Err(PasswordError::Differ);
        }
    }
    if pw.is_empty() {
        return Err(PasswordError::Empty);
    }
    Ok(pw)
}

/// What a successful command leaves to do.
enum Done {
    /// The database changed: write it back.
    Save,
    /// Nothing changed.
    Nothing,
    /// Nothing changed; exit with this code (a password that does not match).
    Exit(i32),
}

/// Runs `postern user ACTION`; returns the exit code.
pub(super) fn run(s: &Settings, action: UserCmd) -> i32 {
    let path = s.data_dir.join("users.json");
    let mut db = match UserDb::load(&path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("postern user: {e}");
            return exit::CONFIG;
        }
    };
    // 0700 whatever the umask, like the daemon makes it (review F13).
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&s.data_dir) {
        eprintln!("postern user: {}: {e}", s.data_dir.display());
        return exit::CANTCREAT;
    }
    match change(s, &path, &mut db, action) {
        Ok(Done::Save) => match db.save(&path) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("postern user: {e}");
                exit::CANTCREAT
            }
        },
        Ok(Done::Nothing) => exit::OK,
        Ok(Done::Exit(code)) => code,
        Err(e) => {
            eprintln!("postern user: {e}");
            1
        }
    }
}

fn change(s: &Settings, path: &Path, db: &mut UserDb, action: UserCmd) -> Result<Done, UserCmdError> {
    let cram = crate::auth::plaintext_secret_mechanisms_enabled(&s.config);
    let warn_plain = || {
        if cram {
            eprintln!(
                "postern user: warning: CRAM-MD5/DIGEST-MD5 is enabled, so a plaintext-equivalent secret is stored in {}",
                path.display()
            );
        }
    };
    match action {
        UserCmd::Add { name, password_stdin, address } => {
            let lower = name.to_ascii_lowercase();
            if !crate::aliases::is_local_name(&lower) {
                return Err(UserCmdError::InvalidName(name));
            }
            if db.users.contains_key(&lower) {
                return Err(UserCmdError::Exists(name));
            }
            let pw = read_password(password_stdin, true)?;
            db.set_password(&name, &pw, cram)?;
            if let Some(r) = db.users.get_mut(&lower) {
                r.addresses = address;
            }
            warn_plain();
            println!("user {lower} added");
            Ok(Done::Save)
        }
        UserCmd::Passwd { name, password_stdin } => {
            if !db.users.contains_key(&name.to_ascii_lowercase()) {
                return Err(UserCmdError::NoSuchUser(name));
            }
            let pw = read_password(password_stdin, true)?;
            db.set_password(&name, &pw, cram)?;
            warn_plain();
            println!("password of {} changed", name.to_ascii_lowercase());
            Ok(Done::Save)
        }
        UserCmd::Del { name } => match db.users.remove(&name.to_ascii_lowercase()) {
            Some(_) => {
                println!("user {} deleted", name.to_ascii_lowercase());
                Ok(Done::Save)
            }
            None => Err(UserCmdError::NoSuchUser(name)),
        },
        UserCmd::List { json } => {
            list(db, json);
            Ok(Done::Nothing)
        }
        UserCmd::Verify { name, password_stdin } => {
            if s.config.auth.backend == crate::config::AuthBackend::Dovecot {
                eprintln!("postern user: note: auth.backend = \"dovecot\": SMTP AUTH asks Dovecot, not {}; check a password there with `doveadm auth test {name}`", path.display());
            }
            let pw = read_password(password_stdin, false)?;
            match super::directory_use::verify(s, &name, &pw) {
                None => {}
                Some(Ok(crate::directory::authn::LoginCheck::Accepted(user))) => {
                    println!("ok ({user}, from the directory)");
                    return Ok(Done::Nothing);
                }
                Some(Ok(crate::directory::authn::LoginCheck::Refused(why))) => {
                    eprintln!("postern user: directory: {why}");
                    return Ok(Done::Exit(1));
                }
                Some(Err(e)) => {
                    eprintln!("postern user: directory unavailable: {e}");
                    return Ok(Done::Exit(super::sysexits::TEMPFAIL));
                }
            }
            if db.verify(&name, &pw) {
                println!("ok");
                Ok(Done::Nothing)
            } else {
                eprintln!("postern user: password does not match (or no such user)");
                Ok(Done::Exit(1))
            }
        }
        UserCmd::Cert { name, sha256 } => {
            let Some(r) = db.users.get_mut(&name.to_ascii_lowercase()) else {
                return Err(UserCmdError::NoSuchUser(name));
            };
            let fp = sha256.replace(':', "").to_ascii_lowercase();
            if fp.len() != 64 || !fp.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(UserCmdError::BadFingerprint);
            }
            if !r.certificates.contains(&fp) {
                r.certificates.push(fp);
            }
            println!("certificate added for {}", name.to_ascii_lowercase());
            Ok(Done::Save)
        }
        UserCmd::ImportSasldb { file } => {
            let names = db.import_sasldb(&file, cram)?;
            warn_plain();
            println!("imported {} user(s): {}", names.len(), names.join(" "));
            Ok(Done::Save)
        }
        UserCmd::ImportPasswd { file } => {
            let (ok, skipped) = db.import_passwd_file(&file)?;
            for sk in &skipped {
                eprintln!("postern user: skipped {sk}");
            }
            println!("imported {} user(s): {}", ok.len(), ok.join(" "));
            Ok(Done::Save)
        }
        UserCmd::PurgePlain => {
            let n = db.drop_plain();
            println!("removed {n} plaintext-equivalent secret(s)");
            Ok(if n > 0 { Done::Save } else { Done::Nothing })
        }
    }
}

/// `user list [--json]`.
fn list(db: &UserDb, json: bool) {
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
        return;
    }
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
