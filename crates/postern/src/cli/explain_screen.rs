//! `postern explain`'s screen section: the DNSBL score of `--ip` per list
//! (asked now, through `[mx] nameservers`) and what the pregreet test and
//! the DNSBL verdict would do with that client, computed by the functions
//! the server runs (`inbound::dnsbl`, `inbound::pregreet`).
//!
//! May touch: DNS (the lists' zones), standard output.

use std::net::IpAddr;

use crate::config::{DnsblStage, ScreenAction};
use crate::inbound::dnsbl::{self, DnsblService, Verdict};
use crate::inbound::pregreet::{self, Plan};
use crate::settings::Settings;

/// The facts printed.
#[derive(Debug, Clone)]
pub struct Screen {
    /// `zone weight answers-or-"-"`, one per configured list.
    pub lists: Vec<(String, i32, String)>,
    /// The summed score.
    pub score: i32,
    /// What the DNSBL does: "off", "exempt", "pass", "allowlisted", "refused at rcpt: ...".
    pub dnsbl: String,
    /// What the pregreet test does: "off", "exempt", "allowlisted", "delay 6s".
    pub pregreet: String,
}

/// Computes the section for a client at `ip` (`trusted`: authenticated or
/// with a verified certificate).
pub fn screen(s: &Settings, ip: IpAddr, trusted: bool) -> Screen {
    let c = &s.config;
    let (bl, pg) = (&c.inbound.dnsbl, &c.inbound.pregreet);
    let exempt = dnsbl::exempt(ip, &bl.exempt_networks, &c.relay.networks);
    let score = if bl.lists.is_empty() || exempt {
        dnsbl::Score::default()
    } else {
        match super::runtime() {
            Ok(rt) => rt.block_on(DnsblService::default().check(bl, &c.mx.nameservers, ip)),
            Err(_) => dnsbl::Score::default(),
        }
    };
    let lists = bl
        .lists
        .iter()
        .map(|site| {
            let hit = score.hits.iter().find(|h| h.domain == site.domain && h.weight == site.weight);
            let failed = score.failed.iter().find(|(z, _)| *z == site.domain);
            let what = match (hit, failed) {
                (Some(h), _) => h.codes.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
                (None, Some((_, why))) => format!("no answer ({why})"),
                (None, None) => "-".to_string(),
            };
            (site.to_string(), site.weight, what)
        })
        .collect();
    let v = dnsbl::verdict(bl, &score);
    let dnsbl = if bl.lists.is_empty() {
        "off".to_string()
    } else if exempt {
        "exempt (exempt_networks or relay.networks)".to_string()
    } else {
        match &v {
            Verdict::Pass => "pass".to_string(),
            Verdict::Allowlisted => "allowlisted".to_string(),
            Verdict::Listed(_) if trusted && bl.stage == DnsblStage::Rcpt => "listed, but authenticated clients are exempt at rcpt".into(),
            Verdict::Listed(list) => {
                let what = match bl.action {
                    ScreenAction::Reject => "refused (554 5.7.1)",
                    ScreenAction::Tempfail => "refused (4xx)",
                    ScreenAction::Log => "logged only",
                };
                let stage = if bl.stage == DnsblStage::Connect { "connect" } else { "rcpt" };
                format!("{what} at {stage}: blocked using {list}")
            }
        }
    };
    let pregreet = match pregreet::plan(pg, ip, &c.relay.networks, false, v == Verdict::Allowlisted) {
        Plan::Greet(why) => why.to_string(),
        Plan::Wait(d) => format!("delayed {}s before the greeting (then greeted at once for {}s)", d.as_secs_f64(), pg.pass_ttl.as_secs()),
    };
    Screen { lists, score: score.total, dnsbl, pregreet }
}

/// Prints the section (text form).
pub fn print(sc: &Screen) {
    for (site, weight, answer) in &sc.lists {
        println!("dnsbl:    {site} weight={weight} answer={answer}");
    }
    println!("screen:   dnsbl score={} -> {}; pregreet -> {}", sc.score, sc.dnsbl, sc.pregreet);
}

/// The section as JSON.
pub fn json(sc: &Screen) -> serde_json::Value {
    let lists: Vec<serde_json::Value> = sc.lists.iter().map(|(s, w, a)| serde_json::json!({"list": s, "weight": w, "answer": a})).collect();
    serde_json::json!({"dnsbl_lists": lists, "dnsbl_score": sc.score, "dnsbl": sc.dnsbl, "pregreet": sc.pregreet})
}
