//! The connection screen of an inbound MX (issue 21 items 2 and 3): the
//! pregreet wait and the DNSBL score before the greeting, the pipelining
//! test at HELO/EHLO and after HELO, and the DNSBL verdict at RCPT. The
//! verdicts are `inbound::dnsbl` and `inbound::pregreet`'s; this file only
//! does the session's side (waiting on the socket, replies, log lines).
//!
//! May touch: the client socket (read during the greet wait); DNS (through
//! `Services::dnsbl`). RFCs: 5321 §3.1 (554/421 greetings), 2920 §3.1.

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use postern_wire::reply::Enhanced;
use postern_wire::Reply;

use super::{Session, Socket, State};
use crate::config::{DnsblStage, PipeliningAction, PregreetAction, Role, ScreenAction};
use crate::inbound::dnsbl::{self, Score, Verdict as DnsblVerdict};
use crate::inbound::pregreet::{self, Plan};
use crate::maillog;
use crate::milter::Verdict;

impl<S: Socket> Session<S> {
    /// The greeting (RFC 5321 §3.1): the DNSBL and pregreet screen and the
    /// connect milters decide between 220, 554 (then only QUIT) and 421.
    pub(super) async fn greet(&mut self) {
        let greeting = Reply::plain(220, vec![format!("{} ESMTP postern", self.ctx.settings.hostname).into()]);
        match self.screen_connect().await {
            Verdict::Reject(r) if r.code >= 500 => {
                self.reject("CONNECT", Reply { code: 554, ..r }, &[]);
                self.enter(State::Refused);
            }
            Verdict::Reject(r) | Verdict::Close(r) => {
                // A greeting is 220, 554 or 421 (RFC 5321 §3.1, §4.2.5).
                self.reject("CONNECT", Reply { code: 421, ..r }, &[]);
                self.enter(State::Closed);
            }
            Verdict::Continue | Verdict::Discard => self.reply(greeting),
        }
    }

    /// The connect phase: DNSBL (stage "connect", or to allow-list a client
    /// before the pregreet wait), then the pregreet wait, then the milters.
    /// A refusal comes back as a milter-like verdict: `Reject` (554
    /// greeting, then only QUIT) or `Close` (421).
    pub(super) async fn screen_connect(&mut self) -> Verdict {
        // The screen is an MX defence: submission listeners (587, 465) serve
        // users on any network, who authenticate instead (docs/inbound.md).
        if self.submission_listener() {
            return self.milter_connect().await;
        }
        let ip = self.conn.peer.ip();
        let settings = self.ctx.settings.clone();
        let config = &settings.config;
        let (bl, pg, relay) = (&config.inbound.dnsbl, &config.inbound.pregreet, &config.relay.networks);
        let looked_up = !bl.lists.is_empty() && !dnsbl::exempt(ip, &bl.exempt_networks, relay);
        let wants_score = bl.stage == DnsblStage::Connect || (!pg.greet_delay.is_zero() && bl.allowlist_threshold < 0);
        let mut allowlisted = false;
        if looked_up && wants_score {
            let score = self.ctx.services.dnsbl.check(bl, &config.mx.nameservers, ip).await;
            let v = dnsbl::verdict(bl, &score);
            self.log_dnsbl(&score, &v, &[]);
            allowlisted = v == DnsblVerdict::Allowlisted;
            if let (DnsblVerdict::Listed(list), DnsblStage::Connect) = (&v, bl.stage) {
                match bl.action {
                    ScreenAction::Reject => return Verdict::Reject(self.dnsbl_reply(554, list)),
                    ScreenAction::Tempfail => return Verdict::Close(self.dnsbl_reply(421, list)),
                    ScreenAction::Log => {}
                }
            }
        }
        let cache = self.ctx.services.pregreet.clone();
        match pregreet::plan(pg, ip, relay, cache.passed(ip), allowlisted) {
            Plan::Greet(_) => {}
            Plan::Wait(delay) => {
                let start = Instant::now();
                let read = tokio::time::timeout(delay, self.io.read_buf(&mut self.rbuf)).await;
                let waited = format!("{}ms", start.elapsed().as_millis());
                let client = self.client_text();
                match read {
                    Err(_) => {
                        cache.pass(ip, pg.pass_ttl, pg.pass_cache_size);
                        maillog::pregreet(&[("client", &client), ("result", "pass"), ("waited", &waited)]);
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        maillog::pregreet(&[("client", &client), ("result", "gone"), ("waited", &waited)]);
                        self.enter(State::Closed);
                    }
                    Ok(Ok(_)) => {
                        cache.forget(ip);
                        let action = format!("{:?}", pg.action).to_ascii_lowercase();
                        maillog::pregreet(&[("client", &client), ("result", "pregreet"), ("action", &action), ("waited", &waited)]);
                        let text = format!("Protocol error: client [{ip}] talked before the greeting");
                        match pg.action {
                            PregreetAction::Reject => return Verdict::Reject(Reply::new(554, Enhanced(5, 5, 1), text)),
                            PregreetAction::Drop => return Verdict::Close(Reply::new(421, Enhanced(4, 7, 0), text)),
                            PregreetAction::Log => {}
                        }
                    }
                }
            }
        }
        self.milter_connect().await
    }

    /// `554 5.7.1 Service unavailable; client [ip] blocked using <list>`
    /// (or the 4xx form for `tempfail`).
    fn dnsbl_reply(&self, code: u16, list: &str) -> Reply {
        let ip = self.conn.peer.ip();
        let e = if code >= 500 { Enhanced(5, 7, 1) } else { Enhanced(4, 7, 1) };
        Reply::new(code, e, format!("Service unavailable; client [{ip}] blocked using {list}"))
    }

    fn log_dnsbl(&self, score: &Score, v: &DnsblVerdict, extra: &[(&str, &str)]) {
        let client = self.client_text();
        let total = score.total.to_string();
        let lists = score.summary();
        let verdict = match v {
            DnsblVerdict::Pass => "pass",
            DnsblVerdict::Allowlisted => "allowlisted",
            DnsblVerdict::Listed(_) => "listed",
        };
        let failed: Vec<String> = score.failed.iter().map(|(z, why)| format!("{z}:{why}")).collect();
        let failed = failed.join(",");
        let mut fields = vec![("client", client.as_str()), ("score", &total), ("lists", &lists), ("verdict", verdict)];
        if !failed.is_empty() {
            fields.push(("failed", &failed));
        }
        fields.extend_from_slice(extra);
        maillog::dnsbl(&fields);
    }

    /// A submission listener (587, 465): no connect screen, no pipelining test.
    fn submission_listener(&self) -> bool {
        matches!(self.ctx.listener.role, Role::Submission | Role::Submissions)
    }

    /// The pipelining test (RFC 2920 §3.1) when a command is about to be
    /// answered: true if the client was refused (reply queued, state
    /// `Refused`). `at_helo`: the command is HELO/EHLO.
    pub(super) fn screen_pipelining(&mut self, verb: &str, at_helo: bool) -> bool {
        let settings = self.ctx.settings.clone();
        let (config, ip) = (&settings.config, self.conn.peer.ip());
        let pg = &config.inbound.pregreet;
        let extended = self.state.greeted().is_some_and(|g| g.helo.extended);
        if pg.pipelining == PipeliningAction::Ignore
            || self.submission_listener()
            || !pregreet::pipelined_illegally(at_helo, extended, !self.rbuf.is_empty())
            || pg.exempt_networks.iter().chain(&config.relay.networks).any(|n| n.contains(ip))
        {
            return false;
        }
        self.ctx.services.pregreet.forget(ip);
        let client = self.client_text();
        let action = format!("{:?}", pg.pipelining).to_ascii_lowercase();
        maillog::pregreet(&[("client", &client), ("result", "pipelining"), ("command", verb), ("action", &action)]);
        if pg.pipelining != PipeliningAction::Reject {
            return false;
        }
        let text = format!("Protocol error: client [{ip}] sent commands before the reply (no PIPELINING)");
        self.reject(verb, Reply::new(554, Enhanced(5, 5, 1), text), &[]);
        self.enter(State::Refused);
        true
    }

    /// RCPT: the pipelining test after HELO, then the DNSBL at stage
    /// "rcpt". True if this recipient was refused (reply queued).
    pub(super) async fn screen_rcpt(&mut self, sender: &str, rcpt: &str) -> bool {
        if self.screen_pipelining("RCPT", false) {
            return true;
        }
        let settings = self.ctx.settings.clone();
        let (config, bl) = (&settings.config, &settings.config.inbound.dnsbl);
        let ip = self.conn.peer.ip();
        if bl.lists.is_empty()
            || bl.stage != DnsblStage::Rcpt
            || self.auth().is_some()
            || self.verified_cert()
            || dnsbl::exempt(ip, &bl.exempt_networks, &config.relay.networks)
        {
            return false;
        }
        let score = self.ctx.services.dnsbl.check(bl, &config.mx.nameservers, ip).await;
        let v = dnsbl::verdict(bl, &score);
        let DnsblVerdict::Listed(list) = &v else {
            if !score.hits.is_empty() || !score.failed.is_empty() {
                self.log_dnsbl(&score, &v, &[("from", sender), ("to", rcpt)]);
            }
            return false;
        };
        let reply = match bl.action {
            ScreenAction::Reject => self.dnsbl_reply(554, list),
            ScreenAction::Tempfail => self.dnsbl_reply(450, list),
            ScreenAction::Log => {
                self.log_dnsbl(&score, &v, &[("from", sender), ("to", rcpt)]);
                return false;
            }
        };
        let (total, lists) = (score.total.to_string(), score.summary());
        let fields = [("from", sender), ("to", rcpt), ("rule", "dnsbl"), ("score", total.as_str()), ("lists", lists.as_str())];
        self.reject("RCPT", reply, &fields);
        true
    }
}
