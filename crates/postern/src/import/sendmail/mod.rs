//! `postern import sendmail`: reads sendmail.mc (and the access map source,
//! aliases, mailertable, relay-domains and a sasldb2) and produces an
//! [`Imported`](super::Imported): postern.toml, aliases, users.json and a
//! report entry for every meaningful source line. docs/migration-sendmail.md
//! is the operator's guide and mapping table.
//!
//! Layout: [`m4`] (the .mc reader), [`access`] (the access map's syntax),
//! [`map_mc`] and [`map_access`] (the mapping), [`plan`] (the result and
//! its postern.toml text).
//!
//! May touch: reads the source files named on the command line or in the
//! .mc; nothing else (the caller writes the output).

pub mod access;
pub mod m4;
pub mod map_access;
pub mod map_mc;
pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Entry, Fate, Imported, Loc, Report};
use access::AccessEntry;
use plan::{PRoute, Plan};

/// `postern import sendmail` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SendmailArgs {
    /// The m4 source (sendmail.mc).
    #[arg(long, value_name = "FILE")]
    pub mc: PathBuf,
    /// The access map source text (default: the path in FEATURE(access_db), without .db).
    #[arg(long, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// The aliases file (default: ALIAS_FILE from the .mc, else none).
    #[arg(long, value_name = "FILE")]
    pub aliases: Option<PathBuf>,
    /// A Cyrus SASL sasldb2: its users become users.json with argon2id and
    /// SCRAM keys (never the clear-text passwords sasldb2 holds).
    #[arg(long, value_name = "FILE")]
    pub sasldb: Option<PathBuf>,
    /// The generated sendmail.cf (not needed: the .mc is the source; noted in the report).
    #[arg(long, value_name = "FILE")]
    pub cf: Option<PathBuf>,
    /// Common options.
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// Report entries as they are collected; `at` is resolved after the
/// config text is written.
pub struct Notes {
    mc: PathBuf,
    access: PathBuf,
    entries: Vec<(Entry, Option<String>)>,
}

impl Notes {
    fn new(mc: &Path) -> Notes {
        Notes { mc: mc.to_path_buf(), access: PathBuf::new(), entries: Vec::new() }
    }
    fn push(&mut self, file: &Path, line: usize, text: &str, fate: Fate, key: Option<&str>) {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.entries.push((Entry { source: Loc { file: file.to_path_buf(), line }, text, fate }, key.map(str::to_string)));
    }
    /// A `.mc` line mapped to `key` (looked up in the output), described by `why`.
    pub fn mapped(&mut self, line: usize, text: &str, key: &str, why: &str) {
        let mc = self.mc.clone();
        self.push(&mc, line, text, Fate::Mapped { target: why.into(), at: None }, Some(key));
    }
    /// A `.mc` line that needs nothing.
    pub fn default(&mut self, line: usize, text: &str, why: &str) {
        let mc = self.mc.clone();
        self.push(&mc, line, text, Fate::Default { why: why.into() }, None);
    }
    /// A `.mc` line not mapped.
    pub fn not_mapped(&mut self, line: usize, text: &str, reason: &str, advice: &str, restriction: bool) {
        let mc = self.mc.clone();
        self.push(&mc, line, text, Fate::NotMapped { reason: reason.into(), advice: advice.into(), restriction }, None);
    }
    /// A line of another file mapped.
    pub fn file_mapped(&mut self, file: &Path, line: usize, text: &str, key: &str, why: &str) {
        self.push(file, line, text, Fate::Mapped { target: why.into(), at: None }, Some(key));
    }
    /// A line of another file not mapped.
    pub fn file_not_mapped(&mut self, file: &Path, line: usize, text: &str, reason: &str, advice: &str, restriction: bool) {
        self.push(file, line, text, Fate::NotMapped { reason: reason.into(), advice: advice.into(), restriction }, None);
    }
    /// An access line mapped.
    pub fn access(&mut self, e: &AccessEntry, key: &str, why: &str) {
        let f = self.access.clone();
        self.file_mapped(&f, e.line, &e.text, key, why);
    }
    /// An access line that needs nothing.
    pub fn access_default(&mut self, e: &AccessEntry, why: &str) {
        let f = self.access.clone();
        self.push(&f, e.line, &e.text, Fate::Default { why: why.into() }, None);
    }
    /// An access line not mapped.
    pub fn access_not_mapped(&mut self, e: &AccessEntry, reason: &str, advice: &str, restriction: bool) {
        let f = self.access.clone();
        self.file_not_mapped(&f, e.line, &e.text, reason, advice, restriction);
    }
    /// The report, with each mapped entry's line in `out` (postern.toml).
    fn finish(self, out: &Path, at: &HashMap<String, usize>) -> Report {
        let mut entries: Vec<Entry> = self
            .entries
            .into_iter()
            .map(|(mut e, key)| {
                if let (Fate::Mapped { at: slot, .. }, Some(k)) = (&mut e.fate, key) {
                    *slot = at.get(&k).map(|&line| Loc { file: out.to_path_buf(), line });
                }
                e
            })
            .collect();
        // Source order: by file as met, then line.
        let mut order: Vec<PathBuf> = Vec::new();
        for e in &entries {
            if !order.contains(&e.source.file) {
                order.push(e.source.file.clone());
            }
        }
        entries.sort_by_key(|e| (order.iter().position(|f| f == &e.source.file), e.source.line));
        Report { entries }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Imports; `Err` is a message naming the file, line and problem.
pub fn import(args: &SendmailArgs) -> Result<Imported, String> {
    let mc_text = read(&args.mc)?;
    // postern resolves relative paths against its data directory: name the
    // output directory absolutely (local.aliases points into it).
    let out_dir = if args.common.out.is_absolute() {
        args.common.out.clone()
    } else {
        std::env::current_dir().map_err(|e| format!("current directory: {e}"))?.join(&args.common.out)
    };
    let out_config = out_dir.join("postern.toml");
    let sources =
        Sources { access: args.access.clone(), aliases: args.aliases.clone(), sasldb: args.sasldb.clone(), cf: args.cf.clone(), out_dir };
    convert(&args.mc, &mc_text, &sources, &out_config)
}

/// The files besides the .mc, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// --access.
    pub access: Option<PathBuf>,
    /// --aliases.
    pub aliases: Option<PathBuf>,
    /// --sasldb.
    pub sasldb: Option<PathBuf>,
    /// --cf.
    pub cf: Option<PathBuf>,
    /// --out (the aliases file is referred to there).
    pub out_dir: PathBuf,
}

/// The whole conversion (testable without the command line).
pub fn convert(mc: &Path, mc_text: &str, src: &Sources, out_config: &Path) -> Result<Imported, String> {
    let calls = m4::calls(mc_text).map_err(|e| format!("{}:{}: {}", mc.display(), e.line, e.message))?;
    let mut plan = Plan::default();
    let mut notes = Notes::new(mc);
    let named = map_mc::map(&calls, &mut plan, &mut notes);
    if let Some(cf) = &src.cf {
        let why = "not read: the .mc it was generated from is the source (regenerate it from the .mc if they may differ)";
        notes.push(cf, 0, "(sendmail.cf)", Fate::Default { why: why.into() }, None);
    }
    // The access map.
    let access_path = src.access.clone().or_else(|| named.access.as_ref().map(|(p, _)| PathBuf::from(p)));
    if let (Some(path), None) = (&access_path, &named.access) {
        notes.file_not_mapped(
            path,
            0,
            "(--access)",
            "the .mc has no FEATURE(access_db), so sendmail does not use this file: not read",
            "drop --access, or add FEATURE(access_db)",
            false,
        );
    }
    if let (Some(path), Some(_)) = (access_path, &named.access) {
        let text = read(&path)?;
        let entries = access::parse(&text).map_err(|(line, m)| format!("{}:{line}: {m}", path.display()))?;
        notes.access = path;
        map_access::map(&entries, &mut plan, &mut notes);
    }
    // Class R (relay-domains) and class w (local-host-names): optional files.
    for (path, _) in &named.relay_domains {
        let p = Path::new(path);
        let Ok(text) = std::fs::read_to_string(p) else { continue };
        for (i, l) in text.lines().enumerate() {
            let item = l.split('#').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            let key = map_mc::relay_item(&mut plan, item);
            let why = if key == "relay.networks" {
                "relay.networks (clients that may relay)"
            } else {
                "relay.domains (exact domain: list subdomains too; sendmail also lets clients whose host name is in it relay: postern does not trust reverse DNS for that)"
            };
            notes.file_mapped(p, i + 1, item, key, why);
        }
    }
    for (path, _) in &named.local_host_names {
        let p = Path::new(path);
        let Ok(text) = std::fs::read_to_string(p) else { continue };
        for (i, l) in text.lines().enumerate() {
            let item = l.split('#').next().unwrap_or("").trim().to_ascii_lowercase();
            if !item.is_empty() {
                if !plan.local_domains.contains(&item) {
                    plan.local_domains.push(item.clone());
                }
                notes.file_mapped(p, i + 1, &item, "local.domains", "local.domains");
            }
        }
    }
    // sendmail's class w always holds the host name and localhost.
    if let Some(h) = plan.hostname.clone() {
        for d in [h, "localhost".to_string()] {
            if !plan.local_domains.contains(&d) {
                plan.local_domains.push(d);
            }
        }
    }
    // The mailertable.
    if let Some((path, _)) = &named.mailertable {
        let p = Path::new(path);
        let text = read(p)?;
        mailertable(p, &text, &mut plan, &mut notes);
    }
    // Aliases.
    let aliases_path = src.aliases.clone().or_else(|| named.aliases.as_ref().map(|(p, _)| PathBuf::from(p)));
    let aliases = match aliases_path {
        Some(path) => Some(aliases(&path, &read(&path)?, &src.out_dir, &mut plan, &mut notes)?),
        None => None,
    };
    // Users.
    let users = match &src.sasldb {
        Some(path) => Some(users(path, &mut notes)?),
        None => None,
    };
    let (config, at) = plan.emit(&mc.display().to_string());
    // The written config must load.
    crate::config::Config::parse(&config, &out_config.display().to_string())
        .map_err(|e| format!("the imported configuration does not load (a bug in the importer; please report it):\n{e}"))?;
    let report = notes.finish(out_config, &at);
    Ok(Imported { config, aliases, users, extra: Vec::new(), report })
}

/// `domain  mailer:host` lines: `smtp:`/`esmtp:`/`relay:` become
/// `[[route]]`s (bracketed hosts are taken as written; without brackets
/// sendmail would look up MX records, postern connects to the host).
fn mailertable(path: &Path, text: &str, plan: &mut Plan, notes: &mut Notes) {
    for (i, l) in text.lines().enumerate() {
        let line = l.split('#').next().unwrap_or("").trim();
        let Some((domain, value)) = line.split_once(char::is_whitespace) else {
            if !line.is_empty() {
                notes.file_not_mapped(path, i + 1, line, "no value", "fix the line", true);
            }
            continue;
        };
        let value = value.trim();
        if domain.starts_with('.') {
            notes.file_not_mapped(
                path,
                i + 1,
                line,
                "a leading dot matches every subdomain; postern routes name whole domains",
                "list the subdomains in a [[route]]",
                true,
            );
            continue;
        }
        let (mailer, _) = value.split_once(':').unwrap_or((value, ""));
        match (mailer, map_mc::smart_host(value)) {
            ("smtp" | "esmtp" | "relay" | "smtp8" | "dsmtp", Some(_)) if !plan.relay_domains.contains(&domain.to_ascii_lowercase()) => {
                notes.file_not_mapped(
                    path,
                    i + 1,
                    line,
                    "a [[route]] domain is a relay domain in postern (anyone may send to it), but sendmail relays to this domain only for relaying clients (it is not in relay-domains or To: RELAY)",
                    "add the domain to relay-domains if anyone may send to it and import again, or write the [[route]] by hand knowing it opens the domain",
                    true,
                );
            }
            ("smtp" | "esmtp" | "relay" | "smtp8" | "dsmtp", Some(hop)) => {
                plan.routes.push(PRoute { domains: vec![domain.to_ascii_lowercase()], next_hop: hop });
                let key = format!("route {}", plan.routes.len());
                notes.file_mapped(
                    path,
                    i + 1,
                    line,
                    &key,
                    "[[route]] transport smtp (the domain is a relay domain in sendmail too, as postern's route domains are)",
                );
            }
            ("local", _) => {
                if !plan.local_domains.contains(&domain.to_ascii_lowercase()) {
                    plan.local_domains.push(domain.to_ascii_lowercase());
                }
                notes.file_mapped(path, i + 1, line, "local.domains", "local.domains");
            }
            _ => notes.file_not_mapped(
                path,
                i + 1,
                line,
                "mailer not understood (only smtp/esmtp/relay/local)",
                "write a [[route]] by hand",
                true,
            ),
        }
    }
}

/// The aliases file: checked with postern's parser and copied as written.
fn aliases(path: &Path, text: &str, out_dir: &Path, plan: &mut Plan, notes: &mut Notes) -> Result<String, String> {
    let parsed = crate::aliases::Aliases::parse(text, &path.display().to_string())
        .map_err(|e| format!("{e} (postern delivers to mailboxes only: replace pipes, files and :include: lists, then import again)"))?;
    // Bare targets that are not aliases are mailboxes (sendmail: accounts
    // such as root): postern must know them as local users.
    for t in parsed.targets() {
        if !t.contains('@') && !parsed.contains(t) && !plan.local_users.iter().any(|u| u == t) {
            plan.local_users.push(t.to_string());
        }
    }
    let target = out_dir.join("aliases");
    plan.aliases = Some(target.display().to_string());
    for (i, l) in text.lines().enumerate() {
        let t = l.split('#').next().unwrap_or("");
        if t.trim().is_empty() || t.starts_with(' ') || t.starts_with('\t') {
            continue;
        }
        notes.file_mapped(
            path,
            i + 1,
            t.trim(),
            "local.aliases",
            &format!("aliases ({} names in all; local.aliases; targets that are mailboxes: local.users)", parsed.len()),
        );
    }
    Ok(text.to_string())
}

/// The sasldb2's users → users.json, passwords hashed (argon2id + SCRAM).
fn users(path: &Path, notes: &mut Notes) -> Result<String, String> {
    let mut db = crate::users::UserDb { version: 1, users: Default::default() };
    let names = db.import_sasldb(path, false).map_err(|e| format!("{}: {e}", path.display()))?;
    for n in &names {
        notes.file_mapped(path, 0, &format!("user {n}"), "", "users.json (argon2id and SCRAM keys; copy it to DATA/users.json)");
    }
    if names.is_empty() {
        notes.file_not_mapped(path, 0, "(sasldb2)", "no userPassword entries found", "create users with `postern user add`", false);
    }
    let mut s = serde_json::to_string_pretty(&db).map_err(|e| e.to_string())?;
    s.push('\n');
    Ok(s)
}
