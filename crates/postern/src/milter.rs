//! The milter client: each SMTP session talks to the mail filters its
//! listener names (`listener.milters`), in order, over the sendmail milter
//! protocol (codec in `postern_wire::milter`).
//!
//! May touch: the milters' sockets (TCP or unix); the message text through
//! the session's spool [`Draft`] (read back, rewritten when a milter changes
//! it). Nothing is durable here: the session commits after
//! [`Milters::message`] returns.
//!
//! Semantics follow sendmail and Postfix: one milter connection per SMTP
//! connection; the first milter that rejects a command decides the reply;
//! `accept` ends a milter's part in the message (at CONNECT: in the
//! connection); every milter sees the message as the ones before it left
//! it; a milter that cannot be reached, times out or breaks the protocol
//! gets its `default_action` (Postfix `milter_default_action`): `accept`
//! drops it, `tempfail`/`reject` answer 451 4.7.1 / 550 5.7.1 to every
//! later MAIL, RCPT, DATA and end of data of the session.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use postern_wire::milter::{self as wire, action, apply_header_change, proto, split_headers, Command, Header, Response, Stage};
use postern_wire::{Enhanced, Reply};

use crate::config::{Endpoint, Milter as MilterConfig, MilterDefault};
use crate::maillog;
use crate::spool::Draft;

/// Modifications accepted from one milter for one message; more is a
/// protocol error (replacement body chunks count too, each up to 1 MiB,
/// and are capped by `limits.max_message_size` as well).
const MAX_MODIFICATIONS: usize = 10_000;

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
pub struct Outcome {
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

/// A changed message text: the headers, and the body (`None`: the
/// original body, from `body_offset` of the draft).
#[derive(Debug)]
pub struct Rewrite {
    /// All header fields.
    pub headers: Vec<Header>,
    /// A replacement body, when a milter sent one.
    pub body: Option<Vec<u8>>,
    /// Where the original body starts in the draft.
    pub body_offset: u64,
}

/// Why a milter failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<wire::MilterError> for Failure {
    fn from(e: wire::MilterError) -> Failure {
        Failure::Protocol(e.to_string())
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One connected milter.
struct Filter {
    cfg: Arc<MilterConfig>,
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Actions the milter asked for (and we allow).
    actions: u32,
    /// Steps it does not want and replies it will not send.
    protocol: u32,
    /// Macros it asked for, per stage (none listed: all we have).
    wanted: Vec<(Stage, Vec<String>)>,
    /// Accepted at CONNECT/HELO: nothing more but QUIT.
    done_conn: bool,
    /// Accepted (or decided) for the current message.
    done_msg: bool,
}

impl Filter {
    async fn connect(cfg: Arc<MilterConfig>) -> Result<Filter, Failure> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let io: Box<dyn Io> = match &cfg.socket.0 {
            Endpoint::Tcp(host, port) => {
                let s = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::Connect)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| Failure::Timeout)?
                    .map_err(Failure::Connect)?,
            ),
        };
        let mut f = Filter {
            cfg,
            io,
            rbuf: Vec::with_capacity(512),
            wbuf: Vec::with_capacity(512),
            actions: 0,
            protocol: 0,
            wanted: Vec::new(),
            done_conn: false,
            done_msg: false,
        };
        Command::OptNeg { version: wire::VERSION, actions: action::ALL, protocol: proto::OFFERED }.encode(&mut f.wbuf);
        f.send(f.cfg.connect_timeout).await?;
        match f.read(deadline).await? {
            Response::OptNeg { version, actions, protocol, macros } => {
                if version < 2 {
                    return Err(Failure::Protocol(format!("milter speaks protocol version {version}")));
                }
                if protocol & !proto::OFFERED != 0 {
                    return Err(Failure::Protocol(format!("milter wants protocol steps {protocol:#x} we do not offer")));
                }
                f.actions = actions & action::ALL;
                f.protocol = protocol;
                if actions & action::SETSYMLIST != 0 {
                    f.wanted = macros;
                }
                Ok(f)
            }
            other => Err(Failure::Protocol(format!("expected option negotiation, got {other:?}"))),
        }
    }

    /// Writes what is buffered; a milter that stops reading gets the
    /// command timeout like one that stops answering.
    async fn send(&mut self, timeout: Duration) -> Result<(), Failure> {
        let r = tokio::time::timeout(timeout, self.io.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        r.map_err(|_| Failure::Timeout)??;
        Ok(())
    }

    /// Reads one response before `deadline`.
    async fn read(&mut self, deadline: Instant) -> Result<Response, Failure> {
        loop {
            if let Some((cmd, data, n)) = wire::parse_frame(&self.rbuf)? {
                let r = Response::parse(cmd, data);
                self.rbuf.drain(..n);
                return Ok(r?);
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends `cmd` (after its stage's macros) and, unless the milter said
    /// it will not reply, returns its final reply; modifications seen on
    /// the way go to `mods` (only at end of message).
    async fn exchange(
        &mut self,
        macros: Option<(Stage, &Macros)>,
        cmd: Command<'_>,
        reply_expected: bool,
        timeout: Duration,
        mut mods: Option<&mut Vec<Response>>,
    ) -> Result<Option<Response>, Failure> {
        if let Some((stage, m)) = macros {
            let pairs: Macros = match self.wanted.iter().find(|(s, _)| *s == stage) {
                // SMFIR_SETSYMLIST: only what was asked for ("{x}" or "x").
                Some((_, names)) => m
                    .iter()
                    .filter(|(k, _)| names.iter().any(|n| n == k || n.trim_start_matches('{').trim_end_matches('}') == k.trim_start_matches('{').trim_end_matches('}')))
                    .cloned()
                    .collect(),
                None => m.clone(),
            };
            if !pairs.is_empty() {
                Command::Macros { stage, pairs: &pairs }.encode(&mut self.wbuf);
            }
        }
        cmd.encode(&mut self.wbuf);
        self.send(timeout).await?;
        if !reply_expected {
            return Ok(None);
        }
        let mut deadline = Instant::now() + timeout;
        loop {
            let r = self.read(deadline).await?;
            match r {
                Response::Progress => deadline = Instant::now() + timeout,
                r if r.is_final() => return Ok(Some(r)),
                r => match mods.as_deref_mut() {
                    Some(m) if m.len() >= MAX_MODIFICATIONS => {
                        return Err(Failure::Protocol(format!("more than {MAX_MODIFICATIONS} modifications")))
                    }
                    Some(m) => m.push(r),
                    None => return Err(Failure::Protocol(format!("{r:?} before end of message"))),
                },
            }
        }
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

fn tempfail_reply() -> Reply {
    Reply::new(451, Enhanced(4, 7, 1), "Service unavailable - try again later")
}

fn reject_reply(stage: Stage) -> Reply {
    match stage {
        Stage::Connect => Reply::new(554, Enhanced(5, 7, 1), "Connection rejected"),
        Stage::Eom | Stage::Eoh | Stage::Data => Reply::new(550, Enhanced(5, 7, 1), "Message content rejected"),
        _ => Reply::new(550, Enhanced(5, 7, 1), "Command rejected"),
    }
}

fn close_reply() -> Reply {
    Reply::new(421, Enhanced(4, 7, 0), "Service unavailable, closing connection")
}

/// What one milter's final reply means, and whether that milter is done.
enum Step {
    Next,
    Done,
    Stop(Verdict),
}

impl Milters {
    /// Connects to the listener's milters and sends CONNECT. Milters that
    /// fail get their default action.
    pub async fn connect(cfgs: &[Arc<MilterConfig>], info: &ConnectInfo<'_>, macros: &Macros, client: String) -> (Milters, Verdict) {
        let mut m = Milters { filters: Vec::new(), failed: None, in_message: false, client, queue_id: None };
        // Connect in parallel: a slow milter should not add up with the others.
        let results = futures_join_all(cfgs.iter().cloned().map(Filter::connect)).await;
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
        let v = m
            .command(Stage::Connect, proto::NOCONNECT, proto::NR_CONN, macros, Command::Connect { hostname: info.hostname, family })
            .await;
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
        maillog::event("milter", &fields);
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
            MilterDefault::Tempfail => tempfail_reply(),
            MilterDefault::Reject => Reply::new(550, Enhanced(5, 7, 1), "Command rejected"),
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
                let r = tempfail_reply();
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
                let r = close_reply();
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
    pub async fn message(&mut self, draft: &mut Draft, eoh: &Macros, eom: &Macros, max_size: u64) -> Outcome {
        let out = self.message_inner(draft, eoh, eom, max_size).await;
        self.end_message();
        out
    }

    async fn message_inner(&mut self, draft: &mut Draft, eoh: &Macros, eom: &Macros, max_size: u64) -> Outcome {
        let mut out = Outcome { verdict: Verdict::Continue, rewrite: None, quarantine: None, change_from: None, add_rcpts: Vec::new(), del_rcpts: Vec::new() };
        if let Some(r) = &self.failed {
            out.verdict = Verdict::Reject(r.clone());
            return out;
        }
        let (mut headers, body_offset) = match read_headers(draft).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("milter: cannot read the message back: {e}");
                out.verdict = Verdict::Reject(tempfail_reply());
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
            let mut mods = Vec::new();
            let r = send_message(&mut self.filters[i], draft, &headers, body.as_deref(), body_offset, eoh, eom, &mut mods).await;
            let final_reply = match r {
                Ok(f) => f,
                Err(e) => {
                    let cfg = self.filters.remove(i).cfg;
                    if let Some(v) = self.fail(&cfg, Stage::Eom, &e) {
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
                for m in mods {
                    let (need, what, detail) = describe(&m);
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
                                out.verdict = Verdict::Reject(tempfail_reply());
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
                    body = Some(crlf_normalise(nb));
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

/// What a modification needs negotiated, its log name and detail.
fn describe(m: &Response) -> (u32, &'static str, String) {
    match m {
        Response::AddHeader { name, .. } => (action::ADDHDRS, "add_header", name.clone()),
        Response::InsertHeader { index, name, .. } => (action::ADDHDRS, "insert_header", format!("{name} at {index}")),
        Response::ChangeHeader { index, name, value } if value.is_empty() => (action::CHGHDRS, "delete_header", format!("{name}[{index}]")),
        Response::ChangeHeader { index, name, .. } => (action::CHGHDRS, "change_header", format!("{name}[{index}]")),
        Response::ReplaceBody(c) => (action::CHGBODY, "replace_body", format!("{} octets", c.len())),
        Response::ChangeFrom { from, .. } => (action::CHGFROM, "change_from", from.clone()),
        Response::AddRcpt { rcpt, params: None } => (action::ADDRCPT | action::ADDRCPT_PAR, "add_rcpt", rcpt.clone()),
        Response::AddRcpt { rcpt, .. } => (action::ADDRCPT_PAR, "add_rcpt", rcpt.clone()),
        Response::DelRcpt(r) => (action::DELRCPT, "delete_rcpt", r.clone()),
        Response::Quarantine(r) => (action::QUARANTINE, "quarantine", r.clone()),
        _ => (0, "other", String::new()),
    }
}

/// A replacement body with CRLF line ends (milters may send bare LF).
fn crlf_normalise(b: Vec<u8>) -> Vec<u8> {
    if !b.iter().enumerate().any(|(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r')) {
        return b;
    }
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// The header fields of the draft and where its body starts. Header
/// sections are small; at most 1 MiB is read.
async fn read_headers(draft: &mut Draft) -> Result<(Vec<Header>, u64), std::io::Error> {
    let f = draft.reader().map_err(std::io::Error::other)?;
    let mut f = tokio::fs::File::from_std(f);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = f.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= 1024 * 1024 {
            break;
        }
    }
    let (headers, offset) = split_headers(&buf);
    Ok((headers, offset as u64))
}

/// One milter's view of the message, ending with its final reply to EOM.
#[allow(clippy::too_many_arguments)]
async fn send_message(
    f: &mut Filter,
    draft: &mut Draft,
    headers: &[Header],
    body: Option<&[u8]>,
    body_offset: u64,
    eoh: &Macros,
    eom: &Macros,
    mods: &mut Vec<Response>,
) -> Result<Response, Failure> {
    let t = f.cfg.command_timeout;
    let keep_space = f.protocol & proto::HDR_LEADSPC != 0;
    if f.protocol & proto::NOHDRS == 0 {
        for h in headers {
            let value = h.milter_value(keep_space);
            let r = f.exchange(None, Command::Header { name: &h.name, value: &value }, f.protocol & proto::NR_HDR == 0, t, None).await?;
            if let Some(r) = r.filter(|r| !matches!(r, Response::Continue)) {
                return Ok(r);
            }
        }
    }
    if f.protocol & proto::NOEOH == 0 {
        let r = f.exchange(Some((Stage::Eoh, eoh)), Command::Eoh, f.protocol & proto::NR_EOH == 0, t, None).await?;
        if let Some(r) = r.filter(|r| !matches!(r, Response::Continue)) {
            return Ok(r);
        }
    }
    if f.protocol & proto::NOBODY == 0 {
        let reply = f.protocol & proto::NR_BODY == 0;
        match body {
            Some(b) => {
                for c in b.chunks(wire::CHUNK_SIZE) {
                    match f.exchange(None, Command::Body(c), reply, t, None).await? {
                        Some(Response::Skip) => break,
                        Some(r) if !matches!(r, Response::Continue) => return Ok(r),
                        _ => {}
                    }
                }
            }
            None => {
                use tokio::io::AsyncSeekExt;
                let file = draft.reader().map_err(|e| Failure::Io(std::io::Error::other(e)))?;
                let mut file = tokio::fs::File::from_std(file);
                file.seek(std::io::SeekFrom::Start(body_offset)).await?;
                let mut chunk = vec![0u8; wire::CHUNK_SIZE];
                loop {
                    let n = read_full(&mut file, &mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    match f.exchange(None, Command::Body(&chunk[..n]), reply, t, None).await? {
                        Some(Response::Skip) => break,
                        Some(r) if !matches!(r, Response::Continue) => return Ok(r),
                        _ => {}
                    }
                }
            }
        }
    }
    let r = f.exchange(Some((Stage::Eom, eom)), Command::BodyEob, true, f.cfg.eom_timeout, Some(mods)).await?;
    Ok(r.unwrap_or(Response::Continue))
}

/// Fills `buf` as far as the file allows.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = file.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Awaits futures concurrently, keeping their order (a tiny `join_all`:
/// the session would otherwise need the `futures` crate for this alone).
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// Replaces the draft's text with what the milters left.
pub fn rewrite_draft(draft: &mut Draft, rw: &Rewrite) -> Result<(), crate::spool::SpoolError> {
    let mut original = draft.reader()?;
    draft.rewrite(|w| write_rewrite(w, rw, Some(&mut original)))
}

/// Runs a message queued without SMTP (the `sendmail` command) through
/// milters the way Postfix runs `non_smtpd_milters`: CONNECT from
/// localhost, HELO, MAIL, each RCPT, DATA, then the message. Recipients a
/// milter refuses refuse the whole message (there is no SMTP dialogue to
/// refuse one of them in).
pub async fn filter_local(cfgs: &[Arc<MilterConfig>], hostname: &str, draft: &mut Draft, sender: &str, rcpts: &[String], max_size: u64) -> Outcome {
    let decided = |verdict| Outcome { verdict, rewrite: None, quarantine: None, change_from: None, add_rcpts: Vec::new(), del_rcpts: Vec::new() };
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let id = draft.id.to_string();
    let connect: Macros = vec![
        ("j", hostname.to_string()),
        ("_", "localhost [127.0.0.1]".into()),
        ("v", concat!("postern ", env!("CARGO_PKG_VERSION")).to_string()),
        ("{daemon_name}", "sendmail".into()),
        ("{client_addr}", "127.0.0.1".into()),
        ("{client_name}", "localhost".into()),
    ];
    let (mut m, v) = Milters::connect(cfgs, &ConnectInfo { hostname: "localhost", peer }, &connect, "local".into()).await;
    let mail_args = vec![format!("<{sender}>")];
    let mail_macros: Macros = vec![("{mail_addr}", sender.to_string()), ("{mail_mailer}", "local".into())];
    let mut verdict = v;
    if verdict == Verdict::Continue {
        verdict = m.helo("localhost", &Vec::new()).await;
    }
    if verdict == Verdict::Continue {
        verdict = m.mail(&mail_args, &mail_macros).await;
    }
    for r in rcpts {
        if verdict != Verdict::Continue {
            break;
        }
        verdict = m.rcpt(&[format!("<{r}>")], &vec![("{rcpt_addr}", r.clone())]).await;
    }
    m.queue_id = Some(id.clone());
    if verdict == Verdict::Continue {
        verdict = m.data(&vec![("i", id.clone())]).await;
    }
    let out = if verdict == Verdict::Continue {
        let macros: Macros = vec![("i", id)];
        m.message(draft, &macros, &macros, max_size).await
    } else {
        decided(verdict)
    };
    m.quit().await;
    out
}

/// Writes a rewritten message: headers then the body (replacement, or the
/// original from `body_offset` of `original`).
pub fn write_rewrite(out: &mut dyn std::io::Write, rw: &Rewrite, original: Option<&mut std::fs::File>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(4096);
    for h in &rw.headers {
        h.encode(&mut head);
    }
    head.extend_from_slice(b"\r\n");
    out.write_all(&head)?;
    match (&rw.body, original) {
        (Some(b), _) => out.write_all(b),
        (None, Some(f)) => {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(rw.body_offset))?;
            std::io::copy(f, out).map(|_| ())
        }
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf() {
        assert_eq!(crlf_normalise(b"a\r\nb\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf_normalise(b"\nx".to_vec()), b"\r\nx");
        assert_eq!(crlf_normalise(b"ok\r\n".to_vec()), b"ok\r\n");
    }

    #[test]
    fn describe_needs_the_right_action() {
        let cases: Vec<(Response, u32, &str)> = vec![
            (Response::AddHeader { name: "X".into(), value: "v".into() }, action::ADDHDRS, "add_header"),
            (Response::ChangeHeader { index: 1, name: "X".into(), value: String::new() }, action::CHGHDRS, "delete_header"),
            (Response::ReplaceBody(vec![1]), action::CHGBODY, "replace_body"),
            (Response::Quarantine("r".into()), action::QUARANTINE, "quarantine"),
            (Response::DelRcpt("<a@b>".into()), action::DELRCPT, "delete_rcpt"),
        ];
        for (m, need, what) in cases {
            let (n, w, _) = describe(&m);
            assert_eq!((n, w), (need, what));
        }
    }
}
