//! The recipient lookups the session and `postern explain` both make
//! before the pure recipient decision ([`crate::policy::check_rcpt`]): is
//! the domain virtual, is the address an alias, a mailbox.
//!
//! May touch: the directory (through the trait).

use super::{Directory, Lookup};
use crate::policy::DirectoryFacts;

/// What `dir` says about `local@domain` (a domain that is not a static
/// local domain): not virtual, or its alias targets and mailbox.
pub async fn rcpt_facts(dir: &dyn Directory, local: &str, domain: &str) -> Lookup<DirectoryFacts> {
    let domain = domain.to_ascii_lowercase();
    if !dir.domain(&domain).await? {
        return Ok(DirectoryFacts::default());
    }
    let address = format!("{}@{domain}", local.to_ascii_lowercase());
    let alias = dir.alias(&address).await?;
    let mailbox = alias.is_empty() && dir.mailbox(&address).await?;
    Ok(DirectoryFacts { virtual_domain: true, alias, mailbox })
}
