//! The scheduler: decides when each queued message is tried, runs delivery
//! attempts with bounded concurrency, records per-recipient results in the
//! envelope, bounces failures and expired mail, and removes finished
//! messages.
//!
//! May touch: the spool (through `Spool`), transports. Retry timing is the
//! pure function [`retry_delay`]: exponential from `queue.retry_min`, capped
//! at `queue.retry_max`, with ±10% jitter so retries of many messages do
//! not arrive in step (chasquid's `nextDelay`, Postfix's backoff).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::bounce;
use crate::delivery::client::{Lmtp, Smarthost};
use crate::delivery::maildir::Maildir;
use crate::delivery::mx::MxDelivery;
use crate::delivery::{route, Attempt, Message, Outcome, Route, Transport};
use crate::maillog;
use crate::server::Shared;
use crate::time::rfc5322_date;
use crate::time::now_unix;
use crate::spool::{Envelope, Place, QueueId, RcptStatus, Recipient, Spool, SpoolError, ENVELOPE_VERSION};

/// The delay before attempt `attempts + 1`, given `attempts` made so far
/// (≥ 1) and `jitter` in [0, 1).
pub fn retry_delay(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp.min(31)).min(max);
    let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).max(Duration::from_secs(1))
}

/// Due times, indexed by id and by time, so a queue of many thousands of
/// messages costs O(log n) per operation instead of a scan per pass.
#[derive(Debug, Default)]
struct DueQueue {
    by_id: HashMap<QueueId, u64>,
    order: std::collections::BTreeSet<(u64, QueueId)>,
}

impl DueQueue {
    fn insert(&mut self, id: QueueId, at: u64) {
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.order.remove(&(old, id.clone()));
        }
        self.order.insert((at, id));
    }

    fn insert_if_absent(&mut self, id: QueueId, at: u64) {
        if !self.by_id.contains_key(&id) {
            self.insert(id, at);
        }
    }

    fn remove(&mut self, id: &QueueId) {
        if let Some(at) = self.by_id.remove(id) {
            self.order.remove(&(at, id.clone()));
        }
    }

    /// Up to `max` ids due at `now`, earliest first, skipping running ones.
    fn ready(&self, now: u64, max: usize, running: &HashSet<QueueId>) -> Vec<QueueId> {
        self.order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, id)| !running.contains(id))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn earliest(&self) -> Option<u64> {
        self.order.iter().next().map(|(at, _)| *at)
    }
}

/// The scheduler handle.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    spool: Spool,
    queued: mpsc::UnboundedSender<QueueId>,
    /// Next attempt (unix seconds) of each message we know about.
    due: Mutex<DueQueue>,
    running: Mutex<HashSet<QueueId>>,
    wake: Notify,
    smarthosts: Mutex<HashMap<String, Arc<Smarthost>>>,
    routes: Mutex<HashMap<String, Arc<Smarthost>>>,
    mx: Mutex<Option<(String, Arc<MxDelivery>)>>,
}

impl Scheduler {
    /// A scheduler over `spool`.
    pub fn new(shared: Arc<Shared>, spool: Spool, queued: mpsc::UnboundedSender<QueueId>) -> Scheduler {
        Scheduler {
            inner: Arc::new(Inner {
                shared,
                spool,
                queued,
                due: Mutex::new(DueQueue::default()),
                running: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                smarthosts: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
                mx: Mutex::new(None),
            }),
        }
    }

    /// Re-reads the active queue from disk; with `force`, everything is due now.
    /// Returns how many messages were scheduled.
    pub fn rescan(&self, force: bool) -> usize {
        let (list, bad) = match self.inner.spool.list() {
            Ok(x) => x,
            Err(e) => {
                maillog::event("error", &[("error", &e.to_string())]);
                return 0;
            }
        };
        for e in bad {
            maillog::event("error", &[("error", &e.to_string()), ("action", "left in place")]);
        }
        let mut due = lock(&self.inner.due);
        let mut n = 0;
        for (env, place) in list {
            if place != Place::Active {
                continue;
            }
            if force {
                due.insert(env.id.clone(), 0);
            } else {
                due.insert_if_absent(env.id.clone(), env.next_attempt().unwrap_or(0));
            }
            n += 1;
        }
        drop(due);
        self.inner.wake.notify_one();
        n
    }

    /// Makes one message due now (after a flush or release).
    pub fn kick(&self, id: QueueId) {
        lock(&self.inner.due).insert(id, 0);
        self.inner.wake.notify_one();
    }

    /// The scheduling loop.
    pub async fn run(self, mut queued: mpsc::UnboundedReceiver<QueueId>, mut shutdown: watch::Receiver<bool>) {
        self.rescan(false);
        let concurrency = self.inner.shared.settings().config.queue.concurrency;
        let sem = Arc::new(Semaphore::new(concurrency));
        loop {
            while let Ok(id) = queued.try_recv() {
                lock(&self.inner.due).insert(id, 0);
            }
            let now = now_unix();
            let ready: Vec<QueueId> = {
                let due = lock(&self.inner.due);
                let running = lock(&self.inner.running);
                due.ready(now, sem.available_permits(), &running)
            };
            for id in ready {
                let Ok(permit) = sem.clone().try_acquire_owned() else { break };
                lock(&self.inner.due).remove(&id);
                lock(&self.inner.running).insert(id.clone());
                let me = self.clone();
                tokio::spawn(async move {
                    let next = me.attempt(&id).await;
                    lock(&me.inner.running).remove(&id);
                    if let Some(at) = next {
                        lock(&me.inner.due).insert(id, at);
                    }
                    drop(permit);
                    me.inner.wake.notify_one();
                });
            }
            let sleep = {
                let next = lock(&self.inner.due).earliest();
                match next {
                    Some(at) if at <= now => Duration::from_millis(200), // waiting for a permit
                    Some(at) => Duration::from_secs((at - now).min(60)),
                    None => Duration::from_secs(60),
                }
            };
            tokio::select! {
                Some(id) = queued.recv() => { lock(&self.inner.due).insert(id, 0); }
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
        }
        // Let attempts in flight finish briefly; anything cut short is retried after restart.
        let _ = tokio::time::timeout(Duration::from_secs(3), sem.acquire_many(concurrency as u32)).await;
    }

    /// The smarthost transport for the current settings; rebuilt (new
    /// pool, new TLS material) when the relevant settings change.
    fn smarthost(&self, s: &crate::settings::Settings) -> Result<Arc<Smarthost>, String> {
        let r = &s.config.relay;
        let ep = r.smarthost.as_ref().ok_or("4.3.5 relay.smarthost is not configured")?;
        let key = format!(
            "{ep}|{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            s.hostname,
            r.smarthost_tls,
            r.smarthost_implicit_tls,
            r.smarthost_ca_files,
            r.smarthost_server_name,
            r.smarthost_client_certificate,
            r.smarthost_client_key,
            r.smarthost_username,
            r.smarthost_password_file,
            r.smarthost_auth_plaintext
        );
        if let Some(t) = lock(&self.inner.smarthosts).get(&key) {
            return Ok(t.clone());
        }
        let t = Arc::new(Smarthost::from_settings(s).map_err(|e| format!("4.7.0 smarthost TLS setup: {e}"))?);
        let mut map = lock(&self.inner.smarthosts);
        map.clear();
        map.insert(key, t.clone());
        Ok(t)
    }

    /// Local delivery only to mailboxes we know (users, aliases' targets,
    /// the user database); others fail with 550 5.1.1 instead of creating a
    /// new mailbox (bounces and local submission reach this path unchecked).
    async fn deliver_known_local(&self, s: &crate::settings::Settings, t: &dyn Transport, msg: &Message, addrs: &[String]) -> Attempt {
        let db = self.inner.shared.users.get();
        let known = |a: &String| {
            let local = a.rsplit_once('@').map(|(l, _)| l).unwrap_or(a).to_ascii_lowercase();
            s.users.contains(&local) || s.aliases.contains(&local) || db.users.contains_key(&local) || alias_target(s, &local)
        };
        let ok: Vec<String> = addrs.iter().filter(|a| known(a)).cloned().collect();
        let mut delivered = if ok.is_empty() { Attempt { outcomes: Vec::new(), tls: None, dsn: false } } else { t.deliver(msg, &ok).await };
        let mut it = delivered.outcomes.drain(..);
        let outcomes = addrs
            .iter()
            .map(|a| {
                if known(a) {
                    it.next().unwrap_or_else(|| Outcome::Deferred("4.3.0 no outcome".into()))
                } else {
                    Outcome::Failed(format!("550 5.1.1 <{a}>: no such local mailbox"))
                }
            })
            .collect();
        Attempt { outcomes, tls: None, dsn: false }
    }

    /// The MX delivery state for the current `[mx]` settings.
    fn mx(&self, s: &crate::settings::Settings) -> Result<Arc<MxDelivery>, String> {
        let key = format!("{:?}|{}", s.config.mx, s.hostname);
        let mut g = lock(&self.inner.mx);
        if let Some((k, m)) = g.as_ref() {
            if *k == key {
                return Ok(m.clone());
            }
        }
        let m = Arc::new(MxDelivery::new(s)?);
        *g = Some((key, m.clone()));
        Ok(m)
    }

    /// Delivers over a `[[route]]` entry.
    async fn custom_route(&self, s: &crate::settings::Settings, i: usize, msg: &Message, addrs: &[String]) -> (String, Attempt) {
        let Some(r) = s.config.routes.get(i) else {
            return ("none".into(), Attempt::all(Outcome::Deferred("4.3.5 route vanished after reload".into()), addrs.len(), None));
        };
        match (r.transport.as_str(), &r.next_hop) {
            ("maildir", _) => {
                let t = Maildir { root: s.maildir_root.clone(), hostname: s.hostname.clone() };
                (t.name(), t.deliver(msg, addrs).await)
            }
            ("lmtp", Some(ep)) => match Lmtp::from_settings(s, ep) {
                Ok(t) => (t.name(), t.deliver(msg, addrs).await),
                Err(e) => ("lmtp".into(), Attempt::all(Outcome::Deferred(e), addrs.len(), None)),
            },
            ("smtp", Some(ep)) => {
                let key = ep.to_string();
                let cached = lock(&self.inner.routes).get(&key).cloned();
                let t = match cached {
                    Some(t) => t,
                    None => match Smarthost::for_route(s, ep.clone()) {
                        Ok(t) => {
                            let t = Arc::new(t);
                            lock(&self.inner.routes).insert(key, t.clone());
                            t
                        }
                        Err(e) => return ("smtp".into(), Attempt::all(Outcome::Deferred(format!("4.7.0 {e}")), addrs.len(), None)),
                    },
                };
                (t.name(), t.deliver(msg, addrs).await)
            }
            _ => (
                "mx".into(),
                Attempt::all(Outcome::Deferred("4.4.0 transport mx: direct MX delivery is not built yet".into()), addrs.len(), None),
            ),
        }
    }

    /// One delivery attempt for a message. Returns its next due time, or
    /// `None` when it is finished, held or gone.
    async fn attempt(&self, id: &QueueId) -> Option<u64> {
        let spool = &self.inner.spool;
        let (mut env, place) = match spool.load(id) {
            Ok(x) => x,
            Err(SpoolError::NotFound(_)) => return None,
            Err(e) => {
                maillog::event("error", &[("id", id.as_str()), ("error", &e.to_string())]);
                return None;
            }
        };
        if place != Place::Active {
            return None;
        }
        let settings = self.inner.shared.settings();
        let body = match spool.read_body(id) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                maillog::event("error", &[("id", id.as_str()), ("error", &e.to_string())]);
                return Some(now_unix() + settings.config.queue.retry_min.as_secs().max(1));
            }
        };
        let msg = Message {
            id: id.clone(),
            sender: env.sender.clone(),
            body: body.clone(),
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8,
            dsn: crate::delivery::Dsn {
                ret: env.ret.clone(),
                envid: env.envid.clone(),
                rcpts: env.recipients.iter().map(|r| (r.address.clone(), (r.notify.clone(), r.orcpt.clone()))).collect(),
            },
        };
        let mut success_notices: Vec<bounce::Failure> = Vec::new();
        // Group pending recipients by route.
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        for (i, r) in env.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending {
                continue;
            }
            let rt = route(&settings, &r.address);
            match groups.iter_mut().find(|(g, _)| *g == rt) {
                Some((_, v)) => v.push(i),
                None => groups.push((rt, vec![i])),
            }
        }
        let now = now_unix();
        for (rt, idx) in groups {
            let addrs: Vec<String> = idx.iter().map(|&i| env.recipients[i].address.clone()).collect();
            let local = matches!(rt, Route::Maildir | Route::Lmtp);
            let (relay, attempt): (String, Attempt) = match rt {
                Route::Maildir => {
                    let t = Maildir { root: settings.maildir_root.clone(), hostname: settings.hostname.clone() };
                    (t.name(), self.deliver_known_local(&settings, &t, &msg, &addrs).await)
                }
                Route::Lmtp => match &settings.config.local.lmtp {
                    Some(ep) => match Lmtp::from_settings(&settings, ep) {
                        Ok(t) => (t.name(), t.deliver(&msg, &addrs).await),
                        Err(e) => ("lmtp".into(), Attempt::all(Outcome::Deferred(e), addrs.len(), None)),
                    },
                    None => ("lmtp".into(), Attempt::all(Outcome::Deferred("4.3.5 local.lmtp is not configured".into()), addrs.len(), None)),
                },
                Route::Smarthost => match self.smarthost(&settings) {
                    Ok(t) => (t.name(), t.deliver(&msg, &addrs).await),
                    Err(e) => ("none".into(), Attempt::all(Outcome::Deferred(e), addrs.len(), None)),
                },
                Route::Custom(i) => self.custom_route(&settings, i, &msg, &addrs).await,
                Route::Mx(domain) => match self.mx(&settings) {
                    Ok(mx) => mx.deliver(&domain, &msg, &addrs).await,
                    Err(e) => ("mx".into(), Attempt::all(Outcome::Deferred(format!("4.3.5 {e}")), addrs.len(), None)),
                },
            };
            let tls = attempt.tls.clone().unwrap_or_else(|| "-".into());
            // RFC 3464 Remote-MTA: the host name, without address or port.
            let remote_mta = (!local).then(|| {
                let r = relay.trim_start_matches("smtp:").trim_start_matches("mx:");
                let r = r.split('[').next().unwrap_or(r);
                match r.rsplit_once(':') {
                    Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h.to_string(),
                    _ => r.to_string(),
                }
            });
            for (&i, o) in idx.iter().zip(attempt.outcomes) {
                let r = &mut env.recipients[i];
                r.attempts += 1;
                r.last_reply = Some(o.text().to_string());
                let delay = format!("{}s", now.saturating_sub(env.created));
                let attempts = r.attempts.to_string();
                let fields = [
                    ("id", id.as_str()),
                    ("to", r.address.as_str()),
                    ("relay", relay.as_str()),
                    ("attempt", attempts.as_str()),
                    ("delay", delay.as_str()),
                    ("tls", tls.as_str()),
                    ("reply", o.text()),
                ];
                if remote_mta.is_some() {
                    r.remote_mta = remote_mta.clone();
                }
                match o {
                    Outcome::Delivered(_) => {
                        r.status = RcptStatus::Delivered;
                        maillog::event("delivered", &fields);
                        // RFC 3461 §6.2.2: we report success ourselves for local
                        // delivery and when the next hop cannot carry the request.
                        if r.wants("SUCCESS") && (local || !attempt.dsn) {
                            let action = if local { bounce::Action::Delivered } else { bounce::Action::Relayed };
                            success_notices.push(bounce::Failure::from_recipient(r, action));
                        }
                    }
                    Outcome::Failed(_) => {
                        r.status = RcptStatus::Failed;
                        maillog::event("failed", &fields);
                    }
                    Outcome::Deferred(_) => {
                        let q = &settings.config.queue;
                        let d = retry_delay(r.attempts, q.retry_min, q.retry_max, rand::random::<f64>());
                        r.next_attempt = now_unix() + d.as_secs().max(1);
                        maillog::event("deferred", &fields);
                    }
                }
            }
        }
        // Expiry: pending recipients of mail older than max_lifetime fail.
        let lifetime = settings.config.queue.max_lifetime.as_secs();
        if now_unix().saturating_sub(env.created) >= lifetime {
            for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Pending) {
                r.status = RcptStatus::Failed;
                let last = r.last_reply.clone().unwrap_or_default();
                r.last_reply = Some(format!("4.4.7 delivery time expired; last reply: {last}"));
                maillog::event("expired", &[("id", id.as_str()), ("to", &r.address)]);
            }
        }
        self.notify(&settings, &env, &body, success_notices);
        self.delay_warnings(&settings, &mut env, &body);
        self.bounce_failures(&settings, &mut env, &body);
        if env.is_finished() {
            if let Err(e) = spool.remove(id) {
                maillog::event("error", &[("id", id.as_str()), ("error", &e.to_string())]);
            } else {
                maillog::event("removed", &[("id", id.as_str())]);
            }
            return None;
        }
        match spool.update(&env, Place::Active) {
            Ok(()) => env.next_attempt(),
            Err(SpoolError::NotFound(_)) => None, // deleted or held meanwhile
            Err(e) => {
                maillog::event("error", &[("id", id.as_str()), ("error", &e.to_string())]);
                env.next_attempt()
            }
        }
    }

    /// Queues a report (success or delay notice) for `entries`; never to the null sender.
    fn notify(&self, settings: &crate::settings::Settings, env: &Envelope, body: &[u8], entries: Vec<bounce::Failure>) -> bool {
        if entries.is_empty() || env.sender.is_empty() {
            return false;
        }
        let kind = format!("{:?}", entries[0].action).to_ascii_lowercase();
        let text = bounce::build(&settings.hostname, env, &entries, body, &rfc5322_date());
        match enqueue(&self.inner.spool, "", &[env.sender.clone()], &text, "local") {
            Ok(nid) => {
                maillog::event("dsn", &[("id", env.id.as_str()), ("kind", &kind), ("notice_id", nid.as_str()), ("to", &env.sender)]);
                let _ = self.inner.queued.send(nid);
                true
            }
            Err(e) => {
                maillog::event("error", &[("id", env.id.as_str()), ("error", &format!("cannot queue {kind} notice: {e}"))]);
                false
            }
        }
    }

    /// RFC 3464 "delayed" notices for recipients still pending after
    /// `queue.delay_warning`, at most once per interval.
    fn delay_warnings(&self, settings: &crate::settings::Settings, env: &mut Envelope, body: &[u8]) {
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
        let entries = due.iter().map(|&i| bounce::Failure::from_recipient(&env.recipients[i], bounce::Action::Delayed)).collect();
        if self.notify(settings, env, body, entries) {
            for i in due {
                env.recipients[i].warned_at = now;
            }
        }
    }

    /// Queues a bounce for failures that owe one; never for the null sender.
    fn bounce_failures(&self, settings: &crate::settings::Settings, env: &mut Envelope, body: &[u8]) {
        // NOTIFY without FAILURE (e.g. NEVER): no bounce is owed.
        for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Failed && !r.wants("FAILURE")) {
            r.bounced = true;
        }
        let failures = bounce::owed(env);
        if failures.is_empty() {
            return;
        }
        if env.sender.is_empty() {
            maillog::event("bounced", &[("id", env.id.as_str()), ("result", "suppressed: null sender, never bounce a bounce")]);
        } else {
            let text = bounce::build(&settings.hostname, env, &failures, body, &rfc5322_date());
            match enqueue(&self.inner.spool, "", &[env.sender.clone()], &text, "local") {
                Ok(bid) => {
                    maillog::event("bounced", &[("id", env.id.as_str()), ("bounce_id", bid.as_str()), ("to", &env.sender)]);
                    let _ = self.inner.queued.send(bid);
                }
                Err(e) => {
                    // Keep the failures owed; the next attempt tries again.
                    maillog::event("error", &[("id", env.id.as_str()), ("error", &format!("cannot queue bounce: {e}"))]);
                    return;
                }
            }
        }
        for r in env.recipients.iter_mut().filter(|r| r.status == RcptStatus::Failed) {
            r.bounced = true;
        }
    }
}

/// True if `local` is the final target of some alias (aliases may point
/// to mailbox names that are not listed users).
fn alias_target(s: &crate::settings::Settings, local: &str) -> bool {
    s.aliases.targets().any(|t| t.eq_ignore_ascii_case(local))
}

/// Queues a complete message (CRLF text) for `rcpts` (already expanded).
/// Blocking (fsync). Used for bounces and local submission.
pub fn enqueue(spool: &Spool, sender: &str, rcpts: &[String], text: &[u8], client: &str) -> Result<QueueId, SpoolError> {
    let mut draft = spool.draft()?;
    draft.write(text);
    enqueue_draft(spool, draft, sender, rcpts, client, text.iter().any(|&b| b >= 0x80), None)
}

/// Commits a written draft for `rcpts`; `eight_bit` when the text has
/// octets above 127; on hold with the reason when `quarantine` is given (a
/// milter's decision).
pub fn enqueue_draft(
    spool: &Spool,
    draft: crate::spool::Draft,
    sender: &str,
    rcpts: &[String],
    client: &str,
    eight_bit: bool,
    quarantine: Option<String>,
) -> Result<QueueId, SpoolError> {
    let id = draft.id.clone();
    let env = Envelope {
        version: ENVELOPE_VERSION,
        id: id.clone(),
        created: now_unix(),
        sender: sender.to_string(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.clone(),
                original: r.clone(),
                status: RcptStatus::Pending,
                attempts: 0,
                last_reply: None,
                next_attempt: 0,
                bounced: false,
                notify: None,
                orcpt: None,
                remote_mta: None,
                warned_at: 0,
            })
            .collect(),
        size: draft.written(),
        eight_bit,
        smtputf8: sender.bytes().any(|b| b >= 0x80) || rcpts.iter().any(|r| r.bytes().any(|b| b >= 0x80)),
        client: client.to_string(),
        helo: None,
        ret: None,
        envid: None,
        quarantine: quarantine.clone(),
    };
    let place = if quarantine.is_some() { Place::Hold } else { Place::Active };
    spool.commit_to(draft, &env, place)?;
    Ok(id)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_queue_orders_and_updates() {
        let id = |n: u16| QueueId::parse(&format!("{n:016X}")).unwrap();
        let mut q = DueQueue::default();
        q.insert(id(1), 30);
        q.insert(id(2), 10);
        q.insert(id(3), 20);
        q.insert(id(1), 5);
        q.insert_if_absent(id(2), 0);
        let none = HashSet::new();
        assert_eq!(q.ready(25, 10, &none), vec![id(1), id(2), id(3)]);
        assert_eq!(q.ready(25, 1, &none), vec![id(1)]);
        let running: HashSet<QueueId> = [id(1)].into_iter().collect();
        assert_eq!(q.ready(12, 10, &running), vec![id(2)]);
        q.remove(&id(1));
        assert_eq!(q.earliest(), Some(10));
        assert_eq!(q.by_id.len(), q.order.len());
    }

    #[test]
    fn backoff_table() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        let table = [(1, 0.5, 300), (2, 0.5, 600), (3, 0.5, 1200), (4, 0.5, 2400), (5, 0.5, 3600), (40, 0.5, 3600)];
        for (attempts, jitter, want) in table {
            assert_eq!(retry_delay(attempts, min, max, jitter).as_secs(), want, "attempts {attempts}");
        }
        assert_eq!(retry_delay(1, min, max, 0.0).as_secs(), 270);
        assert_eq!(retry_delay(1, min, max, 0.999_999).as_secs(), 329);
        assert_eq!(retry_delay(1, Duration::ZERO, max, 0.5).as_secs(), 1);
    }
}
