//! The SMTP server session: one explicit state machine (RFC 5321) plus the
//! driver that does its I/O.
//!
//! May touch: the client socket; the spool (through `Spool` only); the
//! queue notifier; the milters of the listener. Implements RFC 5321 (§4.1
//! commands, §4.4 `Received:`, §4.5.3 limits), RFC 1870 SIZE, RFC 2920
//! PIPELINING, RFC 3030 CHUNKING, RFC 2034 ENHANCEDSTATUSCODES, RFC 6152
//! 8BITMIME, RFC 6531 SMTPUTF8, RFC 3207 STARTTLS, RFC 4954 AUTH, RFC 3848
//! protocol names.
//!
//! Layout (one file per verb group; each verb is check → filter → proceed):
//! - `mod.rs` (here): [`State`], [`Session`], [`Session::enter`], the
//!   driver (`fill`/`flush`/`main_loop`) and the dispatcher, which asks the
//!   command table before any handler runs;
//! - `table.rs`: the command table (what each verb needs: HELO, a
//!   transaction or none, TLS, AUTH; what may come between BDAT chunks);
//! - `helo.rs` (HELO/EHLO), `mail.rs` (MAIL/RCPT), `data.rs` (DATA/BDAT and
//!   the commit), `auth.rs` (AUTH), `starttls.rs` (STARTTLS and the
//!   implicit-TLS handshake);
//! - `filter.rs`: the milter glue (macros, per-stage verdicts, applying
//!   end-of-message changes); `trace.rs`: `Received:` and the envelope;
//! - `stream.rs`: plain or TLS socket, generic so tests use `tokio::io::duplex`.
//!
//! Security facts live in the state: TLS facts inside the TLS stream
//! variant, the AUTH identity inside [`Greeted`], which only exists after
//! HELO/EHLO. STARTTLS enters [`State::Fresh`], so the reset RFC 3207 §4.2
//! asks for (forget HELO and AUTH) happens by construction.
//!
//! Pipelining: replies are appended to a write buffer that is flushed
//! whenever the session is about to wait for input, so a pipelined group
//! gets its replies in order, in one write.

mod auth;
mod auth_dovecot;
mod authcheck;
mod data;
mod directory;
mod dkim;
mod filter;
mod helo;
mod limits;
mod mail;
mod rdns;
mod screen;
mod starttls;
mod stream;
pub(crate) mod table;
mod trace;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use postern_wire::command::{MailParams, RcptParams};
use postern_wire::data::ChunkScanner;
use postern_wire::line::{scan_line, LineScan};
use postern_wire::received::ReceivedCounter;
use postern_wire::{codes, parse_command, Command, Path, Reply};

use crate::auth::{Authenticated, Throttle};
use crate::config::{ClientCertMode, Listener, Role};
use crate::maillog;
use crate::milter::Milters;
use crate::settings::Settings;
use crate::spool::{Draft, QueueId, Spool};
use crate::tls::{ServerTls, TlsInfo};
use crate::users::UserStore;

pub use self::stream::Socket;
use self::stream::Stream;
use self::table::{Gate, Phase, Refusal, Verb};

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
    /// Directories, cluster counters, inbound-defence caches.
    pub services: Arc<crate::services::Services>,
}

/// Facts about the connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
}

/// The client's HELO/EHLO.
#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

/// What HELO/EHLO and AUTH established. It exists only after HELO/EHLO and
/// is dropped by STARTTLS (which enters [`State::Fresh`]).
#[derive(Debug, Clone)]
struct Greeted {
    helo: Helo,
    /// The SMTP AUTH identity, once an exchange succeeded.
    auth: Option<Authenticated>,
}

/// One accepted RCPT.
#[derive(Debug, Clone)]
struct Accepted {
    original: String,
    targets: Vec<String>,
    params: RcptParams,
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
    /// `Received:` fields of the header section, counted as chunks arrive.
    hops: ReceivedCounter,
    size: u64,
    /// Set once a chunk failed: later chunks are read and discarded, and get
    /// this reply, until LAST.
    failed: Option<Reply>,
}

/// The session states.
#[derive(Debug)]
enum State {
    /// Greeted (or TLS just started), waiting for HELO/EHLO.
    Fresh,
    /// Greeted with 554 (a milter refused the connection): only QUIT
    /// (RFC 5321 §3.1: other commands get 503).
    Refused,
    /// HELO/EHLO done, no transaction.
    Ready { greeted: Greeted },
    /// MAIL accepted; RCPTs collect in the transaction.
    Mail { greeted: Greeted, txn: Txn },
    /// Between BDAT chunks.
    Bdat { greeted: Greeted, txn: Txn, chunking: Box<Chunking> },
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

    fn greeted(&self) -> Option<&Greeted> {
        match self {
            State::Ready { greeted } | State::Mail { greeted, .. } | State::Bdat { greeted, .. } => Some(greeted),
            _ => None,
        }
    }

    /// The command table's view of the state.
    fn phase(&self) -> Phase {
        match self {
            State::Fresh | State::Closed => Phase::Fresh,
            State::Refused => Phase::Refused,
            State::Ready { .. } => Phase::Ready,
            State::Mail { .. } => Phase::Mail,
            State::Bdat { .. } => Phase::Bdat,
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
pub(crate) struct Session<S> {
    io: Stream<S>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    state: State,
    errors: u32,
    messages: u32,
    /// Commands that carry no mail since the last message (the table's `junk` flag).
    junk: u32,
    /// When `limits.session_lifetime` ends: no read waits past it.
    expires: Instant,
    /// Why the session ended, when the disconnect line should say (write timeout).
    end_reason: Option<&'static str>,
    skip_to_lf: bool,
    ctx: Context,
    conn: Conn,
    /// The listener's milters (`None` when it has none).
    milters: Option<Milters>,
    /// `[inbound.rdns]`: the client's name, HELO/sender refusals kept for RCPT.
    rdns: rdns::RdnsFacts,
}

/// Runs one SMTP session to the end. Not an `async fn`, whose future would
/// hold its arguments and the session built from them (rust-lang/rust#62958).
pub fn run<S: Socket>(io: S, conn: Conn, ctx: Context) -> impl std::future::Future<Output = ()> {
    let mut s = Session {
        io: Stream::Plain(io),
        rbuf: Vec::with_capacity(1024),
        wbuf: Vec::with_capacity(512),
        state: State::Fresh,
        errors: 0,
        messages: 0,
        junk: 0,
        expires: Instant::now() + ctx.settings.config.limits.session_lifetime,
        end_reason: None,
        skip_to_lf: false,
        ctx,
        conn,
        milters: None,
        rdns: Default::default(),
    };
    async move { s.serve().await }
}

impl<S: Socket> Session<S> {
    /// Greeting to disconnect line. The handshake, the greeting and each command
    /// are boxed: they would size every connection's task, idle or not (issue 20).
    async fn serve(&mut self) {
        let peer = self.resolve_client().await;
        if self.ctx.listener.role.implicit_tls() && Box::pin(self.handshake()).await.is_err() {
            maillog::disconnect(&[("client", &peer), ("reason", "TLS handshake failed")]);
            return;
        }
        if self.connection_rate_refused().await {
            return;
        }
        Box::pin(self.greet()).await;
        let _ = self.main_loop().await;
        if let Some(m) = self.milters.take() {
            Box::pin(m.quit()).await;
        }
        let _ = self.flush().await;
        // A TLS close_notify is a write too: a client that does not read gets no more time.
        let _ = tokio::time::timeout(SHUTDOWN_WRITE_GRACE, self.io.shutdown()).await;
        let (messages, errors) = (self.messages.to_string(), self.errors.to_string());
        let mut fields = vec![("client", peer.as_str()), ("messages", &messages), ("errors", &errors)];
        fields.extend(self.end_reason.map(|reason| ("reason", reason)));
        maillog::disconnect(&fields);
    }

    fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    /// The TLS facts, if TLS is active.
    fn tls(&self) -> Option<&TlsInfo> {
        self.io.tls()
    }

    /// The SMTP AUTH identity, if an exchange succeeded since HELO/EHLO.
    fn auth(&self) -> Option<&Authenticated> {
        self.state.greeted().and_then(|g| g.auth.as_ref())
    }

    /// A client certificate verified by a configured CA.
    fn verified_cert(&self) -> bool {
        self.tls().and_then(|t| t.client_cert.as_ref()).is_some_and(|c| c.verified.is_ok())
    }

    /// The one place where the state changes.
    fn enter(&mut self, to: State) {
        tracing::debug!(peer = %self.conn.peer, "session {} -> {}", self.state.name(), to.name());
        self.state = to;
    }

    /// Back to "greeted, no transaction" (after a message, RSET or a
    /// refused transaction); a session that was never greeted stays as it is.
    fn end_transaction(&mut self) {
        if let Some(greeted) = self.state.greeted().cloned() {
            self.enter(State::Ready { greeted });
        }
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
        maillog::reject(&fields);
        self.reply(r);
    }

    /// Queues a reply that ends the session (421).
    fn close_with(&mut self, r: Reply) -> Result<(), End> {
        self.reply(r);
        self.enter(State::Closed);
        Err(End::Closed)
    }

    fn client_text(&self) -> String {
        format!("{}[{}]:{}", self.client_name(), self.conn.peer.ip(), self.conn.peer.port())
    }

    /// A read deadline `d` from now, never past the session's lifetime.
    fn deadline(&self, d: Duration) -> Instant {
        (Instant::now() + d).min(self.expires)
    }

    /// Writes the queued replies. A client that stops reading must not hold
    /// its slot (and the server's drain) forever: the write gets
    /// `limits.write_timeout`, and once shutdown is signalled at most
    /// [`SHUTDOWN_WRITE_GRACE`] more, then the session ends without a reply
    /// (nobody reads it).
    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings().config.limits.write_timeout;
        let mut shutdown = self.ctx.shutdown.clone();
        let (io, wbuf) = (&mut self.io, &self.wbuf);
        let write = async {
            io.write_all(wbuf).await?;
            io.flush().await
        };
        tokio::pin!(write);
        // Biased: a write that can finish at once (the usual case, and the
        // 421 sent at shutdown) wins over the shutdown signal.
        let first = tokio::select! {
            biased;
            r = tokio::time::timeout_at(deadline, &mut write) => Some(r),
            _ = async { drop(shutdown.wait_for(|v| *v).await) } => None,
        };
        let r = match first {
            Some(r) => r,
            None => tokio::time::timeout_at(deadline.min(Instant::now() + SHUTDOWN_WRITE_GRACE), &mut write).await,
        };
        self.wbuf.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.enter(State::Closed);
                Err(End::Gone)
            }
            Err(_) => {
                self.end_reason = Some("write timeout");
                self.enter(State::Closed);
                Err(End::Gone)
            }
        }
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
                return self.close_with(codes::shutting_down());
            }
        };
        match read {
            Err(_) if Instant::now() >= self.expires => self.close_with(codes::session_expired()),
            Err(_) => self.close_with(codes::timeout()),
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
                let _ = self.close_with(codes::too_many_errors());
                return Ok(());
            }
            // A busy client never waits for a read, so the lifetime is
            // checked here too, before each command.
            if Instant::now() >= self.expires {
                let _ = self.close_with(codes::session_expired());
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
                        self.fill(self.deadline(cmd_timeout), true).await?;
                    }
                }
                continue;
            }
            match scan_line(&self.rbuf, max_line) {
                LineScan::Line { end, next } => {
                    let line: Vec<u8> = self.rbuf[..end].to_vec();
                    self.rbuf.drain(..next);
                    Box::pin(self.command(&line)).await?;
                }
                LineScan::TooLong => {
                    self.reply(codes::line_too_long());
                    self.skip_to_lf = true;
                }
                LineScan::Partial => self.fill(self.deadline(cmd_timeout), true).await?,
            }
        }
    }

    /// The command table's view of this session.
    fn gate(&self) -> Gate {
        let submission = matches!(self.ctx.listener.role, Role::Submission | Role::Submissions);
        Gate {
            phase: self.state.phase(),
            tls: self.tls().is_some(),
            tls_available: self.ctx.tls.is_some(),
            authenticated: self.auth().is_some(),
            // F5: a client that must present a verified certificate
            // (`required` for its address) must do STARTTLS first.
            listener_needs_tls: self.ctx.listener.tls_required()
                || self.ctx.listener.cert_mode_for(self.conn.peer.ip()) == ClientCertMode::Required,
            // RFC 6409 §4.3 / RFC 4954 §6: submission requires SMTP AUTH or
            // a client certificate verified by a configured CA.
            listener_needs_auth: submission && self.auth().is_none() && !self.verified_cert(),
        }
    }

    /// One command line: parse, ask the table, run the verb's handler.
    async fn command(&mut self, line: &[u8]) -> Result<(), End> {
        tracing::trace!(peer = %self.conn.peer, "C: {}", String::from_utf8_lossy(line));
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                let is_bdat = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"BDAT");
                if is_bdat {
                    // We cannot know how many octets follow: the stream is lost.
                    self.reply(e.reply());
                    return self.close_with(codes::bdat_unrecoverable());
                }
                if matches!(self.state, State::Bdat { .. }) {
                    // The client's chunk framing is broken.
                    return self.close_with(codes::bdat_expected());
                }
                self.reply(e.reply());
                return Ok(());
            }
        };
        let verb = Verb::of(&cmd);
        if table::rule(verb).junk {
            // F3 (Postfix smtpd_junk_command_limit): commands that carry no
            // mail cannot keep a session alive forever.
            self.junk += 1;
            if self.junk > self.settings().config.limits.max_junk_commands {
                let client = self.client_text();
                maillog::reject(&[("client", &client), ("command", verb.name()), ("reason", "too many commands without mail")]);
                return self.close_with(codes::too_many_junk_commands());
            }
        }
        if let Err(refusal) = table::check(verb, &self.gate()) {
            if let (true, Command::Bdat { size, .. }) = (table::rule(verb).payload, &cmd) {
                // The chunk is on its way: read and drop it, or the next
                // "command" would be message data.
                let deadline = self.deadline(self.settings().config.limits.data_timeout);
                self.read_chunk(*size, deadline, |_| {}).await?;
            }
            match refusal {
                Refusal::Sequence(r) => self.reply(r),
                Refusal::Policy(r) => {
                    let from = match &cmd {
                        Command::Mail { from: Path::Mailbox(m), .. } => m.to_string(),
                        _ => String::new(),
                    };
                    self.reject(verb.name(), r, &[("from", &from)]);
                }
            }
            return Ok(());
        }
        match cmd {
            Command::Ehlo(name) => self.helo(name, true).await,
            Command::Helo(name) => self.helo(name, false).await,
            Command::Lhlo(_) => {
                self.reply(codes::unknown_command().with_text("LHLO is for LMTP; use EHLO"));
                Ok(())
            }
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                if let Some(m) = self.milters.as_mut() {
                    m.abort().await;
                }
                self.end_transaction();
                self.reply(codes::ok());
                Ok(())
            }
            Command::Noop => {
                self.reply(codes::ok());
                Ok(())
            }
            Command::Quit => self.close_with(codes::bye()),
            Command::Vrfy(_) => {
                self.reply(codes::cannot_vrfy());
                Ok(())
            }
            Command::Expn(_) => {
                self.reply(codes::not_implemented().with_text("EXPN is not available"));
                Ok(())
            }
            Command::Help => {
                self.reply(codes::help());
                Ok(())
            }
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth_command(mechanism, initial).await,
        }
    }
}

/// How long a greeting to an over-limit client may take before we give up.
pub const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write may still take once shutdown is signalled.
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);
