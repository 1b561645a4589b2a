//! `postern explain --message FILE`: the SPF, DKIM, DMARC and ARC results
//! for a message file and the decision `[mail_auth]` would take, computed
//! by the code the server runs on smtp listeners (`mailauth::verify`).
//!
//! May touch: the message file (read), DNS (through `mailauth::resolver`),
//! standard output.

use std::net::IpAddr;
use std::path::Path;

use super::sysexits as exit;
use crate::mailauth::resolver;
use crate::mailauth::verify::{self, Action, Envelope};
use crate::settings::Settings;

/// Prints the results for `file` as if it came from `ip` with `helo` and
/// MAIL FROM `from` (`<>` or empty: the null sender); returns the exit code.
pub fn run(rt: &tokio::runtime::Runtime, s: &Settings, file: &Path, ip: IpAddr, helo: Option<&str>, from: &str, json: bool) -> i32 {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern explain: {}: {e}", file.display());
            return exit::NOINPUT;
        }
    };
    let from = from.trim_start_matches('<').trim_end_matches('>');
    let helo = helo.map(str::to_string).unwrap_or_else(|| from.rsplit_once('@').map_or_else(|| s.hostname.clone(), |(_, d)| d.to_string()));
    let results = rt.block_on(async {
        let auth = resolver::shared(&s.config).map_err(|e| e.to_string())?;
        let env = Envelope { ip, helo: &helo, mail_from: from, host: &s.hostname };
        Ok::<_, String>(verify::verify(&auth, &env, &text).await)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postern explain: {e}");
            return exit::TEMPFAIL;
        }
    };
    let cfg = &s.config.mail_auth;
    // pct= sampling: show what happens to a message inside the sample.
    let (decision, reply) = match verify::decide(cfg, &results, 0) {
        Action::Accept => ("accept".to_string(), String::new()),
        Action::Header(r) => ("accept with X-Postern-Quarantine".to_string(), r),
        Action::Hold(r) => ("hold".to_string(), r),
        Action::Reject(r) => ("reject".to_string(), r.summary()),
        Action::TempFail(r) => ("tempfail".to_string(), r.summary()),
    };
    let id = cfg.authserv_id.clone().unwrap_or_else(|| s.hostname.clone());
    let header = results.header(&id);
    if json {
        let v = serde_json::json!({
            "spf": results.spf.as_str(), "dkim": results.dkim_summary().as_str(),
            "dmarc": results.dmarc.as_str(), "arc": results.arc.as_str(),
            "from_domain": results.from_domain, "policy": results.policy.map(|p| p.as_str()),
            "decision": decision, "reply": reply, "header": header,
        });
        println!("{v}");
    } else {
        println!("auth:     {}", results.log_field());
        println!("decision: {decision}{}", if reply.is_empty() { String::new() } else { format!(" ({reply})") });
        print!("{}", header.replace("\r\n", "\n"));
    }
    exit::OK
}
