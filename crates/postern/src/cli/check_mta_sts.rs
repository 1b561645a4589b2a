//! `postern check mta-sts DOMAIN`: prints a domain's MTA-STS policy as MX
//! delivery would find it, one verdict line per step (the library's
//! `delivery::mta_sts::check`).
//!
//! May touch: DNS, outbound HTTPS to `mta-sts.DOMAIN`; reads
//! `DATA/mta-sts/`; standard output.
//!
//! Exit: 0 when the domain has a valid policy or none, 69 when its TXT
//! record or policy is broken (or an MX host is not listed), 75 when the
//! DNS did not answer, 78 for an unusable configuration.

use super::sysexits as exit;
use crate::delivery::mta_sts::check::check;
use crate::settings::Settings;

/// Runs the check; returns the exit code.
pub(super) fn run(s: &Settings, domain: &str) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    match rt.block_on(check(s, domain)) {
        Ok(report) => {
            print!("{}", report.text());
            report.exit_code()
        }
        Err(e) => {
            eprintln!("postern check mta-sts: {e}");
            exit::CONFIG
        }
    }
}
