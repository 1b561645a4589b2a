//! The notices the scheduler sends to senders after an attempt (RFC 3461
//! §6.2): success notices, delay warnings every `queue.delay_warning`, and
//! bounces of failed recipients. The reports themselves are built by
//! `bounce`; they are queued like any message, from the null sender, and
//! never to the null sender (RFC 5321 §4.5.5).
//!
//! A bounce that cannot be delivered (a double bounce) goes to postmaster,
//! like Postfix's `2bounce_notice_recipient`; one that fails again is
//! dropped with a log line.
//!
//! May touch: the spool (queues the notices), the mail log.

use std::collections::HashMap;

use super::Scheduler;
use crate::bounce;
use crate::delivery::DeliveryReply;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{enqueue_notice, Envelope, RcptStatus};
use crate::time::{now_unix, rfc5322_date};

impl Scheduler {
    /// Queues a report (success or delay notice) for `entries`; never to the null sender.
    pub(super) fn notify(&self, settings: &Settings, env: &Envelope, body: &[u8], entries: Vec<bounce::Failure>) -> bool {
        if entries.is_empty() || env.sender.is_empty() {
            return false;
        }
        let kind = entries[0].action.as_str();
        let text = bounce::build(&settings.hostname, env, &entries, body, &rfc5322_date(), settings.config.queue.bounce_size_limit);
        match enqueue_notice(&self.inner.spool, "", std::slice::from_ref(&env.sender), &text, "local", env.requiretls) {
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
        // A bounce (null sender) that fails is a double bounce: it goes to
        // postmaster (Postfix `2bounce_notice_recipient`), from the null
        // sender. A double bounce that fails, or anything to postmaster
        // that fails from the null sender, is dropped with a log line:
        // that is where the loop ends.
        let to = match double_bounce_target(settings, env) {
            Target::Sender => env.sender.clone(),
            Target::Postmaster(p) => p,
            Target::Drop(why) => {
                maillog::bounced(&[("id", env.id.as_str()), ("result", why)]);
                String::new()
            }
        };
        if !to.is_empty() {
            let client = if env.sender.is_empty() { DOUBLE_BOUNCE_CLIENT } else { "local" };
            let mut report = env.clone();
            report.sender.clone_from(&to);
            let text =
                bounce::build(&settings.hostname, &report, &failures, body, &rfc5322_date(), settings.config.queue.bounce_size_limit);
            // RFC 8689 §5: a notice about a REQUIRETLS message is sent with REQUIRETLS.
            match enqueue_notice(&self.inner.spool, "", std::slice::from_ref(&to), &text, client, env.requiretls) {
                Ok(bid) => {
                    maillog::bounced(&[("id", env.id.as_str()), ("bounce_id", bid.as_str()), ("to", &to)]);
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

/// The envelope `client` of a double bounce (a bounce of a bounce, sent
/// to postmaster): if it fails in turn, it is dropped, never bounced again.
pub(super) const DOUBLE_BOUNCE_CLIENT: &str = "double-bounce";

/// Where the bounce of `env`'s failures goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// To the sender: the normal bounce.
    Sender,
    /// To postmaster at our host name: the message was itself a bounce.
    Postmaster(String),
    /// Nowhere (why, for the log): a double bounce, or a bounce to postmaster, failed.
    Drop(&'static str),
}

/// Decides where a bounce of `env` goes (pure, table-tested).
pub(super) fn double_bounce_target(settings: &Settings, env: &Envelope) -> Target {
    if !env.sender.is_empty() {
        return Target::Sender;
    }
    if env.client == DOUBLE_BOUNCE_CLIENT {
        return Target::Drop("dropped: a double bounce to postmaster failed");
    }
    let to_postmaster = env.recipients.iter().filter(|r| r.status == RcptStatus::Failed).any(|r| {
        let (local, domain) = r.address.rsplit_once('@').unwrap_or((&r.address, ""));
        local.eq_ignore_ascii_case("postmaster") && (domain.is_empty() || settings.is_local_domain(&domain.to_ascii_lowercase()))
    });
    if to_postmaster {
        return Target::Drop("dropped: a bounce to postmaster failed");
    }
    Target::Postmaster(format!("postmaster@{}", settings.hostname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Source;
    use crate::spool::{QueueId, Recipient};

    fn env(sender: &str, client: &str, failed: &str) -> Envelope {
        let mut r = Recipient::pending(failed, failed);
        r.status = RcptStatus::Failed;
        Envelope {
            version: crate::spool::ENVELOPE_VERSION,
            id: QueueId::generate(),
            created: 0,
            sender: sender.into(),
            recipients: vec![r],
            size: 1,
            eight_bit: false,
            smtputf8: false,
            client: client.into(),
            helo: None,
            ret: None,
            envid: None,
            quarantine: None,
            requiretls: false,
        }
    }

    #[test]
    fn double_bounces_go_to_postmaster_once() {
        let mut config = crate::config::Config::default();
        config.hostname = Some("mx.test".into());
        let s = Settings::from_config(config, &Source { config: None, data_dir: Some("/nonexistent".into()) }).unwrap();
        let pm = Target::Postmaster("postmaster@mx.test".into());
        let table = [
            (env("alice@mx.test", "local", "bob@far.test"), Target::Sender),
            (env("", "local", "root@far.test"), pm),
            (env("", "203.0.113.9", "someone@far.test"), Target::Postmaster("postmaster@mx.test".into())),
            (env("", DOUBLE_BOUNCE_CLIENT, "postmaster@mx.test"), Target::Drop("dropped: a double bounce to postmaster failed")),
            (env("", "local", "Postmaster@MX.test"), Target::Drop("dropped: a bounce to postmaster failed")),
            (env("", "local", "postmaster@far.test"), Target::Postmaster("postmaster@mx.test".into())),
        ];
        for (e, want) in table {
            assert_eq!(double_bounce_target(&s, &e), want, "{} -> {}", e.client, e.recipients[0].address);
        }
    }
}
