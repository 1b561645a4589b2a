//! The postern.toml being built: tables of keys in a fixed order, each key
//! remembering which report entries it came from, written with the line
//! each key lands on (the report's output side).
//!
//! May touch: nothing (values in, text out).

use std::path::Path;

use crate::import::{Entry, Fate, Loc};

/// One `key = value` with the report entries it maps.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key.
    pub key: String,
    /// The TOML value.
    pub value: toml::Value,
    /// Indexes into the report's entries that map to it.
    pub from: Vec<usize>,
}

/// A table (`[relay]`) or one element of an array of tables (`[[rule]]`).
#[derive(Debug, Clone)]
pub struct Table {
    /// `relay`, `rule`, `inbound.rdns` ...
    pub name: String,
    /// `[[name]]` rather than `[name]`.
    pub array: bool,
    /// A comment line written above it.
    pub comment: Option<String>,
    /// Keys in order.
    pub keys: Vec<Key>,
}

/// The document.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    /// Top-level keys (hostname ...).
    pub top: Vec<Key>,
    /// Tables in output order.
    pub tables: Vec<Table>,
}

impl Doc {
    /// Sets a top-level key.
    pub fn top(&mut self, key: &str, value: toml::Value, from: Vec<usize>) {
        set(&mut self.top, key, value, from);
    }

    /// Sets `key` in the (single) table `name`, creating it.
    pub fn set(&mut self, table: &str, key: &str, value: toml::Value, from: Vec<usize>) {
        let t = match self.tables.iter().position(|t| t.name == table && !t.array) {
            Some(i) => &mut self.tables[i],
            None => {
                self.tables.push(Table { name: table.to_string(), array: false, comment: None, keys: Vec::new() });
                let n = self.tables.len() - 1;
                &mut self.tables[n]
            }
        };
        set(&mut t.keys, key, value, from);
    }

    /// Appends to an array value in table `name`, creating it.
    pub fn push(&mut self, table: &str, key: &str, value: toml::Value, from: Vec<usize>) {
        let existing = self.tables.iter_mut().find(|t| t.name == table && !t.array).and_then(|t| t.keys.iter_mut().find(|k| k.key == key));
        match existing {
            Some(k) => {
                if let toml::Value::Array(a) = &mut k.value {
                    if !a.contains(&value) {
                        a.push(value);
                    }
                }
                k.from.extend(from);
            }
            None => self.set(table, key, toml::Value::Array(vec![value]), from),
        }
    }

    /// Appends a `[[name]]` element; returns its index in `tables`.
    pub fn array(&mut self, name: &str, comment: Option<String>, keys: Vec<Key>) -> usize {
        self.tables.push(Table { name: name.to_string(), array: true, comment, keys });
        self.tables.len() - 1
    }

    /// Writes the TOML; sets the fate of every entry a key maps (target
    /// `TABLE.KEY`, or `[[rule]] #N name` for rules) with the output line.
    pub fn write(&self, out_file: &Path, header: &str, entries: &mut [Entry]) -> String {
        let mut text = String::new();
        let mut line = 0usize;
        let emit = |text: &mut String, s: &str, line: &mut usize| {
            text.push_str(s);
            text.push('\n');
            *line += 1;
        };
        for h in header.lines() {
            emit(&mut text, h, &mut line);
        }
        let loc = |line: usize| Loc { file: out_file.to_path_buf(), line };
        let mark = |entries: &mut [Entry], from: &[usize], target: String, at: usize| {
            for &i in from {
                if let Some(e) = entries.get_mut(i) {
                    e.fate = Fate::Mapped { target: target.clone(), at: Some(loc(at)) };
                }
            }
        };
        for k in &self.top {
            emit(&mut text, &format!("{} = {}", k.key, k.value), &mut line);
            mark(entries, &k.from, k.key.clone(), line);
        }
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for t in &self.tables {
            emit(&mut text, "", &mut line);
            if let Some(c) = &t.comment {
                for cl in c.lines() {
                    emit(&mut text, &format!("# {cl}"), &mut line);
                }
            }
            let n = counts.entry(t.name.as_str()).or_insert(0);
            *n += 1;
            if t.array {
                emit(&mut text, &format!("[[{}]]", t.name), &mut line);
            } else {
                emit(&mut text, &format!("[{}]", t.name), &mut line);
            }
            let head = line;
            let rule_name = t.keys.iter().find(|k| k.key == "name").and_then(|k| k.value.as_str()).map(|s| s.to_string());
            for k in &t.keys {
                emit(&mut text, &format!("{} = {}", k.key, k.value), &mut line);
                let target = if t.array {
                    match &rule_name {
                        Some(r) => format!("[[{}]] #{} {r}: {}", t.name, n, k.key),
                        None => format!("[[{}]] #{}: {}", t.name, n, k.key),
                    }
                } else {
                    format!("{}.{}", t.name, k.key)
                };
                mark(entries, &k.from, target, if t.array { head } else { line });
            }
        }
        text
    }
}

fn set(keys: &mut Vec<Key>, key: &str, value: toml::Value, from: Vec<usize>) {
    match keys.iter_mut().find(|k| k.key == key) {
        Some(k) => {
            k.value = value;
            k.from.extend(from);
        }
        None => keys.push(Key { key: key.to_string(), value, from }),
    }
}

/// A string value.
pub fn s(v: impl Into<String>) -> toml::Value {
    toml::Value::String(v.into())
}

/// An array of strings.
pub fn arr<I: IntoIterator<Item = S>, S: Into<String>>(v: I) -> toml::Value {
    toml::Value::Array(v.into_iter().map(|x| toml::Value::String(x.into())).collect())
}
