//! main.cf and master.cf as Postfix reads them (postconf(5), master(5)):
//! logical lines (a line starting with white space continues the previous
//! one; `#` lines are comments), `name = value` parameters with `$name`,
//! `${name}`, `$(name)`, `${name?value}` and `${name:value}` expansion, and
//! master.cf services with their `-o name=value` overrides.
//!
//! May touch: nothing (text in, values out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::import::Loc;

/// One logical line: where it starts and its text (continuations joined
/// with a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    /// The first physical line.
    pub loc: Loc,
    /// The joined text, trimmed.
    pub text: String,
}

/// Splits `text` into logical lines, skipping blank and comment lines.
pub fn logical_lines(text: &str, file: &Path) -> Vec<Logical> {
    let mut out: Vec<Logical> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = line.starts_with([' ', '\t']);
        match out.last_mut() {
            Some(last) if continues => {
                last.text.push(' ');
                last.text.push_str(trimmed);
            }
            _ => out.push(Logical { loc: Loc { file: file.to_path_buf(), line: i + 1 }, text: trimmed.to_string() }),
        }
    }
    out
}

/// One main.cf parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name.
    pub name: String,
    /// The raw (unexpanded) value.
    pub value: String,
    /// Where it is set.
    pub loc: Loc,
    /// The source text.
    pub text: String,
}

/// A main.cf line that is not `name = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Where.
    pub loc: Loc,
    /// The text.
    pub text: String,
}

/// Parses main.cf: the parameters in file order (a later setting of the
/// same name wins, as in Postfix) and the lines that are not parameters.
pub fn main_cf(text: &str, file: &Path) -> (Vec<Param>, Vec<BadLine>) {
    let mut params = Vec::new();
    let mut bad = Vec::new();
    for l in logical_lines(text, file) {
        match l.text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !name.trim().contains(char::is_whitespace) => {
                params.push(Param { name: name.trim().to_string(), value: value.trim().to_string(), loc: l.loc, text: l.text.clone() })
            }
            _ => bad.push(BadLine { loc: l.loc, text: l.text }),
        }
    }
    (params, bad)
}

/// Parameter values with expansion; the defaults Postfix would use for
/// the parameters the importer reads, overridden by main.cf, overridden by
/// a service's `-o` options.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: HashMap<String, String>,
    set: HashMap<String, Loc>,
}

/// Postfix 3.6+ defaults of the parameters the importer looks at.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("mydomain", "localdomain"),
    ("myorigin", "$myhostname"),
    ("mydestination", "$myhostname, localhost.$mydomain, localhost"),
    ("relay_domains", ""),
    ("mynetworks", "127.0.0.0/8 [::1]/128"),
    ("inet_interfaces", "all"),
    ("queue_directory", "/var/spool/postfix"),
    ("smtpd_client_restrictions", ""),
    ("smtpd_helo_restrictions", ""),
    ("smtpd_sender_restrictions", ""),
    ("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"),
    ("smtpd_recipient_restrictions", ""),
    ("relay_clientcerts", ""),
    ("smtpd_tls_security_level", ""),
    ("smtpd_tls_wrappermode", "no"),
    ("smtpd_tls_ask_ccert", "no"),
    ("smtpd_tls_req_ccert", "no"),
    ("smtpd_sasl_auth_enable", "no"),
    ("smtpd_sasl_type", "cyrus"),
    ("smtpd_sasl_path", "smtpd"),
    ("smtpd_tls_auth_only", "no"),
    ("smtpd_milters", ""),
    ("non_smtpd_milters", ""),
    ("milter_default_action", "tempfail"),
    ("smtpd_delay_reject", "yes"),
    ("smtp_tls_security_level", ""),
    ("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps"),
    ("alias_maps", "hash:/etc/aliases"),
];

impl Params {
    /// main.cf's parameters on top of [`DEFAULTS`]; `hostname` is the
    /// default of `myhostname`.
    pub fn new(params: &[Param], hostname: &str) -> Params {
        let mut p = Params::default();
        for (k, v) in DEFAULTS {
            p.values.insert(k.to_string(), v.to_string());
        }
        p.values.insert("myhostname".into(), hostname.to_string());
        if let Some((_, d)) = hostname.split_once('.') {
            p.values.insert("mydomain".into(), d.to_string());
        }
        for x in params {
            p.values.insert(x.name.clone(), x.value.clone());
            p.set.insert(x.name.clone(), x.loc.clone());
        }
        // mydomain defaults to myhostname minus its first label.
        if !p.set.contains_key("mydomain") {
            let host = p.get("myhostname");
            if let Some((_, d)) = host.split_once('.') {
                p.values.insert("mydomain".into(), d.to_string());
            }
        }
        p
    }

    /// Sets a default (a parameter main.cf may still override).
    pub fn default_value(&mut self, name: &str, value: &str) {
        if !self.set.contains_key(name) {
            self.values.insert(name.to_string(), value.to_string());
        }
    }

    /// A copy with a service's `-o` overrides.
    pub fn with_overrides(&self, overrides: &[Override]) -> Params {
        let mut p = self.clone();
        for o in overrides {
            p.values.insert(o.name.clone(), o.value.clone());
            p.set.insert(o.name.clone(), o.loc.clone());
        }
        p
    }

    /// Where a parameter was set (main.cf or master.cf), if it was.
    pub fn origin(&self, name: &str) -> Option<&Loc> {
        self.set.get(name)
    }

    /// The raw value.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }

    /// The expanded value ("" when unknown).
    pub fn get(&self, name: &str) -> String {
        self.expand(self.raw(name).unwrap_or(""), 0)
    }

    /// A yes/no parameter.
    pub fn yes(&self, name: &str) -> bool {
        self.get(name).trim().eq_ignore_ascii_case("yes")
    }

    /// The expanded value split as a Postfix list (commas and/or white
    /// space; `{...}` kept together).
    pub fn list(&self, name: &str) -> Vec<String> {
        split_list(&self.get(name))
    }

    /// Expands `$name`, `${name}`, `$(name)`, `${name?text}` (text when
    /// name is non-empty) and `${name:text}` (text when it is empty).
    pub fn expand(&self, s: &str, depth: usize) -> String {
        if depth > 20 {
            return s.to_string();
        }
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' || i + 1 >= b.len() {
                let ch = s[i..].chars().next().unwrap_or('$');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
            let (open, close) = match b[i + 1] {
                b'{' => (Some(b'{'), b'}'),
                b'(' => (Some(b'('), b')'),
                _ => (None, 0),
            };
            if open.is_some() {
                let Some(end) = find_close(b, i + 2, open.unwrap_or(b'{'), close) else {
                    out.push_str(&s[i..]);
                    break;
                };
                let inner = &s[i + 2..end];
                let (name, cond) = match inner.find(['?', ':']) {
                    Some(k) => (&inner[..k], Some((inner.as_bytes()[k], &inner[k + 1..]))),
                    None => (inner, None),
                };
                let val = self.expand(self.raw(name.trim()).unwrap_or(""), depth + 1);
                match cond {
                    None => out.push_str(&val),
                    Some((b'?', text)) if !val.is_empty() => out.push_str(&self.expand(strip_braces(text), depth + 1)),
                    Some((b':', text)) if val.is_empty() => out.push_str(&self.expand(strip_braces(text), depth + 1)),
                    Some(_) => {}
                }
                i = end + 1;
            } else {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                if end == start {
                    out.push('$');
                    i += 1;
                    continue;
                }
                out.push_str(&self.expand(self.raw(&s[start..end]).unwrap_or(""), depth + 1));
                i = end;
            }
        }
        out
    }
}

fn strip_braces(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(t)
}

fn find_close(b: &[u8], from: usize, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0;
    for (k, &c) in b.iter().enumerate().skip(from) {
        if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return Some(k);
            }
            depth -= 1;
        }
    }
    None
}

/// Splits a Postfix list value: elements separated by commas and/or white
/// space, a `{...}` group (inline tables, `-o { a = b }`) kept whole.
pub fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' | ' ' | '\t' | '\n' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A `-o name=value` of a master.cf service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Parameter name.
    pub name: String,
    /// Raw value.
    pub value: String,
    /// The master.cf line it is on.
    pub loc: Loc,
}

/// One master.cf service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Service name (`smtp`, `submission`, `127.0.0.1:2525`, ...).
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo`, `pass`.
    pub kind: String,
    /// The command (`smtpd`, `qmgr`, `pipe`, ...).
    pub command: String,
    /// The `-o` overrides, in order.
    pub overrides: Vec<Override>,
    /// Other command arguments.
    pub args: Vec<String>,
    /// Where the service starts.
    pub loc: Loc,
    /// The joined text.
    pub text: String,
}

/// A master.cf line that is not a service.
pub type MasterError = BadLine;

/// Parses master.cf; `-o` values may use `{ name = value with spaces }`.
pub fn master_cf(text: &str, file: &Path) -> (Vec<Service>, Vec<MasterError>) {
    let mut services = Vec::new();
    let mut bad = Vec::new();
    // Track the physical line of each -o for the report.
    let lines: Vec<&str> = text.lines().collect();
    for l in logical_lines(text, file) {
        let fields = split_master(&l.text);
        if fields.len() < 8 {
            bad.push(BadLine { loc: l.loc, text: l.text });
            continue;
        }
        let mut overrides = Vec::new();
        let mut args = Vec::new();
        let mut k = 8;
        while k < fields.len() {
            let f = &fields[k];
            let opt = if f == "-o" && k + 1 < fields.len() {
                k += 1;
                Some(fields[k].clone())
            } else {
                f.strip_prefix("-o").filter(|r| !r.is_empty()).map(|r| r.to_string())
            };
            match opt {
                Some(o) => {
                    let o = strip_braces(&o).to_string();
                    if let Some((n, v)) = o.split_once('=') {
                        let name = n.trim().to_string();
                        let line = find_line(&lines, l.loc.line, &name);
                        overrides.push(Override { name, value: v.trim().to_string(), loc: Loc { file: file.to_path_buf(), line } });
                    } else {
                        args.push(format!("-o {o}"));
                    }
                }
                None => args.push(f.clone()),
            }
            k += 1;
        }
        services.push(Service {
            name: fields[0].clone(),
            kind: fields[1].clone(),
            command: fields[7].clone(),
            overrides,
            args,
            loc: l.loc,
            text: l.text,
        });
    }
    (services, bad)
}

/// The physical line (1-based), at or after `from`, that mentions `-o NAME`.
fn find_line(lines: &[&str], from: usize, name: &str) -> usize {
    for (i, l) in lines.iter().enumerate().skip(from.saturating_sub(1)) {
        if i + 1 > from && !l.starts_with([' ', '\t']) && !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            break;
        }
        if l.contains(name) && l.contains("-o") {
            return i + 1;
        }
    }
    from
}

/// Splits a master.cf logical line into fields (white space; `{ ... }` whole).
fn split_master(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ' ' | '\t' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A path as Postfix names it, resolved: relative paths are relative to
/// the configuration directory; `/etc/postfix/x` is read from `config_dir`
/// when it is not `/etc/postfix`.
pub fn resolve(config_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if let Ok(rest) = p.strip_prefix("/etc/postfix") {
        return config_dir.join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_dir.join(p)
    }
}
