//! The access map's entries → [`Plan`] rules and settings, one report entry
//! per line. sendmail takes the most specific key (longest address prefix,
//! full address before domain); postern takes the first matching rule, so
//! rules are written most specific first.
//!
//! May touch: nothing.

use super::access::{dn_pattern, network, AccessAction, AccessEntry};
use super::plan::{PRule, Plan};
use super::Notes;

/// Maps the entries of the access file.
pub fn map(entries: &[AccessEntry], plan: &mut Plan, notes: &mut Notes) {
    let mut connect: Vec<(u8, PRule, &AccessEntry)> = Vec::new();
    let mut from: Vec<(u8, PRule, &AccessEntry)> = Vec::new();
    let mut subject_issuers: Vec<(String, usize)> = Vec::new();
    // CERTISSUER entries first: CERTSUBJECT ones depend on them.
    for e in entries.iter().filter(|e| e.tag.eq_ignore_ascii_case("CERTISSUER")) {
        match (dn_pattern(&e.key), &e.action) {
            (Some(dn), AccessAction::Relay) => {
                let name = format!("access-{}", e.line);
                plan.cert_rules.push(PRule { name: name.clone(), cert_issuer: Some(dn), action: "relay", ..PRule::default() });
                notes.access(e, &format!("rule {name}"), "[[rule]] cert_issuer (certificates verified by tls.client_ca_files) -> relay");
            }
            (Some(dn), AccessAction::Subject) => {
                subject_issuers.push((dn, e.line));
                notes.access_default(e, "the CERTSUBJECT entries decide for this issuer (rules below)");
            }
            (None, _) => notes.access_not_mapped(
                e,
                "cannot read this DN (expected /TYPE=value/... with +XX escapes)",
                "write a [[rule]] cert_issuer by hand",
                true,
            ),
            (Some(_), _) => {
                notes.access_not_mapped(e, "only RELAY and SUBJECT are meaningful for CERTISSUER", "write a [[rule]] by hand", true)
            }
        }
    }
    for e in entries {
        let tag = e.tag.to_ascii_lowercase();
        match tag.as_str() {
            "certissuer" => {}
            "certsubject" => match (dn_pattern(&e.key), &e.action) {
                (Some(dn), AccessAction::Relay) if !subject_issuers.is_empty() => {
                    let name = format!("access-{}", e.line);
                    for (i, (issuer, _)) in subject_issuers.iter().enumerate() {
                        let name = if i == 0 { name.clone() } else { format!("{name}-{}", i + 1) };
                        plan.cert_rules.push(PRule {
                            name,
                            cert_issuer: Some(issuer.clone()),
                            cert_subject: Some(dn.clone()),
                            action: "relay",
                            ..PRule::default()
                        });
                    }
                    notes.access(e, &format!("rule {name}"), "[[rule]] cert_issuer + cert_subject (verified certificates only) -> relay");
                }
                (Some(_), AccessAction::Relay) => {
                    notes.access_default(e, "no CERTISSUER entry says SUBJECT, so sendmail never consults this entry")
                }
                (None, _) => notes.access_not_mapped(e, "cannot read this DN", "write a [[rule]] cert_subject by hand", true),
                (Some(_), _) => notes.access_not_mapped(e, "only RELAY is meaningful for CERTSUBJECT", "write a [[rule]] by hand", true),
            },
            "connect" => client_entry(e, plan, notes, &mut connect),
            "" if network(&e.key).is_some() => client_entry(e, plan, notes, &mut connect),
            "from" => sender_entry(e, notes, &mut from),
            "" if e.key.contains('@') => sender_entry(e, notes, &mut from),
            "to" | "" => match &e.action {
                AccessAction::Relay if !e.key.contains('@') => {
                    plan.relay_domains.push(e.key.to_ascii_lowercase());
                    let extra = if tag.is_empty() {
                        "; sendmail also lets clients whose host name is in this domain relay: postern does not trust reverse DNS for that, add their networks to relay.networks"
                    } else {
                        ""
                    };
                    notes.access(e, "relay.domains", &format!("relay.domains (exact domain: list subdomains too){extra}"));
                }
                AccessAction::Ok | AccessAction::Skip => {
                    notes.access_default(e, "OK for a recipient only skips sendmail's other recipient checks; it never allows relaying")
                }
                _ => notes.access_not_mapped(
                    e,
                    "postern's rules decide by recipient class (local, relay, other), not by recipient address or domain",
                    "remove the address (an alias or user that does not exist is refused with 550 5.1.1), or use a milter",
                    true,
                ),
            },
            "srv_features" => srv_features(e, plan, notes),
            "clientrate" | "clientconn" => notes.access_not_mapped(
                e,
                "per-client rate and connection limits are configured differently",
                "use [inbound.rate] and limits.max_connections_per_ip",
                true,
            ),
            "greetpause" => notes.access_not_mapped(e, "greeting pause", "use [inbound.pregreet] greet_delay", false),
            "tls_srv" | "try_tls" | "tls_rcpt" => {
                notes.access_not_mapped(e, "outbound TLS requirements per destination", "use relay.smarthost_tls or [mx] tls", false)
            }
            "spam" => notes.access_not_mapped(e, "spam-friend flags", "none (postern has no such checks to skip)", false),
            _ => notes.access_not_mapped(e, "unknown access tag", "check what it decides and write a [[rule]]", true),
        }
    }
    // Most specific first (sendmail's longest-match), keeping file order otherwise.
    connect.sort_by_key(|x| std::cmp::Reverse(x.0));
    from.sort_by_key(|x| std::cmp::Reverse(x.0));
    let has_refusal = |v: &Vec<(u8, PRule, &AccessEntry)>| v.iter().any(|(_, r, _)| r.action != "accept");
    let (c_ref, f_ref) = (has_refusal(&connect), has_refusal(&from));
    // With delay_checks sendmail weighs the sender before the client, and
    // refuses relaying (550) before a client's temporary refusal.
    let families = if plan.delay_checks { [(from, f_ref), (connect, c_ref)] } else { [(connect, c_ref), (from, f_ref)] };
    for (v, refusals) in families {
        for (_, mut rule, e) in v {
            if plan.delay_checks && rule.action == "tempfail" {
                rule.rcpt = vec!["local", "relay"];
            }
            if rule.action == "accept" && !refusals {
                notes.access_default(e, "OK only skips sendmail's other checks of this kind; there is no refusal here for it to override");
                continue;
            }
            let why = match rule.action {
                "accept" => {
                    "[[rule]] action accept, before the broader refusal (it also accepts local and relay recipients without later checks)"
                }
                "tempfail" => "[[rule]] action tempfail (postern refuses at RCPT: 450 4.7.1)",
                _ => "[[rule]] action reject (postern refuses at RCPT: 550 5.7.1)",
            };
            notes.access(e, &format!("rule {}", rule.name), why);
            plan.rules_first.push(rule);
        }
    }
}

/// `Connect:` (or an untagged address) entries.
fn client_entry<'a>(e: &'a AccessEntry, plan: &mut Plan, notes: &mut Notes, out: &mut Vec<(u8, PRule, &'a AccessEntry)>) {
    let Some(net) = network(&e.key) else {
        notes.access_not_mapped(
            e,
            "a host or domain name is matched by the client's reverse DNS; postern's rules match addresses",
            "write the client's networks instead (relay.networks, [[rule]] client)",
            true,
        );
        return;
    };
    let prefix: u8 = net.rsplit_once('/').and_then(|(_, p)| p.parse().ok()).unwrap_or(32);
    let rule = |action: &'static str, message: Option<String>| PRule {
        name: format!("access-{}", e.line),
        client: vec![net.clone()],
        action,
        message,
        ..PRule::default()
    };
    match &e.action {
        AccessAction::Relay => {
            if !plan.relay_networks.contains(&net) {
                plan.relay_networks.push(net.clone());
            }
            notes.access(e, "relay.networks", "relay.networks (rule relay-networks)");
        }
        AccessAction::Reject => out.push((prefix, rule("reject", Some("Access denied".into())), e)),
        AccessAction::Error { code, text } => {
            out.push((prefix, rule(if *code < 500 { "tempfail" } else { "reject" }, Some(text.clone())), e))
        }
        AccessAction::Ok => out.push((prefix, rule("accept", None), e)),
        AccessAction::Skip => notes.access_default(e, "SKIP: no effect in postern"),
        AccessAction::Discard => {
            notes.access_not_mapped(e, "postern does not accept mail to throw it away", "refuse it instead ([[rule]] action reject)", true)
        }
        AccessAction::Subject | AccessAction::Other(_) => {
            notes.access_not_mapped(e, "value not understood for a client", "write a [[rule]] by hand", true)
        }
    }
}

/// `From:` (or an untagged address) entries.
fn sender_entry<'a>(e: &'a AccessEntry, notes: &mut Notes, out: &mut Vec<(u8, PRule, &'a AccessEntry)>) {
    let key = e.key.trim_matches(|c| c == '<' || c == '>');
    let (sender, specificity) = if key.ends_with('@') {
        notes.access_not_mapped(e, "a local part in every domain cannot be written as a postern sender", "list the full addresses", true);
        return;
    } else if key.contains('@') {
        (key.to_string(), 2)
    } else if key.is_empty() {
        ("<>".to_string(), 2)
    } else {
        (format!("@{key}"), 1)
    };
    // A domain key matches its subdomains too (sendmail strips leading labels).
    let senders = match sender.strip_prefix('@') {
        Some(d) => vec![sender.clone(), format!("@.{d}")],
        None => vec![sender.clone()],
    };
    let rule = |action: &'static str, message: Option<String>| PRule {
        name: format!("access-{}", e.line),
        sender: senders.clone(),
        action,
        message,
        ..PRule::default()
    };
    match &e.action {
        AccessAction::Reject => out.push((specificity, rule("reject", Some("Access denied".into())), e)),
        AccessAction::Error { code, text } => {
            out.push((specificity, rule(if *code < 500 { "tempfail" } else { "reject" }, Some(text.clone())), e))
        }
        AccessAction::Ok | AccessAction::Relay => out.push((specificity, rule("accept", None), e)),
        AccessAction::Skip => notes.access_default(e, "SKIP: no effect in postern"),
        AccessAction::Discard => {
            notes.access_not_mapped(e, "postern does not accept mail to throw it away", "refuse it instead ([[rule]] action reject)", true)
        }
        AccessAction::Subject | AccessAction::Other(_) => {
            notes.access_not_mapped(e, "value not understood for a sender", "write a [[rule]] by hand", true)
        }
    }
}

/// `Srv_Features:` entries: `V` (do not ask for a client certificate) and
/// `v` (ask) per client; the other flags are not mapped.
fn srv_features(e: &AccessEntry, plan: &mut Plan, notes: &mut Notes) {
    let flags = match &e.action {
        AccessAction::Other(f) => f.clone(),
        _ => String::new(),
    };
    let net = if e.key.is_empty() { None } else { network(&e.key) };
    if !e.key.is_empty() && net.is_none() {
        notes.access_not_mapped(
            e,
            "a host or domain name (reverse DNS) cannot select listener features in postern",
            "use the client's network",
            false,
        );
        return;
    }
    let mut mapped = false;
    for f in flags.split_whitespace().flat_map(|w| w.chars()) {
        match (f, &net) {
            ('V', Some(n)) => {
                plan.never_request_from.push(n.clone());
                mapped = true;
            }
            ('v', Some(n)) => {
                plan.request_from.push(n.clone());
                mapped = true;
            }
            ('V', None) => {
                plan.request_certs = false;
                mapped = true;
            }
            ('v', None) => {
                plan.request_certs = true;
                mapped = true;
            }
            _ => {}
        }
    }
    let other: String = flags.chars().filter(|c| !matches!(c, 'V' | 'v') && !c.is_whitespace()).collect();
    if mapped {
        let target = if net.is_none() {
            "client certificates"
        } else if flags.contains('V') {
            "never_request_client_certificates_from"
        } else {
            "request_client_certificates_from"
        };
        notes.access(e, target, "listener client-certificate request lists (V: never ask, v: ask)");
    }
    if !other.is_empty() {
        notes.access_not_mapped(
            e,
            &format!("Srv_Features flags {other:?} have no postern equivalent"),
            "see docs/migration-sendmail.md",
            false,
        );
    }
}
