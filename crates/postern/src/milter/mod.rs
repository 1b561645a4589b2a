//! The milter client: each SMTP session talks to the mail filters its
//! listener names (`listener.milters`), in order, over the sendmail milter
//! protocol (codec in `postern_wire::milter`).
//!
//! May touch: the milters' sockets (TCP or unix); the message text through
//! the session's spool [`Draft`] (read back, rewritten when a milter changes
//! it). Nothing is durable here: the session commits after
//! [`Milters::message`] returns.
//! Protocol: the sendmail milter protocol v6 (no RFC).
//!
//! Semantics follow sendmail and Postfix: one milter connection per SMTP
//! connection; the first milter that rejects a command decides the reply;
//! `accept` ends a milter's part in the message (at CONNECT: in the
//! connection); every milter sees the message as the ones before it left
//! it; a milter that cannot be reached, times out or breaks the protocol
//! gets its `default_action` (Postfix `milter_default_action`): `accept`
//! drops it, `tempfail`/`reject` answer 451 4.7.1 / 550 5.7.1 to every
//! later MAIL, RCPT, DATA and end of data of the session.
//!
//! Files: this one holds [`Milters`] (the verdict over several milters, one
//! method per SMTP stage); `filter.rs` one milter connection and its I/O;
//! `rewrite.rs` the modifications and writing them into the draft;
//! `local.rs` the `sendmail` command's path.

mod filter;
mod local;
mod rewrite;

use std::sync::Arc;

use tokio::task::JoinSet;

use postern_wire::milter::{self as wire, apply_header_change, proto, Command, Response, Stage};
use postern_wire::{codes, Enhanced, Reply};

use crate::config::{Milter as MilterConfig, MilterDefault};
use crate::maillog;
use crate::spool::Draft;

use filter::{Failure, Filter, Mods};
pub use local::filter_local;
pub use rewrite::{rewrite_draft, write_rewrite, Rewrite};

/// Macros for one stage: `(name, value)`, e.g. `("{client_addr}", "192.0.2.1")`.
pub type Macros = Vec<(&'static str, String)>;

/// What the session should do after a milter stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on as if there were no milters.
    Continue,
    /// Refuse the command (4xx or 5xx) with this reply.
    Reject(Reply),
    /// Accept the message, then drop it (answer 250, queue nothing).
    Discard,
    /// Answer this 421 and close the connection.
    Close(Reply),
}

/// The message as the milters left it, and what they decided.
#[derive(Debug)]
pub struct MessageResult {
    /// The final decision.
    pub verdict: Verdict,
    /// Header fields, in order, when a milter changed them or the body.
    pub rewrite: Option<Rewrite>,
    /// `(milter, reason)` when a milter quarantined the message.
    pub quarantine: Option<(String, String)>,
    /// A new envelope sender (`<addr>`) and its ESMTP parameters.
    pub change_from: Option<(String, Option<String>)>,
    /// Recipients to add (`<addr>`, parameters).
    pub add_rcpts: Vec<(String, Option<String>)>,
    /// Recipients to delete (`<addr>`).
    pub del_rcpts: Vec<String>,
}

impl MessageResult {
    /// A verdict and no changes.
    fn decided(verdict: Verdict) -> MessageResult {
        MessageResult { verdict, rewrite: None, quarantine: None, change_from: None, add_rcpts: Vec::new(), del_rcpts: Vec::new() }
    }
}

/// The milters of one SMTP session.
pub struct Milters {
    filters: Vec<Filter>,
    /// Set when a failed milter's default action refuses the rest of the session.
    failed: Option<Reply>,
    /// MAIL was sent and neither end of message nor ABORT followed.
    in_message: bool,
    /// The client, for log lines.
    client: String,
    /// The queue id of the message under way, once DATA began (log lines).
    pub queue_id: Option<String>,
}

/// The CONNECT facts.
pub struct ConnectInfo<'a> {
    /// The client's host name (`[ip]` when unresolved).
    pub hostname: &'a str,
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Connect => "connect",
        Stage::Helo => "helo",
        Stage::Mail => "mail",
        Stage::Rcpt => "rcpt",
        Stage::Data => "data",
        Stage::Eoh => "eoh",
        Stage::Eom => "eom",
    }
}

/// The reply for a milter's plain `reject` at `stage`.
fn reject_reply(stage: Stage) -> Reply {
    match stage {
        Stage::Connect => codes::milter_rejected_connection(),
        Stage::Eom | Stage::Eoh | Stage::Data => codes::milter_rejected_content(),
        _ => codes::milter_rejected(),
    }
}

/// What one milter's final reply means, and whether that milter is done.
enum Step {
    Next,
    Done,
    Stop(Verdict),
}

/// Connects to every milter at once (a slow milter should not add up with
/// the others); the results keep the order of `cfgs`.
async fn connect_all(cfgs: &[Arc<MilterConfig>]) -> Vec<Result<Filter, Failure>> {
    let mut set = JoinSet::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let cfg = cfg.clone();
        set.spawn(async move { (i, Filter::connect(cfg).await) });
    }
    let mut results: Vec<Option<Result<Filter, Failure>>> = (0..cfgs.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Nobody aborts these tasks; a cancelled one counts as a timeout.
            Err(_) => {}
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Err(Failure::Timeout))).collect()
}

impl Milters {
    /// Connects to the listener's milters and sends CONNECT. Milters that
    /// fail get their default action.
    pub async fn connect(cfgs: &[Arc<MilterConfig>], info: &ConnectInfo<'_>, macros: &Macros, client: String) -> (Milters, Verdict) {
        let mut m = Milters { filters: Vec::new(), failed: None, in_message: false, client, queue_id: None };
        let results = connect_all(cfgs).await;
        let mut verdict = Verdict::Continue;
        for (cfg, r) in cfgs.iter().zip(results) {
            match r {
                Ok(f) => m.filters.push(f),
                Err(e) => {
                    if let Some(v) = m.fail(cfg, Stage::Connect, &e) {
                        verdict = v;
                    }
                }
            }
        }
        let family = match info.peer {
            std::net::SocketAddr::V4(a) => wire::Family::Inet(*a.ip(), a.port()),
            std::net::SocketAddr::V6(a) => wire::Family::Inet6(*a.ip(), a.port()),
        };
        let v =
            m.command(Stage::Connect, proto::NOCONNECT, proto::NR_CONN, macros, Command::Connect { hostname: info.hostname, family }).await;
        if verdict == Verdict::Continue {
            verdict = v;
        }
        (m, verdict)
    }

    /// HELO/EHLO.
    pub async fn helo(&mut self, name: &str, macros: &Macros) -> Verdict {
        self.command(Stage::Helo, proto::NOHELO, proto::NR_HELO, macros, Command::Helo(name)).await
    }

    /// MAIL FROM: `args` is `<path>` then the ESMTP parameters.
    pub async fn mail(&mut self, args: &[String], macros: &Macros) -> Verdict {
        if let Some(r) = &self.failed {
            return Verdict::Reject(r.clone());
        }
        // A new message: everyone takes part again.
        self.queue_id = None;
        for f in &mut self.filters {
            f.done_msg = false;
        }
        self.in_message = true;
        self.command(Stage::Mail, proto::NOMAIL, proto::NR_MAIL, macros, Command::Mail(args)).await
    }

    /// RCPT TO, for a recipient the server itself accepted.
    pub async fn rcpt(&mut self, args: &[String], macros: &Macros) -> Verdict {
        if let Some(r) = &self.failed {
            return Verdict::Reject(r.clone());
        }
        self.command(Stage::Rcpt, proto::NORCPT, proto::NR_RCPT, macros, Command::Rcpt(args)).await
    }

    /// DATA (or the first BDAT).
    pub async fn data(&mut self, macros: &Macros) -> Verdict {
        if let Some(r) = &self.failed {
            return Verdict::Reject(r.clone());
        }
        self.command(Stage::Data, proto::NODATA, proto::NR_DATA, macros, Command::Data).await
    }

    /// The transaction ended without end of message (RSET, a refused
    /// command, a new EHLO): milters forget the message.
    pub async fn abort(&mut self) {
        if !self.in_message {
            return;
        }
        self.end_message();
        for i in 0..self.filters.len() {
            let f = &mut self.filters[i];
            if f.done_conn {
                continue;
            }
            let t = f.cfg.command_timeout;
            if let Err(e) = f.exchange(None, Command::Abort, false, t, None).await {
                let cfg = f.cfg.clone();
                self.filters[i].done_conn = true;
                self.log(&cfg.name, "abort", &[("error", &e.to_string())]);
            }
        }
    }

    /// Ends the milter conversations (the SMTP session is over).
    pub async fn quit(mut self) {
        self.abort().await;
        for f in &mut self.filters {
            let t = f.cfg.command_timeout;
            let _ = f.exchange(None, Command::Quit, false, t, None).await;
        }
    }

    fn log(&self, milter: &str, stage: &str, extra: &[(&str, &str)]) {
        let mut fields: Vec<(&str, &str)> = vec![("client", &self.client)];
        if let Some(id) = &self.queue_id {
            fields.push(("id", id));
        }
        fields.extend_from_slice(&[("milter", milter), ("stage", stage)]);
        fields.extend_from_slice(extra);
        maillog::milter(&fields);
    }

    /// Applies a failed milter's default action. Returns the verdict it
    /// imposes now, if any.
    fn fail(&mut self, cfg: &MilterConfig, stage: Stage, e: &Failure) -> Option<Verdict> {
        let action = match cfg.default_action {
            MilterDefault::Accept => "accept",
            MilterDefault::Tempfail => "tempfail",
            MilterDefault::Reject => "reject",
        };
        self.log(&cfg.name, stage_name(stage), &[("error", &e.to_string()), ("default_action", action)]);
        let reply = match cfg.default_action {
            MilterDefault::Accept => return None,
            MilterDefault::Tempfail => codes::milter_tempfail(),
            MilterDefault::Reject => codes::milter_rejected(),
        };
        self.failed.get_or_insert(reply.clone());
        // CONNECT and HELO still succeed, so the client gets the refusal at
        // MAIL like Postfix does, and STARTTLS/AUTH keep working.
        (!matches!(stage, Stage::Connect | Stage::Helo)).then_some(Verdict::Reject(reply))
    }

    /// One command to every milter that takes part, in order; the first
    /// refusal wins.
    async fn command(&mut self, stage: Stage, skip: u32, no_reply: u32, macros: &Macros, cmd: Command<'_>) -> Verdict {
        let mut i = 0;
        while i < self.filters.len() {
            let f = &mut self.filters[i];
            if f.done_conn || f.done_msg || f.protocol & skip != 0 {
                i += 1;
                continue;
            }
            let t = f.cfg.command_timeout;
            let r = f.exchange(Some((stage, macros)), cmd.clone(), f.protocol & no_reply == 0, t, None).await;
            match r {
                Ok(None) => {}
                Ok(Some(resp)) => match self.decide(i, stage, resp) {
                    Step::Next => {}
                    Step::Done => {
                        let f = &mut self.filters[i];
                        if matches!(stage, Stage::Connect | Stage::Helo) {
                            f.done_conn = true;
                        } else {
                            f.done_msg = true;
                        }
                    }
                    Step::Stop(v) => return v,
                },
                Err(e) => {
                    let cfg = self.filters.remove(i).cfg;
                    if let Some(v) = self.fail(&cfg, stage, &e) {
                        return v;
                    }
                    continue;
                }
            }
            i += 1;
        }
        Verdict::Continue
    }

    /// Turns a milter's final reply into a step, logging every decision
    /// other than "continue".
    fn decide(&self, i: usize, stage: Stage, resp: Response) -> Step {
        let name = self.filters[i].cfg.name.clone();
        let sn = stage_name(stage);
        let (step, what, reply) = match resp {
            Response::Continue | Response::Skip => return Step::Next,
            Response::Accept => (Step::Done, "accept", None),
            Response::Reject => {
                let r = reject_reply(stage);
                (Step::Stop(Verdict::Reject(r.clone())), "reject", Some(r))
            }
            Response::Tempfail => {
                let r = codes::milter_tempfail();
                (Step::Stop(Verdict::Reject(r.clone())), "tempfail", Some(r))
            }
            Response::ReplyCode(mut r) => {
                if r.enhanced.is_none() {
                    r.enhanced = Some(Enhanced((r.code / 100) as u8, 7, 1));
                }
                let what = if r.code >= 500 { "reject" } else { "tempfail" };
                (Step::Stop(Verdict::Reject(r.clone())), what, Some(r))
            }
            // sendmail: discard before the message exists accepts the connection.
            Response::Discard if matches!(stage, Stage::Connect | Stage::Helo) => (Step::Done, "discard", None),
            Response::Discard => (Step::Stop(Verdict::Discard), "discard", None),
            Response::ConnFail | Response::Shutdown => {
                let r = codes::milter_closing();
                (Step::Stop(Verdict::Close(r.clone())), "disconnect", Some(r))
            }
            other => {
                self.log(&name, sn, &[("error", &format!("unexpected {other:?}, ignored"))]);
                return Step::Next;
            }
        };
        match reply {
            Some(r) => self.log(&name, sn, &[("action", what), ("reply", &r.summary())]),
            None => self.log(&name, sn, &[("action", what)]),
        }
        step
    }

    /// Sends the message (headers, end of headers, body in chunks, end of
    /// message) to each milter in turn, applying each one's changes before
    /// the next sees the message. `max_size` caps a replacement body.
    pub async fn message(&mut self, draft: &mut Draft, eoh: &Macros, eom: &Macros, max_size: u64) -> MessageResult {
        let out = self.message_inner(draft, eoh, eom, max_size).await;
        self.end_message();
        out
    }

    async fn message_inner(&mut self, draft: &mut Draft, eoh: &Macros, eom: &Macros, max_size: u64) -> MessageResult {
        let mut out = MessageResult::decided(Verdict::Continue);
        if let Some(r) = &self.failed {
            out.verdict = Verdict::Reject(r.clone());
            return out;
        }
        let (mut headers, body_offset) = match rewrite::read_headers(draft).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("milter: cannot read the message back: {e}");
                out.verdict = Verdict::Reject(codes::milter_tempfail());
                return out;
            }
        };
        let mut body: Option<Vec<u8>> = None;
        let mut changed = false;
        let mut i = 0;
        while i < self.filters.len() {
            if self.filters[i].done_conn || self.filters[i].done_msg {
                i += 1;
                continue;
            }
            let mut mods = Mods::new(max_size);
            let r = self.filters[i].send_message(draft, &headers, body.as_deref(), body_offset, eoh, eom, &mut mods).await;
            let final_reply = match r {
                Ok(f) => f,
                Err(e) => {
                    let cfg = self.filters.remove(i).cfg;
                    let verdict = self.fail(&cfg, Stage::Eom, &e);
                    // Changes too large are never applied, nor is the message
                    // accepted without them: it waits (F14).
                    let verdict = match e {
                        Failure::ModificationsTooLarge(_) => Some(Verdict::Reject(codes::milter_tempfail())),
                        _ => verdict,
                    };
                    if let Some(v) = verdict {
                        out.verdict = v;
                        return out;
                    }
                    continue;
                }
            };
            // Modifications count only with a final reply that keeps the message.
            let keeps = matches!(final_reply, Response::Accept | Response::Continue | Response::Skip);
            if keeps {
                let name = self.filters[i].cfg.name.clone();
                let allowed = self.filters[i].actions;
                let mut new_body: Option<Vec<u8>> = None;
                for m in mods.list {
                    let (need, what, detail) = rewrite::describe(&m);
                    if allowed & need == 0 {
                        self.log(&name, "eom", &[("action", what), ("error", "action not negotiated, ignored")]);
                        continue;
                    }
                    self.log(&name, "eom", &[("action", what), ("detail", &detail)]);
                    match m {
                        Response::AddHeader { .. } | Response::InsertHeader { .. } | Response::ChangeHeader { .. } => {
                            if apply_header_change(&mut headers, &m) {
                                changed = true;
                            } else {
                                self.log(&name, "eom", &[("action", what), ("error", "malformed header name, ignored")]);
                            }
                        }
                        Response::ReplaceBody(chunk) => {
                            let nb = new_body.get_or_insert_with(Vec::new);
                            if (nb.len() + chunk.len()) as u64 > max_size {
                                self.log(&name, "eom", &[("error", "replacement body exceeds limits.max_message_size")]);
                                out.verdict = Verdict::Reject(codes::milter_tempfail());
                                return out;
                            }
                            nb.extend_from_slice(&chunk);
                        }
                        Response::ChangeFrom { from, params } => out.change_from = Some((from, params)),
                        Response::AddRcpt { rcpt, params } => out.add_rcpts.push((rcpt, params)),
                        Response::DelRcpt(rcpt) => out.del_rcpts.push(rcpt),
                        Response::Quarantine(reason) => out.quarantine = Some((name.clone(), reason)),
                        _ => {}
                    }
                }
                if let Some(nb) = new_body {
                    body = Some(rewrite::crlf_normalise(nb));
                    changed = true;
                }
            }
            match self.decide(i, Stage::Eom, final_reply) {
                Step::Next | Step::Done => {}
                Step::Stop(v) => {
                    out.verdict = v;
                    return out;
                }
            }
            i += 1;
        }
        if changed {
            out.rewrite = Some(Rewrite { headers, body, body_offset });
        }
        out
    }

    /// The message is over: every milter takes part in what comes next.
    fn end_message(&mut self) {
        self.in_message = false;
        for f in &mut self.filters {
            f.done_msg = false;
        }
    }
}
