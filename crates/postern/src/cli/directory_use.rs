//! The account directory for commands (`postern explain`, `postern user
//! verify`): the same [`crate::services::Services`] the daemon builds
//! (caches, time limit included), driven by a small runtime of its own.
//!
//! May touch: the directory's server (through the trait).

use postern_wire::Path;

use crate::config::AuthBackend;
use crate::directory::authn::{check_password, LoginCheck};
use crate::policy::DirectoryFacts;
use crate::services::Services;
use crate::settings::Settings;

/// Runs `f` on a fresh single-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    Ok(rt.block_on(f))
}

/// The directory's facts about `rcpt` (see the session's RCPT); `Ok(None)`:
/// no directory, or a static local domain. `Err`: it cannot answer.
pub fn rcpt_facts(s: &Settings, rcpt: &Path) -> Result<Option<DirectoryFacts>, String> {
    let Path::Mailbox(m) = rcpt else { return Ok(None) };
    let services = Services::new(s);
    let Some(dir) = services.directory.as_ref() else { return Ok(None) };
    if s.is_local_domain(&m.domain.to_ascii_lowercase()) {
        return Ok(None);
    }
    block_on(crate::directory::facts::rcpt_facts(dir.as_ref(), &m.local, &m.domain))?.map(Some).map_err(|e| e.to_string())
}

/// `user verify` against the directory when `auth.backend` is "sql" or
/// "ldap": `None` otherwise (the user database answers).
pub fn verify(s: &Settings, name: &str, password: &str) -> Option<Result<LoginCheck, String>> {
    if !matches!(s.config.auth.backend, AuthBackend::Sql | AuthBackend::Ldap) {
        return None;
    }
    let services = Services::new(s);
    let Some(dir) = services.directory.as_ref() else {
        return Some(Err("auth.backend names a directory that is not configured".into()));
    };
    let allow_plain = s.config.sql.as_ref().is_some_and(|q| q.allow_plain_passwords);
    let login = name.to_ascii_lowercase();
    Some(block_on(check_password(dir, &login, password, allow_plain)).and_then(|r| r.map_err(|e| e.to_string())))
}
