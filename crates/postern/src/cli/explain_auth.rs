//! `postern explain --message FILE`: the SPF, DKIM, DMARC and ARC results
//! for a message file and the decision `[mail_auth]` would take, computed
//! by the code the server runs on smtp listeners (`mailauth::verify`),
//! and the message-stage `[[rule]]` that matches (`policy::message`).
//!
//! May touch: the message file (read), DNS (through `mailauth::resolver`),
//! standard output.

use std::net::IpAddr;
use std::path::Path;

use super::sysexits as exit;
use crate::mailauth::resolver;
use crate::mailauth::verify::{self, Action, Envelope};
use crate::policy::message::{check_message, MessageAuth};
use crate::policy::Facts;
use crate::settings::Settings;

/// The message and how it arrives.
#[derive(Debug, Clone, Copy)]
pub struct MessageQuery<'a> {
    /// The message file.
    pub file: &'a Path,
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO name (default: the `from` domain).
    pub helo: Option<&'a str>,
    /// MAIL FROM (`<>` or empty: the null sender).
    pub from: &'a str,
    /// The listener (name or role; default: the first listener).
    pub listener: Option<&'a str>,
    /// The client uses TLS.
    pub tls: bool,
}

/// Prints the results for the message of `q`; returns the exit code.
pub fn run(rt: &tokio::runtime::Runtime, s: &Settings, q: &MessageQuery<'_>, json: bool) -> i32 {
    let MessageQuery { file, ip, helo, from, .. } = *q;
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
    let listener =
        q.listener.map(str::to_string).unwrap_or_else(|| s.config.listeners.first().map(|l| l.label().to_string()).unwrap_or_default());
    let sender = match postern_wire::address::parse_path(&format!("<{from}>"), true, true, true) {
        Ok((postern_wire::Path::Mailbox(m), _)) => Some(m),
        _ => None,
    };
    let facts = Facts {
        listener: &listener,
        client_ip: ip,
        tls: q.tls,
        authenticated: None,
        cert: None,
        sender: sender.as_ref(),
        rcpt: &postern_wire::Path::Null,
        user_db: None,
        client_resolve: None,
        directory: None,
    };
    let [spf, dkim, dmarc, arc] = results.keywords();
    let rule = check_message(s, &facts, &MessageAuth::from_keywords(spf, dkim, dmarc, arc));
    // pct= sampling: show what happens to a message inside the sample.
    let action = match &rule {
        Some(d) => Action::from_rule(d.action, d.reply.as_ref(), d.hold_reason()),
        None => verify::decide(cfg, &results, 0),
    };
    let (rule_name, origin) = rule.map_or_else(|| ("-".to_string(), "-".to_string()), |d| (d.rule, d.origin));
    let (decision, reply) = match action {
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
            "decision": decision, "reply": reply, "header": header, "rule": rule_name, "origin": origin,
        });
        println!("{v}");
    } else {
        println!("auth:     {}", results.log_field());
        println!("decision: {decision}{}", if reply.is_empty() { String::new() } else { format!(" ({reply})") });
        println!("rule:     {rule_name} (origin {origin})");
        print!("{}", header.replace("\r\n", "\n"));
    }
    exit::OK
}
