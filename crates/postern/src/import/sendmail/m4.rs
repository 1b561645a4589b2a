//! A reader for the subset of m4 that a `sendmail.mc` is written in: macro
//! calls `NAME(arg, arg)` with `` `quoted' `` arguments (quotes nest and
//! are removed one level, as m4 does), nested parentheses inside
//! arguments, `dnl` (deletes to the end of the line) and `#` comments.
//!
//! Hand-written because no crate reads sendmail's m4: the m4 crates
//! evaluate general m4 (and would need sendmail's cf macro library to
//! make sense of the calls), while an importer needs the calls themselves,
//! with their line numbers, without expanding them. User `define`s are
//! recorded as calls like any other; they are not expanded in later text.
//!
//! May touch: nothing (text in, calls out).

/// One macro call of the `.mc` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The macro name (`define`, `FEATURE`, `DAEMON_OPTIONS`, ...).
    pub name: String,
    /// The arguments, unquoted one level, leading white space removed.
    pub args: Vec<String>,
    /// 1-based line of the name.
    pub line: usize,
    /// The source text of the call (for the report).
    pub text: String,
}

impl Call {
    /// Argument `i`, or "" when missing.
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or("")
    }
}

/// A problem in the m4 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct M4Error {
    /// 1-based line where the problem starts.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads every macro call of `text`, in order.
pub fn calls(text: &str) -> Result<Vec<Call>, M4Error> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '#' {
            // m4 comment: copied through unexpanded, to the end of the line.
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '`' {
            // Quoted text at top level: no calls inside.
            let start = line;
            let (_, next, nl) = quoted(&b, i).ok_or(M4Error { line: start, message: "unterminated quote (` without ')".into() })?;
            line += nl;
            i = next;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let name: String = b[start..i].iter().collect();
            if name == "dnl" {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
                i += 1;
                line += 1;
                continue;
            }
            if i < b.len() && b[i] == '(' {
                let call_line = line;
                let (args, next, nl) = arguments(&b, i + 1, line)?;
                let text: String = b[start..next].iter().collect();
                line += nl;
                i = next;
                out.push(Call { name, args, line: call_line, text });
            } else if is_macro_without_args(&name) {
                let text = name.clone();
                out.push(Call { name, args: Vec::new(), line, text });
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// Names that are calls even without parentheses.
fn is_macro_without_args(name: &str) -> bool {
    matches!(name, "LOCAL_CONFIG" | "LOCAL_RULESETS" | "LOCAL_RULE_0" | "LOCAL_NET_CONFIG")
}

/// The text of a quote starting at `b[i] == '`'`, with nested quotes kept:
/// (text, index after the closing quote, newlines inside).
fn quoted(b: &[char], i: usize) -> Option<(String, usize, usize)> {
    let mut depth = 0usize;
    let mut j = i;
    let mut s = String::new();
    let mut nl = 0;
    while j < b.len() {
        let c = b[j];
        match c {
            '`' => {
                if depth > 0 {
                    s.push(c);
                }
                depth += 1;
            }
            '\'' => {
                depth -= 1;
                if depth == 0 {
                    return Some((s, j + 1, nl));
                }
                s.push(c);
            }
            _ => {
                if c == '\n' {
                    nl += 1;
                }
                s.push(c);
            }
        }
        j += 1;
    }
    None
}

/// The arguments of a call whose `(` is just before `b[i]`: (arguments,
/// index after `)`, newlines inside).
fn arguments(b: &[char], mut i: usize, line: usize) -> Result<(Vec<String>, usize, usize), M4Error> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut nl = 0;
    let mut at_start = true;
    while i < b.len() {
        let c = b[i];
        if at_start && c.is_whitespace() {
            // m4 skips unquoted white space before each argument.
            if c == '\n' {
                nl += 1;
            }
            i += 1;
            continue;
        }
        at_start = false;
        match c {
            '`' => {
                let (q, next, n) = quoted(b, i)
                    .ok_or(M4Error { line: line + nl, message: "unterminated quote (` without ') in macro arguments".into() })?;
                cur.push_str(&q);
                nl += n;
                i = next;
                continue;
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' if depth == 0 => {
                args.push(cur);
                return Ok((args, i + 1, nl));
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                args.push(std::mem::take(&mut cur));
                at_start = true;
            }
            '\n' => {
                nl += 1;
                cur.push(c);
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    Err(M4Error { line, message: "unterminated macro call (missing `)`)".into() })
}
