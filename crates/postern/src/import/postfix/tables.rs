//! Postfix lookup tables in their source text form: `hash:`, `btree:`,
//! `lmdb:` and `texthash:` (the file postmap reads: `key value` lines),
//! `cidr:` (`network result`), `inline:{ key=value, ... }` and `static:`.
//! A missing file is an error naming it; other table types (`ldap:`,
//! `pcre:`, `proxy:` ...) are reported as not mapped by the caller.
//!
//! May touch: reads the table files (resolved against the config directory).

use std::path::Path;

use super::parse::{logical_lines, resolve, split_list};
use crate::import::Loc;

/// One key/value of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The lookup key (as written).
    pub key: String,
    /// The result.
    pub value: String,
    /// Where (the table file, or the main.cf/master.cf line of an inline table).
    pub loc: Loc,
    /// The source text.
    pub text: String,
}

/// A table that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// Key/value entries (hash, texthash, cidr, inline).
    Entries {
        /// The type (`hash`, `cidr`, ...).
        kind: String,
        /// The entries, in file order.
        entries: Vec<TableEntry>,
    },
    /// `static:VALUE`: every key has this value.
    Static(String),
}

/// Why a table could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// A type the importer does not read (ldap:, pcre:, proxy:unix:passwd.byname ...).
    Unsupported(String),
    /// The file is missing or unreadable (message names it).
    Unreadable(String),
    /// Not `type:name`.
    NotATable,
}

/// Reads the table `spec` (`type:name`); `at` is where it is named (the
/// location of inline entries).
pub fn read(spec: &str, config_dir: &Path, at: &Loc) -> Result<Table, TableError> {
    let Some((kind, name)) = spec.split_once(':') else { return Err(TableError::NotATable) };
    if kind.is_empty() || kind.contains('/') || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(TableError::NotATable);
    }
    match kind {
        "hash" | "btree" | "lmdb" | "texthash" | "cdb" | "dbm" | "sdbm" => {
            let path = resolve(config_dir, name);
            let text = std::fs::read_to_string(&path).map_err(|e| TableError::Unreadable(format!("{}: {e}", path.display())))?;
            Ok(Table::Entries { kind: kind.to_string(), entries: key_value(&text, &path) })
        }
        "cidr" => {
            let path = resolve(config_dir, name);
            let text = std::fs::read_to_string(&path).map_err(|e| TableError::Unreadable(format!("{}: {e}", path.display())))?;
            Ok(Table::Entries { kind: "cidr".into(), entries: key_value(&text, &path) })
        }
        "inline" => {
            let inner = name.trim();
            let inner = inner.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(inner);
            let entries = inline_items(inner)
                .into_iter()
                .map(|item| {
                    let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                    TableEntry { key: k.trim().to_string(), value: v.trim().to_string(), loc: at.clone(), text: item.trim().to_string() }
                })
                .collect();
            Ok(Table::Entries { kind: "inline".into(), entries })
        }
        "static" => Ok(Table::Static(name.trim().trim_start_matches('{').trim_end_matches('}').trim().to_string())),
        _ => Err(TableError::Unsupported(format!("{kind}: tables"))),
    }
}

/// `key value` logical lines (the value may hold spaces).
fn key_value(text: &str, path: &Path) -> Vec<TableEntry> {
    logical_lines(text, path)
        .into_iter()
        .map(|l| {
            let t = l.text.trim();
            let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            TableEntry { key: k.to_string(), value: v.trim().to_string(), loc: l.loc, text: l.text.clone() }
        })
        .collect()
}

/// Items of an inline table: `{ key = value }` groups, or comma/space separated `key=value`.
fn inline_items(s: &str) -> Vec<String> {
    split_list(s).into_iter().map(|i| i.trim_start_matches('{').trim_end_matches('}').trim().to_string()).collect()
}

impl Table {
    /// The entries (none for `static:`).
    pub fn entries(&self) -> &[TableEntry] {
        match self {
            Table::Entries { entries, .. } => entries,
            Table::Static(_) => &[],
        }
    }
}

/// Is `s` a table reference (`type:name`, not a path or a CIDR)?
pub fn is_table(s: &str) -> bool {
    match s.split_once(':') {
        Some((k, _)) => !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic()) && !s.starts_with('['),
        None => false,
    }
}
