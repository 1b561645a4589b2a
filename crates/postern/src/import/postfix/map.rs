//! main.cf parameters → global postern keys (everything but listeners and
//! rules): domains, networks, smarthost, TLS files, AUTH backend, milters,
//! limits, queue times, routes, aliases and local users.
//!
//! May touch: reads the tables and files main.cf names.

use std::collections::HashMap;
use std::path::Path;

use super::out::{arr, s, Doc};
use super::parse::{resolve, Params};
use super::tables::{self, Table, TableError};
use crate::import::{Entry, Fate, Loc};

/// Parameters that do not affect mail decisions (or that postern does
/// without configuration).
const HARMLESS: &[&str] = &[
    "compatibility_level",
    "queue_directory",
    "data_directory",
    "meta_directory",
    "mail_owner",
    "setgid_group",
    "command_directory",
    "daemon_directory",
    "manpage_directory",
    "sample_directory",
    "readme_directory",
    "html_directory",
    "shlib_directory",
    "sendmail_path",
    "newaliases_path",
    "mailq_path",
    "maillog_file",
    "maillog_file_prefixes",
    "syslog_name",
    "syslog_facility",
    "smtpd_tls_loglevel",
    "smtp_tls_loglevel",
    "smtpd_banner",
    "biff",
    "append_dot_mydomain",
    "debug_peer_level",
    "debug_peer_list",
    "debugger_command",
    "alias_database",
    "smtpd_tls_session_cache_database",
    "smtp_tls_session_cache_database",
    "smtpd_tls_session_cache_timeout",
    "smtpd_tls_mandatory_protocols",
    "smtpd_tls_protocols",
    "smtp_tls_mandatory_protocols",
    "smtp_tls_protocols",
    "smtpd_tls_mandatory_ciphers",
    "smtpd_tls_ciphers",
    "tls_random_source",
    "inet_protocols",
    "mydomain",
    "smtputf8_enable",
    "smtpd_tls_received_header",
    "smtpd_sasl_local_domain",
    "smtpd_sasl_authenticated_header",
    "smtpd_sasl_security_options",
    "smtpd_sasl_tls_security_options",
    "smtp_tls_note_starttls_offer",
    "smtpd_tls_fingerprint_digest",
    "mynetworks_style",
    "smtp_sasl_security_options",
    "smtp_sasl_tls_security_options",
    "smtp_tls_session_cache_timeout",
    "readme_directory",
    "smtpd_sasl_path",
    "smtpd_sasl_type",
    "smtp_sasl_auth_enable",
    "mail_name",
    "mail_version",
    "disable_vrfy_command",
    "show_user_unknown_table_name",
    "smtpd_helo_required",
    "home_mailbox",
    "myorigin",
];

/// What the mapping needs besides the parameters.
pub struct MapCtx<'a> {
    /// The configuration directory.
    pub config_dir: &'a Path,
    /// The output directory (absolute), for files written there.
    pub out_dir: &'a Path,
    /// main.cf entry index by parameter name.
    pub entry: &'a HashMap<String, usize>,
    /// Extra files to write into the output directory.
    pub extra: Vec<(String, String)>,
    /// The aliases file text, when virtual_alias_maps has entries.
    pub aliases: String,
}

pub(super) fn fate(entries: &mut [Entry], i: Option<usize>, f: Fate) {
    if let Some(e) = i.and_then(|i| entries.get_mut(i)) {
        if !matches!(e.fate, Fate::Mapped { .. }) {
            e.fate = f;
        }
    }
}

pub(super) fn nm(reason: &str, advice: &str, restriction: bool) -> Fate {
    Fate::NotMapped { reason: reason.into(), advice: advice.into(), restriction }
}

/// The keys of a table, as written (tables' own lines get entries).
pub(super) fn table_keys(
    spec: &str,
    ctx: &MapCtx,
    at: &Loc,
    entries: &mut Vec<Entry>,
    what: &str,
) -> Result<Vec<(String, String, usize)>, String> {
    match tables::read(spec, ctx.config_dir, at) {
        Ok(Table::Entries { entries: es, .. }) => Ok(es
            .into_iter()
            .map(|e| {
                entries.push(Entry { source: e.loc.clone(), text: e.text.clone(), fate: Fate::Default { why: format!("{what} entry") } });
                (e.key, e.value, entries.len() - 1)
            })
            .collect()),
        Ok(Table::Static(_)) => Err("static: tables list no keys".into()),
        Err(TableError::Unsupported(w)) => Err(format!("{w} are not read by the importer")),
        Err(TableError::Unreadable(m)) => Err(m),
        Err(TableError::NotATable) => Err(format!("{spec:?} is not a table")),
    }
}

/// A list parameter whose elements are names or tables of names (keys).
fn names(p: &Params, name: &str, ctx: &MapCtx, entries: &mut Vec<Entry>) -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    let at = p.origin(name).cloned().unwrap_or(Loc { file: ctx.config_dir.join("main.cf"), line: 0 });
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for el in p.list(name) {
        if tables::is_table(&el) {
            match table_keys(&el, ctx, &at, entries, name) {
                Ok(keys) => out.extend(keys.into_iter().map(|(k, _, i)| (k, vec![i]))),
                Err(e) => problems.push(e),
            }
        } else if el.starts_with('/') {
            let path = resolve(ctx.config_dir, &el);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    for l in super::parse::logical_lines(&text, &path) {
                        entries.push(Entry {
                            source: l.loc.clone(),
                            text: l.text.clone(),
                            fate: Fate::Default { why: format!("{name} entry") },
                        });
                        for w in super::parse::split_list(&l.text) {
                            out.push((w, vec![entries.len() - 1]));
                        }
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        } else {
            out.push((el, vec![]));
        }
    }
    (out, problems)
}

/// `[host]:port`, `host:port`, `[host]`, `host` → `host:port`.
pub fn next_hop(v: &str, default_port: u16) -> String {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).unwrap_or(default_port);
            return format!("{h}:{port}");
        }
    }
    match v.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}:{p}"),
        _ => format!("{v}:{default_port}"),
    }
}

/// A Postfix time value with its default unit → a postern duration.
fn time(v: &str, unit: &str) -> Option<String> {
    let v = v.trim();
    let (num, u) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, unit),
    };
    let n: u64 = num.parse().ok()?;
    match u {
        "s" | "m" | "h" | "d" => Some(format!("{n}{u}")),
        "w" => Some(format!("{}d", n * 7)),
        _ => None,
    }
}

/// Maps the global parameters into `doc`; sets the fates of their entries.
pub fn globals(p: &Params, ctx: &mut MapCtx, doc: &mut Doc, entries: &mut Vec<Entry>) -> Vec<String> {
    let e = |n: &str| ctx.entry.get(n).copied();
    let from = |n: &str| e(n).into_iter().collect::<Vec<_>>();
    let mut mynetworks = Vec::new();
    if p.raw("myhostname").is_some() && e("myhostname").is_some() {
        doc.top("hostname", s(p.get("myhostname")), from("myhostname"));
    }
    // Local domains: mydestination (expanded: $myhostname, localhost.$mydomain ...).
    let (dom, probs) = names(p, "mydestination", ctx, entries);
    let doms: Vec<String> = dom.iter().map(|(d, _)| d.to_ascii_lowercase()).collect();
    let mut f = from("mydestination");
    f.extend(dom.iter().flat_map(|(_, i)| i.clone()));
    doc.set("local", "domains", arr(doms.clone()), f);
    for pr in probs {
        fate(entries, e("mydestination"), nm(&pr, "list the domains in local.domains", true));
    }
    let (rd, probs) = names(p, "relay_domains", ctx, entries);
    if !rd.is_empty() || e("relay_domains").is_some() {
        let mut f = from("relay_domains");
        f.extend(rd.iter().flat_map(|(_, i)| i.clone()));
        doc.set("relay", "domains", arr(rd.iter().map(|(d, _)| d.to_ascii_lowercase())), f);
    }
    for pr in probs {
        fate(entries, e("relay_domains"), nm(&pr, "list the domains in relay.domains", true));
    }
    let (nets, probs) = names(p, "mynetworks", ctx, entries);
    let mut f = from("mynetworks");
    for (n, idx) in &nets {
        let n = n.replace(['[', ']'], "");
        if n.parse::<crate::config::Cidr>().is_ok() {
            mynetworks.push(n);
            f.extend(idx.iter().copied());
        } else {
            for &i in idx {
                fate(
                    entries,
                    Some(i),
                    nm(&format!("{n:?} is not an address or network"), "host names are not supported: use addresses", true),
                );
            }
        }
    }
    doc.set("relay", "networks", arr(mynetworks.clone()), f);
    for pr in probs {
        fate(entries, e("mynetworks"), nm(&pr, "list the networks in relay.networks", true));
    }
    doc.set("relay", "default_rules", toml::Value::Boolean(false), vec![]);
    smarthost(p, ctx, doc, entries);
    // Server TLS.
    for (k, key) in [("smtpd_tls_cert_file", "certificate"), ("smtpd_tls_key_file", "key")] {
        let v = p.get(k);
        if !v.trim().is_empty() {
            doc.set("tls", key, s(resolve(ctx.config_dir, v.trim()).display().to_string()), from(k));
        }
    }
    let ca = p.get("smtpd_tls_CAfile");
    if !ca.trim().is_empty() {
        doc.set("tls", "client_ca_files", arr([resolve(ctx.config_dir, ca.trim()).display().to_string()]), from("smtpd_tls_CAfile"));
    }
    // SASL.
    if p.get("smtpd_sasl_type").trim() == "dovecot" && p.yes("smtpd_sasl_auth_enable") {
        let path = p.get("smtpd_sasl_path");
        let path = path.trim();
        let socket = if let Some(inet) = path.strip_prefix("inet:") {
            format!("inet:{inet}")
        } else {
            let raw = path.strip_prefix("unix:").unwrap_or(path);
            let abs =
                if raw.starts_with('/') { raw.to_string() } else { format!("{}/{raw}", p.get("queue_directory").trim_end_matches('/')) };
            format!("unix:{abs}")
        };
        let mut f = from("smtpd_sasl_type");
        f.extend(from("smtpd_sasl_path"));
        doc.set("auth", "backend", s("dovecot"), f.clone());
        doc.set("auth", "dovecot_socket", s(socket), f);
    } else if p.yes("smtpd_sasl_auth_enable") {
        fate(
            entries,
            e("smtpd_sasl_type"),
            nm(
                "Cyrus SASL is not used by postern",
                "import the users: postern user import-sasldb /etc/sasldb2 (auth.backend = \"file\")",
                false,
            ),
        );
    }
    if p.yes("smtpd_sasl_auth_enable") && !p.yes("smtpd_tls_auth_only") {
        fate(
            entries,
            e("smtpd_tls_auth_only"),
            nm(
                "postern never offers AUTH before TLS (a deliberate choice)",
                "clients must use STARTTLS; auth.plaintext_networks relaxes it per network",
                false,
            ),
        );
    } else {
        fate(entries, e("smtpd_tls_auth_only"), Fate::Default { why: "postern never offers AUTH before TLS".into() });
    }
    if e("broken_sasl_auth_clients").is_some() {
        doc.set("auth", "broken_auth_line", toml::Value::Boolean(p.yes("broken_sasl_auth_clients")), from("broken_sasl_auth_clients"));
    }
    milters(p, ctx, doc);
    limits(p, ctx, doc, entries);
    super::map_local::local(p, ctx, doc, entries, &doms);
    mynetworks
}

fn smarthost(p: &Params, ctx: &mut MapCtx, doc: &mut Doc, entries: &mut Vec<Entry>) {
    let e = |n: &str| ctx.entry.get(n).copied();
    let from = |n: &str| e(n).into_iter().collect::<Vec<_>>();
    let relayhost = p.get("relayhost");
    let relayhost = relayhost.trim();
    if relayhost.is_empty() {
        return;
    }
    if !relayhost.starts_with('[') {
        fate(
            entries,
            e("relayhost"),
            Fate::Default { why: "without [brackets] Postfix looks up MX records; postern connects to the host's address".into() },
        );
    }
    doc.set("relay", "smarthost", s(next_hop(relayhost, 25)), from("relayhost"));
    let level = p.get("smtp_tls_security_level");
    let tls = match level.trim() {
        "none" => Some("none"),
        "may" | "" => Some("may"),
        "encrypt" => Some("encrypt"),
        "verify" | "secure" => Some("verify"),
        "dane" | "dane-only" => Some("dane"),
        _ => None,
    };
    match tls {
        Some(t) if e("smtp_tls_security_level").is_some() => doc.set("relay", "smarthost_tls", s(t), from("smtp_tls_security_level")),
        Some(_) => {}
        None => fate(entries, e("smtp_tls_security_level"), nm(&format!("unknown level {level:?}"), "set relay.smarthost_tls", false)),
    }
    for (k, key) in [("smtp_tls_cert_file", "smarthost_client_certificate"), ("smtp_tls_key_file", "smarthost_client_key")] {
        let v = p.get(k);
        if !v.trim().is_empty() {
            doc.set("relay", key, s(resolve(ctx.config_dir, v.trim()).display().to_string()), from(k));
        }
    }
    let ca = p.get("smtp_tls_CAfile");
    if !ca.trim().is_empty() {
        doc.set("relay", "smarthost_ca_files", arr([resolve(ctx.config_dir, ca.trim()).display().to_string()]), from("smtp_tls_CAfile"));
    }
    if p.yes("smtp_tls_wrappermode") {
        doc.set("relay", "smarthost_implicit_tls", toml::Value::Boolean(true), from("smtp_tls_wrappermode"));
    }
    let maps = p.get("smtp_sasl_password_maps");
    if p.yes("smtp_sasl_auth_enable") && !maps.trim().is_empty() {
        let at = p.origin("smtp_sasl_password_maps").cloned().unwrap_or(Loc { file: ctx.config_dir.join("main.cf"), line: 0 });
        let keys = table_keys(maps.trim(), ctx, &at, entries, "smtp_sasl_password_maps");
        let host = next_hop(relayhost, 25);
        let bare = host.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
        match keys {
            Ok(keys) => {
                let hit = keys.iter().find(|(k, _, _)| k == relayhost || next_hop(k, 25) == host || k.trim_matches(['[', ']']) == bare);
                match hit {
                    Some((_, v, i)) => {
                        let (user, pass) = v.split_once(':').unwrap_or((v.as_str(), ""));
                        let mut f = from("smtp_sasl_password_maps");
                        f.push(*i);
                        f.extend(from("smtp_sasl_auth_enable"));
                        doc.set("relay", "smarthost_username", s(user), f.clone());
                        ctx.extra.push(("smarthost.password".into(), format!("{pass}\n")));
                        doc.set("relay", "smarthost_password_file", s(ctx.out_dir.join("smarthost.password").display().to_string()), f);
                    }
                    None => fate(
                        entries,
                        e("smtp_sasl_password_maps"),
                        nm("no entry for the relayhost", "set relay.smarthost_username and smarthost_password_file", false),
                    ),
                }
            }
            Err(m) => {
                fate(entries, e("smtp_sasl_password_maps"), nm(&m, "set relay.smarthost_username and smarthost_password_file", false))
            }
        }
    }
}

fn milters(p: &Params, ctx: &MapCtx, doc: &mut Doc) {
    let e = |n: &str| ctx.entry.get(n).copied();
    let action = p.get("milter_default_action");
    let action = match action.trim() {
        "accept" => "accept",
        "reject" => "reject",
        _ => "tempfail",
    };
    let mut seen = Vec::new();
    for (param, key) in [("smtpd_milters", None), ("non_smtpd_milters", Some("sendmail_milters"))] {
        for m in p.list(param) {
            let name = super::services::milter_name(&m);
            if !seen.contains(&name) {
                let mut f: Vec<usize> = e(param).into_iter().collect();
                f.extend(e("milter_default_action"));
                doc.array(
                    "milter",
                    None,
                    vec![
                        super::out::Key { key: "name".into(), value: s(name.clone()), from: vec![] },
                        super::out::Key { key: "socket".into(), value: s(m.clone()), from: f },
                        super::out::Key { key: "default_action".into(), value: s(action), from: vec![] },
                    ],
                );
                seen.push(name.clone());
            }
            if let Some(k) = key {
                doc.push("local", k, s(name), e(param).into_iter().collect());
            }
        }
    }
}

fn limits(p: &Params, ctx: &MapCtx, doc: &mut Doc, entries: &mut [Entry]) {
    let e = |n: &str| ctx.entry.get(n).copied();
    let int = |n: &str| p.get(n).trim().parse::<i64>().ok();
    let simple = [
        ("message_size_limit", "limits", "max_message_size"),
        ("smtpd_recipient_limit", "limits", "max_recipients"),
        ("smtpd_hard_error_limit", "limits", "max_errors"),
        ("smtpd_client_connection_count_limit", "limits", "max_connections_per_ip"),
        ("bounce_size_limit", "queue", "bounce_size_limit"),
    ];
    for (param, table, key) in simple {
        if e(param).is_none() {
            continue;
        }
        match int(param) {
            Some(n) if n > 0 => doc.set(table, key, toml::Value::Integer(n), e(param).into_iter().collect()),
            _ => fate(entries, e(param), nm("0 (unlimited) or not a number", &format!("set {table}.{key}"), false)),
        }
    }
    for (param, unit, key) in [
        ("maximal_queue_lifetime", "d", "max_lifetime"),
        ("minimal_backoff_time", "s", "retry_min"),
        ("maximal_backoff_time", "s", "retry_max"),
        ("delay_warning_time", "h", "delay_warning"),
    ] {
        if e(param).is_none() {
            continue;
        }
        match time(&p.get(param), unit) {
            Some(t) => doc.set("queue", key, s(t), e(param).into_iter().collect()),
            None => fate(entries, e(param), nm("not a time", &format!("set queue.{key}"), false)),
        }
    }
}

/// Is `name` a parameter without effect on mail decisions?
pub fn harmless(name: &str) -> bool {
    HARMLESS.contains(&name)
}
