//! The effective configuration as data: `postern config show` prints it
//! (whole, or only what differs from the defaults, like `postconf -n`), and
//! a reload diffs two of them to log what changed. One flattening for both.
//!
//! May touch: nothing (pure).

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::Config;

/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Keys (dotted, without indices, or a prefix ending at a dot) whose change
/// is only picked up by a restart.
pub const RESTART_KEYS: &[&str] = &[
    "listener",
    "data_dir",
    "user",
    "queue.sync",
    "metrics.address",
    "auth.backend",
    "auth.dovecot_socket",
    "auth.dovecot_timeout",
    "ldap",
    "sql",
    "cluster",
];

/// The config as a TOML table, every key with its value (keys without a
/// value, `None`, are absent: TOML has no null), secrets redacted.
pub fn table(c: &Config) -> Table {
    let mut t = Table::try_from(c).unwrap_or_default();
    redact(&mut t);
    t
}

/// Only the keys whose value differs from the defaults; a changed array of
/// tables (`[[listener]]`, `[[rule]]`...) is kept whole.
pub fn non_default(c: &Config) -> Table {
    diff_table(&table(c), &table(&Config::default()))
}

fn diff_table(t: &Table, defaults: &Table) -> Table {
    let mut out = Table::new();
    for (k, v) in t {
        match (v, defaults.get(k)) {
            (Value::Table(sub), Some(Value::Table(d))) => {
                let sub = diff_table(sub, d);
                if !sub.is_empty() {
                    out.insert(k.clone(), Value::Table(sub));
                }
            }
            (v, Some(d)) if v == d => {}
            (v, _) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Replaces the value of every key that holds a secret itself (a name with
/// `password` or `secret` in it, but not a `..._file` naming where it is).
pub fn redact(t: &mut Table) {
    for (k, v) in t.iter_mut() {
        let secret = (k.contains("password") || k.contains("secret")) && !k.ends_with("_file") && !k.ends_with("_query");
        match v {
            _ if secret => *v = Value::String(REDACTED.into()),
            Value::Table(sub) => redact(sub),
            Value::Array(a) => {
                for e in a.iter_mut() {
                    if let Value::Table(sub) = e {
                        redact(sub);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every leaf as `dotted.key` → value; arrays of tables by index
/// (`listener[0].address`), other arrays as one value.
pub fn flatten(t: &Table) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    flatten_into("", t, &mut out);
    out
}

fn flatten_into(prefix: &str, t: &Table, out: &mut BTreeMap<String, Value>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(sub) => flatten_into(&key, sub, out),
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table) => {
                for (i, e) in a.iter().enumerate() {
                    if let Value::Table(sub) = e {
                        flatten_into(&format!("{key}[{i}]"), sub, out);
                    }
                }
            }
            v => {
                out.insert(key, v.clone());
            }
        }
    }
}

/// What a reload changes: the keys (dotted, indices left out, each once,
/// sorted) whose value differs, and those of them that need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Every changed key.
    pub changed: Vec<String>,
    /// The changed keys only a restart applies (see [`RESTART_KEYS`]).
    pub restart_needed: Vec<String>,
}

/// Diffs two configs (the same flattening as `config show`).
pub fn changes(old: &Config, new: &Config) -> Changes {
    let (a, b) = (flatten(&table(old)), flatten(&table(new)));
    let mut changed: Vec<String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).map(|k| without_indices(k)).collect();
    changed.sort();
    changed.dedup();
    let mut restart_needed: Vec<String> = changed
        .iter()
        .filter_map(|k| RESTART_KEYS.iter().find(|r| k == *r || k.starts_with(&format!("{r}."))).map(|r| r.to_string()))
        .collect();
    restart_needed.dedup();
    Changes { changed, restart_needed }
}

fn without_indices(k: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for ch in k.chars() {
        match ch {
            '[' => skip = true,
            ']' => skip = false,
            c if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
