//! The `[sql]` directory: the operator's queries against PostgreSQL, through
//! a connection pool (tokio-postgres + deadpool-postgres, no TLS to the
//! database: loopback TCP or a unix socket). Values are always bound as
//! parameters (`:login` → `$1`, see [`crate::config::schema_sql::prepare`]),
//! never written into the SQL text. Wrapped in [`super::cache::Cached`] by
//! `Services::new` (time limit, caches, outage log lines).
//!
//! May touch: the network (the database), `sql.password_file` (read once
//! at start).

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{BoxFuture, Directory, DirectoryError, Lookup, PasswordEntry};
use crate::config::schema_sql::{prepare, Prepared, Sql, SqlParam, ADDRESS_PARAMS, DOMAIN_PARAMS, PASSWORD_PARAMS};

/// The PostgreSQL directory (uncached; see the module doc).
pub struct SqlDirectory {
    /// The pool, or why there is none (bad URL, unreadable password
    /// file): every lookup then answers "unavailable" with that reason.
    pool: Result<Pool, String>,
    password: Option<Prepared>,
    domain: Option<Prepared>,
    mailbox: Option<Prepared>,
    alias: Option<Prepared>,
    sender_login: Option<Prepared>,
}

/// The values of the named parameters for one lookup key.
fn values(key: &str, params: &[SqlParam], domain_lookup: bool) -> Vec<String> {
    let (local, domain) = if domain_lookup { ("", key) } else { key.rsplit_once('@').unwrap_or((key, "")) };
    params
        .iter()
        .map(|p| match p {
            SqlParam::Login | SqlParam::Address => key.to_string(),
            SqlParam::Local => local.to_string(),
            SqlParam::Domain => domain.to_string(),
        })
        .collect()
}

/// Splits one or more rows' first column into targets (comma-separated
/// lists allowed), lower-cased, empty pieces dropped.
fn targets(cells: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    cells
        .into_iter()
        .flatten()
        .flat_map(|c| c.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect()
}

fn unavailable(reason: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable { backend: "sql", reason: reason.to_string() }
}

impl SqlDirectory {
    /// Builds the pool (connections are opened on first use, so a database
    /// that is down now is not an error here).
    pub fn new(cfg: &Sql) -> SqlDirectory {
        let q = |text: &Option<String>, allowed| text.as_deref().and_then(|t| prepare(t, allowed).ok());
        SqlDirectory {
            pool: pool(cfg),
            password: q(&cfg.password_query, PASSWORD_PARAMS),
            domain: q(&cfg.domain_query, DOMAIN_PARAMS),
            mailbox: q(&cfg.mailbox_query, ADDRESS_PARAMS),
            alias: q(&cfg.alias_query, ADDRESS_PARAMS),
            sender_login: q(&cfg.sender_login_query, ADDRESS_PARAMS),
        }
    }

    /// Runs one prepared query with the values for `key`.
    async fn rows(&self, query: &Prepared, key: &str, domain_lookup: bool) -> Lookup<Vec<Row>> {
        let pool = self.pool.as_ref().map_err(unavailable)?;
        let client = pool.get().await.map_err(unavailable)?;
        let stmt = client.prepare_cached(&query.sql).await.map_err(unavailable)?;
        let vals = values(key, &query.params, domain_lookup);
        let params: Vec<&(dyn ToSql + Sync)> = vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        client.query(&stmt, &params).await.map_err(unavailable)
    }

    /// The first column of each row, as text (NULL: none).
    async fn column(&self, query: &Option<Prepared>, key: &str) -> Lookup<Vec<String>> {
        let Some(q) = query else { return Ok(Vec::new()) };
        let rows = self.rows(q, key, false).await?;
        let cells = rows.iter().map(|r| r.try_get::<_, Option<String>>(0)).collect::<Result<Vec<_>, _>>().map_err(unavailable)?;
        Ok(targets(cells))
    }

    async fn exists(&self, query: &Option<Prepared>, key: &str, domain_lookup: bool) -> Lookup<bool> {
        let Some(q) = query else { return Ok(false) };
        Ok(!self.rows(q, key, domain_lookup).await?.is_empty())
    }

    async fn password_entry(&self, login: &str) -> Lookup<Option<PasswordEntry>> {
        let Some(q) = &self.password else { return Ok(None) };
        let rows = self.rows(q, login, false).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let hash: Option<String> = row.try_get(0).map_err(unavailable)?;
        let Some(hash) = hash.filter(|h| !h.is_empty()) else { return Ok(None) };
        let user = match row.len() {
            n if n > 1 => row.try_get::<_, Option<String>>(1).map_err(unavailable)?,
            _ => None,
        };
        let user = user.filter(|u| !u.is_empty()).unwrap_or_else(|| login.to_string()).to_ascii_lowercase();
        Ok(Some(PasswordEntry { user, hash, disabled: None }))
    }
}

fn pool(cfg: &Sql) -> Result<Pool, String> {
    let mut pg = tokio_postgres::Config::from_str(cfg.url.trim()).map_err(|e| format!("sql.url: {e}"))?;
    if let Some(f) = &cfg.password_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("sql.password_file {}: {e}", f.display()))?;
        pg.password(text.trim_end_matches(['\r', '\n']));
    }
    pg.application_name("postern");
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr).max_size(cfg.pool_size.max(1)).build().map_err(|e| format!("sql pool: {e}"))
}

impl Directory for SqlDirectory {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>> {
        Box::pin(self.password_entry(login))
    }

    fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.exists(&self.domain, domain, true))
    }

    fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        Box::pin(self.exists(&self.mailbox, address, false))
    }

    fn alias<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.column(&self.alias, address))
    }

    fn sender_logins<'a>(&'a self, sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        Box::pin(self.column(&self.sender_login, sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_values() {
        use SqlParam::*;
        assert_eq!(
            values("alice@a.example", &[Login, Local, Domain, Address], false),
            ["alice@a.example", "alice", "a.example", "alice@a.example"]
        );
        assert_eq!(values("a.example", &[Domain], true), ["a.example"]);
        assert_eq!(values("bob", &[Local, Domain], false), ["bob", ""]);
        assert_eq!(values("x@y@b.example", &[Local, Domain], false), ["x@y", "b.example"]);
    }

    #[test]
    fn target_lists() {
        let got = targets([Some("Bob@B.example, carol@a.example".to_string()), None, Some(" ".into()), Some("dave@a.example".into())]);
        assert_eq!(got, ["bob@b.example", "carol@a.example", "dave@a.example"]);
    }

    #[tokio::test]
    async fn a_bad_url_is_unavailable_not_unknown() {
        let d = SqlDirectory::new(&Sql {
            url: "postgresql://[bad".into(),
            mailbox_query: Some("SELECT 1 WHERE :address <> ''".into()),
            ..Sql::default()
        });
        assert!(matches!(d.mailbox("a@b.example").await, Err(DirectoryError::Unavailable { backend: "sql", .. })));
        assert_eq!(d.domain("b.example").await, Ok(false), "no domain_query: not a virtual domain");
        assert_eq!(d.password("a@b.example").await, Ok(None));
    }
}
