//! The `sendmail.mc` macros → [`Plan`] settings, one report entry per call.
//! The table in docs/migration-sendmail.md is the same mapping in words.
//!
//! May touch: nothing (calls in, plan and report entries out).

use super::m4::Call;
use super::plan::{PListener, PMilter, Plan};
use super::Notes;

/// Files the `.mc` names that the importer reads next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    /// FEATURE(access_db): the map's source text (the `.db` path without `.db`).
    pub access: Option<(String, usize)>,
    /// FEATURE(mailertable).
    pub mailertable: Option<(String, usize)>,
    /// confCR_FILE / RELAY_DOMAIN_FILE (class R).
    pub relay_domains: Vec<(String, usize)>,
    /// confCW_FILE / FEATURE(use_cw_file) (class w).
    pub local_host_names: Vec<(String, usize)>,
    /// ALIAS_FILE.
    pub aliases: Option<(String, usize)>,
}

/// Maps every call; returns the files to read next.
pub fn map(calls: &[Call], plan: &mut Plan, notes: &mut Notes) -> Named {
    let mut named = Named { relay_domains: vec![("/etc/mail/relay-domains".into(), 0)], ..Named::default() };
    let mut default_msa = true;
    let mut accept_unresolvable = false;
    let mut tls_srv_options = String::new();
    plan.request_certs = true;
    plan.relay_networks = vec!["127.0.0.1/32".into(), "::1/128".into()];
    for c in calls {
        let (line, text) = (c.line, c.text.as_str());
        let feature = if c.name == "FEATURE" { c.arg(0) } else { "" };
        match (c.name.as_str(), feature) {
            ("divert" | "VERSIONID" | "OSTYPE" | "DOMAIN" | "include" | "undefine" | "HACK", _) => {
                notes.default(line, text, "m4 housekeeping: no effect on mail decisions")
            }
            ("MAILER", _) => notes.default(line, text, "postern has its delivery agents built in (local Maildir/LMTP, SMTP)"),
            ("DAEMON_OPTIONS", _) => {
                let l = daemon(c.arg(0), plan.listeners.len());
                let target = format!("listener {}", l.name);
                let mut why = format!("[[listener]] {} ({}, role {})", l.name, l.address, l.role);
                if c.arg(0).contains("M=") || c.arg(0).contains("Modifiers=") {
                    let m = modifiers(c.arg(0));
                    if m.contains('s') && !m.contains('a') {
                        why.push_str(
                            "; note: postern's implicit-TLS listeners always require AUTH before MAIL (sendmail M=s alone does not)",
                        );
                    }
                    if m.contains('S') {
                        notes.not_mapped(
                            line,
                            text,
                            "M=S (no STARTTLS) has no postern equivalent: postern always offers STARTTLS",
                            "none needed, or firewall the port",
                            false,
                        );
                    }
                }
                plan.listeners.push(l);
                notes.mapped(line, text, &target, &why);
            }
            ("define", _) => define(c, plan, notes, &mut named, &mut tls_srv_options),
            ("FEATURE", "no_default_msa") => {
                default_msa = false;
                notes.default(line, text, "no port 587 listener is added for sendmail's default MSA");
            }
            ("FEATURE", "access_db") => {
                let path = map_path(c.arg(1)).unwrap_or_else(|| "/etc/mail/access".into());
                named.access = Some((path, line));
                notes.default(line, text, "the access map is read (--access or the path named here); each of its lines has its own entry");
            }
            ("FEATURE", "mailertable") => {
                let path = map_path(c.arg(1)).unwrap_or_else(|| "/etc/mail/mailertable".into());
                named.mailertable = Some((path, line));
                notes.default(line, text, "the mailertable is read; each of its lines has its own entry ([[route]])");
            }
            ("FEATURE", "use_cw_file") => {
                named.local_host_names.push(("/etc/mail/local-host-names".into(), line));
                notes.default(line, text, "local-host-names is read into local.domains");
            }
            ("FEATURE", "delay_checks") => {
                plan.delay_checks = true;
                notes.default(line, text, "postern decides client, sender and recipient refusals at RCPT, as delay_checks does");
            }
            ("FEATURE", "accept_unresolvable_domains") => {
                accept_unresolvable = true;
                notes.default(line, text, "postern's sender-domain check stays off (its default)");
            }
            ("FEATURE", "dnsbl" | "enhdnsbl") => {
                let zone = if c.arg(1).is_empty() { "blackholes.mail-abuse.org".to_string() } else { c.arg(1).to_string() };
                plan.dnsbl.push(zone);
                notes.mapped(line, text, "inbound.dnsbl.lists", "inbound.dnsbl.lists (refused at RCPT with 554 5.7.1)");
            }
            (
                "FEATURE",
                "nouucp"
                | "always_add_domain"
                | "redirect"
                | "local_procmail"
                | "smrsh"
                | "masquerade_envelope"
                | "masquerade_entire_domain"
                | "allmasquerade"
                | "local_lmtp"
                | "lookupdotdomain"
                | "relay_hosts_only"
                | "preserve_local_plus_detail",
            ) => notes.default(line, text, "no effect on which mail is accepted, or postern already behaves so"),
            ("FEATURE", "virtusertable" | "genericstable" | "ldap_routing") => notes.not_mapped(
                line,
                text,
                "address rewriting tables are not imported",
                "write their entries as aliases (local.aliases) or a [sql]/[ldap] directory",
                true,
            ),
            (
                "FEATURE",
                "promiscuous_relay"
                | "relay_entire_domain"
                | "relay_based_on_MX"
                | "relay_local_from"
                | "relay_mail_from"
                | "loose_relay_check"
                | "accept_unqualified_senders"
                | "blocklist_recipients"
                | "blacklist_recipients",
            ) => notes.not_mapped(
                line,
                text,
                "this relay or acceptance feature has no postern equivalent",
                "write the intended policy as [[rule]]s (docs/relay.md)",
                true,
            ),
            ("FEATURE", _) => notes.not_mapped(
                line,
                text,
                "unknown FEATURE: it may change which mail is accepted",
                "check the sendmail documentation and write a [[rule]] if it does",
                true,
            ),
            ("LOCAL_DOMAIN", _) => {
                for d in words(c.arg(0)) {
                    push_unique(&mut plan.local_domains, d.to_ascii_lowercase());
                }
                notes.mapped(line, text, "local.domains", "local.domains");
            }
            ("RELAY_DOMAIN", _) => {
                for d in words(c.arg(0)) {
                    relay_item(plan, &d);
                }
                notes.mapped(line, text, "relay.domains", "relay.domains (exact domains: list subdomains too)");
            }
            ("RELAY_DOMAIN_FILE", _) => {
                named.relay_domains.push((strip_opt(c.arg(0)), line));
                notes.default(line, text, "the file is read into relay.domains / relay.networks");
            }
            ("MASQUERADE_AS" | "MASQUERADE_DOMAIN" | "EXPOSED_USER", _) => notes.not_mapped(
                line,
                text,
                "postern does not rewrite sender addresses or headers",
                "have clients use the public address",
                false,
            ),
            ("SMART_HOST", _) => match smart_host(c.arg(0)) {
                Some(h) => {
                    plan.smarthost = Some(h);
                    notes.mapped(line, text, "relay.smarthost", "relay.smarthost");
                }
                None => notes.not_mapped(line, text, "cannot read this SMART_HOST value", "set relay.smarthost = \"host:port\"", false),
            },
            ("TRUST_AUTH_MECH", _) => {
                plan.trust_auth = !words(c.arg(0)).is_empty();
                notes.mapped(
                    line,
                    text,
                    "rule authenticated",
                    "[[rule]] authenticated (relay after any successful AUTH; postern does not tell mechanisms apart)",
                );
            }
            ("INPUT_MAIL_FILTER" | "MAIL_FILTER", _) => milter(c, plan, notes),
            ("LOCAL_CONFIG" | "LOCAL_RULESETS" | "LOCAL_RULE_0" | "LOCAL_NET_CONFIG" | "SITECONFIG", _) => notes.not_mapped(
                line,
                text,
                "hand-written sendmail.cf rules cannot be converted",
                "write what they decide as [[rule]]s (docs/relay.md)",
                true,
            ),
            _ => notes.not_mapped(line, text, "unknown macro", "check whether it changes mail decisions", false),
        }
    }
    if plan.listeners.is_empty() {
        plan.listeners.push(PListener { name: "MTA".into(), address: "0.0.0.0:25".into(), role: "smtp", ..PListener::default() });
        notes.mapped(0, "(sendmail's default daemon: Port=25, Name=MTA)", "listener MTA", "[[listener]] MTA");
    }
    if default_msa {
        // sendmail's cf adds `Port=587, Name=MSA, M=E` unless no_default_msa.
        plan.listeners.push(PListener { name: "MSA".into(), address: "0.0.0.0:587".into(), role: "smtp", ..PListener::default() });
        notes.mapped(
            0,
            "(sendmail's default MSA: Port=587, Name=MSA, M=E)",
            "listener MSA",
            "[[listener]] MSA (role smtp: sendmail's MSA requires no AUTH)",
        );
    }
    if tls_srv_options.contains('V') {
        plan.request_certs = false;
    }
    plan.sender_domain_check = !accept_unresolvable;
    if !accept_unresolvable {
        notes.mapped(
            0,
            "(sendmail's default: refuse senders whose domain does not resolve)",
            "inbound.rdns.sender_domain_check",
            "[inbound.rdns] sender_domain_check = true",
        );
    }
    named
}

/// The `define(`conf...', ...)` settings.
fn define(c: &Call, plan: &mut Plan, notes: &mut Notes, named: &mut Named, tls_srv_options: &mut String) {
    let (line, text, v) = (c.line, c.text.as_str(), c.arg(1).trim());
    match c.arg(0) {
        "confDOMAIN_NAME" => {
            plan.hostname = Some(v.to_string());
            notes.mapped(line, text, "hostname", "hostname");
        }
        "confSERVER_CERT" => {
            plan.cert = Some(v.into());
            notes.mapped(line, text, "tls.certificate", "tls.certificate");
        }
        "confSERVER_KEY" => {
            plan.key = Some(v.into());
            notes.mapped(line, text, "tls.key", "tls.key");
        }
        "confCACERT" => {
            plan.client_cas.push(v.into());
            notes.mapped(line, text, "tls.client_ca_files", "tls.client_ca_files (CAs that verify client certificates)");
        }
        "confCACERT_PATH" => notes.not_mapped(
            line,
            text,
            "postern reads CA files, not hashed certificate directories",
            "add the CA files of this directory that clients use to tls.client_ca_files (confCACERT is mapped)",
            false,
        ),
        "confCLIENT_CERT" | "confCLIENT_KEY" => {
            let (cert, key) = plan.smarthost_cert.get_or_insert_with(Default::default);
            if c.arg(0) == "confCLIENT_CERT" {
                *cert = v.into();
            } else {
                *key = v.into();
            }
            notes.mapped(
                line,
                text,
                "relay.smarthost_client_certificate",
                "relay.smarthost_client_certificate/_key (presented to the smarthost; postern presents none to MX hosts)",
            );
        }
        "confTLS_SRV_OPTIONS" => {
            *tls_srv_options = v.to_string();
            notes.mapped(line, text, "client certificates", "listener.client_certificates (V: \"none\", else \"optional\")");
        }
        "confAUTH_MECHANISMS" => {
            let mut keep = Vec::new();
            let mut dropped = Vec::new();
            for m in words(v) {
                let m = m.to_ascii_uppercase();
                match m.as_str() {
                    "PLAIN" | "LOGIN" | "SCRAM-SHA-1" | "SCRAM-SHA-256" | "EXTERNAL" => keep.push(m),
                    _ => dropped.push(m),
                }
            }
            if !keep.is_empty() {
                plan.mechanisms = Some(keep);
            }
            if dropped.is_empty() {
                notes.mapped(line, text, "auth.mechanisms", "auth.mechanisms");
            } else {
                notes.not_mapped(
                    line,
                    text,
                    &format!("{} not imported: CRAM-MD5 and DIGEST-MD5 need the password kept in clear, which the importer never writes; others are not built in", dropped.join(" ")),
                    "clients use PLAIN/LOGIN over TLS (or SCRAM); the rest is in auth.mechanisms",
                    false,
                );
            }
        }
        "confAUTH_OPTIONS" => {
            if v.contains('p') {
                notes.default(line, text, "postern offers AUTH only under TLS and never anonymously (A, p, y: its default)");
            } else {
                notes.not_mapped(
                    line,
                    text,
                    "without `p` sendmail offers plaintext mechanisms before TLS; postern never does (auth.plaintext_networks lists exceptions)",
                    "let clients use STARTTLS or port 465",
                    false,
                );
            }
        }
        "confMAX_MESSAGE_SIZE" => match v.parse::<u64>() {
            Ok(n) if n > 0 => {
                plan.max_message_size = Some(n);
                notes.mapped(line, text, "limits.max_message_size", "limits.max_message_size");
            }
            _ => notes.not_mapped(line, text, "not a size in bytes", "set limits.max_message_size", true),
        },
        "confCR_FILE" => {
            named.relay_domains = vec![(strip_opt(v), line)];
            notes.default(line, text, "the file is read into relay.domains / relay.networks");
        }
        "confCW_FILE" => {
            named.local_host_names = vec![(strip_opt(v), line)];
            notes.default(line, text, "the file is read into local.domains");
        }
        "ALIAS_FILE" => {
            named.aliases = Some((v.split(',').next().unwrap_or(v).trim().to_string(), line));
            notes.default(line, text, "the aliases file (--aliases or this path) becomes the aliases file next to postern.toml");
        }
        "SMART_HOST" => match smart_host(v) {
            Some(h) => {
                plan.smarthost = Some(h);
                notes.mapped(line, text, "relay.smarthost", "relay.smarthost");
            }
            None => notes.not_mapped(line, text, "cannot read this SMART_HOST value", "set relay.smarthost = \"host:port\"", false),
        },
        "confDONT_BLAME_SENDMAIL"
        | "confLOG_LEVEL"
        | "confTO_QUEUEWARN"
        | "confTO_QUEUERETURN"
        | "confPRIVACY_FLAGS"
        | "confSERVICE_SWITCH_FILE"
        | "confHOST_STATUS_DIRECTORY"
        | "confDEF_USER_ID"
        | "confTRUSTED_USER"
        | "confSAFE_FILE_ENV"
        | "confQUEUE_LA"
        | "confREFUSE_LA"
        | "confMAX_DAEMON_CHILDREN"
        | "confTO_IDENT"
        | "confBIND_OPTS"
        | "PROCMAIL_MAILER_PATH"
        | "STATUS_FILE"
        | "QUEUE_DIR"
        | "confMCI_CACHE_SIZE"
        | "confEBINDIR"
        | "UUCP_MAILER_MAX" => {
            notes.default(line, text, "operational setting with no effect on which mail is accepted (postern has its own)")
        }
        _ => notes.not_mapped(
            line,
            text,
            "unknown setting",
            "check whether it changes mail decisions; set the postern key by hand if so",
            false,
        ),
    }
}

/// A `DAEMON_OPTIONS` value as a listener.
pub fn daemon(opts: &str, index: usize) -> PListener {
    let mut port = "25".to_string();
    let mut addr = None;
    let mut name = None;
    let mut inet6 = false;
    for kv in opts.split(',') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        let v = v.trim();
        match k.trim() {
            "Port" | "P" => port = v.to_string(),
            "Addr" | "A" => addr = Some(v.to_string()),
            "Name" | "N" => name = Some(v.to_string()),
            "Family" | "F" => inet6 = v == "inet6",
            _ => {}
        }
    }
    let port = match port.as_str() {
        "smtp" => 25,
        "submission" => 587,
        "smtps" | "ssmtp" => 465,
        p => p.parse().unwrap_or(25),
    };
    let ip = addr.unwrap_or_else(|| if inet6 { "::".into() } else { "0.0.0.0".into() });
    let address = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let m = modifiers(opts);
    let role = if m.contains('s') {
        "submissions"
    } else if m.contains('a') {
        "submission"
    } else {
        "smtp"
    };
    PListener {
        name: name.unwrap_or_else(|| format!("daemon{}", index + 1)),
        address,
        role,
        no_auth: m.contains('A'),
        tls_optional: role == "submission",
    }
}

/// The `M=`/`Modifiers=` flags of DAEMON_OPTIONS.
pub fn modifiers(opts: &str) -> String {
    opts.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| matches!(k.trim(), "M" | "Modifiers"))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// `INPUT_MAIL_FILTER(`name', `S=inet:8891@localhost, F=T, T=C:10s;R:30s')`.
fn milter(c: &Call, plan: &mut Plan, notes: &mut Notes) {
    let mut m = PMilter { name: c.arg(0).to_string(), default_action: "accept", ..PMilter::default() };
    for kv in c.arg(1).split(',') {
        let Some((k, v)) = kv.split_once('=') else { continue };
        let v = v.trim();
        match k.trim() {
            "S" => m.socket = v.to_string(),
            "F" if v.contains('R') => m.default_action = "reject",
            "F" if v.contains('T') => m.default_action = "tempfail",
            "T" => {
                for t in v.split(';') {
                    let Some((which, d)) = t.split_once(':') else { continue };
                    let d = if d.chars().last().is_some_and(|c| c.is_ascii_digit()) { format!("{d}s") } else { d.to_string() };
                    match which.trim() {
                        "C" => m.timeouts.push(("connect_timeout", d)),
                        "R" => m.timeouts.push(("command_timeout", d)),
                        "E" => m.timeouts.push(("eom_timeout", d)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if m.name.is_empty() || m.socket.is_empty() {
        notes.not_mapped(c.line, &c.text, "milter without a name or S= socket", "add a [[milter]] by hand", true);
        return;
    }
    let target = format!("milter {}", m.name);
    plan.milters.push(m);
    notes.mapped(c.line, &c.text, &target, "[[milter]] (used by every listener, in order; F= becomes default_action)");
}

/// `SMART_HOST` forms: `relay:[host]`, `esmtp:host:port`, `[host]`, `host`.
pub fn smart_host(v: &str) -> Option<String> {
    let v = v.trim();
    let v = match v.split_once(':') {
        Some(("smtp" | "esmtp" | "relay" | "smtp8" | "dsmtp", rest)) => rest,
        _ => v,
    };
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h, p.to_string()),
        _ => (v, "25".to_string()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| format!("{host}:{port}"))
}

/// The path of a map spec (`hash -o -T<TMPF> /etc/mail/access`), without `.db`.
pub fn map_path(spec: &str) -> Option<String> {
    let p = spec.split_whitespace().filter(|w| !w.starts_with('-')).find(|w| w.starts_with('/'))?;
    Some(p.strip_suffix(".db").unwrap_or(p).to_string())
}

/// A class file spec without its `-o` (optional) flag.
fn strip_opt(v: &str) -> String {
    v.split_whitespace().filter(|w| !w.starts_with('-')).collect::<Vec<_>>().join(" ")
}

/// White-space separated words.
pub fn words(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_string).collect()
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// One entry of class R: an address or octet prefix (a client that may
/// relay) or a domain (relayed to).
pub fn relay_item(plan: &mut Plan, item: &str) -> &'static str {
    match super::access::network(item) {
        Some(net) => {
            push_unique(&mut plan.relay_networks, net);
            "relay.networks"
        }
        None => {
            push_unique(&mut plan.relay_domains, item.to_ascii_lowercase());
            "relay.domains"
        }
    }
}
