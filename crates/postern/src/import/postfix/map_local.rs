//! main.cf parameters for local delivery and routing: local_recipient_maps
//! → local.users, alias_maps / virtual_alias_maps → aliases,
//! mailbox_transport → LMTP, transport_maps → `[[route]]`s.
//!
//! May touch: reads the tables main.cf names.

use super::map::{fate, next_hop, nm, table_keys, MapCtx};
use super::out::{arr, s, Doc};
use super::parse::{resolve, Params};
use crate::import::{Entry, Fate, Loc};

/// Maps the local-delivery parameters.
pub fn local(p: &Params, ctx: &mut MapCtx, doc: &mut Doc, entries: &mut Vec<Entry>, local_domains: &[String]) {
    let e = |n: &str| ctx.entry.get(n).copied();
    // Local recipients.
    let lrm = p.get("local_recipient_maps");
    let explicit: Vec<String> = super::parse::split_list(&lrm);
    if explicit.iter().all(|t| t.starts_with("texthash:") || t.starts_with("hash:") || t.starts_with("inline:")) && !explicit.is_empty() {
        let at = p.origin("local_recipient_maps").cloned().unwrap_or(Loc { file: ctx.config_dir.join("main.cf"), line: 0 });
        let mut users = Vec::new();
        let mut f: Vec<usize> = e("local_recipient_maps").into_iter().collect();
        for t in &explicit {
            match table_keys(t, ctx, &at, entries, "local_recipient_maps") {
                Ok(keys) => {
                    for (k, _, i) in keys {
                        let user = k.split('@').next().unwrap_or("").to_string();
                        if !user.is_empty() && !users.contains(&user) {
                            users.push(user);
                        }
                        f.push(i);
                    }
                }
                Err(m) => fate(entries, e("local_recipient_maps"), nm(&m, "list the mailboxes in local.users", false)),
            }
        }
        doc.set("local", "users", arr(users), f);
    } else if lrm.trim().is_empty() {
        fate(
            entries,
            e("local_recipient_maps"),
            nm(
                "an empty local_recipient_maps accepts any local part; postern refuses unknown ones (550 5.1.1)",
                "list the mailboxes in local.users",
                false,
            ),
        );
    } else {
        let advice = "postern does not read /etc/passwd: list the mailboxes in local.users (or postern user add)";
        match e("local_recipient_maps") {
            Some(_) => fate(entries, e("local_recipient_maps"), nm("system-user tables are not read", advice, false)),
            None => entries.push(Entry {
                source: Loc { file: ctx.config_dir.join("main.cf"), line: 0 },
                text: "(Postfix default) local_recipient_maps = proxy:unix:passwd.byname $alias_maps".into(),
                fate: nm("system-user tables are not read", advice, false),
            }),
        }
    }
    // Aliases: alias_maps hash:/etc/aliases is the aliases(5) file itself.
    let am = p.list("alias_maps");
    let files: Vec<String> =
        am.iter().filter_map(|t| t.strip_prefix("hash:").or_else(|| t.strip_prefix("texthash:")).map(|x| x.to_string())).collect();
    if e("alias_maps").is_some() {
        match files.as_slice() {
            [] if am.is_empty() => fate(entries, e("alias_maps"), Fate::Default { why: "no aliases".into() }),
            [one] if am.len() == 1 => {
                doc.set("local", "aliases", s(resolve(ctx.config_dir, one).display().to_string()), e("alias_maps").into_iter().collect())
            }
            _ => fate(
                entries,
                e("alias_maps"),
                nm("several or non-file alias tables", "merge them into one aliases file (local.aliases)", false),
            ),
        }
    }
    // virtual_alias_maps: entries of local domains (or bare names) become aliases.
    let vam = p.get("virtual_alias_maps");
    for t in super::parse::split_list(&vam) {
        let at = p.origin("virtual_alias_maps").cloned().unwrap_or(Loc { file: ctx.config_dir.join("main.cf"), line: 0 });
        match table_keys(&t, ctx, &at, entries, "virtual_alias_maps") {
            Ok(keys) => {
                for (k, v, i) in keys {
                    let (user, domain) =
                        k.split_once('@').map(|(u, d)| (u.to_string(), Some(d.to_ascii_lowercase()))).unwrap_or((k.clone(), None));
                    if domain.as_ref().is_none_or(|d| local_domains.contains(d)) && !user.is_empty() {
                        let targets = super::parse::split_list(&v).join(", ");
                        ctx.aliases.push_str(&format!("{user}: {targets}\n"));
                        doc.set("local", "aliases", s(ctx.out_dir.join("aliases").display().to_string()), vec![i]);
                    } else {
                        fate(
                            entries,
                            Some(i),
                            nm(
                                "a virtual alias domain (not a local domain)",
                                "use a directory ([sql]/[ldap]) or make the domain local",
                                false,
                            ),
                        );
                    }
                }
                fate(entries, e("virtual_alias_maps"), Fate::Default { why: "entries listed separately".into() });
            }
            Err(m) => fate(entries, e("virtual_alias_maps"), nm(&m, "write the aliases file by hand (local.aliases)", false)),
        }
    }
    // Mailbox delivery.
    let mt = p.get("mailbox_transport");
    if let Some(dest) = mt.trim().strip_prefix("lmtp:") {
        let lmtp = match dest.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => format!("unix:{path}"),
            Some(path) => format!("unix:{}/{path}", p.get("queue_directory").trim_end_matches('/')),
            None => next_hop(dest.strip_prefix("inet:").unwrap_or(dest), 24),
        };
        doc.set("local", "delivery", s("lmtp"), e("mailbox_transport").into_iter().collect());
        doc.set("local", "lmtp", s(lmtp), vec![]);
    }
    for t in super::parse::split_list(&p.get("transport_maps")) {
        routes(&t, p, ctx, doc, entries);
    }
    fate(entries, e("home_mailbox"), Fate::Default { why: "postern delivers to Maildirs under local.maildir_root".into() });
}

fn routes(spec: &str, p: &Params, ctx: &MapCtx, doc: &mut Doc, entries: &mut Vec<Entry>) {
    let e = ctx.entry.get("transport_maps").copied();
    let at = p.origin("transport_maps").cloned().unwrap_or(Loc { file: ctx.config_dir.join("main.cf"), line: 0 });
    let relay: Vec<String> = p.list("relay_domains").iter().map(|d| d.to_ascii_lowercase()).collect();
    let keys = match table_keys(spec, ctx, &at, entries, "transport_maps") {
        Ok(k) => k,
        Err(m) => {
            fate(entries, e, nm(&m, "write [[route]]s by hand", false));
            return;
        }
    };
    fate(entries, e, Fate::Default { why: "entries listed separately".into() });
    for (k, v, i) in keys {
        let domain = k.to_ascii_lowercase();
        if domain.contains('@') || domain.starts_with('.') || domain == "*" {
            fate(entries, Some(i), nm("postern routes whole domains only", "write a [[route]] for the domain", false));
            continue;
        }
        if !relay.contains(&domain) {
            fate(
                entries,
                Some(i),
                nm(
                    "a postern [[route]] domain is a relay domain (anyone may send to it), and this domain is not in relay_domains",
                    "add the domain to relay_domains if that is intended, or use relay.smarthost",
                    false,
                ),
            );
            continue;
        }
        let (transport, hop) = v.split_once(':').unwrap_or((v.as_str(), ""));
        let route = match transport {
            "smtp" | "relay" if !hop.is_empty() => Some(("smtp", next_hop(hop, 25))),
            "lmtp" => Some((
                "lmtp",
                match hop.strip_prefix("unix:") {
                    Some(path) => format!("unix:{path}"),
                    None => next_hop(hop.strip_prefix("inet:").unwrap_or(hop), 24),
                },
            )),
            _ => None,
        };
        match route {
            Some((t, hop)) => {
                doc.array(
                    "route",
                    None,
                    vec![
                        super::out::Key { key: "domains".into(), value: arr([domain]), from: vec![i] },
                        super::out::Key { key: "transport".into(), value: s(t), from: vec![] },
                        super::out::Key { key: "next_hop".into(), value: s(hop), from: vec![] },
                    ],
                );
            }
            None => fate(entries, Some(i), nm(&format!("transport {v:?} has no postern route"), "write a [[route]] by hand", false)),
        }
    }
}
