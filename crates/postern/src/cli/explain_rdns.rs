//! `postern explain`'s `[inbound.rdns]` section: the client's reverse DNS
//! (FCrDNS), the HELO verdict (`--helo`) and the sender-domain verdict
//! (`--from`), computed by the same functions the server uses, with live
//! DNS (`[mx] nameservers`). Checks that are off are shown as "off".
//!
//! May touch: DNS, standard output. RFC 5321 §4.1.1.1.

use std::net::IpAddr;

use crate::config::{RejectAt, Resolve};
use crate::inbound::helo::{self, HeloPolicy, SenderDomain};
use crate::inbound::rdns;
use crate::inbound::rdns_service::RdnsService;
use crate::settings::Settings;

/// What the section found.
#[derive(Debug, Clone, Default)]
pub struct RdnsReport {
    /// The rDNS result (`None`: not looked up).
    pub resolve: Option<Resolve>,
    /// `name=value` lines for the text output, and the JSON fields.
    pub lines: Vec<(&'static str, String)>,
}

impl RdnsReport {
    /// Prints the text lines.
    pub fn print(&self) {
        for (k, v) in &self.lines {
            println!("{:<9} {v}", format!("{k}:"));
        }
    }

    /// The JSON object.
    pub fn json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self.lines.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
        serde_json::Value::Object(map)
    }
}

/// Looks up and judges `ip`, `helo` and the sender domain of `from` (an
/// address, or "<>").
pub fn report(s: &Settings, ip: IpAddr, helo_name: Option<&str>, from: &str) -> RdnsReport {
    let cfg = &s.config.inbound.rdns;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return RdnsReport { resolve: None, lines: vec![("rdns", format!("cannot start runtime: {e}"))] },
    };
    let svc = RdnsService::new();
    let dns = svc.dns(&s.config.mx.nameservers);
    let mut out = RdnsReport::default();
    let stage = match cfg.reject_at {
        RejectAt::Rcpt => "refused at RCPT",
        RejectAt::Command => "refused at once",
    };
    if cfg.lookup {
        let c = rt.block_on(rdns::lookup(dns.as_ref(), ip, cfg.timeout));
        out.resolve = Some(c.resolve);
        let name = c.ptr.as_deref().unwrap_or("-");
        out.lines.push(("rdns", format!("{} (client_resolve={}, ptr={name})", c.resolve.as_str(), c.resolve.macro_value())));
    } else {
        out.lines.push(("rdns", "off ([inbound.rdns] lookup = false)".into()));
    }
    if let Some(name) = helo_name {
        let on = cfg.helo_require_fqdn || cfg.helo_reject_own_name || cfg.helo_require_resolve;
        let ours: Vec<IpAddr> = s.config.listeners.iter().map(|l| l.address.ip()).collect();
        let policy = HeloPolicy {
            require_fqdn: cfg.helo_require_fqdn,
            reject_own_name: cfg.helo_reject_own_name,
            hostname: &s.hostname,
            our_addrs: &ours,
        };
        let mut problem = helo::check(name, ip, &policy);
        if problem.is_none() && cfg.helo_require_resolve && helo::literal(name).is_none() {
            problem = helo::check_resolves(&rt.block_on(dns.addrs(name)));
        }
        let text = match (on, problem) {
            (false, _) => "off (no helo_* check enabled)".to_string(),
            (true, None) => "ok".to_string(),
            (true, Some(p)) => format!("{} -> {} ({stage})", p.as_str(), p.reply(name).summary()),
        };
        out.lines.push(("helo", text));
    }
    let addr = from.trim_start_matches('<').trim_end_matches('>');
    if let Some((_, domain)) = addr.rsplit_once('@') {
        let text = if cfg.sender_domain_check {
            let mx = rt.block_on(dns.mx(domain));
            let addrs = match &mx {
                Ok(v) if v.is_empty() => Some(rt.block_on(dns.addrs(domain))),
                _ => None,
            };
            let v = helo::sender_verdict(&mx, addrs.as_ref());
            match v.reply(addr, domain) {
                None => SenderDomain::Ok.as_str().to_string(),
                Some(r) => format!("{} -> {} ({stage})", v.as_str(), r.summary()),
            }
        } else {
            "off (sender_domain_check = false)".to_string()
        };
        out.lines.push(("sender", text));
    }
    let harvest = match (cfg.harvest_delay_after, cfg.harvest_drop_after) {
        (0, 0) => "off".to_string(),
        (d, k) => format!("unknown recipients delayed after {d}, dropped (421) at {k}, per {:?} window", cfg.harvest_window),
    };
    out.lines.push(("harvest", harvest));
    out
}
