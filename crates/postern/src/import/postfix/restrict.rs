//! Postfix SMTP restrictions (smtpd_client/helo/sender/relay/recipient
//! _restrictions) compiled into postern `[[rule]]`s.
//!
//! Postfix evaluates the lists in that order at RCPT (smtpd_delay_reject =
//! yes); in each list the first element that decides ends the list; a
//! reject in any list is final, a permit only ends its own list. postern
//! has one first-match rule list. The compilation: the rejects of every
//! list except the deciding one (the last list that permits or has
//! `*_unauth_destination`) come first, then the deciding list in order,
//! then an `accept` for what no restriction refused (local and relay
//! domains; other domains then get postern's `no-relay`). A reject that an
//! earlier permit of a non-deciding list shields cannot be written as
//! first-match rules and is reported NOT MAPPED (except
//! `*_unauth_destination` shielded by the same permits as the deciding list).
//!
//! May touch: reads the access tables named (through [`super::tables`]).

use std::path::Path;

use super::out::{arr, s, Key};
use super::tables::{self, Table, TableEntry, TableError};
use crate::config::Cidr;
use crate::import::{Entry, Fate, Loc};

/// The restriction lists, in Postfix's evaluation order.
pub const LISTS: &[&str] = &[
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
];

/// What one step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Permit: relay to any domain.
    Grant,
    /// Permit for local and relay domains only (permit_auth_destination).
    AcceptLocal,
    /// Refuse; `temp` for 4xx.
    Reject {
        /// 4xx rather than 5xx.
        temp: bool,
    },
    /// `reject_unauth_destination` / `defer_unauth_destination`.
    UnauthDest {
        /// 4xx rather than 5xx.
        temp: bool,
    },
}

/// One compiled element (or table entry).
#[derive(Debug, Clone)]
pub struct Step {
    /// Rule criteria.
    pub criteria: Vec<(String, toml::Value)>,
    /// Its effect.
    pub kind: Kind,
    /// A name for the rule.
    pub name: String,
    /// Report entries it maps.
    pub from: Vec<usize>,
    /// The element text, to compare permits across lists.
    pub element: String,
}

/// A global setting an element turns on (`inbound.rdns.sender_domain_check` ...).
pub type Setting = (&'static str, &'static str, toml::Value);

/// Facts the elements refer to.
pub struct Ctx<'a> {
    /// The configuration directory (tables).
    pub config_dir: &'a Path,
    /// mynetworks as CIDR strings.
    pub mynetworks: &'a [String],
    /// relay_clientcerts fingerprints (and the report entries of their lines).
    pub clientcerts: &'a [(String, usize)],
}

/// The report, with entries de-duplicated by place and text (a main.cf
/// list shared by several listeners is reported once).
pub struct Reporter<'a> {
    /// The report entries.
    pub entries: &'a mut Vec<Entry>,
}

impl Reporter<'_> {
    /// The index of the entry for (`loc`, `text`), created with `fate` if new.
    pub fn entry(&mut self, loc: &Loc, text: &str, fate: Fate) -> usize {
        if let Some(i) = self.entries.iter().position(|e| &e.source == loc && e.text == text) {
            return i;
        }
        self.entries.push(Entry { source: loc.clone(), text: text.to_string(), fate });
        self.entries.len() - 1
    }

    /// Sets a fate unless the entry is already mapped.
    pub fn fate(&mut self, i: usize, fate: Fate) {
        if let Some(e) = self.entries.get_mut(i) {
            if !matches!(e.fate, Fate::Mapped { .. }) {
                e.fate = fate;
            }
        }
    }
}

fn not_mapped(reason: &str, advice: &str) -> Fate {
    Fate::NotMapped { reason: reason.into(), advice: advice.into(), restriction: true }
}

fn pending() -> Fate {
    Fate::Default { why: "(pending)".into() }
}

/// One restriction list of one listener group: (list name, place, elements).
pub struct List {
    /// `smtpd_relay_restrictions` ...
    pub name: &'static str,
    /// Where it is set (None: Postfix's default).
    pub loc: Loc,
    /// Its elements (expanded).
    pub elements: Vec<String>,
}

/// Compiles the lists of one listener group into rules (the keys of each
/// `[[rule]]`, carrying the report entries they map) and global settings
/// (pushed onto `settings` with their entry). The caller adds `listener`.
pub fn compile(lists: &[List], ctx: &Ctx, rep: &mut Reporter, settings: &mut Vec<(Setting, usize)>) -> Vec<Vec<Key>> {
    let mut per_list: Vec<Vec<Step>> = Vec::new();
    for l in lists {
        let mut steps = Vec::new();
        let short = l.name.trim_start_matches("smtpd_").trim_end_matches("_restrictions");
        let mut i = 0;
        while i < l.elements.len() {
            let el = l.elements[i].as_str();
            // Elements with one argument: check_*_access TABLE, reject_rbl_client DOMAIN.
            let takes_arg = el.starts_with("check_")
                || el.starts_with("reject_rbl_client")
                || el.starts_with("reject_rhsbl_")
                || el == "permit_dnswl_client";
            let arg = if takes_arg { l.elements.get(i + 1).cloned() } else { None };
            let text = match &arg {
                Some(a) => format!("{}: {el} {a}", l.name),
                None => format!("{}: {el}", l.name),
            };
            let idx = rep.entry(&l.loc, &text, pending());
            element(el, arg.as_deref(), short, idx, ctx, rep, settings, &mut steps);
            i += if arg.is_some() { 2 } else { 1 };
        }
        per_list.push(steps);
    }
    let deciding =
        per_list.iter().rposition(|st| st.iter().any(|s| matches!(s.kind, Kind::Grant | Kind::AcceptLocal | Kind::UnauthDest { .. })));
    let grants_of = |st: &[Step], upto: usize| -> Vec<String> {
        st[..upto].iter().filter(|s| matches!(s.kind, Kind::Grant | Kind::AcceptLocal)).map(|s| s.element.clone()).collect()
    };
    // The permits before step j that could match the same session.
    let shields = |st: &[Step], j: usize| -> Vec<String> {
        st[..j]
            .iter()
            .filter(|s| matches!(s.kind, Kind::Grant | Kind::AcceptLocal) && may_overlap(s, &st[j]))
            .map(|s| s.element.clone())
            .collect()
    };
    let mut rules = Vec::new();
    // 1. Rejects of the other lists.
    for (k, st) in per_list.iter().enumerate() {
        if Some(k) == deciding {
            continue;
        }
        for (j, step) in st.iter().enumerate() {
            match step.kind {
                Kind::Grant | Kind::AcceptLocal => {
                    for &f in &step.from {
                        rep.fate(
                            f,
                            Fate::Default {
                                why: format!(
                                    "a permit in {} ends only that list; the later lists decide (postern rules below)",
                                    lists[k].name
                                ),
                            },
                        );
                    }
                }
                Kind::Reject { .. } | Kind::UnauthDest { .. } => {
                    let shield = shields(st, j);
                    if shield.is_empty() {
                        rules.push(rule(step));
                        continue;
                    }
                    let covered = matches!(step.kind, Kind::UnauthDest { .. })
                        && deciding.is_some_and(|d| {
                            let dg = grants_of(&per_list[d], per_list[d].len());
                            dg.iter().all(|g| shield.contains(g))
                        });
                    for &f in &step.from {
                        if covered {
                            rep.fate(
                                f,
                                Fate::Default {
                                    why: "the same permits guard the deciding list's *_unauth_destination (rules below)".into(),
                                },
                            );
                        } else {
                            rep.fate(
                                f,
                                not_mapped(
                                    "a reject after a permit in a list other than the last deciding one cannot be written as first-match rules",
                                    "write [[rule]]s by hand: the permitted clients first, then this reject",
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    // 2. The deciding list.
    if let Some(d) = deciding {
        for step in &per_list[d] {
            rules.push(rule(step));
        }
    }
    rules
}

/// Could two steps match the same session? Only told apart when both test
/// just the client address (disjoint networks), or just the sender, or
/// just certificate pins; otherwise assumed yes.
pub fn may_overlap(a: &Step, b: &Step) -> bool {
    let (Some((ka, va)), Some((kb, vb))) = (single(a), single(b)) else { return true };
    if ka != kb {
        return true;
    }
    let strs = |v: &toml::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(|s| s.to_ascii_lowercase())).collect()).unwrap_or_default()
    };
    let (xa, xb) = (strs(va), strs(vb));
    match ka {
        "client" => xa.iter().any(|x| xb.iter().any(|y| nets_overlap(x, y))),
        "sender" => xa.iter().any(|x| {
            xb.iter().any(|y| x == y || (x.starts_with('@') && y.ends_with(x.as_str())) || (y.starts_with('@') && x.ends_with(y.as_str())))
        }),
        "cert_sha256" | "cert_spki_sha256" => {
            let norm = |v: &[String]| -> Vec<String> { v.iter().map(|s| s.replace(':', "")).collect() };
            let (na, nb) = (norm(&xa), norm(&xb));
            na.iter().any(|x| nb.contains(x))
        }
        _ => true,
    }
}

fn single(s: &Step) -> Option<(&str, &toml::Value)> {
    match s.criteria.as_slice() {
        [(k, v)] => Some((k.as_str(), v)),
        _ => None,
    }
}

fn nets_overlap(a: &str, b: &str) -> bool {
    let ip = |s: &str| s.split('/').next().and_then(|x| x.parse::<std::net::IpAddr>().ok());
    match (a.parse::<Cidr>(), b.parse::<Cidr>(), ip(a), ip(b)) {
        (Ok(ca), Ok(cb), Some(ia), Some(ib)) => ca.contains(ib) || cb.contains(ia),
        _ => true,
    }
}

fn rule(step: &Step) -> Vec<Key> {
    let mut keys = vec![Key { key: "name".into(), value: s(step.name.clone()), from: Vec::new() }];
    for (k, v) in &step.criteria {
        keys.push(Key { key: k.clone(), value: v.clone(), from: Vec::new() });
    }
    let (action, message) = match step.kind {
        Kind::Grant => ("relay", None),
        Kind::AcceptLocal => ("accept", None),
        Kind::Reject { temp: false } => ("reject", Some("Access denied")),
        Kind::Reject { temp: true } => ("tempfail", Some("Access denied, try again later")),
        Kind::UnauthDest { temp: false } => ("reject", Some("Relay access denied")),
        Kind::UnauthDest { temp: true } => ("tempfail", Some("Relay access denied, try again later")),
    };
    if matches!(step.kind, Kind::UnauthDest { .. }) {
        keys.push(Key { key: "rcpt".into(), value: arr(["other"]), from: Vec::new() });
    }
    keys.push(Key { key: "action".into(), value: s(action), from: step.from.clone() });
    if let Some(m) = message {
        keys.push(Key { key: "message".into(), value: s(m), from: Vec::new() });
    }
    keys
}

fn step(name: String, element: &str, criteria: Vec<(&str, toml::Value)>, kind: Kind, from: Vec<usize>) -> Step {
    Step { criteria: criteria.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), kind, name, from, element: element.to_string() }
}

/// Compiles one element into steps (or settings, or a report fate).
#[allow(clippy::too_many_arguments)]
fn element(
    el: &str,
    arg: Option<&str>,
    short: &str,
    idx: usize,
    ctx: &Ctx,
    rep: &mut Reporter,
    settings: &mut Vec<(Setting, usize)>,
    steps: &mut Vec<Step>,
) {
    let name = format!("{short}-{el}");
    let mut push =
        |criteria: Vec<(&str, toml::Value)>, kind: Kind, from: Vec<usize>| steps.push(step(name.clone(), el, criteria, kind, from));
    match el {
        "permit_mynetworks" => push(vec![("client", arr(ctx.mynetworks.iter().cloned()))], Kind::Grant, vec![idx]),
        "permit_sasl_authenticated" => push(vec![("authenticated", toml::Value::Boolean(true))], Kind::Grant, vec![idx]),
        "permit_tls_all_clientcerts" => push(vec![("cert_verified", toml::Value::Boolean(true))], Kind::Grant, vec![idx]),
        "permit_tls_clientcerts" => {
            if ctx.clientcerts.is_empty() {
                rep.fate(idx, Fate::Default { why: "relay_clientcerts is empty: permits nobody".into() });
                return;
            }
            let fps: Vec<String> = ctx.clientcerts.iter().map(|(f, _)| f.clone()).collect();
            let mut from = vec![idx];
            from.extend(ctx.clientcerts.iter().map(|(_, i)| *i));
            // Postfix matches the certificate's or the public key's fingerprint.
            push(vec![("cert_sha256", arr(fps.clone()))], Kind::Grant, from.clone());
            push(vec![("cert_spki_sha256", arr(fps))], Kind::Grant, from);
        }
        "permit_auth_destination" => push(vec![], Kind::AcceptLocal, vec![idx]),
        "reject_unauth_destination" => push(vec![], Kind::UnauthDest { temp: false }, vec![idx]),
        "defer_unauth_destination" => push(vec![], Kind::UnauthDest { temp: true }, vec![idx]),
        "permit" => push(vec![], Kind::Grant, vec![idx]),
        "reject" => push(vec![], Kind::Reject { temp: false }, vec![idx]),
        "defer" => push(vec![], Kind::Reject { temp: true }, vec![idx]),
        "reject_unknown_reverse_client_hostname" | "reject_unknown_client" | "reject_unknown_client_hostname" => {
            // Postfix answers unknown_client_reject_code (450) for these.
            let bad = if el == "reject_unknown_reverse_client_hostname" { arr(["fail", "temp"]) } else { arr(["fail", "forged", "temp"]) };
            push(vec![("rdns", bad)], Kind::Reject { temp: true }, vec![idx]);
        }
        "reject_unknown_sender_domain" => settings.push((("inbound.rdns", "sender_domain_check", toml::Value::Boolean(true)), idx)),
        "reject_non_fqdn_helo_hostname" | "reject_invalid_helo_hostname" | "reject_non_fqdn_hostname" | "reject_invalid_hostname" => {
            settings.push((("inbound.rdns", "helo_require_fqdn", toml::Value::Boolean(true)), idx))
        }
        "reject_unknown_helo_hostname" | "reject_unknown_hostname" => {
            settings.push((("inbound.rdns", "helo_require_resolve", toml::Value::Boolean(true)), idx))
        }
        "reject_rbl_client" => match arg {
            Some(a) => settings.push((("inbound.dnsbl", "lists", s(a)), idx)),
            None => rep.fate(idx, not_mapped("reject_rbl_client without a list", "fix main.cf")),
        },
        "reject_sender_login_mismatch" | "reject_authenticated_sender_login_mismatch" => {
            settings.push((("auth", "sender_login_match", toml::Value::Boolean(true)), idx))
        }
        "reject_unlisted_recipient" | "reject_unverified_recipient" => {
            rep.fate(idx, Fate::Default { why: "postern always refuses unknown local recipients (550 5.1.1)".into() })
        }
        "warn_if_reject" | "permit_inet_interfaces" | "reject_unauth_pipelining" | "sleep" => rep.fate(
            idx,
            Fate::NotMapped {
                reason: format!("{el} has no postern equivalent"),
                advice: "none needed for relay decisions; see docs/migration.md".into(),
                restriction: el == "reject_unauth_pipelining",
            },
        ),
        "check_client_access" | "check_sender_access" | "check_ccert_access" => {
            let Some(spec) = arg else {
                rep.fate(idx, not_mapped(&format!("{el} without a table"), "fix main.cf"));
                return;
            };
            let at = rep.entries[idx].source.clone();
            match tables::read(spec, ctx.config_dir, &at) {
                Ok(Table::Entries { kind, entries }) => {
                    rep.fate(idx, Fate::Default { why: "every entry of the table is listed separately".into() });
                    for e in &entries {
                        access_entry(el, &kind, e, short, idx, rep, steps);
                    }
                }
                Ok(Table::Static(v)) => match access_action(&v) {
                    Some(kind) => steps.push(step(name, el, vec![], kind, vec![idx])),
                    None => rep.fate(idx, not_mapped(&format!("static result {v:?}"), "write a [[rule]] by hand")),
                },
                Err(TableError::Unsupported(what)) => {
                    rep.fate(idx, not_mapped(&format!("{what} are not read by the importer"), "list the entries as [[rule]]s"))
                }
                Err(TableError::Unreadable(m)) => {
                    rep.fate(idx, not_mapped(&format!("cannot read the table: {m}"), "give the table's source file"))
                }
                Err(TableError::NotATable) => rep.fate(idx, not_mapped(&format!("{spec:?} is not a table"), "fix main.cf")),
            }
        }
        _ => rep.fate(
            idx,
            not_mapped(
                &format!("{el} has no postern equivalent the importer knows"),
                "write the [[rule]] by hand (docs/relay.md) and import with --allow-partial",
            ),
        ),
    }
}

/// The action of an access table result.
fn access_action(v: &str) -> Option<Kind> {
    let word = v.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    match word.as_str() {
        "OK" | "PERMIT" | "RELAY" => Some(Kind::Grant),
        "REJECT" => Some(Kind::Reject { temp: false }),
        "DEFER" => Some(Kind::Reject { temp: true }),
        w if w.len() == 3 && w.starts_with('2') && w.chars().all(|c| c.is_ascii_digit()) => Some(Kind::Grant),
        w if w.len() == 3 && w.starts_with('4') && w.chars().all(|c| c.is_ascii_digit()) => Some(Kind::Reject { temp: true }),
        w if w.len() == 3 && w.starts_with('5') && w.chars().all(|c| c.is_ascii_digit()) => Some(Kind::Reject { temp: false }),
        _ => None,
    }
}

/// A hash: client key as a network: `1.2.3.4`, `1.2.3` (/24), `1.2` (/16), `1` (/8).
fn client_key(key: &str, kind: &str) -> Option<String> {
    if kind == "cidr" {
        return key.trim_matches(['[', ']']).parse::<Cidr>().ok().map(|_| key.trim_matches(['[', ']']).to_string());
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.is_empty() || parts.len() > 4 || !parts.iter().all(|p| p.parse::<u8>().is_ok()) {
        return key.parse::<std::net::Ipv6Addr>().ok().map(|a| a.to_string());
    }
    let mut octets = parts.clone();
    while octets.len() < 4 {
        octets.push("0");
    }
    Some(format!("{}/{}", octets.join("."), parts.len() * 8))
}

fn access_entry(el: &str, kind: &str, e: &TableEntry, short: &str, parent: usize, rep: &mut Reporter, steps: &mut Vec<Step>) {
    let idx = rep.entry(&e.loc, &e.text, pending());
    if e.value.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("DUNNO")) {
        rep.fate(idx, Fate::Default { why: "DUNNO: no decision".into() });
        return;
    }
    let Some(action) = access_action(&e.value) else {
        rep.fate(idx, not_mapped(&format!("access result {:?} has no postern equivalent", e.value), "write a [[rule]] by hand"));
        return;
    };
    let criteria: Option<Vec<(&str, toml::Value)>> = match el {
        "check_client_access" => client_key(&e.key, kind).map(|c| vec![("client", arr([c]))]),
        "check_sender_access" => {
            let k = e.key.as_str();
            if k == "<>" {
                Some(vec![("sender", arr(["<>"]))])
            } else if k.contains('@') && !k.ends_with('@') && !k.starts_with('@') {
                Some(vec![("sender", arr([k]))])
            } else if !k.contains('@') && !k.starts_with('.') {
                // Postfix also matches subdomains (parent_domain_matches_subdomains).
                Some(vec![("sender", arr([format!("@{k}"), format!("@.{k}")]))])
            } else if !k.contains('@') && k.len() > 1 {
                // ".example.org": the subdomains only.
                Some(vec![("sender", arr([format!("@{k}")]))])
            } else {
                None
            }
        }
        "check_ccert_access" => {
            // Postfix looks up the certificate's fingerprint, then the public key's.
            let fp = e.key.to_string();
            if fp.chars().all(|c| c.is_ascii_hexdigit() || c == ':') && fp.len() >= 64 {
                let name = format!("{short}-ccert-{}", &fp.replace(':', "")[..8]);
                steps.push(step(name.clone(), el, vec![("cert_sha256", arr([fp.clone()]))], action.clone(), vec![idx, parent]));
                steps.push(step(name, el, vec![("cert_spki_sha256", arr([fp]))], action, vec![idx, parent]));
                return;
            }
            None
        }
        _ => None,
    };
    match criteria {
        Some(c) => steps.push(step(format!("{short}-{el}-{}", e.loc.line), el, c, action, vec![idx, parent])),
        None => rep.fate(
            idx,
            not_mapped(&format!("the key {:?} cannot be written as a postern rule criterion", e.key), "write a [[rule]] by hand"),
        ),
    }
}
