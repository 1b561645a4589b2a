//! The SMTP (RFC 5321) and LMTP (RFC 2033) client: one connection
//! ([`Conn`]): connect, greeting, EHLO/LHLO, STARTTLS (RFC 3207), AUTH
//! (RFC 4954), transactions. The transports built on it are in `pool.rs`
//! (smarthost, routes, MX hosts) and `lmtp.rs`.
//!
//! One client speaks both: LMTP differs only in LHLO and in returning one
//! reply per accepted recipient after the final dot (RFC 2033 §4.2). With
//! PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write.
//!
//! May touch: outbound TCP or unix-domain sockets to the configured peers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use postern_wire::command::{Body, MailParams, RcptParams};
use postern_wire::data::dot_stuff;
use postern_wire::reply::parse_reply_lines;
use postern_wire::{Enhanced, Reply};

use super::credentials::{pick_mechanism, Channel, Refusal};
use super::reply::made;
use super::{Attempt, DeliveryReply, Message, Outcome};
use crate::config::{Endpoint, OutboundTls};
use crate::tls::{client_summary, ClientTls};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for each reply (RFC 5321 §4.5.3.2 suggests minutes; 5 is common).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The final reply after DATA may take longer (§4.5.3.2.6: 10 minutes).
const FINAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest reply line we accept from a peer.
const MAX_REPLY_LINE: usize = 4096;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
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
}

/// Why a connection-level step failed: every recipient without an
/// outcome is deferred (or, for 5.7.8, failed) with [`ConnError::reply`].
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP or unix-socket connect failed or timed out.
    #[error("connect to {ep}: {reason}")]
    Connect {
        /// The peer.
        ep: Endpoint,
        /// "timed out" or the OS error.
        reason: String,
    },
    /// The policy wants TLS but no client TLS material was configured.
    #[error("TLS to {0} is not configured")]
    TlsNotConfigured(Endpoint),
    /// The configured TLS server name is not a valid name.
    #[error("bad TLS server name {name:?}: {reason}")]
    BadServerName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed or timed out.
    #[error("TLS handshake with {ep}: {reason}")]
    Handshake {
        /// The peer.
        ep: Endpoint,
        /// "timed out" or the TLS error.
        reason: String,
    },
    /// The greeting was not 220.
    #[error("{ep} greeted with {reply}")]
    Greeting {
        /// The peer.
        ep: Endpoint,
        /// Its greeting.
        reply: String,
    },
    /// EHLO/LHLO was refused.
    #[error("{ep} refused {verb}: {reply}")]
    HelloRefused {
        /// The peer.
        ep: Endpoint,
        /// "EHLO" or "LHLO".
        verb: &'static str,
        /// Its reply.
        reply: String,
    },
    /// TLS is required and the peer does not offer STARTTLS.
    #[error("TLS required but {0} does not offer STARTTLS")]
    NoStartTls(Endpoint),
    /// TLS is required and the peer refused STARTTLS.
    #[error("{ep} refused STARTTLS: {reply}")]
    StartTlsRefused {
        /// The peer.
        ep: Endpoint,
        /// Its reply.
        reply: String,
    },
    /// Credentials would go out in plaintext.
    #[error("refusing to send credentials to {0} without TLS (smarthost_auth_plaintext = false)")]
    CredentialsWithoutTls(Endpoint),
    /// Only password mechanisms are offered and TLS did not verify (F8).
    #[error(
        "refusing to send the password to {ep} over TLS whose certificate did not verify (offered: {offered}); \
         set smarthost_tls = \"verify\""
    )]
    PasswordOverUnverifiedTls {
        /// The peer.
        ep: Endpoint,
        /// What it offered, space-separated.
        offered: String,
    },
    /// No offered AUTH mechanism is one we use.
    #[error("{ep} offers no usable AUTH mechanism (offered: {offered})")]
    NoAuthMechanism {
        /// The peer.
        ep: Endpoint,
        /// What it offered, space-separated.
        offered: String,
    },
    /// The peer rejected our AUTH; `permanent` for a 5xx (5.7.8).
    #[error("AUTH {mech} at {ep} failed: {reply}")]
    AuthFailed {
        /// The mechanism.
        mech: &'static str,
        /// The peer.
        ep: Endpoint,
        /// Its reply.
        reply: String,
        /// 5xx: the credentials are wrong, not a passing problem.
        permanent: bool,
    },
    /// A SASL challenge did not decode, or SCRAM failed on our side.
    #[error("{0}")]
    Sasl(String),
    /// The peer failed SCRAM server authentication.
    #[error("{0} failed SCRAM server authentication (wrong server key)")]
    ScramServer(Endpoint),
    /// Writing to the peer failed.
    #[error("write: {0}")]
    Write(std::io::Error),
    /// Reading from the peer failed.
    #[error("read: {0}")]
    Read(std::io::Error),
    /// No reply in time.
    #[error("timeout waiting for reply")]
    ReplyTimeout,
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer's reply lines did not form a reply.
    #[error("malformed reply: {0:?}")]
    MalformedReply(String),
}

impl ConnError {
    /// The RFC 3463 status this error stands for.
    pub fn status(&self) -> Enhanced {
        match self {
            ConnError::Connect { .. } => Enhanced(4, 4, 1),
            ConnError::TlsNotConfigured(_) | ConnError::BadServerName { .. } => Enhanced(4, 7, 0),
            ConnError::Handshake { .. } => Enhanced(4, 7, 5),
            ConnError::Greeting { .. } | ConnError::HelloRefused { .. } => Enhanced(4, 4, 2),
            ConnError::NoStartTls(_) | ConnError::StartTlsRefused { .. } => Enhanced(4, 7, 4),
            ConnError::CredentialsWithoutTls(_) | ConnError::NoAuthMechanism { .. } => Enhanced(4, 7, 0),
            ConnError::PasswordOverUnverifiedTls { .. } => Enhanced(4, 7, 0),
            ConnError::AuthFailed { permanent: true, .. } => Enhanced(5, 7, 8),
            ConnError::AuthFailed { permanent: false, .. } | ConnError::Sasl(_) | ConnError::ScramServer(_) => Enhanced(4, 7, 0),
            ConnError::Write(_) | ConnError::Read(_) | ConnError::ReplyTimeout | ConnError::Closed => Enhanced(4, 4, 2),
            ConnError::MalformedReply(_) => Enhanced(4, 5, 0),
        }
    }

    /// The reply recorded for the recipients it affects.
    pub fn reply(&self) -> DeliveryReply {
        DeliveryReply::status_only(self.status(), self.to_string())
    }
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
    let (verified, channel) = match tls.policy {
        OutboundTls::Verify => ("verified".to_string(), Channel::VerifiedTls),
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
        let ep = &d.endpoint;
        let raw = connect(ep).await?;
        let (io, tls_note, channel) =
            if d.implicit_tls { client_handshake(raw, d).await? } else { (raw, "none".to_string(), Channel::Plaintext) };
        let mut c = Conn {
            io: BufReader::new(io),
            ext: HashSet::new(),
            auth_mechs: Vec::new(),
            lmtp: d.lmtp,
            tls: tls_note,
            auth_note: String::new(),
            channel,
        };
        let greeting = c.reply(REPLY_TIMEOUT).await?;
        if greeting.code != 220 {
            return Err(ConnError::Greeting { ep: ep.clone(), reply: greeting.summary() });
        }
        c.hello(ep, &d.helo).await?;
        let policy = d.tls.as_ref().map(|t| t.policy).unwrap_or(OutboundTls::None);
        if d.implicit_tls || policy == OutboundTls::None {
            c.authenticate(d).await?;
            return Ok(c);
        }
        let must = matches!(policy, OutboundTls::Encrypt | OutboundTls::Verify);
        if !c.ext.contains("STARTTLS") {
            if must {
                return Err(ConnError::NoStartTls(ep.clone()));
            }
            c.authenticate(d).await?;
            return Ok(c);
        }
        c.send(b"STARTTLS\r\n").await?;
        let r = c.reply(REPLY_TIMEOUT).await?;
        if r.code != 220 {
            if must {
                return Err(ConnError::StartTlsRefused { ep: ep.clone(), reply: r.summary() });
            }
            c.authenticate(d).await?;
            return Ok(c);
        }
        // Anything buffered after the 220 is discarded with the plaintext reader.
        let (io, note, channel) = client_handshake(c.io.into_inner(), d).await?;
        let mut c = Conn {
            io: BufReader::new(io),
            ext: HashSet::new(),
            auth_mechs: Vec::new(),
            lmtp: d.lmtp,
            tls: note,
            auth_note: String::new(),
            channel,
        };
        c.hello(ep, &d.helo).await?;
        c.authenticate(d).await?;
        Ok(c)
    }

    /// SMTP AUTH as a client (RFC 4954): SCRAM-SHA-256, PLAIN or LOGIN,
    /// the best the server offers; never before TLS unless allowed.
    async fn authenticate(&mut self, d: &Dest) -> Result<(), ConnError> {
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
        match mech {
            "PLAIN" => {
                self.send(format!("AUTH PLAIN {}\r\n", client_plain(user, password)).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                expect(&r, 235)?;
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
                } else {
                    expect(&r, 235)?;
                }
            }
        }
        self.auth_note = format!("{mech} as {user}");
        Ok(())
    }

    async fn hello(&mut self, ep: &Endpoint, helo: &str) -> Result<(), ConnError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.send(format!("{verb} {helo}\r\n").as_bytes()).await?;
        let r = self.reply(REPLY_TIMEOUT).await?;
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

async fn connect(ep: &Endpoint) -> Result<Box<dyn Io>, ConnError> {
    let io: Box<dyn Io> = match ep {
        Endpoint::Tcp(h, p) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((h.as_str(), *p)))
                .await
                .map_err(|_| ConnError::Connect { ep: ep.clone(), reason: "timed out".into() })?
                .map_err(|e| ConnError::Connect { ep: ep.clone(), reason: e.to_string() })?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Endpoint::Unix(path) => Box::new(
            tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                .await
                .map_err(|_| ConnError::Connect { ep: ep.clone(), reason: "timed out".into() })?
                .map_err(|e| ConnError::Connect { ep: ep.clone(), reason: e.to_string() })?,
        ),
    };
    Ok(io)
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let w = self.io.get_mut();
        w.write_all(bytes).await.map_err(ConnError::Write)?;
        w.flush().await.map_err(ConnError::Write)
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
        if msg.smtputf8 && !self.ext.contains("SMTPUTF8") {
            let o = Outcome::Failed(made::no_smtputf8());
            return Ok(vec![o; rcpts.len()]);
        }
        // RFC 6152: 8-bit data only to 8BITMIME hosts. We do not convert to
        // 7 bit (that would rewrite MIME structure and break signatures):
        // such mail bounces with 5.6.3 instead (documented).
        if !self.ext.contains("8BITMIME") && !self.lmtp && msg.body.iter().any(|&b| b >= 0x80) {
            let o = Outcome::Failed(made::no_8bitmime());
            return Ok(vec![o; rcpts.len()]);
        }
        // The parameters the next hop understands, encoded by the same codec
        // that parses them on the server side (postern-wire).
        let dsn = self.ext.contains("DSN");
        let params = MailParams {
            size: self.ext.contains("SIZE").then_some(msg.body.len() as u64),
            body: if msg.eight_bit && self.ext.contains("8BITMIME") { Body::EightBitMime } else { Body::SevenBit },
            smtputf8: msg.smtputf8,
            ret: if dsn { msg.dsn.ret.clone() } else { None },
            envid: if dsn { msg.dsn.envid.clone() } else { None },
            ..MailParams::default()
        };
        let mail = format!("MAIL FROM:<{}>{}\r\n", msg.sender, params.encode());
        let rcpt_line = |r: &str| -> String {
            let params = match (dsn, msg.dsn.rcpts.get(r)) {
                (true, Some((notify, orcpt))) => RcptParams { notify: notify.clone(), orcpt: orcpt.clone() },
                _ => RcptParams::default(),
            };
            format!("RCPT TO:<{r}>{}\r\n", params.encode())
        };
        let pipelining = self.ext.contains("PIPELINING") || self.lmtp;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        let mail_reply;
        let mut accepted = Vec::new();
        if pipelining {
            let mut batch = mail.into_bytes();
            for r in rcpts {
                batch.extend_from_slice(rcpt_line(r).as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.send(&batch).await?;
            mail_reply = self.reply(REPLY_TIMEOUT).await?;
            for (i, _) in rcpts.iter().enumerate() {
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
                for (i, r) in rcpts.iter().enumerate() {
                    self.send(rcpt_line(r).as_bytes()).await?;
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
            return Ok(vec![o; rcpts.len()]);
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
            let mut out = Vec::with_capacity(msg.body.len() + msg.body.len() / 50 + 8);
            dot_stuff(&msg.body, &mut out);
            self.send(&out).await?;
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

    /// Ends the session politely (QUIT, then the reply), best effort.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply(Duration::from_secs(5)).await;
        }
    }
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
