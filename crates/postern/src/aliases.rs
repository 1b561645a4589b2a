//! The classic aliases file (`name: target, target`), as sendmail's and
//! Postfix's `aliases(5)`: `#` comments, continuation lines that start with
//! white space, names matched case-insensitively. Targets are local names or
//! full addresses. `|command`, `/file` and `:include:` targets are refused
//! with an error naming the line (postern delivers to mailboxes only).
//!
//! May touch: the aliases file (read only).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Parsed aliases: lower-cased name → targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, Vec<String>>,
    /// The line each alias starts on (for `sendmail -bt`).
    lines: BTreeMap<String, usize>,
}

/// A problem in the aliases file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct AliasError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The problem.
    pub message: String,
}

/// Names that reach `postmaster` unless the aliases file or `local.users`
/// defines them: `root` (cron and daemons mail it), the RFC 2142 role
/// mailboxes (§§3-5: abuse, noc, security, hostmaster, usenet, news,
/// webmaster, www, uucp, ftp) and `mailer-daemon` (the sender of bounces).
pub const ROLE_NAMES: &[&str] =
    &["root", "mailer-daemon", "abuse", "noc", "security", "hostmaster", "usenet", "news", "webmaster", "www", "uucp", "ftp"];

/// How deep alias expansion may nest before we call it a loop.
const MAX_DEPTH: usize = 20;

impl Aliases {
    /// Parses aliases text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Aliases, AliasError> {
        let mut map = BTreeMap::new();
        let mut lines = BTreeMap::new();
        let mut current: Option<(usize, String, String)> = None;
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                match current.as_mut() {
                    Some((_, _, targets)) => {
                        targets.push(',');
                        targets.push_str(line);
                        continue;
                    }
                    None => return Err(err(file, i + 1, "continuation line without an alias before it")),
                }
            }
            if let Some(done) = current.take() {
                entries.push(done);
            }
            let (name, targets) = line.split_once(':').ok_or_else(|| err(file, i + 1, "expected `name: target, ...`"))?;
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || !is_local_name(&name) {
                return Err(err(file, i + 1, &format!("bad alias name {name:?}")));
            }
            current = Some((i + 1, name, targets.to_string()));
        }
        entries.extend(current);
        for (line, name, targets) in entries {
            let mut list = Vec::new();
            for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if t.starts_with('|') || t.starts_with('/') || t.starts_with(":include:") {
                    return Err(err(file, line, &format!("target {t:?}: pipes, files and :include: are not supported")));
                }
                let t = t.trim_start_matches('<').trim_end_matches('>');
                if let Some((_, domain)) = t.rsplit_once('@') {
                    if postern_wire::Mailbox::parse(t, true).is_err() {
                        return Err(err(file, line, &format!("bad target address {t:?} (domain {domain:?})")));
                    }
                    list.push(t.to_string());
                } else if is_local_name(&t.to_ascii_lowercase()) {
                    list.push(t.to_ascii_lowercase());
                } else {
                    return Err(err(file, line, &format!("bad target {t:?}")));
                }
            }
            if list.is_empty() {
                return Err(err(file, line, &format!("alias {name:?} has no targets")));
            }
            lines.insert(name.clone(), line);
            if map.insert(name.clone(), list).is_some() {
                return Err(err(file, line, &format!("alias {name:?} defined twice")));
            }
        }
        Ok(Aliases { map, lines })
    }

    /// Reads an aliases file.
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| err(&file, 0, &format!("cannot read: {e}")))?;
        Aliases::parse(&text, &file)
    }

    /// True if `name` (lower-case local part) is an alias.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The targets `name` lists directly and the line it starts on, if it is an alias.
    pub fn entry(&self, name: &str) -> Option<(&[String], usize)> {
        self.map.get(name).map(|t| (t.as_slice(), self.lines.get(name).copied().unwrap_or(0)))
    }

    /// Every target name or address listed anywhere.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.map.values().flatten().map(String::as_str)
    }

    /// Adds the built-in role aliases ([`ROLE_NAMES`] → `postmaster`) for
    /// every name that is neither an alias here nor in `mailboxes` (local
    /// mailbox names, lower-case), so mail for `root` (cron), `abuse` or
    /// `MAILER-DAEMON` reaches a person out of the box, as Postfix's
    /// default `/etc/aliases` does. The aliases file overrides each one;
    /// a name the file uses as a target (`postmaster: root`) is a mailbox
    /// the file means, so it gets no default (which would loop back).
    pub fn with_role_defaults(mut self, mailboxes: &std::collections::HashSet<String>) -> Aliases {
        let targets: HashSet<String> = self.targets().map(|t| t.to_ascii_lowercase()).collect();
        for name in ROLE_NAMES {
            if !self.map.contains_key(*name) && !mailboxes.contains(*name) && !targets.contains(*name) {
                self.map.insert(name.to_string(), vec!["postmaster".to_string()]);
            }
        }
        self
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Expands a local name. Returns the final targets: local mailbox names
    /// (no `@`) and remote addresses, de-duplicated, in order. An alias that
    /// lists itself delivers to its own mailbox (`bob: bob, carol`); loops
    /// and over-deep nesting stop quietly at the name where they close, which
    /// then counts as a mailbox, so mail is never lost to a loop.
    pub fn expand(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.expand_into(&name.to_ascii_lowercase(), 0, &mut seen, &mut out);
        out
    }

    fn expand_into(&self, name: &str, depth: usize, seen: &mut HashSet<String>, out: &mut Vec<String>) {
        let push = |out: &mut Vec<String>, s: &str| {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        match self.map.get(name) {
            Some(targets) if depth < MAX_DEPTH && seen.insert(name.to_string()) => {
                for t in targets {
                    if t.contains('@') || t == name {
                        push(out, t);
                    } else {
                        self.expand_into(t, depth + 1, seen, out);
                    }
                }
            }
            _ => push(out, name),
        }
    }
}

/// A safe local mailbox name: it becomes a directory name under the
/// Maildir root, so no `/`, no leading dot, no control characters.
pub fn is_local_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.starts_with('.') && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-+=".contains(&c))
}

fn err(file: &str, line: usize, message: &str) -> AliasError {
    AliasError { file: file.to_string(), line, message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_expand() {
        let a = Aliases::parse(
            "# comment\nPostmaster: root\nroot: alice,\n  bob # trailing\nteam: root, carol@remote.example, alice\n\
             self: self, dave\nloop1: loop2\nloop2: loop1\n",
            "aliases",
        )
        .unwrap();
        assert_eq!(a.expand("postmaster"), vec!["alice", "bob"]);
        assert_eq!(a.expand("TEAM"), vec!["alice", "bob", "carol@remote.example"]);
        assert_eq!(a.expand("self"), vec!["self", "dave"]);
        assert_eq!(a.expand("loop1"), vec!["loop1"]);
        assert_eq!(a.expand("nobody"), vec!["nobody"]);
        assert!(a.contains("root"));
    }

    #[test]
    fn role_defaults_reach_postmaster_unless_defined() {
        let users: HashSet<String> = ["postmaster", "www"].iter().map(|s| s.to_string()).collect();
        let a = Aliases::parse("abuse: alice\npostmaster: root\n", "aliases").unwrap().with_role_defaults(&users);
        // (name, expansion): the file wins, a mailbox wins, a name the file
        // targets is a mailbox (no `root: postmaster` loop), the rest reach postmaster (here: root).
        let table = [
            ("root", vec!["root"]),
            ("postmaster", vec!["root"]),
            ("MAILER-DAEMON", vec!["root"]),
            ("hostmaster", vec!["root"]),
            ("abuse", vec!["alice"]),
        ];
        for (name, want) in table {
            assert_eq!(a.expand(name), want, "{name}");
        }
        assert!(!a.contains("www"), "a local mailbox is not shadowed");
        assert!(a.contains("noc") && a.contains("security") && a.contains("webmaster"));
        assert!(!Aliases::default().contains("root"));
        let plain = Aliases::default().with_role_defaults(&users);
        assert_eq!(plain.expand("root"), vec!["postmaster"]);
        assert_eq!(plain.expand("postmaster"), vec!["postmaster"]);
    }

    #[test]
    fn errors_name_lines() {
        let table = [
            ("a: |/bin/sh\n", "aliases:1: target \"|/bin/sh\""),
            ("a: b\n  c\nd e\n", "aliases:3: expected"),
            ("  x\n", "aliases:1: continuation"),
            ("a: b\na: c\n", "aliases:2: alias \"a\" defined twice"),
            ("a:\n", "aliases:1: alias \"a\" has no targets"),
            ("../x: b\n", "aliases:1: bad alias name"),
            ("a: x@@y\n", "aliases:1: bad target address"),
        ];
        for (text, want) in table {
            let got = Aliases::parse(text, "aliases").unwrap_err().to_string();
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }
}
