//! SMTP (RFC 5321) and LMTP (RFC 2033) client transports.
//!
//! One client speaks both: LMTP differs only in LHLO and in returning one
//! reply per accepted recipient after the final dot (RFC 2033 §4.2). With
//! PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write.
//! The smarthost transport keeps idle connections for reuse.
//!
//! May touch: outbound TCP or unix-domain sockets to the configured peers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use postern_wire::data::dot_stuff;
use postern_wire::reply::parse_reply_lines;
use postern_wire::Reply;

use super::{Attempt, BoxFuture, Message, Outcome, Transport};
use crate::config::{Endpoint, OutboundTls};
use crate::tls::{client_summary, ClientTls};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for each reply (RFC 5321 §4.5.3.2 suggests minutes; 5 is common).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The final reply after DATA may take longer (§4.5.3.2.6: 10 minutes).
const FINAL_TIMEOUT: Duration = Duration::from_secs(600);
/// An idle pooled connection older than this is closed, not reused.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per destination (the queue runs up to
/// `queue.concurrency` deliveries at once; keep enough to reuse them all).
const MAX_IDLE: usize = 64;
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
}

/// Why a connection-level step failed: deferred for every recipient.
type ConnError = String;

/// TLS handshake as a client; returns the stream and a log summary.
async fn client_handshake(io: Box<dyn Io>, d: &Dest) -> Result<(Box<dyn Io>, String), ConnError> {
    let ep = &d.endpoint;
    let tls = d.tls.as_ref().ok_or_else(|| format!("4.7.0 TLS to {ep} is not configured"))?;
    let name = ServerName::try_from(d.server_name.clone()).map_err(|e| format!("4.7.0 bad TLS server name {:?}: {e}", d.server_name))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, io))
        .await
        .map_err(|_| format!("4.7.5 TLS handshake with {ep}: timed out"))?
        .map_err(|e| format!("4.7.5 TLS handshake with {ep}: {e}"))?;
    let conn = stream.get_ref().1;
    let verified = match tls.policy {
        OutboundTls::Verify => "verified".to_string(),
        _ => match tls.verify_peer(conn, &d.server_name) {
            Ok(()) => "verified".to_string(),
            Err(e) => format!("unverified ({e})"),
        },
    };
    let note = format!("{} {verified}", client_summary(conn));
    Ok((Box::new(stream), note))
}

impl Conn {
    /// Connects (TLS first for implicit TLS), reads the greeting, sends
    /// EHLO/LHLO, and upgrades with STARTTLS as the policy says.
    pub async fn open(d: &Dest) -> Result<Conn, ConnError> {
        let ep = &d.endpoint;
        let raw = connect(ep).await?;
        let (io, tls_note) = if d.implicit_tls { client_handshake(raw, d).await? } else { (raw, "none".to_string()) };
        let mut c = Conn { io: BufReader::new(io), ext: HashSet::new(), auth_mechs: Vec::new(), lmtp: d.lmtp, tls: tls_note, auth_note: String::new() };
        let greeting = c.reply(REPLY_TIMEOUT).await?;
        if greeting.code != 220 {
            return Err(format!("4.4.2 {ep} greeted with {}", greeting.summary()));
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
                return Err(format!("4.7.4 TLS required but {ep} does not offer STARTTLS"));
            }
            c.authenticate(d).await?;
            return Ok(c);
        }
        c.send(b"STARTTLS\r\n").await?;
        let r = c.reply(REPLY_TIMEOUT).await?;
        if r.code != 220 {
            if must {
                return Err(format!("4.7.4 {ep} refused STARTTLS: {}", r.summary()));
            }
            c.authenticate(d).await?;
            return Ok(c);
        }
        // Anything buffered after the 220 is discarded with the plaintext reader.
        let (io, note) = client_handshake(c.io.into_inner(), d).await?;
        let mut c = Conn { io: BufReader::new(io), ext: HashSet::new(), auth_mechs: Vec::new(), lmtp: d.lmtp, tls: note, auth_note: String::new() };
        c.hello(ep, &d.helo).await?;
        c.authenticate(d).await?;
        Ok(c)
    }

    /// SMTP AUTH as a client (RFC 4954): SCRAM-SHA-256, PLAIN or LOGIN,
    /// the best the server offers; never before TLS unless allowed.
    async fn authenticate(&mut self, d: &Dest) -> Result<(), ConnError> {
        let Some((user, password)) = &d.credentials else { return Ok(()) };
        let ep = &d.endpoint;
        if self.tls == "none" && !d.auth_plaintext {
            return Err(format!("4.7.0 refusing to send credentials to {ep} without TLS (smarthost_auth_plaintext = false)"));
        }
        let offered: Vec<String> = self.auth_mechs.clone();
        let pick = d.auth_order.iter().copied().find(|m| offered.iter().any(|o| o == m));
        let Some(mech) = pick else {
            return Err(format!("4.7.0 {ep} offers no usable AUTH mechanism (offered: {})", offered.join(" ")));
        };
        use postern_wire::sasl::{client_plain, decode_response, encode_challenge, ScramClient};
        let expect = |r: &Reply, code: u16| -> Result<(), ConnError> {
            if r.code == code {
                Ok(())
            } else if r.is_permanent() {
                Err(format!("5.7.8 AUTH {mech} at {ep} failed: {}", r.summary()))
            } else {
                Err(format!("4.7.0 AUTH {mech} at {ep} failed: {}", r.summary()))
            }
        };
        let challenge = |r: &Reply| -> Result<String, ConnError> {
            let text = r.lines.first().map(|l| l.to_string()).unwrap_or_default();
            decode_response(&text).map(|b| String::from_utf8_lossy(&b).into_owned()).map_err(|e| format!("4.7.0 bad challenge from {ep}: {e}"))
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
                let fin = scram.final_message(&challenge(&r)?).map_err(|e| format!("4.7.0 SCRAM with {ep}: {e}"))?;
                self.send(format!("{}\r\n", encode_challenge(fin.as_bytes())).as_bytes()).await?;
                let r = self.reply(REPLY_TIMEOUT).await?;
                if r.code == 334 {
                    if !scram.verify_server(&challenge(&r)?) {
                        return Err(format!("4.7.0 {ep} failed SCRAM server authentication (wrong server key)"));
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
            return Err(format!("4.4.2 {ep} refused {verb}: {}", r.summary()));
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
                    .map_err(|_| format!("4.4.1 connect to {ep}: timed out"))?
                    .map_err(|e| format!("4.4.1 connect to {ep}: {e}"))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| format!("4.4.1 connect to {ep}: timed out"))?
                    .map_err(|e| format!("4.4.1 connect to {ep}: {e}"))?,
            ),
        };
        Ok(io)
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let w = self.io.get_mut();
        w.write_all(bytes).await.map_err(|e| format!("4.4.2 write: {e}"))?;
        w.flush().await.map_err(|e| format!("4.4.2 write: {e}"))
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self, timeout: Duration) -> Result<Reply, ConnError> {
        tokio::time::timeout(timeout, self.read_reply()).await.map_err(|_| "4.4.2 timeout waiting for reply".to_string())?
    }

    async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.io).take(MAX_REPLY_LINE as u64).read_until(b'\n', &mut raw).await.map_err(|e| format!("4.4.2 read: {e}"))?;
            if n == 0 {
                return Err("4.4.2 connection closed by peer".into());
            }
            let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last || lines.len() > 100 {
                break;
            }
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        parse_reply_lines(&refs).ok_or_else(|| format!("4.5.0 malformed reply: {:?}", lines.join(" / ")))
    }

    /// One transaction. `Err` means the connection is unusable and every
    /// recipient without an outcome is deferred.
    pub async fn transaction(&mut self, msg: &Message, rcpts: &[String]) -> Result<Vec<Outcome>, ConnError> {
        if msg.smtputf8 && !self.ext.contains("SMTPUTF8") {
            let o = Outcome::Failed("553 5.6.7 next hop does not support SMTPUTF8".into());
            return Ok(vec![o; rcpts.len()]);
        }
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if self.ext.contains("SIZE") {
            mail.push_str(&format!(" SIZE={}", msg.body.len()));
        }
        if msg.eight_bit && self.ext.contains("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        // RFC 6152: 8-bit data only to 8BITMIME hosts. We do not convert to
        // 7 bit (that would rewrite MIME structure and break signatures):
        // such mail bounces with 5.6.3 instead (documented).
        if !self.ext.contains("8BITMIME") && !self.lmtp && msg.body.iter().any(|&b| b >= 0x80) {
            let o = Outcome::Failed("554 5.6.3 next hop does not support 8BITMIME; postern does not convert to 7 bit".into());
            return Ok(vec![o; rcpts.len()]);
        }
        let dsn = self.ext.contains("DSN");
        if dsn {
            use postern_wire::command::xtext_encode;
            if let Some(r) = &msg.dsn.ret {
                mail.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = &msg.dsn.envid {
                mail.push_str(&format!(" ENVID={}", xtext_encode(e)));
            }
        }
        mail.push_str("\r\n");
        let rcpt_line = |r: &str| -> String {
            let mut l = format!("RCPT TO:<{r}>");
            if dsn {
                if let Some((notify, orcpt)) = msg.dsn.rcpts.get(r) {
                    if let Some(n) = notify {
                        l.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = orcpt {
                        l.push_str(&format!(" ORCPT={}", postern_wire::command::xtext_encode(o)));
                    }
                }
            }
            l.push_str("\r\n");
            l
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
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred("4.0.0 no reply".into()))).collect());
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
        Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Deferred("4.0.0 no reply".into()))).collect())
    }

    /// Ends the session politely (QUIT, then the reply), best effort.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply(Duration::from_secs(5)).await;
        }
    }
}

/// Runs a transaction, deferring everyone on a connection-level error.
async fn deliver_on(conn: &mut Conn, msg: &Message, rcpts: &[String]) -> Result<Attempt, Attempt> {
    let tls = Some(if conn.auth_note.is_empty() { conn.tls.clone() } else { format!("{}, auth {}", conn.tls, conn.auth_note) });
    let dsn = conn.ext.contains("DSN");
    match conn.transaction(msg, rcpts).await {
        Ok(outcomes) => Ok(Attempt { outcomes, tls, dsn }),
        Err(e) => Err(Attempt::all(Outcome::Deferred(e), rcpts.len(), tls)),
    }
}

/// LMTP delivery to a local mail store (e.g. Dovecot).
pub struct Lmtp {
    dest: Dest,
}

/// CA files for "verify" when none are configured: the system bundle and the built-in CA.
fn default_cas(s: &crate::settings::Settings) -> Vec<std::path::PathBuf> {
    [std::path::PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE), s.data_dir.join("ca/ca.crt")].into_iter().filter(|p| p.exists()).collect()
}

fn host_of(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Tcp(h, _) => h.clone(),
        Endpoint::Unix(_) => "localhost".into(),
    }
}

impl Lmtp {
    /// Builds the LMTP transport (TLS only over TCP, per `local.lmtp_tls`).
    pub fn from_settings(s: &crate::settings::Settings, ep: &Endpoint) -> Result<Lmtp, String> {
        let policy = if matches!(ep, Endpoint::Unix(_)) { OutboundTls::None } else { s.config.local.lmtp_tls };
        let tls = if policy == OutboundTls::None {
            None
        } else {
            Some(Arc::new(
                ClientTls::build(policy, &default_cas(s), None).map_err(|e| format!("4.7.0 LMTP TLS setup: {e}"))?,
            ))
        };
        Ok(Lmtp {
            dest: Dest {
                endpoint: ep.clone(),
                lmtp: true,
                helo: s.hostname.clone(),
                tls,
                implicit_tls: false,
                server_name: host_of(ep),
                credentials: None,
                auth_plaintext: false,
                auth_order: AUTH_ORDER,
            },
        })
    }
}

impl Transport for Lmtp {
    fn name(&self) -> String {
        format!("lmtp:{}", self.dest.endpoint)
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut conn = match Conn::open(&self.dest).await {
                Ok(c) => c,
                Err(e) => return Attempt::all(Outcome::Deferred(e), rcpts.len(), None),
            };
            let out = deliver_on(&mut conn, msg, rcpts).await;
            match out {
                Ok(o) => {
                    conn.quit().await;
                    o
                }
                Err(o) => o,
            }
        })
    }
}

impl Smarthost {
    /// An SMTP next hop from a `[[route]]`: STARTTLS when offered, no AUTH.
    pub fn for_route(s: &crate::settings::Settings, endpoint: Endpoint) -> Result<Smarthost, String> {
        let tls = ClientTls::build(OutboundTls::May, &default_cas(s), None).map_err(|e| e.to_string())?;
        let server_name = host_of(&endpoint);
        Ok(Smarthost::new(Dest {
            endpoint,
            lmtp: false,
            helo: s.hostname.clone(),
            tls: Some(Arc::new(tls)),
            implicit_tls: false,
            server_name,
            credentials: None,
            auth_plaintext: false,
            auth_order: AUTH_ORDER,
        }))
    }
}

/// SMTP to a configured smarthost, reusing idle connections.
pub struct Smarthost {
    dest: Dest,
    idle: Mutex<Vec<(Instant, Conn)>>,
}

impl Smarthost {
    /// A smarthost transport with an empty pool.
    pub fn new(dest: Dest) -> Smarthost {
        Smarthost { dest, idle: Mutex::new(Vec::new()) }
    }

    /// Builds the transport from `relay.smarthost*` settings (loads TLS material).
    pub fn from_settings(s: &crate::settings::Settings) -> Result<Smarthost, String> {
        let r = &s.config.relay;
        let endpoint = r.smarthost.clone().ok_or("relay.smarthost is not configured")?;
        let policy = if r.smarthost_implicit_tls && r.smarthost_tls == OutboundTls::None { OutboundTls::Encrypt } else { r.smarthost_tls };
        let tls = if policy == OutboundTls::None {
            None
        } else {
            let mut cas: Vec<std::path::PathBuf> = r.smarthost_ca_files.iter().map(|p| s.resolve(p)).collect();
            if cas.is_empty() {
                cas = default_cas(s);
            }
            let cert = match (&r.smarthost_client_certificate, &r.smarthost_client_key) {
                (Some(c), Some(k)) => Some((s.resolve(c), s.resolve(k))),
                _ => None,
            };
            let t = ClientTls::build(policy, &cas, cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).map_err(|e| e.to_string())?;
            Some(Arc::new(t))
        };
        let server_name = r.smarthost_server_name.clone().unwrap_or_else(|| host_of(&endpoint));
        let credentials = match (&r.smarthost_username, &r.smarthost_password_file) {
            (Some(u), Some(f)) => {
                let f = s.resolve(f);
                let text = std::fs::read_to_string(&f).map_err(|e| format!("relay.smarthost_password_file {}: {e}", f.display()))?;
                let pw = text.lines().next().unwrap_or("").to_string();
                if pw.is_empty() {
                    return Err(format!("relay.smarthost_password_file {}: empty", f.display()));
                }
                Some((u.clone(), pw))
            }
            _ => None,
        };
        Ok(Smarthost::new(Dest {
            endpoint,
            lmtp: false,
            helo: s.hostname.clone(),
            tls,
            implicit_tls: r.smarthost_implicit_tls,
            server_name,
            credentials,
            auth_plaintext: r.smarthost_auth_plaintext,
            auth_order: AUTH_ORDER,
        }))
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((since, c)) = idle.pop() {
            if since.elapsed() < POOL_IDLE {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, c: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((Instant::now(), c));
            }
        }
    }
}

impl Transport for Smarthost {
    fn name(&self) -> String {
        format!("smtp:{}", self.dest.endpoint)
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match self.try_deliver(msg, rcpts).await {
                Ok(a) => a,
                Err(e) => Attempt::all(Outcome::Deferred(e), rcpts.len(), None),
            }
        })
    }
}

impl Smarthost {
    /// Delivers, or returns `Err` when no session could be opened
    /// (connection refused, timeout, 4xx/5xx greeting): MX delivery then
    /// tries the next host.
    pub async fn try_deliver(&self, msg: &Message, rcpts: &[String]) -> Result<Attempt, String> {
        // A reused connection may have been closed by the peer; on a
        // connection-level error retry once on a fresh one.
        if let Some(mut c) = self.take_idle() {
            if let Ok(o) = deliver_on(&mut c, msg, rcpts).await {
                self.put_idle(c);
                return Ok(o);
            }
        }
        let mut c = Conn::open(&self.dest).await?;
        match deliver_on(&mut c, msg, rcpts).await {
            Ok(o) => {
                self.put_idle(c);
                Ok(o)
            }
            Err(o) => Ok(o),
        }
    }
}

use tokio::io::AsyncReadExt as _;
