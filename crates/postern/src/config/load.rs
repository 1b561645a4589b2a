//! Loading: TOML text to a [`Config`], with every problem found reported at
//! once, each at `file:line:column` with its key.
//!
//! May touch: nothing (the caller reads the file).
//!
//! How one run finds every problem: the text is parsed once into a tree with
//! spans. Values with their own syntax are set aside when bad (see
//! `values.rs`). When serde stops at a problem (unknown key, wrong type,
//! unknown enum value), the problem is recorded, the offending key is taken
//! out of the tree, and the tree is deserialized again. Keys that were taken
//! out or set aside are "tainted": cross-field checks that name them are not
//! reported, since they would only echo the first problem.

use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Position, Problem, ProblemKind};
use super::{validate, values, Config};

/// More rounds than this means something is off; report what was found.
const MAX_ROUNDS: usize = 64;

/// The text a config came from, kept to place problems found after loading.
#[derive(Debug, Clone, Default)]
pub(super) struct Origin {
    /// The file name used in messages.
    pub(super) file: String,
    /// The file's text.
    pub(super) text: Arc<str>,
}

/// One step of a path into the config: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path to a key or value, e.g. `listener[1].milters[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    /// The whole file.
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// Appends one key.
    pub fn key(mut self, k: &str) -> KeyPath {
        self.0.push(Step::Key(k.to_string()));
        self
    }

    /// Appends dotted keys (`"local.domains"`).
    pub fn keys(self, dotted: &str) -> KeyPath {
        dotted.split('.').fold(self, KeyPath::key)
    }

    /// Appends an array index.
    pub fn index(mut self, i: usize) -> KeyPath {
        self.0.push(Step::Index(i));
        self
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the whole file.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key as messages name it: keys joined by dots, indices left out.
    pub fn dotted(&self) -> String {
        let keys: Vec<&str> = self.0.iter().filter_map(|s| if let Step::Key(k) = s { Some(k.as_str()) } else { None }).collect();
        keys.join(".")
    }
}

impl Origin {
    /// A problem at `at` (or at its nearest ancestor present in the file).
    pub(super) fn problem(&self, at: &KeyPath, key: String, kind: ProblemKind) -> Problem {
        let position = DeTable::parse(&self.text).ok().and_then(|doc| span_of(&doc, at)).map(|s| position(&self.text, s.start));
        Problem { file: self.file.clone(), position, key: (!key.is_empty()).then_some(key), kind }
    }
}

/// Parses, checks, then runs `more` (checks that need more than the text),
/// collecting every problem.
pub(super) fn parse(text: &str, file: &str, more: impl FnOnce(&mut Config) -> Vec<Problem>) -> Result<Config, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax(Box::new(syntax_problem(text, file, &e))))?;
    let origin = Origin { file: file.to_string(), text: Arc::from(text) };
    let mut work = doc.clone();
    let mut problems = Vec::new();
    let mut tainted: Vec<KeyPath> = Vec::new();
    // False once a whole table had to go: cross-field checks would mislead.
    let mut complete = true;
    let mut config = None;
    let mut set_aside = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let (result, aside) = values::setting_aside(|| Config::deserialize(toml::de::Deserializer::from(work.clone())));
        set_aside = aside;
        let e = match result {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => e,
        };
        let message = super::suggest::did_you_mean(e.message().trim());
        let found = e.span().and_then(|s| find(work.get_ref(), &s).map(|(p, _)| (s, p)));
        let Some((span, path)) = found else {
            problems.push(Problem { file: file.into(), position: None, key: None, kind: ProblemKind::Toml(message) });
            complete = false;
            break;
        };
        // A required key we took out ourselves: that problem is already reported.
        let echo = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
        if echo.is_some_and(|f| tainted.iter().any(|t| t.0.last() == Some(&Step::Key(f.to_string())))) {
            complete = false;
            break;
        }
        let pos = position(text, span.start);
        problems.push(Problem { file: file.into(), position: Some(pos), key: Some(path.dotted()), kind: ProblemKind::Toml(message) });
        if !remove(work.get_mut(), &path.0) {
            complete = false;
        }
        tainted.push(path);
        if !complete {
            break;
        }
    }
    for (span, e) in set_aside {
        let path = find(doc.get_ref(), &span).map(|(p, _)| p).unwrap_or_default();
        problems.push(Problem { file: file.into(), position: Some(position(text, span.start)), key: Some(path.dotted()), kind: e.into() });
        tainted.push(path);
    }
    let Some(mut config) = config else { return Err(finish(file, problems)) };
    config.rule_lines = rule_lines(text, &config);
    config.origin = origin.clone();
    if complete {
        for issue in validate::check(&config) {
            if !tainted.iter().any(|t| issue.echoes(t)) {
                problems.push(origin.problem(&issue.at, issue.key, issue.error.into()));
            }
        }
        problems.extend(more(&mut config));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(finish(file, problems))
    }
}

/// Problems in file order, each once; those in other files (named by the
/// config) after the config's own.
fn finish(file: &str, mut problems: Vec<Problem>) -> ConfigError {
    problems.sort_by_key(|p| (p.file != file, p.position));
    problems.dedup_by(|a, b| a.to_string() == b.to_string());
    ConfigError::Invalid(problems)
}

/// The 1-based line of each `[[rule]]` header.
fn rule_lines(text: &str, config: &Config) -> Vec<usize> {
    config
        .rules
        .iter()
        .map(|r| {
            // The span covers the table body; its header is the line before.
            let before = &text[..r.span().start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let header = text.lines().take(line).collect::<Vec<_>>().iter().rposition(|l| l.trim() == "[[rule]]");
            header.map(|h| h + 1).unwrap_or(line)
        })
        .collect()
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> Position {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Position { line, column: Some(column) }
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The path to the smallest key or value whose span holds `span`, and that
/// span's length.
fn find(table: &DeTable<'_>, span: &Range<usize>) -> Option<(KeyPath, usize)> {
    let mut best: Option<(KeyPath, usize)> = None;
    let mut consider = |cand: (KeyPath, usize)| {
        if best.as_ref().is_none_or(|b| cand.1 < b.1) {
            best = Some(cand);
        }
    };
    for (k, v) in table {
        let here = KeyPath(vec![Step::Key(k.get_ref().to_string())]);
        if holds(&k.span(), span) {
            consider((here.clone(), k.span().len()));
        }
        for (sub, len) in find_in(v, span) {
            consider((KeyPath(here.0.iter().cloned().chain(sub.0).collect()), len));
        }
    }
    best
}

/// Candidates inside one value, the value itself included.
fn find_in(v: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Vec<(KeyPath, usize)> {
    let mut out = Vec::new();
    if holds(&v.span(), span) {
        out.push((KeyPath::root(), v.span().len()));
    }
    match v.get_ref() {
        DeValue::Table(t) => out.extend(find(t, span)),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                for (sub, len) in find_in(e, span) {
                    out.push((KeyPath(std::iter::once(Step::Index(i)).chain(sub.0).collect()), len));
                }
            }
        }
        _ => {}
    }
    out
}

/// Takes the key (or array element) at `path` out of the tree. True when
/// what went was a single key or value, false when a whole table went or
/// nothing could be taken out.
fn remove(table: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some((Step::Key(k), rest)) = path.split_first() else { return false };
    let Some(key) = table.keys().find(|key| key.get_ref() == k).cloned() else { return false };
    if rest.is_empty() {
        return table.remove(&key).is_some_and(|v| !holds_tables(v.get_ref()));
    }
    match table.get_mut(&key) {
        Some(v) => remove_in(v, rest),
        None => false,
    }
}

fn remove_in<'i>(v: &mut Spanned<DeValue<'i>>, path: &[Step]) -> bool {
    let span = v.span();
    match (v.get_mut(), path.first()) {
        (DeValue::Table(t), Some(Step::Key(_))) => remove(t, path),
        (DeValue::Array(a), Some(Step::Index(i))) => {
            if path.len() > 1 {
                return a.get_mut(*i).is_some_and(|e| remove_in(e, &path[1..]));
            }
            let was_table = a.get(*i).is_some_and(|e| holds_tables(e.get_ref()));
            let kept: toml::de::DeArray<'i> =
                std::mem::replace(a, toml::de::DeArray::new()).into_iter().enumerate().filter(|(j, _)| j != i).map(|(_, e)| e).collect();
            *v = Spanned::new(span, DeValue::Array(kept));
            !was_table
        }
        _ => false,
    }
}

/// True for a table or an array of tables: taking one out may hide more
/// than one problem.
fn holds_tables(v: &DeValue<'_>) -> bool {
    match v {
        DeValue::Table(_) => true,
        DeValue::Array(a) => a.iter().any(|e| e.get_ref().is_table()),
        _ => false,
    }
}

/// The span of the value at `path`, or of the nearest ancestor in the file.
fn span_of(doc: &Spanned<DeTable<'_>>, path: &KeyPath) -> Option<Range<usize>> {
    let mut here: Option<&Spanned<DeValue<'_>>> = None;
    let mut table = Some(doc.get_ref());
    let mut best = None;
    for step in &path.0 {
        let next = match (step, table, here.map(|v| v.get_ref())) {
            (Step::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| (key.span(), v)),
            (Step::Index(i), _, Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((key_span, v)) = next else { break };
        // Tables are placed at their key (the `[table]` line), values at the value.
        best = Some(if v.get_ref().is_table() && matches!(step, Step::Key(_)) { key_span } else { v.span() });
        here = Some(v);
        table = v.get_ref().as_table();
    }
    best
}

/// Turns a TOML syntax error into file:line:column with the key named.
fn syntax_problem(text: &str, file: &str, e: &toml::de::Error) -> Problem {
    let (position, key) = match e.span() {
        Some(span) => {
            let p = position(text, span.start);
            (Some(p), key_at(text, p.line))
        }
        None => (None, None),
    };
    Problem { file: file.into(), position, key, kind: ProblemKind::Toml(e.message().trim().to_string()) }
}

/// Names the key at a 1-based line: the table header above it plus the key.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.saturating_sub(1))?.trim();
    let table = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if this.starts_with('[') {
        Some(this.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    } else {
        let (k, _) = this.split_once('=')?;
        Some(match table {
            Some(t) => format!("{t}.{}", k.trim()),
            None => k.trim().to_string(),
        })
    }
}
