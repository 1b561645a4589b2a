//! master.cf services → postern `[[listener]]`s with their per-service
//! settings (`-o` overrides), and the restriction lists each listener
//! sees (for [`super::restrict`]).
//!
//! May touch: nothing (parsed values in, document out).

use super::out::{arr, s, Key};
use super::parse::{Params, Service};
use super::restrict::{List, LISTS};
use crate::import::{Fate, Loc};

/// Services postern does itself, or that only serve Postfix's own plumbing.
const INTERNAL: &[&str] = &[
    "pickup",
    "cleanup",
    "qmgr",
    "oqmgr",
    "tlsmgr",
    "trivial-rewrite",
    "bounce",
    "flush",
    "proxymap",
    "smtp",
    "showq",
    "error",
    "discard",
    "local",
    "virtual",
    "lmtp",
    "anvil",
    "scache",
    "postlogd",
    "tlsproxy",
    "dnsblog",
    "verify",
];

/// `-o` parameters with no effect on mail decisions.
const HARMLESS_OVERRIDES: &[&str] = &[
    "syslog_name",
    "milter_macro_daemon_name",
    "local_header_rewrite_clients",
    "smtpd_reject_unlisted_recipient",
    "smtpd_tls_loglevel",
    "smtpd_sasl_security_options",
    "receive_override_options",
    "smtp_helo_timeout",
    "smtp_fallback_relay",
    "smtpd_authorized_xforward_hosts",
    "smtpd_client_connection_count_limit",
];

/// One listener to write.
pub struct ListenerOut {
    /// Its name.
    pub name: String,
    /// Keys of the `[[listener]]`.
    pub keys: Vec<Key>,
    /// The effective parameters of its service.
    pub params: Params,
    /// Its restriction lists.
    pub lists: Vec<List>,
    /// Report entry of the service line.
    pub entry: usize,
}

/// What a service line becomes: `None` when it is not an smtpd listener
/// (its fate is returned then).
pub fn classify(svc: &Service) -> Option<Fate> {
    let is_smtpd = svc.command == "smtpd";
    if svc.kind == "inet" && is_smtpd {
        return None;
    }
    if svc.kind == "pass" && is_smtpd {
        return Some(Fate::Default { why: "the smtpd behind postscreen: see the postscreen line".into() });
    }
    if svc.command == "postscreen" {
        return Some(Fate::NotMapped {
            reason: "postscreen runs in front of port 25".into(),
            advice: "postern's listener does it: [inbound.pregreet] (greet delay, pipelining) and [inbound.dnsbl]".into(),
            restriction: false,
        });
    }
    if INTERNAL.contains(&svc.command.as_str()) || (svc.kind == "unix" && is_smtpd) {
        return Some(Fate::Default { why: format!("postern does what {} does itself", svc.command) });
    }
    Some(Fate::NotMapped {
        reason: format!("the {} service ({}) has no postern equivalent", svc.name, svc.command),
        advice: "deliver with a [[route]] or a milter instead; see docs/migration.md".into(),
        restriction: false,
    })
}

/// The (host, port) of an inet service name, `None` for a host list default.
pub fn endpoint(name: &str) -> Option<(Option<String>, u16)> {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (Some(h.trim_matches(['[', ']']).to_string()), p),
        None => (None, name),
    };
    let port = match port {
        "smtp" => 25,
        "submission" => 587,
        "smtps" | "submissions" => 465,
        p => p.parse().ok()?,
    };
    Some((host, port))
}

/// The addresses a service without an explicit host listens on.
pub fn interfaces(p: &Params) -> Vec<String> {
    let mut out = Vec::new();
    for i in p.list("inet_interfaces") {
        match i.as_str() {
            "all" => out.push("0.0.0.0".to_string()),
            "loopback-only" | "localhost" => out.push("127.0.0.1".to_string()),
            a => out.push(a.trim_matches(['[', ']']).to_string()),
        }
    }
    out.dedup();
    out
}

/// The restriction lists a service sees.
pub fn lists(p: &Params, main_cf: &Loc) -> Vec<List> {
    LISTS
        .iter()
        .map(|name| List {
            name,
            loc: p.origin(name).cloned().unwrap_or_else(|| Loc { file: main_cf.file.clone(), line: 0 }),
            elements: p.list(name),
        })
        .collect()
}

/// Does this service leave unauthenticated clients nothing (a plain
/// `reject` after only AUTH/certificate permits, in some list)? Then it
/// is a submission service in postern's sense (AUTH before MAIL).
fn auth_only(lists: &[List]) -> bool {
    lists.iter().any(|l| {
        let mut permits_auth = false;
        for e in &l.elements {
            match e.as_str() {
                "permit_sasl_authenticated" | "permit_tls_clientcerts" | "permit_tls_all_clientcerts" => permits_auth = true,
                "reject" => return permits_auth,
                e if e.starts_with("permit") => return false,
                _ => {}
            }
        }
        false
    })
}

/// Builds the listener(s) of one smtpd service (one per address when the
/// service name has no host). `ov` maps the service's `-o` parameter names
/// to their report entries; `taken` holds the listener names used so far.
pub fn listeners(
    svc: &Service,
    base: &Params,
    main_cf: &Loc,
    entry: usize,
    ov: &std::collections::HashMap<String, usize>,
    taken: &mut Vec<String>,
) -> Result<Vec<ListenerOut>, String> {
    let from = |names: &[&str]| -> Vec<usize> { names.iter().filter_map(|n| ov.get(*n).copied()).collect() };
    let p = base.with_overrides(&svc.overrides);
    let (host, port) = endpoint(&svc.name).ok_or_else(|| format!("cannot tell the port of service {:?}", svc.name))?;
    let hosts = match host {
        Some(h) => vec![h],
        None => interfaces(&p),
    };
    let lists = lists(&p, main_cf);
    let wrapper = p.yes("smtpd_tls_wrappermode");
    let role = if wrapper {
        "submissions"
    } else if auth_only(&lists) {
        "submission"
    } else {
        "smtp"
    };
    let base_name = match svc.name.as_str() {
        "smtp" | "submission" | "smtps" | "submissions" => svc.name.clone(),
        _ => format!("{role}-{port}"),
    };
    let mut out = Vec::new();
    for (n, h) in hosts.iter().enumerate() {
        let mut name = if hosts.len() > 1 { format!("{base_name}-{}", n + 1) } else { base_name.clone() };
        while taken.contains(&name) {
            name.push('x');
        }
        taken.push(name.clone());
        let addr = if h.contains(':') { format!("[{h}]:{port}") } else { format!("{h}:{port}") };
        let mut keys = vec![
            Key { key: "name".into(), value: s(name.clone()), from: vec![] },
            Key { key: "address".into(), value: s(addr), from: vec![entry] },
            Key { key: "role".into(), value: s(role), from: from(&["smtpd_tls_wrappermode"]) },
        ];
        let level = p.get("smtpd_tls_security_level");
        keys.push(Key {
            key: "require_tls".into(),
            value: toml::Value::Boolean(level.trim() == "encrypt" || wrapper),
            from: from(&["smtpd_tls_security_level"]),
        });
        let certs = if p.yes("smtpd_tls_req_ccert") && level.trim() == "encrypt" {
            "required"
        } else if p.yes("smtpd_tls_ask_ccert") || p.yes("smtpd_tls_req_ccert") {
            "optional"
        } else {
            "none"
        };
        keys.push(Key { key: "client_certificates".into(), value: s(certs), from: from(&["smtpd_tls_ask_ccert", "smtpd_tls_req_ccert"]) });
        if !p.yes("smtpd_sasl_auth_enable") {
            keys.push(Key { key: "auth_mechanisms".into(), value: arr(Vec::<String>::new()), from: from(&["smtpd_sasl_auth_enable"]) });
        }
        let milters = p.list("smtpd_milters");
        if !milters.is_empty() {
            let names: Vec<String> = milters.iter().map(|m| milter_name(m)).collect();
            keys.push(Key { key: "milters".into(), value: arr(names), from: from(&["smtpd_milters"]) });
        }
        out.push(ListenerOut { name, keys, params: p.clone(), lists: super::services::lists(&p, main_cf), entry });
    }
    Ok(out)
}

/// The `[[milter]]` name for a Postfix milter spec.
pub fn milter_name(spec: &str) -> String {
    let cleaned: String = spec.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("milter-{}", cleaned.trim_matches('-'))
}

/// Is this `-o` parameter one a listener consumes (so its entry maps to
/// the listener), one without effect, or neither?
pub fn override_fate(name: &str) -> Option<Fate> {
    const CONSUMED: &[&str] = &[
        "smtpd_tls_security_level",
        "smtpd_tls_wrappermode",
        "smtpd_tls_ask_ccert",
        "smtpd_tls_req_ccert",
        "smtpd_sasl_auth_enable",
        "smtpd_milters",
        "smtpd_tls_auth_only",
    ];
    if CONSUMED.contains(&name) || super::restrict::LISTS.contains(&name) || name == "mynetworks" || name == "relay_clientcerts" {
        return None;
    }
    if HARMLESS_OVERRIDES.contains(&name) {
        return Some(Fate::Default { why: "no effect on mail decisions".into() });
    }
    Some(Fate::NotMapped {
        reason: format!("-o {name} has no per-listener postern setting"),
        advice: "set the equivalent globally if it matters (docs/migration.md)".into(),
        restriction: name.contains("restrictions") || name.contains("_access"),
    })
}
