//! `postern dkim …`: DKIM keys for the built-in signer. `keygen` writes a
//! new private key (0600, PKCS#8 PEM) and prints the DNS TXT record and the
//! `[[dkim]]` table to add; `show` prints the TXT record of configured keys.
//!
//! May touch: `DATA/dkim/` (or `--dir`), the key files the config names
//! (read), standard output. RFCs: 6376 §3.6 (key records), 8463.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::sysexits as exit;
use crate::mailauth::keys::{generate, read_key, write_new_key, zone_line, NewKey};
use crate::settings::Settings;

/// The key algorithm of `dkim keygen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// RSA (a=rsa-sha256): what every verifier understands.
    Rsa,
    /// Ed25519 (a=ed25519-sha256, RFC 8463): short keys; sign with RSA too, as not every verifier has it.
    Ed25519,
}

/// `postern dkim ...`.
#[derive(Subcommand)]
pub enum DkimCmd {
    /// Make a signing key for DOMAIN: writes DATA/dkim/DOMAIN.SELECTOR.pem (0600), prints the DNS
    /// TXT record to publish and the [[dkim]] table to add to the config. Refuses to overwrite a key.
    Keygen {
        /// The signing domain (d=), usually the domain of the From: addresses.
        domain: String,
        /// The selector (s=); the record goes to SELECTOR._domainkey.DOMAIN. Default: YYYYMM plus
        /// "r" (RSA) or "e" (Ed25519), e.g. 202612r, so a rotation gets a new name.
        #[arg(long, short = 's')]
        selector: Option<String>,
        /// Key algorithm.
        #[arg(long, short = 'a', value_enum, default_value_t = Algorithm::Rsa)]
        algorithm: Algorithm,
        /// RSA key size, 2048 to 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Directory for the key file. Default: DATA/dkim.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the DNS TXT record of the configured [[dkim]] keys of DOMAIN (or of --key FILE).
    Show {
        /// The signing domain.
        domain: String,
        /// Only this selector.
        #[arg(long, short = 's')]
        selector: Option<String>,
        /// A key file instead of the configured ones (needs --selector).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

/// Runs `postern dkim ...`.
pub fn run(s: &Settings, cmd: DkimCmd) -> i32 {
    match cmd {
        DkimCmd::Keygen { domain, selector, algorithm, bits, dir } => keygen(s, &domain, selector, algorithm, bits, dir),
        DkimCmd::Show { domain, selector, key } => show(s, &domain, selector.as_deref(), key),
    }
}

fn keygen(s: &Settings, domain: &str, selector: Option<String>, algorithm: Algorithm, bits: usize, dir: Option<PathBuf>) -> i32 {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let selector = selector.unwrap_or_else(|| {
        let suffix = if algorithm == Algorithm::Rsa { "r" } else { "e" };
        format!("{}{suffix}", chrono::Utc::now().format("%Y%m"))
    });
    let label_ok =
        |l: &str| !l.is_empty() && l.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !label_ok(&domain) || !label_ok(&selector) {
        eprintln!("postern: {selector:?} / {domain:?}: selector and domain are DNS names (letters, digits, '-', '.')");
        return exit::USAGE;
    }
    let kind = match algorithm {
        Algorithm::Rsa => NewKey::Rsa(bits),
        Algorithm::Ed25519 => NewKey::Ed25519,
    };
    let dir = dir.unwrap_or_else(|| s.data_dir.join("dkim"));
    let path = dir.join(format!("{domain}.{selector}.pem"));
    let made = generate(kind).and_then(|pem| write_new_key(&path, &pem)).and_then(|()| read_key(&path, None));
    let key = match made {
        Ok(k) => k,
        Err(e) => {
            eprintln!("postern: dkim keygen: {e}");
            return exit::CANTCREAT;
        }
    };
    let txt = match key.txt_record() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern: dkim keygen: {e}");
            return exit::SOFTWARE;
        }
    };
    let alg = match algorithm {
        Algorithm::Rsa => "rsa-sha256",
        Algorithm::Ed25519 => "ed25519-sha256",
    };
    println!("# Private key written to {} (mode 0600).", path.display());
    println!("# 1. Publish this DNS record (TXT of {selector}._domainkey.{domain}):");
    println!("{}", zone_line(&domain, &selector, &txt));
    println!("# 2. Add to the config, then `postern config check` and reload:");
    println!("[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey_file = \"{}\"\nalgorithm = \"{alg}\"", path.display());
    exit::OK
}

fn show(s: &Settings, domain: &str, selector: Option<&str>, key: Option<PathBuf>) -> i32 {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(file) = key {
        let Some(sel) = selector else {
            eprintln!("postern: dkim show --key needs --selector");
            return exit::USAGE;
        };
        return match read_key(&file, None).and_then(|k| k.txt_record()) {
            Ok(txt) => {
                println!("{}", zone_line(&domain, sel, &txt));
                exit::OK
            }
            Err(e) => {
                eprintln!("postern: {e}");
                exit::NOINPUT
            }
        };
    }
    let entries: Vec<_> = s.dkim.entries().iter().filter(|k| k.domain == domain && selector.is_none_or(|sel| sel == k.selector)).collect();
    if entries.is_empty() {
        eprintln!("postern: no [[dkim]] key for {domain} in the config (see `postern dkim keygen`)");
        return exit::NOINPUT;
    }
    let mut code = exit::OK;
    for k in entries {
        match k.key.as_ref().map_err(|e| e.clone()).and_then(|p| p.txt_record().map_err(|e| e.to_string())) {
            Ok(txt) => println!("{}", zone_line(&k.domain, &k.selector, &txt)),
            Err(e) => {
                eprintln!("postern: {}: {e}", k.label());
                code = exit::NOINPUT;
            }
        }
    }
    code
}
