//! One delivery attempt of one message: load the envelope, group pending
//! recipients by route, call each route's transport, record the outcomes
//! in the envelope, expire, send the notices owed, then remove or
//! reschedule the message.
//!
//! May touch: the spool (through `Spool`), transports, the mail log.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::retry::retry_delay;
use super::Scheduler;
use crate::bounce;
use crate::delivery::reply::made;
use crate::delivery::{Attempt, DeliveryReply, Message, Outcome, Route, Transport};
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{Envelope, Place, QueueId, RcptStatus, SpoolError};
use crate::time::now_unix;

impl Scheduler {
    /// Local delivery only to mailboxes we know (users, aliases' targets,
    /// the user database); others fail with 550 5.1.1 instead of creating a
    /// new mailbox (bounces and local submission reach this path unchecked).
    async fn deliver_known_local(&self, s: &Settings, t: &dyn Transport, msg: &Message, addrs: &[String]) -> Attempt {
        let db = self.inner.users.get();
        let virt = self.virtual_mailboxes(s, addrs).await;
        let known = |a: &String| {
            if let Some(v) = virt.get(a) {
                return *v == Ok(true);
            }
            let local = a.rsplit_once('@').map(|(l, _)| l).unwrap_or(a).to_ascii_lowercase();
            s.users.contains(&local) || s.aliases.contains(&local) || db.users.contains_key(&local) || alias_target(s, &local)
        };
        let ok: Vec<String> = addrs.iter().filter(|a| known(a)).cloned().collect();
        let mut delivered =
            if ok.is_empty() { Attempt::all(Outcome::Deferred(made::no_outcome()), 0, None) } else { t.deliver(msg, &ok).await };
        let mut it = delivered.outcomes.drain(..);
        let outcomes = addrs
            .iter()
            .map(|a| {
                if known(a) {
                    it.next().unwrap_or_else(|| Outcome::Deferred(made::no_outcome()))
                } else if virt.get(a).is_some_and(|v| v.is_err()) {
                    Outcome::Deferred(made::directory_unavailable(a))
                } else {
                    Outcome::Failed(made::no_such_local_mailbox(a))
                }
            })
            .collect();
        Attempt { outcomes, tls: None, dsn: false, relay: None }
    }

    /// Delivers `addrs` (all on route `rt`): builds or reuses the route's
    /// transport and calls it, deferring everyone still open at `deadline`.
    /// Returns the `relay=` name and the attempt.
    async fn deliver_route(&self, s: &Settings, rt: &Route, msg: &Message, addrs: &[String], deadline: Instant) -> (String, Attempt) {
        match self.inner.transports.for_route(s, rt) {
            Ok(t) => {
                let delivery = async {
                    if *rt == Route::Maildir {
                        self.deliver_known_local(s, t.as_ref(), msg, addrs).await
                    } else {
                        t.deliver(msg, addrs).await
                    }
                };
                let a = match tokio::time::timeout_at(deadline, delivery).await {
                    Ok(a) => a,
                    Err(_) => {
                        let timed_out = made::attempt_timed_out(s.config.queue.attempt_timeout);
                        Attempt::all(Outcome::Deferred(timed_out), addrs.len(), None)
                    }
                };
                (a.relay.clone().unwrap_or_else(|| t.name()), a)
            }
            Err(e) => (e.relay().to_string(), Attempt::all(Outcome::Deferred(e.reply()), addrs.len(), None)),
        }
    }

    /// One delivery attempt for a message. Returns its next due time, or
    /// `None` when it is finished, held or gone.
    pub(super) async fn attempt(&self, id: &QueueId) -> Option<u64> {
        let spool = &self.inner.spool;
        let settings = self.inner.settings.current();
        // One read of the queue file: envelope and text.
        let (mut env, body) = match spool.load_active_with_text(id) {
            Ok(Some((env, text))) => (env, Arc::new(text)),
            Ok(None) => return None, // held
            Err(SpoolError::NotFound(_)) => return None,
            Err(e @ SpoolError::Damaged { .. }) => {
                // A damaged queue file (text checksum mismatch, trailer
                // gone): never delivered, set aside for the operator
                // instead of retried for ever.
                spool.set_aside_logged(id, &e.to_string());
                return None;
            }
            Err(e @ SpoolError::Corrupt { .. }) => {
                // An envelope that does not parse (damaged, or a newer
                // version's after a downgrade): left in place, as the
                // listing reports it.
                maillog::error(&[("id", id.as_str()), ("error", &e.to_string())]);
                return None;
            }
            Err(e) => {
                maillog::error(&[("id", id.as_str()), ("error", &e.to_string())]);
                return Some(now_unix() + settings.config.queue.retry_min.as_secs().max(1));
            }
        };
        let msg = message(&env, body.clone());
        let mut success_notices: Vec<bounce::Failure> = Vec::new();
        // The typed replies of this attempt, by recipient index (notices use them).
        let mut fresh: HashMap<usize, DeliveryReply> = HashMap::new();
        // Group pending recipients by route.
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        for (i, r) in env.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending {
                continue;
            }
            let Some(rt) = self.route_with_directory(&settings, &msg.sender, &r.address).await else { continue };
            match groups.iter_mut().find(|(g, _)| *g == rt) {
                Some((_, v)) => v.push(i),
                None => groups.push((rt, vec![i])),
            }
        }
        let now = now_unix();
        // One overall deadline for the attempt (F2): a next hop that stalls
        // cannot hold a delivery worker longer than this, whatever the
        // per-step timeouts add up to.
        let deadline = Instant::now() + settings.config.queue.attempt_timeout;
        for (rt, idx) in groups {
            let addrs: Vec<String> = idx.iter().map(|&i| env.recipients[i].address.clone()).collect();
            let local = rt.is_local();
            let started = std::time::Instant::now();
            let (relay, attempt) = self.deliver_route(&settings, &rt, &msg, &addrs, deadline).await;
            crate::metrics::delivery_duration(&relay, started.elapsed());
            let tls = attempt.tls.clone().unwrap_or_else(|| "-".into());
            let remote_mta = (!local).then(|| remote_mta(&relay));
            for (&i, o) in idx.iter().zip(attempt.outcomes) {
                let r = &mut env.recipients[i];
                r.attempts += 1;
                let reply = o.reply().to_string();
                r.last_reply = Some(reply.clone());
                let delay = format!("{}s", now.saturating_sub(env.created));
                let attempts = r.attempts.to_string();
                let fields = [
                    ("id", id.as_str()),
                    ("to", r.address.as_str()),
                    ("relay", relay.as_str()),
                    ("attempt", attempts.as_str()),
                    ("delay", delay.as_str()),
                    ("tls", tls.as_str()),
                    ("reply", reply.as_str()),
                ];
                if remote_mta.is_some() {
                    r.remote_mta = remote_mta.clone();
                }
                match &o {
                    Outcome::Delivered(_) => {
                        r.status = RcptStatus::Delivered;
                        maillog::delivered(&fields);
                        // RFC 3461 §6.2.2: we report success ourselves for local
                        // delivery and when the next hop cannot carry the request.
                        if r.wants("SUCCESS") && (local || !attempt.dsn) {
                            let action = if local { bounce::Action::Delivered } else { bounce::Action::Relayed };
                            success_notices.push(bounce::Failure::new(r, o.reply().clone(), action));
                        }
                    }
                    Outcome::Failed(_) => {
                        r.status = RcptStatus::Failed;
                        maillog::failed(&fields);
                    }
                    Outcome::Deferred(_) => {
                        let q = &settings.config.queue;
                        let d = retry_delay(r.attempts, q.retry_min, q.retry_max, rand::random::<f64>());
                        r.next_attempt = now_unix() + d.as_secs().max(1);
                        maillog::deferred(&fields);
                    }
                }
                fresh.insert(i, o.reply().clone());
            }
        }
        expire(&settings, &mut env, &mut fresh);
        self.notify(&settings, &env, &body, success_notices);
        self.delay_warnings(&settings, &mut env, &body, &fresh);
        self.bounce_failures(&settings, &mut env, &body, &fresh);
        if env.is_finished() {
            self.remember_finished(&env);
            if let Err(e) = spool.remove(id) {
                maillog::error(&[("id", id.as_str()), ("error", &e.to_string())]);
            } else {
                maillog::removed(&[("id", id.as_str())]);
            }
            return None;
        }
        match spool.update(&env, Place::Active) {
            Ok(()) => env.next_attempt(),
            Err(SpoolError::NotFound(_)) => None, // deleted or held meanwhile
            Err(e) => {
                maillog::error(&[("id", id.as_str()), ("error", &e.to_string())]);
                env.next_attempt()
            }
        }
    }
}

/// The message as the transports see it.
pub(super) fn message(env: &Envelope, body: Arc<Vec<u8>>) -> Message {
    let tls_required_no = crate::delivery::smtp::policy::tls_required_no(&body);
    Message {
        id: env.id.clone(),
        sender: env.sender.clone(),
        body,
        eight_bit: env.eight_bit,
        smtputf8: env.smtputf8,
        dsn: crate::delivery::Dsn {
            ret: env.ret.clone(),
            envid: env.envid.clone(),
            rcpts: env.recipients.iter().map(|r| (r.address.clone(), (r.notify.clone(), r.orcpt.clone()))).collect(),
        },
        requiretls: env.requiretls,
        tls_required_no,
    }
}

/// RFC 3464 Remote-MTA: the host name of a `relay=` value, without address or port.
fn remote_mta(relay: &str) -> String {
    let r = relay.trim_start_matches("smtp:").trim_start_matches("mx:");
    let r = r.split('[').next().unwrap_or(r);
    match r.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => r.to_string(),
    }
}

/// Expiry: pending recipients of mail older than `queue.max_lifetime` fail
/// with 4.4.7 and the last reply.
pub(super) fn expire(settings: &Settings, env: &mut Envelope, fresh: &mut HashMap<usize, DeliveryReply>) {
    let lifetime = settings.config.queue.max_lifetime.as_secs();
    if now_unix().saturating_sub(env.created) < lifetime {
        return;
    }
    let id = env.id.clone();
    for (i, r) in env.recipients.iter_mut().enumerate().filter(|(_, r)| r.status == RcptStatus::Pending) {
        r.status = RcptStatus::Failed;
        let reply = made::expired(r.last_reply.as_deref().unwrap_or_default());
        r.last_reply = Some(reply.to_string());
        fresh.insert(i, reply);
        maillog::expired(&[("id", id.as_str()), ("to", &r.address)]);
    }
}

/// True if `local` is the final target of some alias (aliases may point
/// to mailbox names that are not listed users).
fn alias_target(s: &Settings, local: &str) -> bool {
    s.aliases.targets().any(|t| t.eq_ignore_ascii_case(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mta_is_the_host_name() {
        assert_eq!(remote_mta("mx:mx1.good.test[127.0.0.2]:25"), "mx1.good.test");
        assert_eq!(remote_mta("smtp:relay.example:587"), "relay.example");
        assert_eq!(remote_mta("mx:down.test"), "down.test");
    }
}
