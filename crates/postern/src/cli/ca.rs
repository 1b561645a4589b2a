//! `postern ca …`: the admin face of the built-in certificate authority
//! ([`crate::ca`]): init, issue (server, client + PKCS#12), list, revoke.
//! Init and revoke ask a running daemon to reload its TLS material.
//!
//! May touch: `DATA/ca/` (through [`crate::ca`]), the control socket,
//! standard output.

use super::sysexits as exit;
use crate::ca::{Ca, CaError, Kind};
use crate::settings::Settings;
use clap::Subcommand;

/// `postern ca ...`.
#[derive(Subcommand)]
pub enum CaCmd {
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

/// `postern ca issue ...`.
#[derive(Subcommand)]
pub enum IssueKind {
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

/// Runs `postern ca ACTION`; returns the exit code (1 on a CA error).
pub(super) fn run(s: &Settings, action: CaCmd) -> i32 {
    let ca = Ca::new(&s.data_dir);
    match command(s, &ca, action) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("postern ca: {e}");
            1
        }
    }
}

/// Best effort: a daemon that is not running reads the files at start-up.
fn notify(s: &Settings) {
    let _ = crate::control::request(&s.data_dir, "reload-tls");
}

fn command(s: &Settings, ca: &Ca, action: CaCmd) -> Result<(), CaError> {
    match action {
        CaCmd::Init { name, days, rsa } => {
            let i = ca.init(&name, days, rsa)?;
            println!("CA created: {} (sha256 {})", ca.cert_path().display(), i.sha256);
            println!("The server now trusts it for client certificates (tls.client_ca_files default).");
            notify(s);
        }
        CaCmd::Issue { kind: IssueKind::Server { name, san, days, rsa } } => {
            let (i, crt, key) = ca.issue(Kind::Server, &name, &san, days, rsa)?;
            println!("serial {} {}\ncertificate {}\nkey {}", i.serial, i.subject, crt.display(), key.display());
        }
        CaCmd::Issue { kind: IssueKind::Client { name, san, days, rsa, p12_password } } => {
            let (i, crt, key) = ca.issue(Kind::Client, &name, &san, days, rsa)?;
            let generated = p12_password.is_none();
            let pw = p12_password.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
            let p12 = crt.with_extension("p12");
            ca.pkcs12(&crt, &key, &pw, &p12)?;
            println!("serial {} {}\ncertificate {}\nkey {}\npkcs12 {}", i.serial, i.subject, crt.display(), key.display(), p12.display());
            if generated {
                println!("pkcs12 password {pw}");
            }
        }
        CaCmd::List { json } => {
            let list = ca.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            } else {
                println!("{:<8} {:<7} {:<30} {:<26} state", "serial", "kind", "subject", "not after");
                for i in list {
                    let state = match &i.revoked {
                        Some(t) => format!("revoked {t}"),
                        None => "valid".to_string(),
                    };
                    println!("{:<8} {:<7} {:<30} {:<26} {state}", i.serial, i.kind.as_str(), i.subject, i.not_after);
                }
            }
        }
        CaCmd::Revoke { serial } => {
            let i = ca.revoke(&serial)?;
            println!("revoked serial {} ({}); CRL rewritten: {}", i.serial, i.subject, ca.crl_path().display());
            notify(s);
        }
    }
    Ok(())
}
