//! The SMTP (RFC 5321) and LMTP (RFC 2033) client: one connection
//! ([`Conn`]): connect, greeting, EHLO/LHLO, STARTTLS (RFC 3207), AUTH
//! (RFC 4954), transactions. The transports built on it are in `pool.rs`
//! (smarthost, routes, MX hosts) and `lmtp.rs`.
//!
//! One client speaks both: LMTP differs only in LHLO and in returning one
//! reply per accepted recipient after the final dot (RFC 2033 §4.2). With
//! PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write.
//!
//! What may be sent over a connection (REQUIRETLS, RFC 8689; A-labels for
//! a next hop without SMTPUTF8, RFC 6531) is decided in `policy.rs`.
//!
//! May touch: outbound TCP or unix-domain sockets to the configured peers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use postern_wire::command::{Body, MailParams, RcptParams};
use postern_wire::reply::parse_reply_lines;
use postern_wire::Reply;

mod error;
mod observe;
pub mod policy;
mod text;

pub use self::error::ConnError;
pub use self::observe::{Event, Observer};
use super::credentials::{pick_mechanism, Channel, Refusal};
use super::reply::made;
use super::{Attempt, Message, Outcome};
use crate::config::{Endpoint, OutboundTls};
use crate::tls::{client_summary, ClientTls};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for each reply (RFC 5321 §4.5.3.2 suggests minutes; 5 is common).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The final reply after DATA may take longer (§4.5.3.2.6: 10 minutes).
const FINAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Each write of up to [`WRITE_PIECE`] octets must be taken by the peer
/// within this (RFC 5321 §4.5.3.2.5: 3 minutes per data block; Postfix
/// `smtp_data_xfer_timeout`): a slow link moves on, a peer that stops
/// reading does not hold a delivery worker (F2).
const WRITE_TIMEOUT: Duration = Duration::from_secs(180);
/// The unit of progress for [`WRITE_TIMEOUT`].
const WRITE_PIECE: usize = 64 * 1024;
/// Longest reply line we accept from a peer.
const MAX_REPLY_LINE: usize = 4096;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
#[derive(Clone)]
pub struct Dest {
    /// The peer.
    pub endpoint: Endpoint,
    /// LMTP (LHLO, per-recipient final replies) instead of SMTP.
    pub lmtp: bool,
    /// Our name for EHLO/LHLO.
    pub helo: String,
    /// TLS policy and material; `None` means plaintext only.
    pub tls: Option<Arc<ClientTls>>,
    /// TLS from the first byte (port 465 style).
    pub implicit_tls: bool,
    /// SNI and the name to verify.
    pub server_name: String,
    /// SMTP AUTH credentials (user, password), if the peer wants them.
    pub credentials: Option<(String, String)>,
    /// Allow AUTH without TLS.
    pub auth_plaintext: bool,
    /// SASL mechanisms to use, best first ([`AUTH_ORDER`] for smarthosts).
    pub auth_order: &'static [&'static str],
    /// The TLS requirement comes from the recipient domain (MX delivery:
    /// `mx.tls`, DANE, MTA-STS), so a `TLS-Required: No` message may relax
    /// it (RFC 8689 §5). An operator's smarthost or route setting is never
    /// relaxed by a header any sender can write.
    pub recipient_policy: bool,
}

/// The SASL mechanisms a smarthost client uses, best first.
pub const AUTH_ORDER: &[&str] = &["SCRAM-SHA-256", "PLAIN", "LOGIN"];

/// An open, greeted connection.
pub struct Conn {
    io: BufReader<Box<dyn Io>>,
    ext: HashSet<String>,
    /// Mechanisms from the EHLO `AUTH` line.
    auth_mechs: Vec<String>,
    lmtp: bool,
    /// How the connection is protected, for the log.
    tls: String,
    /// How we authenticated, for the log ("" if not).
    auth_note: String,
    /// How the connection is protected, for the credentials decision.
    channel: Channel,
    /// Opened by [`Conn::open_for`] with the TLS requirement relaxed
    /// (`TLS-Required: No`): carries only messages that asked for that.
    relaxed: bool,
}

/// TLS handshake as a client; returns the stream, a log summary and
/// whether the server's certificate verified.
async fn client_handshake(io: Box<dyn Io>, d: &Dest) -> Result<(Box<dyn Io>, String, Channel), ConnError> {
    let ep = &d.endpoint;
    let tls = d.tls.as_ref().ok_or_else(|| ConnError::TlsNotConfigured(ep.clone()))?;
    let name = ServerName::try_from(d.server_name.clone())
        .map_err(|e| ConnError::BadServerName { name: d.server_name.clone(), reason: e.to_string() })?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, io))
        .await
        .map_err(|_| ConnError::Handshake { ep: ep.clone(), reason: "timed out".into() })?
        .map_err(|e| ConnError::Handshake { ep: ep.clone(), reason: e.to_string() })?;
    let conn = stream.get_ref().1;
    let (verified, channel) = match (&tls.dane, tls.policy) {
        // The DANE verifier let the handshake through: a TLSA record matched.
        (Some(dane), _) => (dane.note(conn.peer_certificates().unwrap_or_default()), Channel::VerifiedTls),
        (None, OutboundTls::Verify) => ("verified".to_string(), Channel::VerifiedTls),
        _ => match tls.verify_peer(conn, &d.server_name) {
            Ok(()) => ("verified".to_string(), Channel::VerifiedTls),
            Err(e) => (format!("unverified ({e})"), Channel::UnverifiedTls),
        },
    };
    let note = format!("{} {verified}", client_summary(conn));
    Ok((Box::new(stream), note, channel))
}

impl Conn {
    /// Connects (TLS first for implicit TLS), reads the greeting, sends
    /// EHLO/LHLO, and upgrades with STARTTLS as the policy says.
    pub async fn open(d: &Dest) -> Result<Conn, ConnError> {
        Conn::open_observed(d, &mut ()).await
    }

    /// [`Conn::open`] for delivering `msg`: when the next hop's TLS
    /// requirement fails (no STARTTLS, refused, or a certificate that does
    /// not verify) and the message says `TLS-Required: No` (RFC 8689 §5)
    /// without REQUIRETLS, tries again with opportunistic TLS. Only for MX
    /// delivery ([`Dest::recipient_policy`]); never for a next hop we give
    /// credentials to: that requirement protects the password, not the
    /// recipient's mail.
    pub async fn open_for(d: &Dest, msg: &Message) -> Result<Conn, ConnError> {
        let first = Conn::open(d).await;
        let strict = d.tls.as_ref().is_some_and(|t| matches!(t.policy, OutboundTls::Encrypt | OutboundTls::Verify | OutboundTls::Dane));
        let relax = msg.tls_required_no && !msg.requiretls && strict && d.recipient_policy && d.credentials.is_none() && !d.implicit_tls;
        match first {
            Err(e) if relax && e.is_tls_requirement() => {
                let may = ClientTls::build(OutboundTls::May, &[], None).map_err(|_| e)?;
                let mut c = Conn::open(&Dest { tls: Some(Arc::new(may)), ..d.clone() }).await?;
                c.relaxed = true;
                Ok(c)
            }
            other => other,
        }
    }

    /// [`Conn::open`], telling `obs` each step as it happens (the smarthost
    /// self-test); the steps are the same whoever watches.
    pub async fn open_observed(d: &Dest, obs: &mut dyn Observer) -> Result<Conn, ConnError> {
        let ep = &d.endpoint;
        let started = std::time::Instant::now();
        let (raw, peer) = connect(ep).await?;
        obs.event(Event::Connected { peer, elapsed: started.elapsed() });
        let (io, tls_note, channel) = if d.implicit_tls {
            let (io, note, channel) = client_handshake(raw, d).await?;
            obs.event(Event::Tls(note.clone()));
            (io, note, channel)
        } else {
            (raw, "none".to_string(), Channel::Plaintext)
        };
        let mut c = Conn {
            io: BufReader::new(io),
            ext: HashSet::new(),
            auth_mechs: Vec::new(),
            lmtp: d.lmtp,
            tls: tls_note,
            auth_note: String::new(),
            channel,
            relaxed: false,
        };
        let greeting = c.reply(REPLY_TIMEOUT).await?;
        obs.event(Event::Greeting(greeting.clone()));
        if greeting.code != 220 {
            return Err(ConnError::Greeting { ep: ep.clone(), reply: greeting.summary() });
        }
        c.hello(ep, &d.helo, obs).await?;
        let policy = d.tls.as_ref().map(|t| t.policy).unwrap_or(OutboundTls::None);
        if d.implicit_tls || policy == OutboundTls::None {
            c.authenticate(d, obs).await?;
            return Ok(c);
        }
        // DANE with secure TLSA records (a DANE verifier): no cleartext fallback (RFC 7672 §2.2).
        let must = matches!(policy, OutboundTls::Encrypt | OutboundTls::Verify) || d.tls.as_ref().is_some_and(|t| t.dane.is_some());
        if !c.ext.contains("STARTTLS") {
            if must {
                return Err(ConnError::NoStartTls(ep.clone()));
            }
            c.authenticate(d, obs).await?;
            return Ok(c);
        }
        c.send(b"STARTTLS\r\n").await?;
        let r = c.reply(REPLY_TIMEOUT).await?;
        obs.event(Event::StartTls(r.clone()));
        if r.code != 220 {
            if must {
                return Err(ConnError::StartTlsRefused { ep: ep.clone(), reply: r.summary() });
            }
            c.authenticate(d, obs).await?;
            return Ok(c);
        }
        // Anything buffered after the 220 is discarded with the plaintext reader.
        let (io, note, channel) = client_handshake(c.io.into_inner(), d).await?;
        obs.event(Event::Tls(note.clone()));
        let mut c = Conn {
            io: BufReader::new(io),
            ext: HashSet::new(),
            auth_mechs: Vec::new(),
            lmtp: d.lmtp,
            tls: note,
            auth_note: String::new(),
            channel,
            relaxed: false,
        };
        c.hello(ep, &d.helo, obs).await?;
        c.authenticate(d, obs).await?;
        Ok(c)
    }

    /// SMTP AUTH as a client (RFC 4954): SCRAM-SHA-256, PLAIN or LOGIN,
    /// the best the server offers; never before TLS unless allowed.
    async fn authenticate(&mut self, d: &Dest, obs: &mut dyn Observer) -> Result<(), ConnError> {
        let Some((user, password)) = &d.credentials else { return Ok(()) };
        let ep = &d.endpoint;
        let offered = &self.auth_mechs;
        let mech = pick_mechanism(self.channel, d.auth_plaintext, offered, d.auth_order).map_err(|e| match e {
            Refusal::NoTls => ConnError::CredentialsWithoutTls(ep.clone()),
            Refusal::Unverified => ConnError::PasswordOverUnverifiedTls { ep: ep.clone(), offered: offered.join(" ") },
            Refusal::NoMechanism => ConnError::NoAuthMechanism { ep: ep.clone(), offered: offered.join(" ") },
        })?;
        use postern_wire::sasl::{client_plain, decode_response, encode_challenge, ScramClient};
        let expect = |r: &Reply, code: u16| -> Result<(), ConnError> {
            if r.code == code {
                Ok(())
            } else {
                Err(ConnError::AuthFailed { mech, ep: ep.clone(), reply: r.summary(), permanent: r.is_permanent() })
            }
        };
        let challenge = |r: &Reply| -> Result<String, ConnError> {
            let text = r.lines.first().map(|l| l.to_string()).unwrap_or_default();
            decode_response(&text)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| ConnError::Sasl(format!("bad challenge from {ep}: {e}")))
        };
        let done = match mech {
            "PLAIN" => {
                self.send(format!("AUTH PLAIN {}\r\n", client_plain(user, password)).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 235)?;
                r
            }
            "LOGIN" => {
                self.send(b"AUTH LOGIN\r\n").await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 334)?;
                self.send(format!("{}\r\n", encode_challenge(user.as_bytes())).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 334)?;
                self.send(format!("{}\r\n", encode_challenge(password.as_bytes())).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 235)?;
                r
            }
            _ => {
                let (mut scram, first) = ScramClient::new(user, password);
                self.send(format!("AUTH SCRAM-SHA-256 {}\r\n", encode_challenge(first.as_bytes())).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 334)?;
                let fin = scram.final_message(&challenge(&r)?).map_err(|e| ConnError::Sasl(format!("SCRAM with {ep}: {e}")))?;
                self.send(format!("{}\r\n", encode_challenge(fin.as_bytes())).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                if r.code == 334 {
                    if !scram.verify_server(&challenge(&r)?) {
                        return Err(ConnError::ScramServer(ep.clone()));
                    }
                    self.send(b"\r\n").await?;
                    let r = self.reply(REPLY_TIMEOUT).await?;
                    expect(&r, 235)?;
                    r
                } else {
                    expect(&r, 235)?;
                    r
                }
            }
        };
        obs.event(Event::Auth { mech, reply: done });
        self.auth_note = format!("{mech} as {user}");
        Ok(())
    }

    async fn hello(&mut self, ep: &Endpoint, helo: &str, obs: &mut dyn Observer) -> Result<(), ConnError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.send(format!("{verb} {helo}\r\n").as_bytes()).await?;
        let r = self.reply(REPLY_TIMEOUT).await?;
        obs.event(Event::Hello { reply: r.clone(), tls: self.channel != Channel::Plaintext });
        if r.code != 250 {
            return Err(ConnError::HelloRefused { ep: ep.clone(), verb, reply: r.summary() });
        }
        self.ext = r.lines.iter().skip(1).filter_map(|l| l.split_whitespace().next()).map(|k| k.to_ascii_uppercase()).collect();
        self.auth_mechs = r
            .lines
            .iter()
            .skip(1)
            .find(|l| l.to_ascii_uppercase().starts_with("AUTH "))
            .map(|l| l.split_whitespace().skip(1).map(|m| m.to_ascii_uppercase()).collect())
            .unwrap_or_default();
        Ok(())
    }
}

/// Connects to `ep`; returns the stream and the peer's address.
async fn connect(ep: &Endpoint) -> Result<(Box<dyn Io>, String), ConnError> {
    let io: (Box<dyn Io>, String) = match ep {
        Endpoint::Tcp(h, p) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((h.as_str(), *p)))
                .await
                .map_err(|_| ConnError::Connect { ep: ep.clone(), reason: "timed out".into() })?
                .map_err(|e| ConnError::Connect { ep: ep.clone(), reason: e.to_string() })?;
            let _ = s.set_nodelay(true);
            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            (Box::new(s), peer)
        }
        Endpoint::Unix(path) => (
            Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| ConnError::Connect { ep: ep.clone(), reason: "timed out".into() })?
                    .map_err(|e| ConnError::Connect { ep: ep.clone(), reason: e.to_string() })?,
            ),
            path.display().to_string(),
        ),
    };
    Ok(io)
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        write_within(self.io.get_mut(), bytes, WRITE_TIMEOUT).await
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self, timeout: Duration) -> Result<Reply, ConnError> {
        tokio::time::timeout(timeout, self.read_reply()).await.map_err(|_| ConnError::ReplyTimeout)?
    }

    async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.io).take(MAX_REPLY_LINE as u64).read_until(b'\n', &mut raw).await.map_err(ConnError::Read)?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last || lines.len() > 100 {
                break;
            }
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        parse_reply_lines(&refs).ok_or_else(|| ConnError::MalformedReply(lines.join(" / ")))
    }

    /// One transaction. `Err` means the connection is unusable and every
    /// recipient without an outcome is deferred.
    pub async fn transaction(&mut self, msg: &Message, rcpts: &[String]) -> Result<Vec<Outcome>, ConnError> {
        // A pooled connection that skipped its TLS requirement for a
        // `TLS-Required: No` message must not carry anyone else's mail.
        if self.relaxed && (!msg.tls_required_no || msg.requiretls) {
            return Err(ConnError::RelaxedConnection);
        }
        // REQUIRETLS and the address forms this next hop takes (policy.rs).
        let peer = policy::Peer { lmtp: self.lmtp, channel: self.channel, ext: &self.ext };
        let env = match policy::envelope(msg, rcpts, peer) {
            Ok(env) => env,
            Err(r) => return Ok(vec![Outcome::Failed(r); rcpts.len()]),
        };
        // RFC 6152: 8-bit data only to 8BITMIME hosts. We do not convert to
        // 7 bit (that would rewrite MIME structure and break signatures):
        // such mail bounces with 5.6.3 instead (documented).
        if !self.ext.contains("8BITMIME") && !self.lmtp && msg.body.iter().any(|&b| b >= 0x80) {
            let o = Outcome::Failed(made::no_8bitmime());
            return Ok(vec![o; rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        for (i, r) in &env.refused {
            outcomes[*i] = Some(Outcome::Failed(r.clone()));
        }
        if env.rcpts.is_empty() {
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred(made::no_reply()))).collect());
        }
        // The parameters the next hop understands, encoded by the same codec
        // that parses them on the server side (postern-wire).
        let dsn = self.ext.contains("DSN");
        let params = MailParams {
            size: self.ext.contains("SIZE").then_some(msg.body.len() as u64),
            body: if msg.eight_bit && self.ext.contains("8BITMIME") { Body::EightBitMime } else { Body::SevenBit },
            smtputf8: env.smtputf8,
            ret: if dsn { msg.dsn.ret.clone() } else { None },
            envid: if dsn { msg.dsn.envid.clone() } else { None },
            requiretls: env.requiretls,
            ..MailParams::default()
        };
        let mail = format!("MAIL FROM:<{}>{}\r\n", env.sender, params.encode());
        // `i`: the recipient's index (its DSN parameters are kept under
        // the address as queued); `wire`: the address as this hop takes it.
        let rcpt_line = |i: usize, wire: &str| -> String {
            let params = match (dsn, msg.dsn.rcpts.get(&rcpts[i])) {
                (true, Some((notify, orcpt))) => RcptParams { notify: notify.clone(), orcpt: orcpt.clone() },
                _ => RcptParams::default(),
            };
            format!("RCPT TO:<{wire}>{}\r\n", params.encode())
        };
        let pipelining = self.ext.contains("PIPELINING") || self.lmtp;
        let mail_reply;
        let mut accepted = Vec::new();
        if pipelining {
            let mut batch = mail.into_bytes();
            for (i, wire) in &env.rcpts {
                batch.extend_from_slice(rcpt_line(*i, wire).as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&batch).await?;
            mail_reply = self.reply(REPLY_TIMEOUT).await?;
            for &(i, _) in &env.rcpts {
                let r = self.reply(REPLY_TIMEOUT).await?;
                if r.is_positive() {
                    accepted.push(i);
                } else {
                    outcomes[i] = Some(Outcome::from_reply(&r));
                }
            }
        } else {
            self.send(mail.as_bytes()).await?;
            mail_reply = self.reply(REPLY_TIMEOUT).await?;
            if mail_reply.is_positive() {
                for &(i, ref wire) in &env.rcpts {
                    self.send(rcpt_line(i, wire).as_bytes()).await?;
                    let rr = self.reply(REPLY_TIMEOUT).await?;
                    if rr.is_positive() {
                        accepted.push(i);
                    } else {
                        outcomes[i] = Some(Outcome::from_reply(&rr));
                    }
                }
                if !accepted.is_empty() {
                    self.send(b"DATA\r\n").await?;
                }
            }
        }
        if !mail_reply.is_positive() {
            if pipelining {
                let _ = self.reply(REPLY_TIMEOUT).await?; // the DATA reply
            }
            self.send(b"RSET\r\n").await?;
            self.reply(REPLY_TIMEOUT).await?;
            let o = Outcome::from_reply(&mail_reply);
            return Ok(outcomes.into_iter().map(|x| x.unwrap_or_else(|| o.clone())).collect());
        }
        if accepted.is_empty() {
            if pipelining {
                let _ = self.reply(REPLY_TIMEOUT).await?; // DATA refused (503/554)
            }
            self.send(b"RSET\r\n").await?;
            self.reply(REPLY_TIMEOUT).await?;
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred(made::no_reply()))).collect());
        }
        let data_reply = self.reply(REPLY_TIMEOUT).await?;
        if data_reply.code != 354 {
            let o = Outcome::from_reply(&data_reply);
            for &i in &accepted {
                outcomes[i] = Some(o.clone());
            }
            self.send(b"RSET\r\n").await?;
            self.reply(REPLY_TIMEOUT).await?;
        } else {
            text::send_text(self.io.get_mut(), &msg.body, WRITE_TIMEOUT).await?;
            if self.lmtp {
                // RFC 2033 §4.2: one reply per accepted recipient, in order.
                for &i in &accepted {
                    let r = self.reply(FINAL_TIMEOUT).await?;
                    outcomes[i] = Some(Outcome::from_reply(&r));
                }
            } else {
                let r = self.reply(FINAL_TIMEOUT).await?;
                let o = Outcome::from_reply(&r);
                for &i in &accepted {
                    outcomes[i] = Some(o.clone());
                }
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred(made::no_reply()))).collect())
    }

    /// The EHLO keywords offered (upper case).
    pub fn extensions(&self) -> &HashSet<String> {
        &self.ext
    }

    /// RSET (RFC 5321 §4.1.1.5): its reply.
    pub async fn rset(&mut self) -> Result<Reply, ConnError> {
        self.send(b"RSET\r\n").await?;
        self.reply(REPLY_TIMEOUT).await
    }

    /// Ends the session politely (QUIT, then the reply), best effort.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply(Duration::from_secs(5)).await;
        }
    }
}

/// Writes `bytes` and flushes, each [`WRITE_PIECE`] within `per_piece`.
async fn write_within<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8], per_piece: Duration) -> Result<(), ConnError> {
    for piece in bytes.chunks(WRITE_PIECE) {
        tokio::time::timeout(per_piece, w.write_all(piece)).await.map_err(|_| ConnError::WriteTimeout)?.map_err(ConnError::Write)?;
    }
    tokio::time::timeout(per_piece, w.flush()).await.map_err(|_| ConnError::WriteTimeout)?.map_err(ConnError::Write)
}

/// Runs a transaction, deferring everyone on a connection-level error.
pub(super) async fn deliver_on(conn: &mut Conn, msg: &Message, rcpts: &[String]) -> Result<Attempt, Attempt> {
    let tls = Some(if conn.auth_note.is_empty() { conn.tls.clone() } else { format!("{}, auth {}", conn.tls, conn.auth_note) });
    let dsn = conn.ext.contains("DSN");
    match conn.transaction(msg, rcpts).await {
        Ok(outcomes) => Ok(Attempt { outcomes, tls, dsn, relay: None }),
        Err(e) => Err(Attempt::all(Outcome::Deferred(e.reply()), rcpts.len(), tls)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that stops reading fails the write after `per_piece`; one
    /// that reads slowly (a piece at a time) does not.
    #[tokio::test(start_paused = true)]
    async fn writes_to_a_peer_that_stops_reading_time_out() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let big = vec![b'x'; 3 * WRITE_PIECE];
        let t = tokio::time::Instant::now();
        let r = write_within(&mut ours, &big, Duration::from_secs(180)).await;
        assert!(matches!(r, Err(ConnError::WriteTimeout)), "{r:?}");
        assert_eq!(t.elapsed().as_secs(), 180);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while theirs.read(&mut buf).await.is_ok_and(|n| n > 0) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        write_within(&mut ours, &big, Duration::from_secs(180)).await.expect("slow but moving");
        drop(ours);
        reader.await.expect("reader");
    }
}
