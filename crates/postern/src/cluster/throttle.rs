//! What the AUTH throttle keeps in the shared store, and how a session asks
//! for it. The verdicts stay in `crate::auth` (pure, over [`SharedFacts`]);
//! this module only names the keys and gathers the answers.
//!
//! Keys (under `postern:PREFIX:`), for an address key `A` (IPv6 masked to
//! `auth.ipv6_prefix`) and a lower-cased user `U`:
//!
//! | key | kind | lifetime |
//! |---|---|---|
//! | `auth:fail:ip:A` | failures of the address | `auth.failure_window` from the first |
//! | `auth:fail:user:U` | failures for the user | `auth.failure_window` from the first |
//! | `auth:ban:A` | the address is banned | `auth.ban_time` |
//! | `auth:login:A` | somebody logged in from A | `auth.login_memory` |
//! | `auth:login:A U` | U logged in from A | `auth.login_memory` |
//!
//! The shared counters use a fixed window (from the first failure), the
//! local ones a sliding one; a node uses the larger of the two counts.
//!
//! May touch: the shared store, through [`SharedCounters`].

use std::net::IpAddr;

use crate::auth::{client_key, SharedFacts, MAX_AUTHCID};
use crate::config::Auth;
use crate::counters::SharedCounters;

/// The shared keys of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `auth:fail:ip:A`.
    pub ip_failures: String,
    /// `auth:ban:A`.
    pub ban: String,
    /// `auth:login:A`.
    pub someone_logged_in: String,
}

/// The keys for the client address `ip`.
pub fn keys(ip: IpAddr, cfg: &Auth) -> Keys {
    let a = client_key(ip, cfg.ipv6_prefix);
    Keys { ip_failures: format!("auth:fail:ip:{a}"), ban: format!("auth:ban:{a}"), someone_logged_in: format!("auth:login:{a}") }
}

/// `auth:fail:user:U`.
pub fn user_failures_key(user: &str) -> String {
    format!("auth:fail:user:{user}")
}

/// `auth:login:A U` (an address never contains a space).
pub fn user_login_key(ip: IpAddr, user: &str, cfg: &Auth) -> String {
    format!("auth:login:{} {user}", client_key(ip, cfg.ipv6_prefix))
}

/// At the AUTH command: is the address banned anywhere, did anybody log in
/// from it anywhere. No store: nothing known.
pub async fn address_facts(store: Option<&dyn SharedCounters>, ip: IpAddr, cfg: &Auth) -> SharedFacts {
    let Some(store) = store else { return SharedFacts::default() };
    let k = keys(ip, cfg);
    let banned = store.flag(&k.ban).await;
    // Only a ban needs the exemption looked up (one round trip otherwise).
    let someone_logged_in = if banned == Some(true) { store.flag(&k.someone_logged_in).await } else { None };
    SharedFacts { banned, someone_logged_in, ..SharedFacts::default() }
}

/// Once the user is known: the address facts, whether this user logged in
/// from the address anywhere, and the user's failures everywhere.
pub async fn user_facts(store: Option<&dyn SharedCounters>, ip: IpAddr, user: &str, cfg: &Auth) -> SharedFacts {
    let Some(store) = store else { return SharedFacts::default() };
    if user.len() > MAX_AUTHCID {
        return SharedFacts::default();
    }
    let user_logged_in = store.flag(&user_login_key(ip, user, cfg)).await;
    if user_logged_in != Some(false) {
        // Known here (no need to ask more), or unreachable (one timeout is enough).
        return SharedFacts { user_logged_in, ..SharedFacts::default() };
    }
    let banned = store.flag(&keys(ip, cfg).ban).await;
    let user_failures = store.get(&user_failures_key(user)).await;
    SharedFacts { banned, user_logged_in, user_failures, ..SharedFacts::default() }
}

/// Counts a failure of the address (and of the user, when known) on the
/// store; returns the address's failures everywhere (`None`: no store or
/// unreachable).
pub async fn record_failure(store: Option<&dyn SharedCounters>, ip: IpAddr, user: Option<&str>, cfg: &Auth) -> Option<u64> {
    let store = store?;
    // Unreachable: one timeout per attempt is enough.
    let total = store.add(&keys(ip, cfg).ip_failures, 1, cfg.failure_window).await?;
    if let Some(u) = user.filter(|u| u.len() <= MAX_AUTHCID) {
        let _ = store.add(&user_failures_key(u), 1, cfg.failure_window).await;
    }
    Some(total)
}

/// A ban this node started: every node sees it for `ban_time`.
pub async fn record_ban(store: Option<&dyn SharedCounters>, ip: IpAddr, cfg: &Auth) {
    if let Some(store) = store {
        let _ = store.set_flag(&keys(ip, cfg).ban, cfg.ban_time).await;
    }
}

/// A successful login: every node remembers it for `login_memory`.
pub async fn record_login(store: Option<&dyn SharedCounters>, ip: IpAddr, user: &str, cfg: &Auth) {
    let Some(store) = store else { return };
    if user.len() > MAX_AUTHCID {
        return;
    }
    if store.set_flag(&user_login_key(ip, user, cfg), cfg.login_memory).await.is_some() {
        let _ = store.set_flag(&keys(ip, cfg).someone_logged_in, cfg.login_memory).await;
    }
}
