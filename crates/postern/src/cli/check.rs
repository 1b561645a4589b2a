//! `postern check mta-sts DOMAIN` is in `check_mta_sts.rs`.
//!
//! `postern check smarthost [ROUTE] [--send-test TO] [--json]`: the
//! smarthost self-test (or a `[[route]]`'s first next hop, with the route's
//! own settings). Connects to the next hop exactly as delivery does
//! (the library's `delivery::probe`) and prints one verdict line per step
//! (OK / WARN / FAIL / SKIP, with what to do) and a final verdict.
//!
//! May touch: outbound connections to the configured smarthost or route
//! next hop; reads the TLS material and the smarthost password file (never
//! printed); standard output.
//!
//! Exit: 0 when every step passed (warnings allowed), 75 when only
//! temporary steps failed (DNS, connect, 4xx), 69 otherwise; 78 for a
//! configuration that names no smarthost, 64 for an unknown route.

use clap::Subcommand;

use super::sysexits as exit;
use crate::delivery::probe::{check, Options, ProbeError};
use crate::settings::Settings;

/// `postern check ...`.
#[derive(Subcommand)]
pub enum CheckCmd {
    /// Test the smarthost (or the first next hop of a [[route]], with that route's TLS, client certificate and AUTH
    /// settings) as delivery would reach it: DNS, connect and
    /// greeting, EHLO, STARTTLS/implicit TLS with the server's certificate chain and whether it verifies,
    /// the client certificate (requested? sent? accepted?), AUTH with a trial login, then RSET/QUIT or a
    /// test message. Exit 0 when every step passed, 75 when it may pass later (DNS, connect, 4xx), 69
    /// when something must be fixed. The password is never printed.
    #[command(
        after_help = "Example:\n  postern check smarthost\n  postern check smarthost example.org --send-test postmaster@example.org\n  postern check smarthost --json"
    )]
    Smarthost {
        /// A [[route]] to check instead of relay.smarthost: one of its domains, or its number (1 = first; the
        /// only way to name a route that has only `senders`).
        route: Option<String>,
        /// Send a test message to this address through the next hop (MAIL/RCPT/DATA) instead of RSET/QUIT.
        #[arg(long, value_name = "TO")]
        send_test: Option<String>,
        /// Envelope sender of the test message (default: postmaster@HOSTNAME).
        #[arg(long, value_name = "ADDR", requires = "send_test")]
        from: Option<String>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show DOMAIN's MTA-STS policy (RFC 8461) as MX delivery would find it: the _mta-sts TXT record,
    /// the HTTPS fetch of the policy, the parsed policy, the cached copy, and what it means for each MX
    /// host. Sends no mail and leaves the cache alone. Exit 0 when the domain has a valid policy or none,
    /// 69 when its TXT record or policy is broken or an MX host is not listed, 75 when the DNS did not answer.
    #[command(after_help = "Example:\n  postern check mta-sts example.org")]
    MtaSts {
        /// The recipient domain (UTF-8 or A-labels).
        domain: String,
    },
}

/// Runs `postern check ACTION`; returns the exit code.
pub(super) fn run(s: &Settings, action: CheckCmd) -> i32 {
    let (route, send_test, from, json) = match action {
        CheckCmd::Smarthost { route, send_test, from, json } => (route, send_test, from, json),
        CheckCmd::MtaSts { domain } => return super::check_mta_sts::run(s, &domain),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let report = match rt.block_on(check(s, &Options { route, send_test, from })) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern check smarthost: {e}");
            return match e {
                ProbeError::UnknownRoute(_) | ProbeError::NotSmtp(..) => exit::USAGE,
                _ => exit::CONFIG,
            };
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("postern check smarthost: {e}");
                return exit::TEMPFAIL;
            }
        }
    } else {
        print!("{}", report.text());
    }
    report.exit_code
}
