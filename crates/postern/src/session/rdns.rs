//! The session's side of `[inbound.rdns]`: the client's reverse DNS at
//! connect, the HELO and sender-domain checks (refused at once or at each
//! RCPT, `reject_at`), and directory-harvest counting after an unknown
//! recipient. The verdicts are `crate::inbound`'s pure functions.
//!
//! May touch: DNS and the harvest counters (through `Services::rdns`), the
//! shared counters. RFC 5321 §4.1.1.1 (HELO), §4.3.2 (reply codes).

use std::net::IpAddr;

use postern_wire::{Path, Reply};

use super::{End, Session, Socket};
use crate::config::{RejectAt, Resolve, Role};
use crate::inbound::harvest::{self, HarvestAction, HarvestLimits};
use crate::inbound::helo::{self as helocheck, HeloPolicy};
use crate::inbound::rdns::{self, ClientName};
use crate::maillog;

/// What the checks found in this session.
#[derive(Debug, Default)]
pub(super) struct RdnsFacts {
    /// The reverse lookup (`None`: not made).
    client: Option<ClientName>,
    /// A HELO refusal kept for RCPT (`reject_at = "rcpt"`).
    helo: Option<Reply>,
    /// A sender refusal kept for RCPT, for the current transaction.
    sender: Option<Reply>,
}

impl<S: Socket> Session<S> {
    /// `{client_resolve}` as a rule criterion (`None`: not looked up).
    pub(super) fn client_resolve(&self) -> Option<Resolve> {
        self.rdns.client.as_ref().map(|c| c.resolve)
    }

    /// The forward-confirmed client name, or "".
    pub(super) fn client_name(&self) -> &str {
        self.rdns.client.as_ref().and_then(|c| c.confirmed()).unwrap_or("")
    }

    /// The PTR name, confirmed or not.
    pub(super) fn client_ptr(&self) -> Option<&str> {
        self.rdns.client.as_ref().and_then(|c| c.ptr.as_deref())
    }

    /// Connect phase: the reverse lookup (never for 127.0.0.1 and ::1), then
    /// the `connect` log line (`client=name[ip]:port`, `rdns=` when looked up).
    pub(super) async fn resolve_client(&mut self) -> String {
        let ip = self.conn.peer.ip();
        let cfg = &self.settings().config;
        if let Some(svc) = self.ctx.services.rdns.clone().filter(|_| cfg.inbound.rdns.lookup && !is_localhost(ip)) {
            let dns = svc.dns(&cfg.mx.nameservers);
            self.rdns.client = Some(rdns::lookup(dns.as_ref(), ip, cfg.inbound.rdns.timeout).await);
        }
        let peer = self.client_text();
        let mut fields = vec![("client", peer.as_str()), ("listener", self.ctx.listener.role.name())];
        if let Some(c) = &self.rdns.client {
            fields.push(("rdns", c.resolve.as_str()));
            if let Some(p) = c.ptr.as_deref().filter(|_| c.resolve != Resolve::Ok) {
                fields.push(("ptr", p));
            }
        }
        maillog::connect(&fields);
        peer
    }

    /// Are the HELO, sender and harvest checks off for this client?
    /// 127.0.0.1 and ::1, `relay.networks`, `exempt_networks`, submission
    /// listeners, SMTP AUTH and CA-verified certificates.
    fn rdns_exempt(&self) -> bool {
        let ip = self.conn.peer.ip();
        let c = &self.settings().config;
        is_localhost(ip)
            || matches!(self.ctx.listener.role, Role::Submission | Role::Submissions)
            || c.relay.networks.iter().chain(&c.inbound.rdns.exempt_networks).any(|n| n.contains(ip))
            || self.auth().is_some()
            || self.verified_cert()
    }

    /// HELO/EHLO: the name checks. A refusal to give now is returned (and
    /// logged by the caller); one for later is kept for RCPT.
    pub(super) async fn helo_check(&mut self, name: &str) -> Option<Reply> {
        self.rdns.helo = None;
        let cfg = &self.settings().config.inbound.rdns;
        if !(cfg.helo_require_fqdn || cfg.helo_reject_own_name || cfg.helo_require_resolve) || self.rdns_exempt() {
            return None;
        }
        let mut ours: Vec<IpAddr> = self.settings().config.listeners.iter().map(|l| l.address.ip()).collect();
        ours.push(self.conn.local.ip());
        let policy = HeloPolicy {
            require_fqdn: cfg.helo_require_fqdn,
            reject_own_name: cfg.helo_reject_own_name,
            hostname: &self.settings().hostname,
            our_addrs: &ours,
        };
        let mut problem = helocheck::check(name, self.conn.peer.ip(), &policy);
        if problem.is_none() && cfg.helo_require_resolve && helocheck::literal(name).is_none() {
            if let Some(svc) = self.ctx.services.rdns.clone() {
                let dns = svc.dns(&self.settings().config.mx.nameservers);
                let answer = tokio::time::timeout(cfg.timeout, dns.addrs(name))
                    .await
                    .unwrap_or_else(|_| Err(crate::inbound::dns::DnsTemp("timeout".into())));
                problem = helocheck::check_resolves(&answer);
            }
        }
        let reply = problem?.reply(name);
        match cfg.reject_at {
            RejectAt::Command => Some(reply),
            RejectAt::Rcpt => {
                self.rdns.helo = Some(reply);
                None
            }
        }
    }

    /// MAIL: the sender-domain check. A refusal to give now is returned;
    /// one for later is kept for RCPT.
    pub(super) async fn sender_check(&mut self, from: &Path) -> Option<Reply> {
        self.rdns.sender = None;
        let cfg = &self.settings().config.inbound.rdns;
        let Path::Mailbox(m) = from else { return None };
        if !cfg.sender_domain_check || self.rdns_exempt() || m.domain.starts_with('[') {
            return None;
        }
        let svc = self.ctx.services.rdns.clone()?;
        let dns = svc.dns(&self.settings().config.mx.nameservers);
        let domain = m.domain.clone();
        let timeout = cfg.timeout;
        let verdict = tokio::time::timeout(timeout, async {
            let mx = dns.mx(&domain).await;
            let addrs = match &mx {
                Ok(v) if v.is_empty() => Some(dns.addrs(&domain).await),
                _ => None,
            };
            helocheck::sender_verdict(&mx, addrs.as_ref())
        })
        .await
        .unwrap_or(helocheck::SenderDomain::Temp);
        let reply = verdict.reply(&m.to_string(), &domain)?;
        match cfg.reject_at {
            RejectAt::Command => Some(reply),
            RejectAt::Rcpt => {
                self.rdns.sender = Some(reply);
                None
            }
        }
    }

    /// RCPT: a HELO or sender refusal kept for now (unless the client has
    /// since become exempt, by AUTH).
    pub(super) fn delayed_refusal(&self) -> Option<(Reply, &'static str)> {
        if self.rdns_exempt() {
            return None;
        }
        match (&self.rdns.helo, &self.rdns.sender) {
            (Some(r), _) => Some((r.clone(), "helo")),
            (None, Some(r)) => Some((r.clone(), "sender-domain")),
            (None, None) => None,
        }
    }

    /// Before an unknown local recipient is refused: count it; delay the
    /// refusal (tarpit), or answer 421 and close instead, when the client
    /// has guessed too many.
    pub(super) async fn harvest_unknown(&mut self) -> Result<(), End> {
        let cfg = &self.settings().config.inbound.rdns;
        if (cfg.harvest_delay_after == 0 && cfg.harvest_drop_after == 0) || self.rdns_exempt() {
            return Ok(());
        }
        let Some(svc) = self.ctx.services.rdns.clone() else { return Ok(()) };
        let limits = HarvestLimits {
            delay_after: cfg.harvest_delay_after,
            drop_after: cfg.harvest_drop_after,
            step: cfg.harvest_delay,
            max: cfg.harvest_max_delay,
        };
        let key = harvest::key(self.conn.peer.ip(), self.settings().config.limits.ipv6_prefix);
        let window = cfg.harvest_window;
        let shared = self.ctx.services.counters.clone();
        let count = svc.harvest.add(shared.as_deref(), &key, window).await;
        match harvest::action(count, &limits) {
            HarvestAction::Refuse => Ok(()),
            HarvestAction::Delay(d) => {
                // Postfix's smtpd_error_sleep_time: the reply waits, the client too.
                self.flush().await?;
                tokio::time::sleep(d.min(self.expires.saturating_duration_since(tokio::time::Instant::now()))).await;
                Ok(())
            }
            HarvestAction::Drop => {
                let client = self.client_text();
                let n = count.to_string();
                maillog::reject(&[("client", &client), ("command", "RCPT"), ("reason", "too many unknown recipients"), ("count", &n)]);
                self.close_with(harvest::drop_reply())
            }
        }
    }
}

/// 127.0.0.1 or ::1: the addresses local programs connect from. Other
/// loopback addresses (127.0.0.2…) are looked up like any client, but the
/// resolver (hickory) answers every PTR query under 127.in-addr.arpa
/// itself with `localhost`, so they come out FORGED; tests stand in for
/// remote clients with addresses added to `lo` (198.18.0.0/15).
/// `relay.networks` (loopback by default) still exempts them from the
/// HELO, sender and harvest checks.
fn is_localhost(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return v6.is_loopback(),
        },
    };
    v4 == std::net::Ipv4Addr::LOCALHOST
}
