//! `postern import postfix`: reads main.cf, master.cf and the `hash:`,
//! `texthash:`, `cidr:` (and `inline:`) tables they name (their source
//! text) and produces an [`Imported`](super::Imported): postern.toml, an
//! aliases file when virtual_alias_maps has local entries, a smarthost
//! password file, and a report entry for every meaningful source line.
//!
//! Layout: [`parse`] (main.cf/master.cf grammar, `$name` expansion),
//! [`tables`], [`map`] (global parameters), [`services`] (master.cf →
//! listeners), [`restrict`] (restriction lists → `[[rule]]`s), [`out`]
//! (the TOML with output line numbers). The mapping is documented in
//! docs/migration.md.
//!
//! May touch: reads the files under the configuration directory (and the
//! absolute paths main.cf names).

pub mod map;
pub mod map_local;
pub mod out;
pub mod parse;
pub mod restrict;
pub mod services;
pub mod tables;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use self::out::{arr, s, Doc, Key};
use self::parse::Params;
use self::restrict::{Ctx, Reporter};
use super::{Entry, Fate, Imported, Loc, Report};

/// `postern import postfix` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PostfixArgs {
    /// The Postfix configuration directory (main.cf, master.cf); tables
    /// named as /etc/postfix/NAME are read from here too.
    #[arg(long, value_name = "DIR", default_value = "/etc/postfix")]
    pub config_dir: PathBuf,
    /// myhostname when main.cf does not set it. Default: this machine's name.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Common options.
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// Why an import failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// A source file is missing or unreadable (exit 66).
    Missing(String),
    /// A source file could not be understood (exit 78).
    Invalid(String),
    /// The written configuration does not load: a bug in the importer (exit 70).
    Bug(String),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Missing(m) | ImportError::Invalid(m) => f.write_str(m),
            ImportError::Bug(m) => write!(f, "the imported configuration does not load (a bug in postern import, please report it): {m}"),
        }
    }
}

/// Imports; `Err` is a message naming the file, line and problem.
pub fn import(args: &PostfixArgs) -> Result<Imported, String> {
    import_checked(args).map_err(|e| e.to_string())
}

/// Imports, telling the kinds of failure apart.
pub fn import_checked(args: &PostfixArgs) -> Result<Imported, ImportError> {
    let out_dir = if args.common.out.is_absolute() {
        args.common.out.clone()
    } else {
        std::env::current_dir().map_err(|e| ImportError::Missing(e.to_string()))?.join(&args.common.out)
    };
    let hostname = args.hostname.clone().unwrap_or_else(crate::settings::system_hostname);
    convert(&args.config_dir, &out_dir, &hostname)
}

fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|e| ImportError::Missing(format!("{}: {e}", path.display())))
}

/// The whole conversion of `config_dir`; files the output refers to are
/// named as in `out_dir`.
pub fn convert(config_dir: &Path, out_dir: &Path, hostname: &str) -> Result<Imported, ImportError> {
    let main_path = config_dir.join("main.cf");
    let master_path = config_dir.join("master.cf");
    let (params, bad) = parse::main_cf(&read(&main_path)?, &main_path);
    let (services, bad_master) = parse::master_cf(&read(&master_path)?, &master_path);
    let mut entries: Vec<Entry> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for p in &params {
        if let Some(&old) = by_name.get(&p.name) {
            entries[old].fate = Fate::Default { why: format!("set again at line {} (the later setting wins)", p.loc.line) };
        }
        entries.push(Entry { source: p.loc.clone(), text: p.text.clone(), fate: Fate::Default { why: "(pending)".into() } });
        by_name.insert(p.name.clone(), entries.len() - 1);
    }
    for b in bad.iter().chain(&bad_master) {
        entries.push(Entry {
            source: b.loc.clone(),
            text: b.text.clone(),
            fate: Fate::NotMapped { reason: "not a parameter or service line".into(), advice: "fix the line".into(), restriction: false },
        });
    }
    let mut base = Params::new(&params, hostname);
    base.default_value("config_directory", &config_dir.display().to_string());
    let mut doc = Doc::default();
    let mut ctx = map::MapCtx { config_dir, out_dir, entry: &by_name, extra: Vec::new(), aliases: String::new() };
    let mynetworks = map::globals(&base, &mut ctx, &mut doc, &mut entries);
    let (extra, aliases) = (std::mem::take(&mut ctx.extra), std::mem::take(&mut ctx.aliases));
    let main_loc = Loc { file: main_path, line: 0 };
    // master.cf: listeners.
    let mut listeners = Vec::new();
    let mut taken = Vec::new();
    for svc in &services {
        entries.push(Entry { source: svc.loc.clone(), text: svc.text.clone(), fate: Fate::Default { why: "(pending)".into() } });
        let idx = entries.len() - 1;
        if let Some(f) = services::classify(svc) {
            entries[idx].fate = f;
            continue;
        }
        let mut ov = HashMap::new();
        for o in &svc.overrides {
            let fate = services::override_fate(&o.name).unwrap_or(Fate::Default { why: "used by this listener (below)".into() });
            entries.push(Entry { source: o.loc.clone(), text: format!("-o {}={}", o.name, o.value), fate });
            ov.insert(o.name.clone(), entries.len() - 1);
        }
        match services::listeners(svc, &base, &main_loc, idx, &ov, &mut taken) {
            Ok(ls) => listeners.extend(ls),
            Err(m) => {
                entries[idx].fate = Fate::NotMapped { reason: m, advice: "add a [[listener]] by hand".into(), restriction: false };
            }
        }
    }
    if listeners.is_empty() {
        return Err(ImportError::Invalid(format!("{}: no smtpd inet service: nothing would listen", master_path.display())));
    }
    // Rules, grouped by the restriction lists each listener sees.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let sig = format!(
            "{:?}|{:?}|{}",
            l.lists.iter().map(|x| (&x.loc, &x.elements)).collect::<Vec<_>>(),
            l.params.list("mynetworks"),
            l.params.get("relay_clientcerts")
        );
        match groups.iter_mut().find(|g| g.0 == sig) {
            Some(g) => g.1.push(i),
            None => groups.push((sig, vec![i])),
        }
    }
    let mut settings = Vec::new();
    for (_, members) in &groups {
        let first = &listeners[members[0]];
        let names: Vec<String> = members.iter().map(|&i| listeners[i].name.clone()).collect();
        let nets = if first.params.origin("mynetworks") == base.origin("mynetworks") {
            mynetworks.clone()
        } else {
            first.params.list("mynetworks")
        };
        let clientcerts = clientcerts(&first.params, config_dir, &mut entries);
        let rctx = Ctx { config_dir, mynetworks: &nets, clientcerts: &clientcerts };
        let mut rep = Reporter { entries: &mut entries };
        let mut rules = restrict::compile(&first.lists, &rctx, &mut rep, &mut settings);
        rules.push(vec![
            Key { key: "name".into(), value: s("accept-not-refused"), from: vec![] },
            Key { key: "action".into(), value: s("accept"), from: vec![] },
        ]);
        for (n, mut r) in rules.into_iter().enumerate() {
            if groups.len() > 1 {
                r.insert(1, Key { key: "listener".into(), value: arr(names.clone()), from: vec![] });
            }
            let comment = (n == 0).then(|| {
                format!("Restrictions of listener(s) {} (Postfix order: client, helo, sender, relay, recipient)", names.join(", "))
            });
            doc.array("rule", comment, r);
        }
    }
    for ((table, key, value), idx) in settings {
        match value {
            toml::Value::String(list) if key == "lists" => doc.push(table, key, s(list), vec![idx]),
            v => doc.set(table, key, v, vec![idx]),
        }
    }
    for l in &listeners {
        doc.array("listener", None, l.keys.clone());
    }
    // List restriction parameters themselves: their elements have entries.
    for name in restrict::LISTS {
        if let Some(&i) = by_name.get(*name) {
            if matches!(&entries[i].fate, Fate::Default { why } if why == "(pending)") {
                entries[i].fate = Fate::Default { why: "each element is listed separately".into() };
            }
        }
    }
    // Whatever main.cf line is left.
    for (name, &i) in &by_name {
        if !matches!(&entries[i].fate, Fate::Default { why } if why == "(pending)") {
            continue;
        }
        entries[i].fate = if map::harmless(name) {
            Fate::Default { why: "no effect on mail decisions (or postern needs no setting for it)".into() }
        } else if name == "smtpd_tls_security_level" && base.get(name).trim() == "none" {
            Fate::NotMapped {
                reason: "postern always offers STARTTLS".into(),
                advice: "none; clients may ignore it".into(),
                restriction: false,
            }
        } else if matches!(
            name.as_str(),
            "relay_clientcerts"
                | "smtpd_tls_security_level"
                | "smtpd_tls_wrappermode"
                | "smtpd_tls_ask_ccert"
                | "smtpd_tls_req_ccert"
                | "smtpd_sasl_auth_enable"
                | "smtpd_milters"
                | "inet_interfaces"
                | "milter_default_action"
                | "non_smtpd_milters"
                | "myhostname"
                | "mydestination"
                | "mynetworks"
        ) {
            Fate::Default { why: "used by the listeners, rules or keys it affects (see them)".into() }
        } else if name == "smtpd_delay_reject" && !base.yes(name) {
            Fate::NotMapped {
                reason: "postern decides at RCPT like smtpd_delay_reject = yes".into(),
                advice: "none; replies come at RCPT".into(),
                restriction: true,
            }
        } else {
            let restriction =
                name.contains("restrictions") || name.ends_with("_access") || name.ends_with("_checks") || name.contains("reject");
            Fate::NotMapped {
                reason: format!("{name} has no postern equivalent the importer knows"),
                advice: "see docs/migration.md and docs/configuration.md".into(),
                restriction,
            }
        };
    }
    let out_file = out_dir.join("postern.toml");
    let header = format!(
        "# Imported from Postfix ({}) by `postern import postfix`.\n# Every source line is accounted for in import-report.txt.",
        config_dir.display()
    );
    let mut text_entries = entries;
    let config = doc.write(&out_file, &header, &mut text_entries);
    // Defaults still pending are keys that were consumed by a listener.
    for e in &mut text_entries {
        if matches!(&e.fate, Fate::Default { why } if why == "(pending)") {
            e.fate = Fate::Default { why: "consumed (see the listener or rule it affects)".into() };
        }
    }
    // Source order: main.cf, master.cf, then the tables, each by line.
    let rank = |f: &Path| {
        if f == main_loc.file {
            0
        } else if f == master_path {
            1
        } else {
            2
        }
    };
    text_entries
        .sort_by(|a, b| (rank(&a.source.file), &a.source.file, a.source.line).cmp(&(rank(&b.source.file), &b.source.file, b.source.line)));
    crate::config::Config::parse(&config, &out_file.display().to_string()).map_err(|e| ImportError::Bug(format!("{e}\n{config}")))?;
    let mut extra = extra;
    let aliases = if aliases.is_empty() { None } else { Some(aliases) };
    extra.retain(|(n, _)| n != "aliases");
    Ok(Imported { config, aliases, users: None, extra, report: Report { entries: text_entries } })
}

/// relay_clientcerts fingerprints with the report entries of their lines.
fn clientcerts(p: &Params, config_dir: &Path, entries: &mut Vec<Entry>) -> Vec<(String, usize)> {
    let spec = p.get("relay_clientcerts");
    let mut out = Vec::new();
    for t in parse::split_list(&spec) {
        let at = p.origin("relay_clientcerts").cloned().unwrap_or(Loc { file: config_dir.join("main.cf"), line: 0 });
        match tables::read(&t, config_dir, &at) {
            Ok(tab) => {
                for e in tab.entries() {
                    let mut rep = Reporter { entries };
                    let i = rep.entry(&e.loc, &e.text, Fate::Default { why: "(pending)".into() });
                    out.push((e.key.clone(), i));
                }
            }
            Err(err) => {
                let mut rep = Reporter { entries };
                let i = rep.entry(&at, &format!("relay_clientcerts = {t}"), Fate::Default { why: String::new() });
                rep.fate(
                    i,
                    Fate::NotMapped {
                        reason: format!("cannot read relay_clientcerts: {err:?}"),
                        advice: "list the fingerprints in a [[rule]] cert_sha256".into(),
                        restriction: true,
                    },
                );
            }
        }
    }
    out
}
