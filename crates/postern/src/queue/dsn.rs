//! The notices the scheduler sends to senders after an attempt (RFC 3461
//! §6.2): success notices, delay warnings every `queue.delay_warning`, and
//! bounces of failed recipients. The reports themselves are built by
//! `bounce`; they are queued like any message, from the null sender, and
//! never to the null sender (RFC 5321 §4.5.5).
//!
//! May touch: the spool (queues the notices), the mail log.

use std::collections::HashMap;

use super::Scheduler;
use crate::bounce;
use crate::delivery::DeliveryReply;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{enqueue, Envelope, RcptStatus};
use crate::time::{now_unix, rfc5322_date};

impl Scheduler {
    /// Queues a report (success or delay notice) for `entries`; never to the null sender.
    pub(super) fn notify(&self, settings: &Settings, env: &Envelope, body: &[u8], entries: Vec<bounce::Failure>) -> bool {
        if entries.is_empty() || env.sender.is_empty() {
            return false;
        }
        let kind = entries[0].action.as_str();
        let text = bounce::build(&settings.hostname, env, &entries, body, &rfc5322_date(), settings.config.queue.bounce_size_limit);
        match enqueue(&self.inner.spool, "", std::slice::from_ref(&env.sender), &text, "local") {
            Ok(nid) => {
                maillog::dsn(&[("id", env.id.as_str()), ("kind", kind), ("notice_id", nid.as_str()), ("to", &env.sender)]);
                let _ = self.inner.queued.send(nid);
                true
            }
            Err(e) => {
                maillog::error(&[("id", env.id.as_str()), ("error", &format!("cannot queue {kind} notice: {e}"))]);
                false
            }
        }
    }

    /// RFC 3464 "delayed" notices for recipients still pending after
    /// `queue.delay_warning`, at most once per interval.
    pub(super) fn delay_warnings(&self, settings: &Settings, env: &mut Envelope, body: &[u8], fresh: &HashMap<usize, DeliveryReply>) {
        let interval = settings.config.queue.delay_warning.as_secs();
        if interval == 0 || env.sender.is_empty() {
            return;
        }
        let now = now_unix();
        if now.saturating_sub(env.created) < interval {
            return;
        }
        let due: Vec<usize> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == RcptStatus::Pending && r.wants("DELAY") && now.saturating_sub(r.warned_at) >= interval)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return;
        }
        let entries = due
            .iter()
            .map(|&i| {
                let r = &env.recipients[i];
                match fresh.get(&i) {
                    Some(reply) => bounce::Failure::new(r, reply.clone(), bounce::Action::Delayed),
                    None => bounce::Failure::from_recipient(r, bounce::Action::Delayed),
                }
            })
            .collect();
        if self.notify(settings, env, body, entries) {
            for i in due {
                env.recipients[i].warned_at = now;
            }
        }
    }

    /// Queues a bounce for failures that owe one; never for the null sender.
    pub(super) fn bounce_failures(&self, settings: &Settings, env: &mut Envelope, body: &[u8], fresh: &HashMap<usize, DeliveryReply>) {
        // NOTIFY without FAILURE (e.g. NEVER): no bounce is owed.
        for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Failed && !r.wants("FAILURE")) {
            r.bounced = true;
        }
        let failures = bounce::owed(env, fresh);
        if failures.is_empty() {
            return;
        }
        if env.sender.is_empty() {
            maillog::bounced(&[("id", env.id.as_str()), ("result", "suppressed: null sender, never bounce a bounce")]);
        } else {
            let text = bounce::build(&settings.hostname, env, &failures, body, &rfc5322_date(), settings.config.queue.bounce_size_limit);
            match enqueue(&self.inner.spool, "", std::slice::from_ref(&env.sender), &text, "local") {
                Ok(bid) => {
                    maillog::bounced(&[("id", env.id.as_str()), ("bounce_id", bid.as_str()), ("to", &env.sender)]);
                    let _ = self.inner.queued.send(bid);
                }
                Err(e) => {
                    // Keep the failures owed; the next attempt tries again.
                    maillog::error(&[("id", env.id.as_str()), ("error", &format!("cannot queue bounce: {e}"))]);
                    return;
                }
            }
        }
        for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Failed) {
            r.bounced = true;
        }
    }
}
