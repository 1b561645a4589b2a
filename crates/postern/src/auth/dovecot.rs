//! A client for Dovecot's authentication protocol (`auth.backend =
//! "dovecot"`, Postfix's `smtpd_sasl_type = dovecot`): Dovecot runs the
//! SASL exchange and checks the credentials; postern relays the client's
//! base64 messages and never sees a password.
//!
//! Two halves:
//! - the codec (pure, tested in `dovecot_tests.rs`): the handshake, `MECH`
//!   / `CONT` / `OK` / `FAIL` lines, the `AUTH` request, Dovecot's
//!   tab-escaping (`\001` → `\0011`, TAB → `\001t`, CR → `\001r`, LF →
//!   `\001n`), and [`usable`], the mechanism policy;
//! - [`DovecotClient`]: a small pool of connections. One exchange has a
//!   connection to itself for its duration (no demultiplexing task: a
//!   connection that misbehaves or times out is simply dropped, and it
//!   cannot stall other sessions' exchanges). Ids are unique per
//!   connection. An idle connection that turns out dead is replaced once.
//!
//! May touch: the Dovecot auth socket (unix or TCP). Protocol:
//! <https://doc.dovecot.org/developer_manual/design/auth_protocol/>
//! (version 1.2); RFC 4954 (the SMTP side), RFC 4422.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use postern_wire::sasl::Mechanism;

use crate::config::{Auth, Endpoint, Listener};

/// The longest line accepted from Dovecot.
const MAX_LINE: u64 = 64 * 1024;
/// Idle connections kept for later exchanges.
const MAX_IDLE: usize = 16;

/// One mechanism as Dovecot announces it (`MECH\tNAME\tflags...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MechInfo {
    /// The name, upper-case.
    pub name: String,
    /// `plaintext`: the password crosses the wire (PLAIN, LOGIN).
    pub plaintext: bool,
    /// `anonymous`: no credentials at all.
    pub anonymous: bool,
    /// `private`: not to be advertised to clients.
    pub private: bool,
}

/// The parameters of an `OK` or `FAIL` line: `key=value` pairs and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    fn parse<'a>(fields: impl Iterator<Item = &'a str>) -> Params {
        Params(
            fields
                .map(|f| match f.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(unescape(v))),
                    None => (f.to_string(), None),
                })
                .collect(),
        )
    }

    /// The value of `key=`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }

    /// True if the flag `key` (without a value) is present.
    pub fn flag(&self, key: &str) -> bool {
        self.0.iter().any(|(k, v)| k == key && v.is_none())
    }

    /// `user=`: the authenticated (OK) or attempted (FAIL) user.
    pub fn user(&self) -> Option<&str> {
        self.value("user").filter(|u| !u.is_empty())
    }

    /// `reason=`: why, for the log.
    pub fn reason(&self) -> Option<&str> {
        self.value("reason")
    }

    /// A temporary failure: the `temp` flag, or `code=temp_fail` (2.3+).
    pub fn temporary(&self) -> bool {
        self.flag("temp") || self.value("code") == Some("temp_fail")
    }

    /// `nologin`: the credentials may be right, but this user may not log in.
    pub fn nologin(&self) -> bool {
        self.flag("nologin")
    }

    /// `resp=`: final server data (base64) to send in a 334 before 235.
    pub fn resp(&self) -> Option<&str> {
        self.value("resp").filter(|r| !r.is_empty())
    }
}

/// One line from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `VERSION\tmajor\tminor`.
    Version(u32, u32),
    /// `MECH\tname\tflags...`.
    Mech(MechInfo),
    /// `DONE`: the end of the handshake.
    Done,
    /// `CONT\tid\tbase64`: a challenge for the client.
    Cont(u32, String),
    /// `OK\tid\tparams`: authenticated.
    Ok(u32, Params),
    /// `FAIL\tid\tparams`: not authenticated.
    Fail(u32, Params),
    /// `SPID`, `CUID`, `COOKIE` and lines a newer Dovecot may add: ignored.
    Other,
}

/// What the client cannot make sense of, or what goes wrong talking to Dovecot.
/// Every variant is temporary for the SMTP client (454 4.7.0).
#[derive(Debug, thiserror::Error)]
pub enum DovecotError {
    /// A line without the fields its kind needs.
    #[error("malformed line from dovecot: {0:?}")]
    Malformed(String),
    /// The server speaks another major version.
    #[error("dovecot auth protocol version {0} (expected 1)")]
    Version(u32),
    /// An answer for another request id.
    #[error("answer for id {got}, expected {want}")]
    WrongId {
        /// The id in the line.
        got: u32,
        /// The id of the request.
        want: u32,
    },
    /// The socket could not be connected.
    #[error("connecting to dovecot at {0}: {1}")]
    Connect(String, std::io::Error),
    /// Reading or writing failed.
    #[error("dovecot: {0}")]
    Io(#[from] std::io::Error),
    /// Dovecot closed the connection.
    #[error("dovecot closed the connection")]
    Closed,
    /// No answer within `auth.dovecot_timeout`.
    #[error("dovecot did not answer within {0:?}")]
    Timeout(Duration),
}

/// Undoes Dovecot's tab-escaping (`str_tabunescape`).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('0') => out.push('\0'),
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Dovecot's tab-escaping (`str_tabescape`), for values sent in a request.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\u{1}0"),
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            c => out.push(c),
        }
    }
    out
}

fn id(field: Option<&str>, line: &str) -> Result<u32, DovecotError> {
    field.and_then(|f| f.parse().ok()).ok_or_else(|| DovecotError::Malformed(line.into()))
}

/// Parses one server line (without its LF).
pub fn parse_line(line: &str) -> Result<ServerLine, DovecotError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut f = line.split('\t');
    let bad = || DovecotError::Malformed(line.into());
    Ok(match f.next().unwrap_or("") {
        "VERSION" => {
            let major = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let minor = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            ServerLine::Version(major, minor)
        }
        "MECH" => {
            let name = f.next().filter(|n| !n.is_empty()).ok_or_else(bad)?.to_ascii_uppercase();
            let flags: Vec<&str> = f.collect();
            ServerLine::Mech(MechInfo {
                name,
                plaintext: flags.contains(&"plaintext"),
                anonymous: flags.contains(&"anonymous"),
                private: flags.contains(&"private"),
            })
        }
        "DONE" => ServerLine::Done,
        "CONT" => {
            let id = id(f.next(), line)?;
            ServerLine::Cont(id, f.next().unwrap_or("").to_string())
        }
        "OK" => ServerLine::Ok(id(f.next(), line)?, Params::parse(f)),
        "FAIL" => ServerLine::Fail(id(f.next(), line)?, Params::parse(f)),
        _ => ServerLine::Other,
    })
}

/// What the client sends first: our version and our process id.
pub fn handshake(pid: u32) -> String {
    format!("VERSION\t1\t2\nCPID\t{pid}\n")
}

/// The start of one exchange.
#[derive(Debug, Clone)]
pub struct AuthStart {
    /// The mechanism name, as Dovecot announced it.
    pub mechanism: String,
    /// The SMTP connection is under TLS (`secured`).
    pub secured: bool,
    /// Our address (`lip`, `lport`).
    pub local: SocketAddr,
    /// The client's address (`rip`, `rport`).
    pub remote: SocketAddr,
    /// The initial response, base64 (`resp=`; empty: an empty response).
    pub initial: Option<String>,
    /// A verified client certificate's user name (`valid-client-cert`,
    /// `cert_username=`), for EXTERNAL.
    pub cert_username: Option<String>,
}

fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl AuthStart {
    /// The `AUTH` line for request `id` (with its LF).
    pub fn encode(&self, id: u32) -> String {
        let mut s = format!("AUTH\t{id}\t{}\tservice=smtp\tnologin", escape(&self.mechanism));
        if self.secured {
            s.push_str("\tsecured");
        }
        s.push_str(&format!(
            "\tlip={}\trip={}\tlport={}\trport={}",
            ip_text(self.local.ip()),
            ip_text(self.remote.ip()),
            self.local.port(),
            self.remote.port()
        ));
        if let Some(r) = &self.initial {
            s.push_str(&format!("\tresp={}", escape(r)));
        }
        if let Some(u) = &self.cert_username {
            s.push_str(&format!("\tvalid-client-cert\tcert_username={}", escape(u)));
        }
        s.push('\n');
        s
    }
}

/// The `CONT` line carrying the client's response (base64) to request `id`.
pub fn cont_line(id: u32, response: &str) -> String {
    format!("CONT\t{id}\t{}\n", escape(response))
}

/// Mechanisms a connection may use through Dovecot, in the configured
/// order: those postern knows that Dovecot announces, never anonymous or
/// private ones; nothing before TLS unless the client is in
/// `auth.plaintext_networks`, and then no `plaintext` ones; no -PLUS (the
/// protocol version Dovecot 2.3 speaks cannot carry channel bindings);
/// EXTERNAL only with a verified client certificate.
pub fn usable(offered: &[MechInfo], auth: &Auth, l: &Listener, tls: bool, client: IpAddr, has_verified_cert: bool) -> Vec<Mechanism> {
    if !tls && !auth.plaintext_networks.iter().any(|n| n.contains(client)) {
        return Vec::new();
    }
    super::listener_mechanisms(auth, l)
        .into_iter()
        .filter(|m| *m != Mechanism::ScramSha256Plus)
        .filter(|m| *m != Mechanism::External || has_verified_cert)
        .filter(|m| offered.iter().any(|o| o.name == m.name() && !o.anonymous && !o.private && (tls || !o.plaintext)))
        .collect()
}

/// Anything the connection can run over.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One handshaken connection.
struct Connection {
    io: BufReader<Box<dyn Io>>,
    next_id: u32,
}

impl Connection {
    async fn read(&mut self, timeout: Duration) -> Result<ServerLine, DovecotError> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(timeout, (&mut self.io).take(MAX_LINE).read_until(b'\n', &mut buf))
            .await
            .map_err(|_| DovecotError::Timeout(timeout))??;
        if n == 0 {
            return Err(DovecotError::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Err(DovecotError::Malformed("line too long or cut short".into()));
        }
        buf.pop();
        parse_line(&String::from_utf8_lossy(&buf))
    }

    async fn write(&mut self, text: &str, timeout: Duration) -> Result<(), DovecotError> {
        let io = self.io.get_mut();
        tokio::time::timeout(timeout, async {
            io.write_all(text.as_bytes()).await?;
            io.flush().await
        })
        .await
        .map_err(|_| DovecotError::Timeout(timeout))??;
        Ok(())
    }
}

/// A Dovecot answer to the current step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A challenge (base64, possibly empty) for the SMTP client.
    Cont(String),
    /// Authenticated.
    Ok(Params),
    /// Not authenticated (see [`Params::temporary`]).
    Fail(Params),
}

/// The client: where Dovecot is, the last mechanism list it announced,
/// idle connections.
pub struct DovecotClient {
    endpoint: Endpoint,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    mechanisms: Mutex<Option<Vec<MechInfo>>>,
}

impl std::fmt::Debug for DovecotClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DovecotClient").field("endpoint", &self.endpoint.to_string()).finish()
    }
}

impl DovecotClient {
    /// A client for `endpoint`; every connect and every answer waits at most `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> DovecotClient {
        DovecotClient { endpoint, timeout, idle: Mutex::new(Vec::new()), mechanisms: Mutex::new(None) }
    }

    /// Where Dovecot is (for the log).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The mechanisms of the latest handshake; `None` before the first one.
    pub fn mechanisms(&self) -> Option<Vec<MechInfo>> {
        self.mechanisms.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Learns the mechanism list if it is not known yet (one handshake,
    /// whose connection is kept for later).
    pub async fn learn_mechanisms(&self) -> Result<(), DovecotError> {
        if self.mechanisms().is_some() {
            return Ok(());
        }
        let c = self.connect().await?;
        self.put_back(c);
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, DovecotError> {
        let t = self.timeout;
        let name = self.endpoint.to_string();
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Tcp(host, port) => {
                let s = tokio::time::timeout(t, tokio::net::TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(|_| DovecotError::Timeout(t))?
                    .map_err(|e| DovecotError::Connect(name.clone(), e))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::time::timeout(t, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| DovecotError::Timeout(t))?
                    .map_err(|e| DovecotError::Connect(name.clone(), e))?,
            ),
        };
        let mut c = Connection { io: BufReader::new(io), next_id: 1 };
        c.write(&handshake(std::process::id()), t).await?;
        let mut mechs = Vec::new();
        loop {
            match c.read(t).await? {
                ServerLine::Version(major, _) if major != 1 => return Err(DovecotError::Version(major)),
                ServerLine::Mech(m) => mechs.push(m),
                ServerLine::Done => break,
                _ => {}
            }
        }
        *self.mechanisms.lock().unwrap_or_else(|p| p.into_inner()) = Some(mechs);
        Ok(c)
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// Sends `AUTH` and reads Dovecot's first answer. An idle connection
    /// found dead is replaced by a new one, once.
    pub async fn start(&self, req: &AuthStart) -> Result<(Exchange<'_>, Answer), DovecotError> {
        if let Some(c) = self.take_idle() {
            let mut ex = Exchange { client: self, conn: Some(c), id: 0 };
            match ex.begin(req).await {
                Ok(a) => return Ok((ex, a)),
                Err(DovecotError::Closed | DovecotError::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let c = self.connect().await?;
        let mut ex = Exchange { client: self, conn: Some(c), id: 0 };
        let a = ex.begin(req).await?;
        Ok((ex, a))
    }
}

/// One exchange in progress on a connection of its own. Dropped before
/// [`Exchange::finish`], its connection is closed (Dovecot forgets the request).
pub struct Exchange<'a> {
    client: &'a DovecotClient,
    conn: Option<Connection>,
    id: u32,
}

impl Exchange<'_> {
    async fn begin(&mut self, req: &AuthStart) -> Result<Answer, DovecotError> {
        let c = self.conn.as_mut().ok_or(DovecotError::Closed)?;
        self.id = c.next_id;
        c.next_id = c.next_id.wrapping_add(1).max(1);
        let line = req.encode(self.id);
        c.write(&line, self.client.timeout).await?;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<Answer, DovecotError> {
        let t = self.client.timeout;
        let c = self.conn.as_mut().ok_or(DovecotError::Closed)?;
        loop {
            let (got, a) = match c.read(t).await? {
                ServerLine::Cont(id, d) => (id, Answer::Cont(d)),
                ServerLine::Ok(id, p) => (id, Answer::Ok(p)),
                ServerLine::Fail(id, p) => (id, Answer::Fail(p)),
                _ => continue,
            };
            if got != self.id {
                self.conn = None;
                return Err(DovecotError::WrongId { got, want: self.id });
            }
            return Ok(a);
        }
    }

    /// Relays the client's response (base64) and reads Dovecot's answer.
    pub async fn respond(&mut self, response: &str) -> Result<Answer, DovecotError> {
        let line = cont_line(self.id, response);
        let c = self.conn.as_mut().ok_or(DovecotError::Closed)?;
        c.write(&line, self.client.timeout).await?;
        self.answer().await
    }

    /// The exchange ended with OK or FAIL: the connection can serve another.
    pub fn finish(mut self) {
        if let Some(c) = self.conn.take() {
            self.client.put_back(c);
        }
    }
}

#[cfg(test)]
#[path = "dovecot_tests.rs"]
mod tests;
