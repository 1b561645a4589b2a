//! The SMTP server session: one explicit state machine (RFC 5321) plus the
//! driver that does its I/O.
//!
//! May touch: the client socket; the spool (through `Spool` only); the
//! queue notifier. Implements RFC 5321 (§4.1 commands, §4.4 `Received:`,
//! §4.5.3 limits), RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 3030 CHUNKING,
//! RFC 2034 ENHANCEDSTATUSCODES, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8,
//! RFC 3848 protocol names.
//!
//! Transaction data lives inside the [`State`] variants, so "RCPT before
//! MAIL" cannot be represented; every transition goes through
//! [`Session::enter`], which traces `from -> to`.
//!
//! Pipelining: replies are appended to a write buffer that is flushed
//! whenever the session is about to wait for input, so a pipelined group
//! gets its replies in order, in one write.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use postern_wire::command::{Body, MailParams};
use postern_wire::data::{ChunkScanner, DataDecoder, DataFlags};
use postern_wire::line::{scan_line, LineScan};
use postern_wire::{codes, parse_command, Command, Enhanced, Path, Reply};

use crate::auth::{self as authpolicy, Authenticated, Throttle, Verdict as AuthVerdict};
use crate::config::{BanAction, BareNewline, Listener, Role};
use crate::users::UserStore;
use postern_wire::sasl::{self, Exchange, Mechanism, Need, Provide, SaslError, Step};
use crate::maillog;
use crate::milter::{self, ConnectInfo, Macros, MessageResult, Milters, Verdict};
use crate::policy::{check_rcpt, Facts, RcptDecision};
use crate::settings::Settings;
use crate::time::{now_unix, rfc5322_date};
use crate::spool::{Draft, Envelope, Place, QueueId, RcptStatus, Recipient, Spool, ENVELOPE_VERSION};
use crate::tls::{ServerTls, TlsInfo};

/// What a session needs from the server.
#[derive(Clone)]
pub struct Context {
    /// Settings at the time the connection was accepted.
    pub settings: Arc<Settings>,
    /// The queue.
    pub spool: Spool,
    /// Tells the scheduler about new messages.
    pub queued: mpsc::UnboundedSender<QueueId>,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Server TLS material at accept time (`None`: TLS unavailable).
    pub tls: Option<Arc<ServerTls>>,
    /// The listener's configuration.
    pub listener: Arc<Listener>,
    /// The user database.
    pub users: Arc<UserStore>,
    /// Brute-force counters, shared by all sessions.
    pub throttle: Arc<Throttle>,
}

/// Facts about the connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
}

/// The client socket: plain, or TLS after STARTTLS / on an implicit-TLS
/// listener.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a handshake owns the socket.
    Upgrading,
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// The client's HELO/EHLO.
#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

/// One accepted RCPT.
#[derive(Debug, Clone)]
struct Accepted {
    original: String,
    targets: Vec<String>,
    params: postern_wire::command::RcptParams,
}

/// A mail transaction: MAIL done, zero or more RCPTs accepted.
#[derive(Debug)]
struct Txn {
    from: Path,
    params: MailParams,
    rcpts: Vec<Accepted>,
    /// A milter said "discard": answer as usual, queue nothing.
    discard: bool,
}

impl Txn {
    fn sender(&self) -> String {
        match &self.from {
            Path::Mailbox(m) => m.to_string(),
            _ => String::new(),
        }
    }
}

/// A BDAT sequence in progress (RFC 3030).
#[derive(Debug)]
struct Chunking {
    /// Where the message goes; `None` if it could not be created.
    draft: Option<Draft>,
    scanner: ChunkScanner,
    size: u64,
    /// Set once a chunk failed: later chunks are read and discarded, and get
    /// this reply, until LAST.
    failed: Option<Reply>,
}

/// The session states.
#[derive(Debug)]
enum State {
    /// Greeted, waiting for HELO/EHLO.
    Fresh,
    /// Greeted with 554 (a milter refused the connection): only QUIT
    /// (RFC 5321 §3.1: other commands get 503).
    Refused,
    /// HELO/EHLO done, no transaction.
    Ready { helo: Helo },
    /// MAIL accepted; RCPTs collect in the transaction.
    Mail { helo: Helo, txn: Txn },
    /// Between BDAT chunks.
    Bdat { helo: Helo, txn: Txn, chunking: Chunking },
    /// QUIT, 421 or connection loss.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Refused => "refused",
            State::Ready { .. } => "ready",
            State::Mail { .. } => "mail",
            State::Bdat { .. } => "bdat",
            State::Closed => "closed",
        }
    }

    fn helo(&self) -> Option<&Helo> {
        match self {
            State::Ready { helo } | State::Mail { helo, .. } | State::Bdat { helo, .. } => Some(helo),
            _ => None,
        }
    }
}

/// Why the session ended early.
#[derive(Debug)]
enum End {
    /// The client closed or the socket failed.
    Gone,
    /// We closed (421, QUIT, timeout), reply already queued.
    Closed,
}

/// A session.
pub struct Session {
    io: Stream,
    tls: Option<TlsInfo>,
    auth: Option<Authenticated>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    state: State,
    errors: u32,
    messages: u32,
    skip_to_lf: bool,
    ctx: Context,
    conn: Conn,
    /// The listener's milters (`None` when it has none).
    milters: Option<Milters>,
}

/// Runs one SMTP session to the end.
pub async fn run(io: TcpStream, conn: Conn, ctx: Context) {
    let mut s = Session {
        io: Stream::Plain(io),
        tls: None,
        auth: None,
        rbuf: Vec::with_capacity(1024),
        wbuf: Vec::with_capacity(512),
        state: State::Fresh,
        errors: 0,
        messages: 0,
        skip_to_lf: false,
        ctx,
        conn,
        milters: None,
    };
    let peer = format!("[{}]:{}", conn.peer.ip(), conn.peer.port());
    maillog::event("connect", &[("client", &peer), ("listener", s.ctx.listener.role.name())]);
    if s.ctx.listener.role.implicit_tls() && s.handshake().await.is_err() {
        maillog::event("disconnect", &[("client", &peer), ("reason", "TLS handshake failed")]);
        return;
    }
    let greeting = Reply::plain(
        220,
        vec![format!("{} ESMTP postern", s.ctx.settings.hostname).into()],
    );
    match s.milter_connect().await {
        Verdict::Reject(r) if r.code >= 500 => {
            s.reject("CONNECT", Reply { code: 554, ..r }, &[]);
            s.enter(State::Refused);
        }
        Verdict::Reject(r) | Verdict::Close(r) => {
            // A greeting is 220, 554 or 421 (RFC 5321 §3.1, §4.2.5).
            s.reject("CONNECT", Reply { code: 421, ..r }, &[]);
            s.enter(State::Closed);
        }
        Verdict::Continue | Verdict::Discard => s.reply(greeting),
    }
    let _ = s.main_loop().await;
    if let Some(m) = s.milters.take() {
        m.quit().await;
    }
    let _ = s.flush().await;
    let _ = s.io.shutdown().await;
    maillog::event(
        "disconnect",
        &[("client", &peer), ("messages", &s.messages.to_string()), ("errors", &s.errors.to_string())],
    );
}

impl Session {
    fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    /// The one place where the state changes.
    fn enter(&mut self, to: State) {
        tracing::debug!(peer = %self.conn.peer, "session {} -> {}", self.state.name(), to.name());
        self.state = to;
    }

    /// Queues a reply and counts errors.
    fn reply(&mut self, r: Reply) {
        if r.code >= 400 {
            self.errors += 1;
        }
        tracing::trace!(peer = %self.conn.peer, "S: {}", r.summary());
        r.encode(&mut self.wbuf);
    }

    /// Queues a refusal and writes a `reject` log line.
    fn reject(&mut self, verb: &str, r: Reply, extra: &[(&str, &str)]) {
        let client = self.client_text();
        let summary = r.summary();
        let mut fields: Vec<(&str, &str)> = vec![("client", &client), ("command", verb), ("reply", &summary)];
        fields.extend_from_slice(extra);
        maillog::event("reject", &fields);
        self.reply(r);
    }

    fn client_text(&self) -> String {
        format!("[{}]:{}", self.conn.peer.ip(), self.conn.peer.port())
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.wbuf.is_empty() {
            let r = self.io.write_all(&self.wbuf).await;
            self.wbuf.clear();
            r.map_err(|_| End::Gone)?;
            self.io.flush().await.map_err(|_| End::Gone)?;
        }
        Ok(())
    }

    /// Flushes pending replies, then reads more input before `deadline`.
    /// Shutdown is honoured only between commands (`interruptible`).
    async fn fill(&mut self, deadline: Instant, interruptible: bool) -> Result<(), End> {
        self.flush().await?;
        // Read straight into the session buffer: an idle connection then
        // costs its small buffer, not a large array held across the await.
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
            self.rbuf.shrink_to(2048);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(4096);
        }
        let mut shutdown = self.ctx.shutdown.clone();
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)) => r,
            _ = shutdown.wait_for(|v| *v), if interruptible => {
                self.reply(codes::shutting_down());
                self.enter(State::Closed);
                return Err(End::Closed);
            }
        };
        match read {
            Err(_) => {
                self.reply(codes::timeout());
                self.enter(State::Closed);
                Err(End::Closed)
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.enter(State::Closed);
                Err(End::Gone)
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn main_loop(&mut self) -> Result<(), End> {
        let max_line = self.settings().config.limits.max_line_length;
        let cmd_timeout = self.settings().config.limits.command_timeout;
        loop {
            if matches!(self.state, State::Closed) {
                return Ok(());
            }
            if self.errors >= self.settings().config.limits.max_errors {
                self.reply(codes::too_many_errors());
                self.enter(State::Closed);
                return Ok(());
            }
            if self.skip_to_lf {
                // Discarding the rest of an over-long line.
                match self.rbuf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.rbuf.drain(..=i);
                        self.skip_to_lf = false;
                    }
                    None => {
                        self.rbuf.clear();
                        self.fill(Instant::now() + cmd_timeout, true).await?;
                    }
                }
                continue;
            }
            match scan_line(&self.rbuf, max_line) {
                LineScan::Line { end, next } => {
                    let line: Vec<u8> = self.rbuf[..end].to_vec();
                    self.rbuf.drain(..next);
                    self.command(&line).await?;
                }
                LineScan::TooLong => {
                    self.reply(codes::line_too_long());
                    self.skip_to_lf = true;
                }
                LineScan::Partial => self.fill(Instant::now() + cmd_timeout, true).await?,
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Result<(), End> {
        tracing::trace!(peer = %self.conn.peer, "C: {}", String::from_utf8_lossy(line));
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                let is_bdat = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"BDAT");
                if is_bdat {
                    // We cannot know how many octets follow: the stream is lost.
                    self.reply(e.reply());
                    self.reply(Reply::new(421, Enhanced(4, 5, 0), "Cannot recover from bad BDAT, closing connection"));
                    self.enter(State::Closed);
                    return Err(End::Closed);
                }
                if matches!(self.state, State::Bdat { .. }) {
                    return self.bdat_interrupted().await;
                }
                self.reply(e.reply());
                return Ok(());
            }
        };
        if matches!(self.state, State::Refused) && !matches!(cmd, Command::Quit) {
            self.reply(codes::bad_sequence().with_text("Connection refused, send QUIT"));
            return Ok(());
        }
        if matches!(self.state, State::Bdat { .. }) && !matches!(cmd, Command::Bdat { .. } | Command::Rset | Command::Quit | Command::Noop) {
            // RFC 3030 §2: only BDAT (or RSET/QUIT) may follow a non-LAST chunk.
            self.reply(codes::bad_sequence().with_text("Expecting BDAT, RSET or QUIT"));
            return Ok(());
        }
        match cmd {
            Command::Ehlo(name) => return self.helo(name, true).await,
            Command::Helo(name) => return self.helo(name, false).await,
            Command::Lhlo(_) => self.reply(codes::unknown_command().with_text("LHLO is for LMTP; use EHLO")),
            Command::Mail { from, params } => return self.mail(from, params).await,
            Command::Rcpt { to, params } => return self.rcpt(to, params).await,
            Command::Data => return self.data().await,
            Command::Bdat { size, last } => return self.bdat(size, last).await,
            Command::Rset => {
                if let Some(m) = self.milters.as_mut() {
                    m.abort().await;
                }
                if let Some(helo) = self.state.helo().cloned() {
                    self.enter(State::Ready { helo });
                }
                self.reply(codes::ok());
            }
            Command::Noop => self.reply(codes::ok()),
            Command::Quit => {
                self.reply(codes::bye());
                self.enter(State::Closed);
                return Err(End::Closed);
            }
            Command::Vrfy(_) => self.reply(codes::cannot_vrfy()),
            Command::Expn(_) => self.reply(codes::not_implemented().with_text("EXPN is not available")),
            Command::Help => self.reply(codes::help()),
            Command::StartTls => return self.starttls().await,
            Command::Auth { mechanism, initial } => return self.auth(mechanism, initial).await,
        }
        Ok(())
    }

    /// An unparsable line between BDAT chunks: the client's chunk framing
    /// is broken, so close.
    async fn bdat_interrupted(&mut self) -> Result<(), End> {
        self.reply(Reply::new(421, Enhanced(4, 5, 0), "Expected BDAT, closing connection"));
        self.enter(State::Closed);
        Err(End::Closed)
    }

    /// The EHLO keyword list; STARTTLS, AUTH and DSN slot in here.
    fn ehlo_lines(&self) -> Vec<std::borrow::Cow<'static, str>> {
        let s = self.settings();
        let mut lines: Vec<std::borrow::Cow<'static, str>> = vec![
            format!("{} Hello [{}]", s.hostname, self.conn.peer.ip()).into(),
            "PIPELINING".into(),
            format!("SIZE {}", s.config.limits.max_message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        // RFC 3207 §4.2: STARTTLS is not offered once TLS is active.
        if self.tls.is_none() && self.ctx.tls.is_some() {
            lines.insert(1, "STARTTLS".into());
        }
        let mechs = self.usable_mechanisms();
        if self.auth.is_none() && !mechs.is_empty() {
            let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")).into());
            if s.config.auth.broken_auth_line {
                lines.push(format!("AUTH={}", names.join(" ")).into());
            }
        }
        lines
    }

    fn usable_mechanisms(&self) -> Vec<Mechanism> {
        let verified = self.tls.as_ref().and_then(|t| t.client_cert.as_ref()).is_some_and(|c| c.verified.is_ok());
        authpolicy::usable_mechanisms(&self.settings().config.auth, &self.ctx.listener, self.tls.is_some(), self.conn.peer.ip(), verified)
    }

    /// Reads one line during an AUTH exchange (RFC 4954 §4: up to 12288 octets).
    async fn auth_line(&mut self) -> Result<String, End> {
        let deadline = Instant::now() + self.settings().config.limits.command_timeout;
        loop {
            match scan_line(&self.rbuf, 12288) {
                LineScan::Line { end, next } => {
                    let line = String::from_utf8_lossy(&self.rbuf[..end]).into_owned();
                    self.rbuf.drain(..next);
                    return Ok(line);
                }
                LineScan::TooLong => {
                    self.reply(Reply::new(500, Enhanced(5, 5, 6), "Authentication exchange line is too long"));
                    self.enter(State::Closed);
                    return Err(End::Closed);
                }
                LineScan::Partial => self.fill(deadline, true).await?,
            }
        }
    }

    /// Answers what a SASL machine needs from the user database.
    async fn sasl_lookup(&self, need: Need) -> Provide {
        let db = self.ctx.users.get();
        match need {
            Need::CheckPassword { authcid, password } => {
                let users = self.ctx.users.clone();
                let ttl = self.settings().config.auth.verified_cache_ttl;
                if users.verified_recently(&db, &authcid, &password, ttl) {
                    return Provide::PasswordOk(true);
                }
                // argon2 is deliberately slow: off the async threads, a
                // few at a time.
                let Ok(_permit) = users.slow_checks.acquire().await else { return Provide::PasswordOk(false) };
                let u = users.clone();
                let ok = tokio::task::spawn_blocking(move || u.verify_and_remember(&db, &authcid, &password, ttl)).await.unwrap_or(false);
                Provide::PasswordOk(ok)
            }
            Need::Secret { authcid } => Provide::Secret(db.plain(&authcid)),
            Need::Scram { authcid, hash } => Provide::Scram(db.scram(&authcid, hash)),
        }
    }

    /// AUTH (RFC 4954).
    async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Result<(), End> {
        if self.auth.is_some() {
            self.reply(codes::bad_sequence().with_text("Already authenticated"));
            return Ok(());
        }
        if matches!(self.state, State::Fresh) {
            self.reply(codes::bad_sequence().with_text("Send EHLO first"));
            return Ok(());
        }
        if matches!(self.state, State::Mail { .. } | State::Bdat { .. }) {
            self.reply(codes::bad_sequence().with_text("AUTH not allowed during a mail transaction"));
            return Ok(());
        }
        let cfg = self.settings().config.auth.clone();
        let configured = authpolicy::listener_mechanisms(&cfg, &self.ctx.listener);
        let usable = self.usable_mechanisms();
        let mech = Mechanism::parse(&mechanism);
        let client = self.client_text();
        let Some(mech) = mech.filter(|m| usable.contains(m)) else {
            let r = if mech.is_some_and(|m| configured.contains(&m)) && self.tls.is_none() {
                Reply::new(538, Enhanced(5, 7, 11), "Encryption required for requested authentication mechanism")
            } else {
                Reply::new(504, Enhanced(5, 5, 4), "Unrecognized authentication type")
            };
            maillog::event("auth", &[("client", &client), ("mechanism", &mechanism), ("result", "refused"), ("reply", &r.summary())]);
            self.reply(r);
            return Ok(());
        };
        let now = std::time::Instant::now();
        if self.ctx.throttle.check_ip(self.conn.peer.ip(), now, &cfg) == AuthVerdict::Banned {
            maillog::event("auth", &[("client", &client), ("mechanism", mech.name()), ("result", "banned")]);
            return self.banned(cfg.ban_action);
        }
        let initial = match initial.as_deref().map(sasl::decode_response) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                self.auth_failed(mech, None, &e, &cfg).await;
                return Ok(());
            }
        };
        let external = match (&self.tls, mech) {
            (Some(t), Mechanism::External) => {
                t.client_cert.as_ref().and_then(|c| authpolicy::external_user(cfg.external_identity, c, &self.ctx.users.get()))
            }
            _ => None,
        };
        let bindings = self.tls.as_ref().map(|t| t.bindings.clone()).unwrap_or_default();
        let mut ex = Exchange::new(mech, &self.settings().hostname, bindings, usable.contains(&Mechanism::ScramSha256Plus), external);
        let mut user: Option<String> = None;
        let mut step = ex.start(initial);
        loop {
            step = match step {
                Step::Challenge(c) => {
                    self.reply(Reply::plain(334, vec![sasl::encode_challenge(&c).into()]));
                    let line = self.auth_line().await?;
                    match sasl::decode_response(&line) {
                        Ok(d) => ex.respond(&d),
                        Err(e) => Step::Fail(e),
                    }
                }
                Step::Need(need) => {
                    let who = match &need {
                        Need::CheckPassword { authcid, .. } | Need::Secret { authcid } | Need::Scram { authcid, .. } => authcid.to_ascii_lowercase(),
                    };
                    user = Some(who.clone());
                    if self.ctx.throttle.check_user(&who, std::time::Instant::now(), &cfg) == AuthVerdict::Banned {
                        maillog::event("auth", &[("client", &client), ("mechanism", mech.name()), ("user", &who), ("result", "banned")]);
                        return self.banned(cfg.ban_action);
                    }
                    let p = self.sasl_lookup(need).await;
                    ex.provide(p)
                }
                Step::Success(success) => {
                    if let Some(d) = success.final_data() {
                        // RFC 4954 §4: additional data goes in a 334; the client answers empty.
                        self.reply(Reply::plain(334, vec![sasl::encode_challenge(d).into()]));
                        let line = self.auth_line().await?;
                        if !matches!(sasl::decode_response(&line).as_deref(), Ok([])) {
                            self.auth_failed(mech, Some(success.authcid()), &SaslError::Malformed("expected an empty response"), &cfg).await;
                            return Ok(());
                        }
                    }
                    let authcid = success.authcid().to_ascii_lowercase();
                    maillog::event("auth", &[("client", &client), ("mechanism", mech.name()), ("user", &authcid), ("result", "ok")]);
                    self.auth = Some(Authenticated::from_exchange(&success, mech));
                    self.reply(Reply::new(235, Enhanced(2, 7, 0), "Authentication successful"));
                    return Ok(());
                }
                Step::Fail(e) => {
                    self.auth_failed(mech, user.as_deref(), &e, &cfg).await;
                    if matches!(self.state, State::Closed) {
                        return Err(End::Closed);
                    }
                    return Ok(());
                }
            };
        }
    }

    fn banned(&mut self, action: BanAction) -> Result<(), End> {
        match action {
            BanAction::Refuse => {
                self.reply(Reply::new(454, Enhanced(4, 7, 0), "Too many authentication failures, try again later"));
                Ok(())
            }
            BanAction::Disconnect => {
                self.reply(Reply::new(421, Enhanced(4, 7, 0), "Too many authentication failures, closing connection"));
                self.enter(State::Closed);
                Err(End::Closed)
            }
        }
    }

    /// A failed exchange: log (stable format for fail2ban), count, delay, reply.
    async fn auth_failed(&mut self, mech: Mechanism, user: Option<&str>, e: &SaslError, cfg: &crate::config::Auth) {
        let client = self.client_text();
        let reply = match e {
            SaslError::Cancelled => Reply::new(501, Enhanced(5, 7, 0), "Authentication cancelled"),
            SaslError::Malformed(_) => Reply::new(501, Enhanced(5, 5, 2), "Malformed authentication data"),
            _ => Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"),
        };
        let reason = e.to_string();
        maillog::event(
            "auth",
            &[
                ("client", &client),
                ("ip", &self.conn.peer.ip().to_string()),
                ("mechanism", mech.name()),
                ("user", user.unwrap_or("")),
                ("result", "fail"),
                ("reason", &reason),
            ],
        );
        if *e != SaslError::Cancelled {
            let (delay, banned) = self.ctx.throttle.fail(self.conn.peer.ip(), user, std::time::Instant::now(), cfg);
            if banned {
                maillog::event("auth", &[("client", &client), ("ip", &self.conn.peer.ip().to_string()), ("user", user.unwrap_or("")), ("result", "ban"), ("seconds", &cfg.ban_time.as_secs().to_string())]);
            }
            if !delay.is_zero() {
                let _ = self.flush().await;
                tokio::time::sleep(delay).await;
            }
            if banned && cfg.ban_action == BanAction::Disconnect {
                self.reply(reply);
                self.reply(Reply::new(421, Enhanced(4, 7, 0), "Too many authentication failures, closing connection"));
                self.enter(State::Closed);
                return;
            }
        }
        self.reply(reply);
    }

    /// Runs the TLS handshake on the socket (implicit TLS or after STARTTLS).
    async fn handshake(&mut self) -> Result<(), End> {
        let Some(tls) = self.ctx.tls.clone() else { return Err(End::Gone) };
        let mode = self.ctx.listener.cert_mode_for(self.conn.peer.ip());
        let Stream::Plain(tcp) = std::mem::replace(&mut self.io, Stream::Upgrading) else {
            return Err(End::Gone);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(mode));
        let timeout = self.settings().config.limits.command_timeout;
        let client = self.client_text();
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let info = TlsInfo::from_server(stream.get_ref().1, &tls, mode);
                let (subject, verdict, fp) = match &info.client_cert {
                    Some(c) => (c.cert.subject.clone(), c.verdict(), c.cert.sha256.clone()),
                    None => (String::new(), "no certificate".to_string(), String::new()),
                };
                let mode_text = format!("{mode:?}").to_ascii_lowercase();
                maillog::event(
                    "tls",
                    &[
                        ("client", &client),
                        ("version", &info.version),
                        ("cipher", &info.cipher),
                        ("client_cert_mode", &mode_text),
                        ("cert_subject", &subject),
                        ("cert_sha256", &fp),
                        ("cert", &verdict),
                    ],
                );
                self.io = Stream::Tls(Box::new(stream));
                self.tls = Some(info);
                Ok(())
            }
            Ok(Err(e)) => {
                maillog::event("tls", &[("client", &client), ("error", &e.to_string())]);
                self.enter(State::Closed);
                Err(End::Gone)
            }
            Err(_) => {
                maillog::event("tls", &[("client", &client), ("error", "handshake timeout")]);
                self.enter(State::Closed);
                Err(End::Gone)
            }
        }
    }

    /// STARTTLS (RFC 3207).
    async fn starttls(&mut self) -> Result<(), End> {
        if self.tls.is_some() {
            self.reply(codes::bad_sequence().with_text("TLS already active"));
            return Ok(());
        }
        if self.ctx.tls.is_none() {
            self.reply(Reply::new(454, Enhanced(4, 7, 0), "TLS not available"));
            return Ok(());
        }
        if matches!(self.state, State::Mail { .. } | State::Bdat { .. }) {
            self.reply(codes::bad_sequence().with_text("MAIL transaction in progress"));
            return Ok(());
        }
        self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
        self.flush().await?;
        // CVE-2011-0411 class: anything the client pipelined after STARTTLS
        // arrived in plaintext and must not be executed inside TLS.
        if !self.rbuf.is_empty() {
            let client = self.client_text();
            maillog::event("tls", &[("client", &client), ("warning", "discarded plaintext pipelined after STARTTLS"), ("bytes", &self.rbuf.len().to_string())]);
            self.rbuf.clear();
        }
        self.skip_to_lf = false;
        self.handshake().await?;
        // RFC 3207 §4.2: the session starts over; the client must EHLO again,
        // and nothing learnt before (including AUTH) carries over.
        self.auth = None;
        self.enter(State::Fresh);
        Ok(())
    }

    async fn helo(&mut self, name: String, extended: bool) -> Result<(), End> {
        // RFC 5321 §4.1.4: EHLO/HELO resets any transaction.
        let client = self.client_text();
        maillog::event("helo", &[("client", &client), ("helo", &name)]);
        if self.milters.is_some() {
            let macros = self.milter_macros_helo();
            let m = self.milters.as_mut().expect("checked");
            m.abort().await;
            match m.helo(&name, &macros).await {
                Verdict::Continue | Verdict::Discard => {}
                Verdict::Reject(r) => {
                    if let Some(helo) = self.state.helo().cloned() {
                        self.enter(State::Ready { helo });
                    }
                    self.reject("HELO", r, &[("helo", &name)]);
                    return Ok(());
                }
                Verdict::Close(r) => return self.milter_close("HELO", r),
            }
        }
        if extended {
            let lines = self.ehlo_lines();
            self.reply(Reply::plain(250, lines));
        } else {
            let text = format!("{} Hello [{}]", self.settings().hostname, self.conn.peer.ip());
            self.reply(Reply::plain(250, vec![text.into()]));
        }
        self.enter(State::Ready { helo: Helo { name, extended } });
        Ok(())
    }

    /// Connects the listener's milters and sends CONNECT.
    async fn milter_connect(&mut self) -> Verdict {
        let names = &self.ctx.listener.milters;
        if names.is_empty() {
            return Verdict::Continue;
        }
        let cfgs = self.settings().config.milters_named(names);
        let s = self.settings();
        let ip = self.conn.peer.ip().to_string();
        let client_name = format!("[{ip}]");
        let macros: Macros = vec![
            ("j", s.hostname.clone()),
            ("_", format!("{client_name} [{ip}]")),
            ("v", concat!("postern ", env!("CARGO_PKG_VERSION")).to_string()),
            ("{daemon_name}", self.ctx.listener.label().to_string()),
            ("{daemon_addr}", self.conn.local.ip().to_string()),
            ("{daemon_port}", self.conn.local.port().to_string()),
            ("{if_name}", s.hostname.clone()),
            ("{if_addr}", self.conn.local.ip().to_string()),
            ("{client_addr}", ip.clone()),
            ("{client_port}", self.conn.peer.port().to_string()),
            ("{client_name}", client_name.clone()),
            ("{client_ptr}", client_name.clone()),
            ("{client_resolve}", "FAIL".to_string()),
        ];
        let info = ConnectInfo { hostname: &client_name, peer: self.conn.peer };
        let (m, v) = Milters::connect(&cfgs, &info, &macros, self.client_text()).await;
        self.milters = Some(m);
        v
    }

    /// HELO-stage macros: what TLS gave (sendmail's names).
    fn milter_macros_helo(&self) -> Macros {
        let Some(t) = &self.tls else { return vec![("{verify}", "NONE".into())] };
        let mut m: Macros = vec![("{tls_version}", t.version.clone()), ("{cipher}", t.cipher.clone())];
        let bits = if t.cipher.contains("256") || t.cipher.contains("CHACHA20") { "256" } else { "128" };
        m.push(("{cipher_bits}", bits.into()));
        match &t.client_cert {
            None => m.push(("{verify}", "NO".into())),
            Some(c) => {
                m.push(("{cert_subject}", c.cert.subject.clone()));
                m.push(("{cert_issuer}", c.cert.issuer.clone()));
                m.push(("{verify}", if c.verified.is_ok() { "OK" } else { "FAIL" }.into()));
            }
        }
        m
    }

    /// MAIL-stage macros: AUTH facts and the sender.
    fn milter_macros_mail(&self, sender: &str) -> Macros {
        let mut m = self.milter_macros_helo();
        if let Some(a) = &self.auth {
            m.push(("{auth_type}", a.mechanism().name().to_string()));
            m.push(("{auth_authen}", a.user().to_string()));
            m.push(("{auth_ssf}", "0".into()));
        }
        let host = sender.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let mailer = if !host.is_empty() && self.settings().is_local_domain(&host) { "local" } else { "esmtp" };
        m.push(("{mail_mailer}", mailer.into()));
        m.push(("{mail_host}", host));
        m.push(("{mail_addr}", sender.to_string()));
        m
    }

    /// RCPT-stage macros.
    fn milter_macros_rcpt(&self, to: &Path) -> Macros {
        let addr = match to {
            Path::Mailbox(mb) => mb.to_string(),
            _ => "postmaster".to_string(),
        };
        let host = addr.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let local = host.is_empty() || self.settings().is_local_domain(&host);
        let (mailer, rhost) = if local { ("local", String::new()) } else { ("esmtp", host) };
        vec![("{rcpt_mailer}", mailer.into()), ("{rcpt_host}", rhost), ("{rcpt_addr}", addr)]
    }

    /// A milter asked to drop the connection: 421 and close.
    fn milter_close(&mut self, verb: &str, r: Reply) -> Result<(), End> {
        self.reject(verb, r, &[]);
        self.enter(State::Closed);
        Err(End::Closed)
    }

    /// MAIL: check, filter (milters), proceed.
    async fn mail(&mut self, from: Path, params: MailParams) -> Result<(), End> {
        let Some(helo) = self.mail_checks(&from, &params) else { return Ok(()) };
        let mut txn = Txn { from, params, rcpts: Vec::new(), discard: false };
        if self.milters.is_some() {
            let sender = txn.sender();
            let args = mail_args(&txn.from, &txn.params);
            let macros = self.milter_macros_mail(&sender);
            let m = self.milters.as_mut().expect("checked");
            match m.mail(&args, &macros).await {
                Verdict::Continue => {}
                Verdict::Discard => txn.discard = true,
                Verdict::Reject(r) => {
                    m.abort().await;
                    self.reject("MAIL", r, &[("from", &sender)]);
                    return Ok(());
                }
                Verdict::Close(r) => return self.milter_close("MAIL", r),
            }
        }
        self.reply(codes::sender_ok());
        self.enter(State::Mail { helo, txn });
        Ok(())
    }

    /// MAIL's own checks: the HELO to keep when they pass; otherwise the
    /// refusal is queued.
    fn mail_checks(&mut self, from: &Path, params: &MailParams) -> Option<Helo> {
        let helo = match &self.state {
            State::Fresh => {
                self.reply(codes::bad_sequence().with_text("Send HELO/EHLO first"));
                return None;
            }
            State::Ready { helo } => helo.clone(),
            _ => {
                self.reply(codes::bad_sequence().with_text("Nested MAIL command"));
                return None;
            }
        };
        let sender = match from {
            Path::Mailbox(m) => m.to_string(),
            _ => String::new(),
        };
        if self.tls.is_none() && self.ctx.listener.tls_required() {
            self.reject("MAIL", Reply::new(530, Enhanced(5, 7, 0), "Must issue a STARTTLS command first"), &[("from", &sender)]);
            return None;
        }
        // RFC 6409 §4.3 / RFC 4954 §6: submission requires authentication:
        // SMTP AUTH, or a client certificate verified by a configured CA.
        let cert_ok = self.tls.as_ref().and_then(|t| t.client_cert.as_ref()).is_some_and(|c| c.verified.is_ok());
        if self.auth.is_none() && !cert_ok && matches!(self.ctx.listener.role, Role::Submission | Role::Submissions) {
            self.reject("MAIL", Reply::new(530, Enhanced(5, 7, 0), "Authentication required"), &[("from", &sender)]);
            return None;
        }
        if let (Some(a), Path::Mailbox(m)) = (&self.auth, from) {
            if self.settings().config.auth.sender_login_match && !self.owns_sender(a.user(), m) {
                let r = Reply::new(553, Enhanced(5, 7, 1), format!("<{m}>: Sender address not owned by user {}", a.user()));
                let user = a.user().to_string();
                self.reject("MAIL", r, &[("from", &sender), ("user", &user)]);
                return None;
            }
        }
        let max = self.settings().config.limits.max_message_size;
        if params.size.is_some_and(|s| s > max) {
            let r = codes::too_big().with_text(format!("Message size exceeds fixed maximum message size ({max} bytes)"));
            self.reject("MAIL", r, &[("from", &sender)]);
            return None;
        }
        if params.body == Body::BinaryMime {
            self.reject("MAIL", codes::unknown_parameter().with_text("BINARYMIME is not supported"), &[("from", &sender)]);
            return None;
        }
        if !helo.extended && (params.size.is_some() || params.smtputf8 || params.body != Body::SevenBit) {
            // Parameters are ESMTP only; HELO clients may not use them.
            self.reject("MAIL", codes::unknown_parameter().with_text("Parameters require EHLO"), &[("from", &sender)]);
            return None;
        }
        if let Some(free) = self.ctx.spool.free_space() {
            let need = self.settings().config.queue.min_free_space + params.size.unwrap_or(0);
            if free < need {
                self.reject("MAIL", codes::insufficient_storage(), &[("from", &sender)]);
                return None;
            }
        }
        Some(helo)
    }

    /// Sender-login match: the user's listed addresses, or user@local-domain.
    fn owns_sender(&self, user: &str, m: &postern_wire::Mailbox) -> bool {
        let addr = m.to_string().to_ascii_lowercase();
        let db = self.ctx.users.get();
        if db.users.get(user).is_some_and(|r| r.addresses.iter().any(|a| a.eq_ignore_ascii_case(&addr))) {
            return true;
        }
        m.local.eq_ignore_ascii_case(user) && self.settings().is_local_domain(&m.domain)
    }

    async fn rcpt(&mut self, to: Path, params: postern_wire::command::RcptParams) -> Result<(), End> {
        let (count, smtputf8, sender) = match &self.state {
            State::Mail { txn, .. } => (txn.rcpts.len(), txn.params.smtputf8, txn.sender()),
            State::Fresh | State::Ready { .. } => {
                self.reply(codes::bad_sequence().with_text("Need MAIL before RCPT"));
                return Ok(());
            }
            _ => {
                self.reply(codes::bad_sequence());
                return Ok(());
            }
        };
        let rcpt_text = match &to {
            Path::Mailbox(m) => m.to_string(),
            Path::Postmaster => "Postmaster".to_string(),
            Path::Null => String::new(),
        };
        if let Path::Mailbox(m) = &to {
            if m.is_utf8() && !smtputf8 {
                self.reject("RCPT", Reply::new(553, Enhanced(5, 6, 7), "Non-ASCII address requires SMTPUTF8"), &[("to", &rcpt_text)]);
                return Ok(());
            }
        }
        if count >= self.settings().config.limits.max_recipients {
            self.reject("RCPT", codes::too_many_recipients(), &[("from", &sender), ("to", &rcpt_text)]);
            return Ok(());
        }
        let db = self.ctx.users.get();
        let sender_mb = match &self.state {
            State::Mail { txn, .. } => match &txn.from {
                Path::Mailbox(m) => Some(m.clone()),
                _ => None,
            },
            _ => None,
        };
        let facts = Facts {
            listener: self.ctx.listener.label(),
            client_ip: self.conn.peer.ip(),
            tls: self.tls.is_some(),
            authenticated: self.auth.as_ref(),
            cert: self.tls.as_ref().and_then(|t| t.client_cert.as_ref()),
            sender: sender_mb.as_ref(),
            rcpt: &to,
            user_db: Some(&db),
        };
        let decision = check_rcpt(self.settings(), &facts);
        let client = self.client_text();
        match decision {
            RcptDecision::Accept { targets, rule, origin, action } => {
                if self.milters.is_some() {
                    let args = rcpt_args(&rcpt_text, &params);
                    let macros = self.milter_macros_rcpt(&to);
                    match self.milters.as_mut().expect("checked").rcpt(&args, &macros).await {
                        Verdict::Continue => {}
                        Verdict::Discard => {
                            if let State::Mail { txn, .. } = &mut self.state {
                                txn.discard = true;
                            }
                        }
                        Verdict::Reject(r) => {
                            self.reject("RCPT", r, &[("from", &sender), ("to", &rcpt_text), ("rule", "milter")]);
                            return Ok(());
                        }
                        Verdict::Close(r) => return self.milter_close("RCPT", r),
                    }
                }
                let act = format!("{action:?}").to_ascii_lowercase();
                maillog::event(
                    "rcpt",
                    &[("client", &client), ("from", &sender), ("to", &rcpt_text), ("result", &act), ("rule", &rule), ("origin", &origin)],
                );
                if let State::Mail { txn, .. } = &mut self.state {
                    txn.rcpts.push(Accepted { original: rcpt_text, targets, params });
                }
                self.reply(codes::recipient_ok());
            }
            RcptDecision::Reject { reply, rule, origin } => {
                self.reject("RCPT", reply, &[("from", &sender), ("to", &rcpt_text), ("rule", &rule), ("origin", &origin)]);
            }
        }
        Ok(())
    }

    /// Takes the transaction out of the state for DATA/BDAT, or replies why not.
    fn take_txn(&mut self) -> Option<(Helo, Txn)> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Mail { helo, txn } if !txn.rcpts.is_empty() => Some((helo, txn)),
            State::Mail { helo, txn } => {
                self.state = State::Mail { helo, txn };
                self.reply(codes::no_valid_recipients());
                None
            }
            other => {
                self.state = other;
                self.reply(codes::bad_sequence().with_text("Need MAIL and RCPT first"));
                None
            }
        }
    }

    /// Creates the spool draft and writes the `Received:` header.
    fn start_draft(&self, helo: &Helo, txn: &Txn) -> Result<Draft, Reply> {
        let mut draft = self.ctx.spool.draft().map_err(|e| {
            tracing::warn!("spool: {e}");
            if e.is_no_space() {
                codes::insufficient_storage()
            } else {
                codes::local_error()
            }
        })?;
        let header = received_header(self.settings(), &self.conn, helo, txn, &draft.id, self.tls.as_ref(), self.auth.is_some());
        draft.write(header.as_bytes());
        Ok(draft)
    }

    async fn data(&mut self) -> Result<(), End> {
        let Some((helo, txn)) = self.take_txn() else { return Ok(()) };
        if txn.params.body == Body::BinaryMime {
            self.reply(codes::bad_sequence().with_text("BINARYMIME requires BDAT"));
            self.enter(State::Mail { helo, txn });
            return Ok(());
        }
        let mut draft = match self.start_draft(&helo, &txn) {
            Ok(d) => d,
            Err(r) => {
                self.reject("DATA", r, &[("from", &txn.sender())]);
                self.enter(State::Mail { helo, txn });
                return Ok(());
            }
        };
        let mut txn = txn;
        if let Some(r) = self.milter_data(&draft.id, &mut txn).await? {
            self.reject("DATA", r, &[("from", &txn.sender())]);
            self.enter(State::Ready { helo });
            return Ok(());
        }
        self.reply(codes::start_data());
        let limits = &self.settings().config.limits;
        let mut dec = DataDecoder::new(limits.max_line_length, limits.max_message_size);
        let deadline = Instant::now() + limits.data_timeout;
        let mut out = Vec::with_capacity(16 * 1024);
        loop {
            let fed = dec.feed(&self.rbuf, &mut out);
            draft.write(&out);
            out.clear();
            self.rbuf.drain(..fed.consumed);
            if fed.done {
                break;
            }
            self.fill(deadline, false).await?;
        }
        self.finish_message(helo, txn, draft, dec.flags(), "DATA").await
    }

    /// The milters' DATA stage (sent once the queue id is known). Returns
    /// a refusal; a refusal or a close also aborts the milters' message.
    async fn milter_data(&mut self, id: &QueueId, txn: &mut Txn) -> Result<Option<Reply>, End> {
        let Some(m) = self.milters.as_mut() else { return Ok(None) };
        m.queue_id = Some(id.to_string());
        let macros: Macros = vec![("i", id.to_string())];
        match m.data(&macros).await {
            Verdict::Continue => Ok(None),
            Verdict::Discard => {
                txn.discard = true;
                Ok(None)
            }
            Verdict::Reject(r) => {
                m.abort().await;
                Ok(Some(r))
            }
            Verdict::Close(r) => self.milter_close("DATA", r).map(|_| None),
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Result<(), End> {
        let (helo, txn, mut chunking) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Bdat { helo, txn, chunking } => (helo, txn, chunking),
            State::Mail { helo, mut txn } if !txn.rcpts.is_empty() => {
                let max_line = self.settings().config.limits.max_line_length;
                let (draft, failed) = match self.start_draft(&helo, &txn) {
                    Ok(d) => match self.milter_data(&d.id, &mut txn).await? {
                        None => (Some(d), None),
                        Some(r) => (None, Some(r)),
                    },
                    Err(r) => (None, Some(r)),
                };
                (helo, txn, Chunking { draft, scanner: ChunkScanner::new(max_line), size: 0, failed })
            }
            other => {
                // Wrong state: the chunk is still on its way, read and drop it.
                self.state = other;
                let deadline = Instant::now() + self.settings().config.limits.data_timeout;
                self.read_chunk(size, deadline, |_| {}).await?;
                let r = if matches!(self.state, State::Mail { .. }) {
                    codes::no_valid_recipients()
                } else {
                    codes::bad_sequence().with_text("Need MAIL and RCPT first")
                };
                self.reply(r);
                return Ok(());
            }
        };
        let max = self.settings().config.limits.max_message_size;
        let deadline = Instant::now() + self.settings().config.limits.data_timeout;
        if chunking.failed.is_none() && chunking.size.saturating_add(size) > max {
            chunking.failed = Some(codes::too_big());
            chunking.draft = None;
        }
        {
            let ch = &mut chunking;
            self.read_chunk(size, deadline, |bytes| {
                if ch.failed.is_none() {
                    ch.scanner.scan(bytes);
                    if let Some(d) = ch.draft.as_mut() {
                        d.write(bytes);
                    }
                }
            })
            .await?;
        }
        chunking.size += size;
        if !last {
            let r = match &chunking.failed {
                Some(r) => r.clone(),
                None => codes::ok().with_text(format!("{size} octets received")),
            };
            self.reply(r);
            self.enter(State::Bdat { helo, txn, chunking });
            return Ok(());
        }
        match (chunking.failed, chunking.draft) {
            (None, Some(draft)) => {
                let flags = chunking.scanner.finish();
                return self.finish_message(helo, txn, draft, flags, "BDAT").await;
            }
            (failed, _) => {
                let r = failed.unwrap_or_else(codes::local_error);
                if let Some(m) = self.milters.as_mut() {
                    m.abort().await;
                }
                self.reject("BDAT", r, &[("from", &txn.sender())]);
                self.enter(State::Ready { helo });
            }
        }
        Ok(())
    }

    /// Reads exactly `size` octets of chunk data, passing them to `sink`.
    async fn read_chunk(&mut self, size: u64, deadline: Instant, mut sink: impl FnMut(&[u8])) -> Result<(), End> {
        let mut remaining = size;
        loop {
            let n = (remaining.min(self.rbuf.len() as u64)) as usize;
            sink(&self.rbuf[..n]);
            self.rbuf.drain(..n);
            remaining -= n as u64;
            if remaining == 0 {
                return Ok(());
            }
            self.fill(deadline, false).await?;
        }
    }

    /// Checks what the decoder saw, then commits to the spool and replies.
    async fn finish_message(&mut self, helo: Helo, mut txn: Txn, mut draft: Draft, flags: DataFlags, verb: &str) -> Result<(), End> {
        let sender = txn.sender();
        let limits = &self.settings().config.limits;
        let refusal = if flags.too_big {
            Some(codes::too_big())
        } else if flags.bare_cr_lf && limits.bare_newline == BareNewline::Reject {
            Some(Reply::new(550, Enhanced(5, 6, 0), "Message contains bare CR or LF; lines must end with CRLF"))
        } else if flags.long_line {
            Some(Reply::new(
                550,
                Enhanced(5, 6, 0),
                format!("Message has a line longer than {} octets (RFC 5321 4.5.3.1.6)", limits.max_line_length),
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            drop(draft); // removes the temp file: no debris
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
            }
            self.reject(verb, r, &[("from", &sender)]);
            self.enter(State::Ready { helo });
            return Ok(());
        }
        let id = draft.id.clone();
        let mut place = Place::Active;
        let mut quarantine = None;
        if txn.discard {
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
            }
            return self.discarded(helo, draft, &sender);
        }
        if self.milters.is_some() {
            let out = self.milter_message(&mut draft).await;
            match self.apply_milters(out, &mut txn, &mut draft) {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Discard) => return self.discarded(helo, draft, &sender),
                Ok(Verdict::Reject(r)) => {
                    drop(draft);
                    self.reject(verb, r, &[("from", &sender)]);
                    self.enter(State::Ready { helo });
                    return Ok(());
                }
                Ok(Verdict::Close(r)) => return self.milter_close(verb, r),
                Err(q) => {
                    place = Place::Hold;
                    quarantine = Some(q);
                }
            }
        }
        let sender = txn.sender();
        let mut env = build_envelope(&id, &txn, draft.written(), &self.conn, &helo);
        env.quarantine = quarantine;
        let spool = self.ctx.spool.clone();
        let env2 = env.clone();
        let result = tokio::task::spawn_blocking(move || spool.commit_to(draft, &env2, place)).await;
        match result {
            Ok(Ok(())) => {
                self.messages += 1;
                let client = self.client_text();
                maillog::event(
                    "queued",
                    &[
                        ("id", id.as_str()),
                        ("from", &sender),
                        ("size", &env.size.to_string()),
                        ("nrcpt", &env.recipients.len().to_string()),
                        ("client", &client),
                        ("helo", &helo.name),
                    ],
                );
                if let Some(reason) = &env.quarantine {
                    maillog::event("hold", &[("id", id.as_str()), ("reason", reason)]);
                }
                let _ = self.ctx.queued.send(id.clone());
                self.reply(codes::ok().with_text(format!("Ok: queued as {id}")));
            }
            Ok(Err(e)) => {
                tracing::error!("spool commit failed: {e}");
                let r = if e.is_no_space() { codes::insufficient_storage() } else { codes::local_error() };
                self.reject(verb, r, &[("from", &sender), ("error", &e.to_string())]);
            }
            Err(e) => {
                tracing::error!("spool commit task failed: {e}");
                self.reject(verb, codes::local_error(), &[("from", &sender)]);
            }
        }
        self.enter(State::Ready { helo });
        Ok(())
    }

    /// A milter said "discard": the client hears the usual 250, nothing is queued.
    fn discarded(&mut self, helo: Helo, draft: Draft, sender: &str) -> Result<(), End> {
        let id = draft.id.clone();
        drop(draft);
        let client = self.client_text();
        maillog::event("discarded", &[("id", id.as_str()), ("from", sender), ("client", &client)]);
        self.reply(codes::ok().with_text(format!("Ok: queued as {id}")));
        self.enter(State::Ready { helo });
        Ok(())
    }

    /// Runs the milters over the message (end-of-data stage).
    async fn milter_message(&mut self, draft: &mut Draft) -> MessageResult {
        let max = self.settings().config.limits.max_message_size;
        let id = draft.id.to_string();
        let eoh: Macros = vec![("i", id.clone())];
        let eom: Macros = vec![("i", id)];
        let m = self.milters.as_mut().expect("caller checked");
        m.message(draft, &eoh, &eom, max).await
    }

    /// Applies what the milters decided and changed to the draft and the
    /// transaction. `Err(reason)` means: queue it on hold (quarantine).
    fn apply_milters(&mut self, out: MessageResult, txn: &mut Txn, draft: &mut Draft) -> Result<Verdict, String> {
        if out.verdict != Verdict::Continue {
            return Ok(out.verdict);
        }
        if let Some(rw) = &out.rewrite {
            if let Err(e) = milter::rewrite_draft(draft, rw) {
                tracing::error!("milter: rewriting the message failed: {e}");
                let r = if e.is_no_space() { codes::insufficient_storage() } else { codes::local_error() };
                return Ok(Verdict::Reject(r));
            }
        }
        if let Some((from, _params)) = &out.change_from {
            match postern_wire::address::parse_path(&bracketed(from), true, false, true) {
                Ok((path, _)) => txn.from = path,
                Err(e) => tracing::warn!("milter: ignoring bad new sender {from:?}: {e:?}"),
            }
        }
        for d in &out.del_rcpts {
            let d = unbracketed(d);
            for a in &mut txn.rcpts {
                a.targets.retain(|t| !t.eq_ignore_ascii_case(d));
            }
            txn.rcpts.retain(|a| !a.targets.is_empty() && !a.original.eq_ignore_ascii_case(d));
        }
        for (r, params) in &out.add_rcpts {
            let addr = unbracketed(r).to_string();
            match postern_wire::Mailbox::parse(&addr, true) {
                Ok(_) => {
                    let params = rcpt_params_from(params.as_deref());
                    txn.rcpts.push(Accepted { original: addr.clone(), targets: vec![addr], params });
                }
                Err(e) => tracing::warn!("milter: ignoring bad new recipient {r:?}: {e:?}"),
            }
        }
        if txn.rcpts.is_empty() {
            // Every recipient was deleted: nobody to deliver to.
            return Ok(Verdict::Discard);
        }
        match out.quarantine {
            Some((milter, reason)) => Err(format!("quarantined by milter {milter}: {reason}")),
            None => Ok(Verdict::Continue),
        }
    }
}

/// `<addr>` as milters and MAIL/RCPT write it, whether or not they bracketed it.
fn bracketed(a: &str) -> String {
    let a = a.trim();
    if a.starts_with('<') {
        a.to_string()
    } else {
        format!("<{a}>")
    }
}

fn unbracketed(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(a)
}

/// NOTIFY= and ORCPT= from a milter's ESMTP parameters for a new recipient.
fn rcpt_params_from(params: Option<&str>) -> postern_wire::command::RcptParams {
    let mut p = postern_wire::command::RcptParams::default();
    for word in params.unwrap_or("").split_ascii_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            if k.eq_ignore_ascii_case("NOTIFY") {
                p.notify = Some(v.to_ascii_uppercase());
            } else if k.eq_ignore_ascii_case("ORCPT") {
                p.orcpt = postern_wire::command::xtext_decode(v);
            }
        }
    }
    p
}

/// MAIL arguments as milters get them: `<path>` then ESMTP parameters.
fn mail_args(from: &Path, params: &MailParams) -> Vec<String> {
    let mut args = vec![match from {
        Path::Mailbox(m) => format!("<{m}>"),
        _ => "<>".to_string(),
    }];
    if let Some(size) = params.size {
        args.push(format!("SIZE={size}"));
    }
    match params.body {
        Body::SevenBit => {}
        Body::EightBitMime => args.push("BODY=8BITMIME".into()),
        Body::BinaryMime => args.push("BODY=BINARYMIME".into()),
    }
    if params.smtputf8 {
        args.push("SMTPUTF8".into());
    }
    if let Some(r) = &params.ret {
        args.push(format!("RET={r}"));
    }
    if let Some(e) = &params.envid {
        args.push(format!("ENVID={}", postern_wire::command::xtext_encode(e)));
    }
    if let Some(a) = &params.auth {
        args.push(format!("AUTH={}", postern_wire::command::xtext_encode(a)));
    }
    args
}

/// RCPT arguments as milters get them.
fn rcpt_args(rcpt: &str, params: &postern_wire::command::RcptParams) -> Vec<String> {
    let mut args = vec![format!("<{rcpt}>")];
    if let Some(n) = &params.notify {
        args.push(format!("NOTIFY={n}"));
    }
    if let Some(o) = &params.orcpt {
        args.push(format!("ORCPT={}", postern_wire::command::xtext_encode(o)));
    }
    args
}

/// The envelope for a received message: one recipient per final target,
/// duplicates removed.
fn build_envelope(id: &QueueId, txn: &Txn, size: u64, conn: &Conn, helo: &Helo) -> Envelope {
    let mut recipients: Vec<Recipient> = Vec::new();
    for a in &txn.rcpts {
        for t in &a.targets {
            if recipients.iter().any(|r| r.address.eq_ignore_ascii_case(t)) {
                continue;
            }
            recipients.push(Recipient {
                address: t.clone(),
                original: a.original.clone(),
                status: RcptStatus::Pending,
                attempts: 0,
                last_reply: None,
                next_attempt: 0,
                bounced: false,
                notify: a.params.notify.clone(),
                orcpt: a.params.orcpt.clone(),
                remote_mta: None,
                warned_at: 0,
            });
        }
    }
    Envelope {
        version: ENVELOPE_VERSION,
        id: id.clone(),
        created: now_unix(),
        sender: txn.sender(),
        recipients,
        size,
        eight_bit: txn.params.body == Body::EightBitMime,
        smtputf8: txn.params.smtputf8,
        client: format!("[{}]:{}", conn.peer.ip(), conn.peer.port()),
        helo: Some(helo.name.clone()),
        ret: txn.params.ret.clone(),
        envid: txn.params.envid.clone(),
        quarantine: None,
    }
}

/// RFC 5321 §4.4 trace header with the RFC 3848 protocol name.
fn received_header(s: &Settings, conn: &Conn, helo: &Helo, txn: &Txn, id: &QueueId, tls: Option<&TlsInfo>, authenticated: bool) -> String {
    // RFC 3848 (ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 §3.7.3 (UTF8SMTP…).
    let base = match (helo.extended, txn.params.smtputf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    };
    let protocol = format!(
        "{base}{}{}",
        if tls.is_some() { "S" } else { "" },
        if authenticated && helo.extended { "A" } else { "" }
    );
    let tls_comment = match tls {
        None => String::new(),
        Some(t) => {
            let cert = match &t.client_cert {
                None => "no client certificate".to_string(),
                Some(c) => format!("client certificate \"{}\" {}", comment_safe(&c.cert.subject), comment_safe(&c.verdict())),
            };
            format!("\r\n\t(using {} with cipher {})\r\n\t({cert})", t.version, t.cipher)
        }
    };
    let ip = match conn.peer.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let helo_name: String = helo.name.chars().filter(|c| !c.is_control() && *c != '(' && *c != ')').take(255).collect();
    let for_clause = match txn.rcpts.as_slice() {
        [only] => format!("\r\n\tfor <{}>", only.original),
        _ => String::new(),
    };
    format!(
        "Received: from {helo_name} ([{ip}]){tls_comment}\r\n\tby {} (postern) with {protocol} id {id}{for_clause};\r\n\t{}\r\n",
        s.hostname,
        rfc5322_date()
    )
}

/// Text safe inside an RFC 5322 comment: no parentheses, backslashes,
/// quotes or control characters.
fn comment_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\' | '"')).take(200).collect()
}


/// How long a greeting to an over-limit client may take before we give up.
pub const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
