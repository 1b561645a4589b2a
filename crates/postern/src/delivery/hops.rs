//! A route's next hops tried in order (`next_hops`; the smarthost and a
//! route with one `next_hop` are a list of one): when a hop opens no
//! session (connection refused or timed out, a 4xx/5xx greeting, EHLO
//! refused, TLS or AUTH failure) the next one is tried, like Postfix with a
//! list of relay hosts. Once a hop has taken the transaction its replies
//! are final for this attempt. The mail log's `relay=` names the hop that
//! took the mail; each skipped hop gets a `deferred` line with
//! `action=next hop`.
//!
//! May touch: through [`Smarthost`], outbound connections to the hops.
//! RFC 5321 §5.1 (try the next host on a failure to open a session).

use std::sync::Arc;

use super::pool::Smarthost;
use super::smtp::ConnError;
use super::{Attempt, BoxFuture, Message, Outcome, Transport};
use crate::maillog;

/// The next hops of one route, each with its own connection pool.
pub struct Hops {
    hops: Vec<Arc<Smarthost>>,
}

impl Hops {
    /// The hops in the order they are tried (at least one).
    pub fn new(hops: Vec<Arc<Smarthost>>) -> Hops {
        Hops { hops }
    }
}

/// What to do after hop `n` of `count` failed to open a session: the
/// index of the next hop to try, or `None` when none is left. Every
/// session-level failure moves on (the next hop may well work); errors
/// after the session opened never reach here.
pub fn next_hop(n: usize, count: usize, _error: &ConnError) -> Option<usize> {
    (n + 1 < count).then_some(n + 1)
}

impl Transport for Hops {
    fn name(&self) -> String {
        self.hops.first().map(|h| h.name()).unwrap_or_else(|| "smtp".into())
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut n = 0;
            loop {
                let Some(hop) = self.hops.get(n) else {
                    let reply = super::DeliveryReply::status_only(postern_wire::Enhanced(4, 3, 5), "route has no next hop");
                    return Attempt::all(Outcome::Deferred(reply), rcpts.len(), None);
                };
                match hop.try_deliver(msg, rcpts).await {
                    Ok(mut a) => {
                        a.relay.get_or_insert_with(|| hop.name());
                        return a;
                    }
                    Err(e) => match next_hop(n, self.hops.len(), &e) {
                        Some(next) => {
                            let to = rcpts.join(",");
                            let action = format!("next hop {}", self.hops[next].name());
                            let reply = e.to_string();
                            let relay = hop.name();
                            let fields = [("id", msg.id.as_str()), ("to", &to), ("relay", &relay), ("reply", &reply), ("action", &action)];
                            maillog::deferred(&fields);
                            n = next;
                        }
                        None => {
                            let mut a = Attempt::all(Outcome::Deferred(e.reply()), rcpts.len(), None);
                            a.relay = Some(hop.name());
                            return a;
                        }
                    },
                }
            }
        })
    }
}
