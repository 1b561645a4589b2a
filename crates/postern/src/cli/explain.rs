//! `postern explain`: the relay decision for one recipient, computed by the
//! same code the server runs (`policy::check_rcpt`), with the rule that
//! made it, the inbound screen (DNSBL score, pregreet) for the client, and
//! the delivery plan (`delivery::plan`: route, next hops, TLS, client
//! certificate, AUTH) for the recipient in mail from `--from`.
//!
//! May touch: the client CA and CRL files and the certificate named (read),
//! `DATA/users.json` (read), standard output; DNS (the `[inbound.dnsbl]`
//! lists, through `explain_screen`).

use std::net::IpAddr;
use std::path::PathBuf;

use postern_wire::address::parse_path;
use postern_wire::Path;

use super::sysexits as exit;
use crate::policy::{check_rcpt, classify, Facts, RcptDecision};
use crate::settings::Settings;

/// The facts of the session to explain, as given on the command line.
#[derive(Debug, Clone)]
pub struct Query {
    /// Listener name or role; the first listener when `None`.
    pub listener: Option<String>,
    /// Client IP address.
    pub ip: IpAddr,
    /// The client uses TLS.
    pub tls: bool,
    /// The client's certificate chain (PEM); implies TLS.
    pub cert: Option<PathBuf>,
    /// The SMTP AUTH user, if any.
    pub auth: Option<String>,
    /// MAIL FROM (`<>` for the null sender; angle brackets optional).
    pub from: String,
    /// RCPT TO (angle brackets optional).
    pub rcpt: String,
    /// The HELO name, for the `[inbound.rdns]` HELO checks.
    pub helo: Option<String>,
}

/// Prints the decision for `q` (text, or one JSON object); returns the exit code.
pub fn run(s: &Settings, q: &Query, json: bool) -> i32 {
    let listener = q.listener.clone().unwrap_or_else(|| s.config.listeners.first().map(|l| l.label().to_string()).unwrap_or_default());
    let wrap = |a: &str| if a.starts_with('<') { a.to_string() } else { format!("<{a}>") };
    let sender = match parse_path(&wrap(&q.from), true, false, true) {
        Ok((Path::Mailbox(m), _)) => Some(m),
        Ok(_) => None,
        Err(e) => {
            eprintln!("postern explain: --from {}: {e}", q.from);
            return exit::USAGE;
        }
    };
    let rcpt_path = match parse_path(&wrap(&q.rcpt), false, true, true) {
        Ok((p, _)) => p,
        Err(e) => {
            eprintln!("postern explain: --rcpt {}: {e}", q.rcpt);
            return exit::USAGE;
        }
    };
    let identity = match &q.cert {
        Some(p) => {
            let chain = match crate::tls::load_certs(p) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    return exit::USAGE;
                }
            };
            match crate::tls::CertVerifier::load(s) {
                Ok(v) => v.identify(&chain),
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    return exit::CONFIG;
                }
            }
        }
        None => None,
    };
    let who = q.auth.as_deref().map(crate::auth::Authenticated::dangerous_assume);
    let db = crate::users::UserDb::load(&s.data_dir.join("users.json")).unwrap_or_default();
    let inbound = super::explain_rdns::report(s, q.ip, q.helo.as_deref(), &q.from);
    let resolve = inbound.resolve;
    let dir_facts = match super::directory_use::rcpt_facts(s, &rcpt_path) {
        Ok(f) => f,
        Err(e) => {
            // What the server answers when its directory is down.
            println!("decision: tempfail\nreply:    451 4.3.0 Temporary lookup failure, try again later\nreason:   {e}");
            return exit::TEMPFAIL;
        }
    };
    let facts = Facts {
        listener: &listener,
        client_ip: q.ip,
        tls: q.tls || q.cert.is_some(),
        authenticated: who.as_ref(),
        cert: identity.as_ref(),
        sender: sender.as_ref(),
        rcpt: &rcpt_path,
        user_db: Some(&db),
        client_resolve: resolve,
        directory: dir_facts.as_ref(),
    };
    let class = if dir_facts.as_ref().is_some_and(|d| d.virtual_domain) { "local" } else { classify(s, &rcpt_path).as_str() };
    let d = check_rcpt(s, &facts);
    let (decision, reply) = match &d {
        RcptDecision::Accept { action, .. } => (action.as_str().to_string(), "250 2.1.5 Recipient ok".to_string()),
        RcptDecision::Reject { reply, .. } => ("reject".to_string(), reply.summary()),
    };
    let cert_text = identity.as_ref().map(|c| format!("{} ({})", c.cert.subject, c.verdict()));
    let screen = super::explain_screen::screen(s, q.ip, who.is_some() || identity.is_some());
    let from = sender.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let to = match &rcpt_path {
        Path::Mailbox(m) => m.to_string(),
        Path::Postmaster => "Postmaster".to_string(),
        Path::Null => String::new(),
    };
    let rate = crate::inbound::rate::explain(&s.config.inbound.rate, &s.config.relay.networks, q.ip, q.auth.as_deref(), Some(&from));
    let identified = who.is_some() || identity.as_ref().is_some_and(|c| c.verified.is_ok());
    let greylist = crate::inbound::greylist::explain_for(s, q.ip, identified, &from, &to);
    // Where the queue would take it: route, next hops, TLS, certificate, AUTH.
    let plan = matches!(rcpt_path, Path::Mailbox(_)).then(|| crate::delivery::plan::plan(s, &from, &to));
    if json {
        let v = serde_json::json!({
            "decision": decision, "reply": reply, "rule": d.rule(), "origin": d.origin(),
            "recipient_class": class, "listener": listener, "client": q.ip.to_string(),
            "certificate": cert_text, "inbound_rdns": inbound.json(), "screen": super::explain_screen::json(&screen),
            "rate": rate, "greylist": greylist, "delivery": plan,
        });
        println!("{v}");
    } else {
        println!("decision: {decision}");
        println!("reply:    {reply}");
        println!("rule:     {} ({})", d.rule(), d.origin());
        println!(
            "facts:    listener={listener} client={} tls={} auth={} recipient={class}",
            q.ip,
            facts.tls,
            who.as_ref().map(|a| a.user()).unwrap_or("-")
        );
        if let Some(c) = cert_text {
            println!("cert:     {c}");
        }
        inbound.print();
        super::explain_screen::print(&screen);
        rate.iter().for_each(|l| println!("rate:     {l}"));
        println!("greylist: {greylist}");
        plan.iter().flat_map(|p| p.lines()).for_each(|l| println!("{l}"));
    }
    exit::OK
}
