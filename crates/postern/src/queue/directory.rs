//! Virtual domains in the queue: a recipient whose domain the account
//! directory holds (`[sql]`, `[ldap]`) is delivered locally (Maildir or
//! LMTP by `local.delivery`), and only to mailboxes the directory knows.
//! When the directory cannot answer, the recipient waits for the next
//! attempt: it is neither relayed (a loop back to us) nor bounced.
//!
//! May touch: the directory (through the trait).

use std::collections::HashMap;
use std::sync::Arc;

use super::Scheduler;
use crate::config::LocalDelivery;
use crate::delivery::{is_default_route, route, Route};
use crate::directory::Directory;
use crate::maillog;
use crate::settings::Settings;

/// The domain of `address`, lower-case.
fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

impl Scheduler {
    /// Lets the queue ask `directory` about virtual domains (set once, at start).
    pub fn use_directory(&self, directory: Arc<dyn Directory>) {
        let _ = self.inner.directory.set(directory);
    }

    /// The route of `address` in mail from `sender`, virtual domains
    /// included; `None`: the directory cannot say now (try again at the
    /// next attempt).
    pub(super) async fn route_with_directory(&self, s: &Settings, sender: &str, address: &str) -> Option<Route> {
        let rt = route(s, sender, address);
        let Some(dir) = self.inner.directory.get() else { return Some(rt) };
        if !is_default_route(s, &rt) {
            return Some(rt);
        }
        match dir.domain(&domain_of(address)).await {
            Ok(true) => Some(match s.config.local.delivery {
                LocalDelivery::Maildir => Route::Maildir,
                LocalDelivery::Lmtp => Route::Lmtp,
            }),
            Ok(false) => Some(rt),
            Err(e) => {
                maillog::error(&[("to", address), ("error", &e.to_string()), ("action", "retry later")]);
                None
            }
        }
    }

    /// For the addresses of `addrs` outside the static local domains (so in
    /// a virtual domain): does the directory know the mailbox (`Err`: it
    /// cannot say now)? Static local addresses are not in the map.
    pub(super) async fn virtual_mailboxes(&self, s: &Settings, addrs: &[String]) -> HashMap<String, Result<bool, ()>> {
        let mut out = HashMap::new();
        let Some(dir) = self.inner.directory.get() else { return out };
        for a in addrs {
            if s.is_local_domain(&domain_of(a)) {
                continue;
            }
            let lower = a.to_ascii_lowercase();
            let known = match dir.alias(&lower).await {
                Ok(t) if !t.is_empty() => Ok(true),
                Ok(_) => dir.mailbox(&lower).await.map_err(|_| ()),
                Err(_) => Err(()),
            };
            out.insert(a.clone(), known);
        }
        out
    }
}
