//! The `[sql]` table: a PostgreSQL account directory (docs/directory.md),
//! and the translation of its queries' named parameters (`:login`,
//! `:address`, `:local`, `:domain`) to PostgreSQL's `$1`, `$2`… so values
//! are always bound, never pasted into SQL text.
//!
//! May touch: nothing (types and pure functions).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, show_duration};

/// A value a query can be given by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlParam {
    /// `:login`: what the client logs in as (lower-case).
    Login,
    /// `:address`: the whole address `local@domain` (lower-case).
    Address,
    /// `:local`: the part before the last `@`.
    Local,
    /// `:domain`: the part after it (or the domain asked about).
    Domain,
}

impl SqlParam {
    fn parse(name: &str) -> Option<SqlParam> {
        Some(match name {
            "login" => SqlParam::Login,
            "address" => SqlParam::Address,
            "local" => SqlParam::Local,
            "domain" => SqlParam::Domain,
            _ => return None,
        })
    }
}

/// The `[sql]` directory. Present: `Services` builds a pooled PostgreSQL
/// client from it (used by `auth.backend = "sql"` and for virtual domains).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sql {
    /// The connection, as a libpq URL (`postgresql://postern@127.0.0.1:5432/mail`,
    /// `postgresql://postern@%2Frun%2Fpostgresql/mail` for a unix socket) or
    /// libpq key/values (`host=/run/postgresql user=postern dbname=mail`).
    /// No password here: use `password_file`. Plain TCP or a unix socket (no
    /// TLS to the database). Required.
    pub url: String,
    /// A file holding the database password (one line; trailing newline
    /// ignored). Default: none (peer or trust authentication).
    pub password_file: Option<PathBuf>,
    /// Connections kept open at most. Default 8.
    pub pool_size: usize,
    /// Time limit for one lookup (connecting included); past it the lookup
    /// is "unavailable" (4xx to the client). Default "5s".
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub timeout: Duration,
    /// How long a found answer (user, domain, alias…) is cached. Default "60s"; "0s": no cache.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub cache_ttl: Duration,
    /// How long a "not found" answer is cached. Default "10s"; "0s": no cache.
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub negative_cache_ttl: Duration,
    /// Accept `{PLAIN}`/`{CLEAR}` stored passwords. Default false (such a
    /// login fails, and `config check` warns).
    pub allow_plain_passwords: bool,
    /// Returns the stored password (`{SCHEME}hash` or a crypt string) of
    /// `:login` in the first column; a second column, when present and
    /// non-empty, is the canonical user name. No row: no such user.
    /// Parameters: `:login`, `:address`, `:local`, `:domain`. Default: none.
    pub password_query: Option<String>,
    /// Any row: `:domain` is a virtual domain delivered here. Parameter:
    /// `:domain`. Default: none (no virtual domains).
    pub domain_query: Option<String>,
    /// Any row: the mailbox `:address` exists. Parameters: `:address`,
    /// `:local`, `:domain`. Default: none (no mailboxes besides aliases).
    pub mailbox_query: Option<String>,
    /// Alias targets of `:address`, one per row in the first column, or
    /// comma-separated. Parameters: `:address`, `:local`, `:domain`. Default: none.
    pub alias_query: Option<String>,
    /// Logins allowed to send as `:address` (`auth.sender_login_match`),
    /// one per row or comma-separated. Parameters: `:address`, `:local`,
    /// `:domain`. Default: none (only the built-in owners).
    pub sender_login_query: Option<String>,
}

impl Default for Sql {
    fn default() -> Sql {
        Sql {
            url: String::new(),
            password_file: None,
            pool_size: 8,
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            negative_cache_ttl: Duration::from_secs(10),
            allow_plain_passwords: false,
            password_query: None,
            domain_query: None,
            mailbox_query: None,
            alias_query: None,
            sender_login_query: None,
        }
    }
}

/// A query in PostgreSQL's form with the values to bind, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The text with `$1`, `$2`… in place of the names.
    pub sql: String,
    /// What `$1`, `$2`… are.
    pub params: Vec<SqlParam>,
}

/// Translates `:name` parameters to `$n` (one number per distinct name, in
/// order of first use). Quoted text ('…', "…") and `::type` casts are left
/// alone. `Err(name)`: a name not in `allowed`.
pub fn prepare(query: &str, allowed: &[SqlParam]) -> Result<Prepared, String> {
    let mut sql = String::with_capacity(query.len());
    let mut params: Vec<SqlParam> = Vec::new();
    let mut chars = query.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((i, ch)) = chars.next() {
        if let Some(q) = quote {
            sql.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => {
                quote = Some(ch);
                sql.push(ch);
            }
            ':' if chars.peek().is_some_and(|(_, c)| *c == ':') => {
                sql.push_str("::");
                chars.next();
            }
            ':' if chars.peek().is_some_and(|(_, c)| c.is_ascii_alphabetic() || *c == '_') => {
                let start = i + 1;
                let mut end = start;
                while let Some((j, c)) = chars.peek().copied() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        end = j + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let name = &query[start..end];
                let p = SqlParam::parse(name).filter(|p| allowed.contains(p)).ok_or_else(|| name.to_string())?;
                let n = match params.iter().position(|x| *x == p) {
                    Some(n) => n + 1,
                    None => {
                        params.push(p);
                        params.len()
                    }
                };
                sql.push_str(&format!("${n}"));
            }
            _ => sql.push(ch),
        }
    }
    Ok(Prepared { sql, params })
}

/// The parameters each query may use.
pub const PASSWORD_PARAMS: &[SqlParam] = &[SqlParam::Login, SqlParam::Address, SqlParam::Local, SqlParam::Domain];
/// `domain_query`'s parameter.
pub const DOMAIN_PARAMS: &[SqlParam] = &[SqlParam::Domain];
/// The address queries' parameters.
pub const ADDRESS_PARAMS: &[SqlParam] = &[SqlParam::Address, SqlParam::Local, SqlParam::Domain];

impl Sql {
    /// Each query with the parameters it allows, by key.
    pub fn queries(&self) -> [(&'static str, Option<&str>, &'static [SqlParam]); 5] {
        [
            ("password_query", self.password_query.as_deref(), PASSWORD_PARAMS),
            ("domain_query", self.domain_query.as_deref(), DOMAIN_PARAMS),
            ("mailbox_query", self.mailbox_query.as_deref(), ADDRESS_PARAMS),
            ("alias_query", self.alias_query.as_deref(), ADDRESS_PARAMS),
            ("sender_login_query", self.sender_login_query.as_deref(), ADDRESS_PARAMS),
        ]
    }

    /// Problems found at load, as (key under `sql`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.url.trim().is_empty() {
            out.push(("url", "required: the PostgreSQL connection (libpq URL or key=value pairs)".to_string()));
        } else if url_has_password(&self.url) {
            out.push(("url", "holds a password: put it in sql.password_file instead".to_string()));
        }
        if self.pool_size == 0 {
            out.push(("pool_size", "must be at least 1".to_string()));
        }
        for (k, q, allowed) in self.queries() {
            if let Some(Err(name)) = q.map(|q| prepare(q, allowed)) {
                let names: Vec<String> = allowed.iter().map(|p| format!(":{}", format!("{p:?}").to_ascii_lowercase())).collect();
                out.push((k, format!("unknown parameter :{name} (this query may use {})", names.join(", "))));
            }
        }
        out
    }
}

/// Does a libpq URL or key/value string carry a password?
fn url_has_password(url: &str) -> bool {
    let u = url.trim();
    if let Some(rest) = u.strip_prefix("postgresql://").or_else(|| u.strip_prefix("postgres://")) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let userinfo = authority.rsplit_once('@').map(|(ui, _)| ui).unwrap_or("");
        return userinfo.contains(':') || rest.contains("password=");
    }
    u.split_whitespace().any(|kv| kv.trim_start().to_ascii_lowercase().starts_with("password"))
}

#[cfg(test)]
mod tests {
    use super::SqlParam::*;
    use super::*;

    #[test]
    fn named_parameters_table() {
        type Case<'a> = (&'a str, &'a [SqlParam], Result<(&'a str, &'a [SqlParam]), &'a str>);
        let table: &[Case] = &[
            (
                "SELECT password FROM users WHERE email = :login AND active",
                PASSWORD_PARAMS,
                Ok(("SELECT password FROM users WHERE email = $1 AND active", &[Login])),
            ),
            (
                "SELECT 1 FROM m WHERE local = :local AND domain = :domain OR :local = 'x'",
                ADDRESS_PARAMS,
                Ok(("SELECT 1 FROM m WHERE local = $1 AND domain = $2 OR $1 = 'x'", &[Local, Domain])),
            ),
            (
                "SELECT ':login', \":domain\" FROM t WHERE a = :address::text",
                ADDRESS_PARAMS,
                Ok(("SELECT ':login', \":domain\" FROM t WHERE a = $1::text", &[Address])),
            ),
            ("SELECT 1 FROM d WHERE name = :domain", DOMAIN_PARAMS, Ok(("SELECT 1 FROM d WHERE name = $1", &[Domain]))),
            ("SELECT 1 FROM d WHERE name = :local", DOMAIN_PARAMS, Err("local")),
            ("SELECT 1 FROM t WHERE a = :user", PASSWORD_PARAMS, Err("user")),
            ("SELECT 1 FROM t WHERE a = :login", ADDRESS_PARAMS, Err("login")),
            ("SELECT 1 FROM t WHERE a = : login", ADDRESS_PARAMS, Ok(("SELECT 1 FROM t WHERE a = : login", &[]))),
            ("SELECT 'it''s' FROM t WHERE a = :address", ADDRESS_PARAMS, Ok(("SELECT 'it''s' FROM t WHERE a = $1", &[Address]))),
        ];
        for (q, allowed, want) in table {
            let got = prepare(q, allowed);
            match want {
                Ok((sql, params)) => assert_eq!(got, Ok(Prepared { sql: sql.to_string(), params: params.to_vec() }), "{q}"),
                Err(name) => assert_eq!(got, Err(name.to_string()), "{q}"),
            }
        }
    }

    #[test]
    fn load_errors_name_file_line_and_key() {
        let text = "[auth]\nbackend = \"sql\"\n[sql]\nurl = \"host=/run/postgresql dbname=mail\"\ndomain_query = \"SELECT 1 FROM d WHERE d = :dom\"\n";
        let e = crate::config::Config::parse(text, "t.toml").expect_err("unknown parameter").to_string();
        assert!(e.contains("t.toml:5") && e.contains("sql.domain_query") && e.contains(":dom "), "{e}");
        let e = crate::config::Config::parse("[auth]\nbackend = \"sql\"\n", "t.toml").expect_err("no [sql]").to_string();
        assert!(e.contains("auth.backend") && e.contains("[sql]"), "{e}");
        let ok =
            "[sql]\nurl = \"postgresql://postern@127.0.0.1/mail\"\npassword_query = \"SELECT password FROM users WHERE email = :login\"\n";
        let c = crate::config::Config::parse(ok, "t.toml").expect("valid");
        assert_eq!(
            c.sql.map(|s| (s.pool_size, s.timeout, s.cache_ttl, s.negative_cache_ttl)),
            Some((8, Duration::from_secs(5), Duration::from_secs(60), Duration::from_secs(10)))
        );
    }

    #[test]
    fn problems_name_key_and_parameter() {
        let s = Sql {
            url: "postgresql://postern:secret@127.0.0.1/mail".into(),
            domain_query: Some("SELECT 1 FROM d WHERE d = :dom".into()),
            ..Sql::default()
        };
        let p = s.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "url");
        assert_eq!(p[1].0, "domain_query");
        assert!(p[1].1.contains(":dom ") && p[1].1.contains(":domain"), "{}", p[1].1);
        for (url, has) in [
            ("postgresql://postern@127.0.0.1:5432/mail", false),
            ("postgresql://postern@%2Frun%2Fpostgresql/mail", false),
            ("postgres://u:p@h/db", true),
            ("postgresql://u@h/db?password=x", true),
            ("host=/run/postgresql user=postern dbname=mail", false),
            ("host=h password=x", true),
        ] {
            assert_eq!(url_has_password(url), has, "{url}");
        }
    }
}
