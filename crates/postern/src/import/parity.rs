//! Decision parity: replays a table of SMTP sessions ([`Probe`]) against a
//! daemon and classifies each reply ([`Verdict`]), so the source MTA and
//! postern with the imported configuration can be compared step by step
//! ([`compare`]). Used by `postern import … --verify` and the interop tests.
//!
//! A probe picks the client address (any 127/8 address: the source address
//! is bound, so `mynetworks`-style rules see it), the listener (25, 587,
//! 465), STARTTLS, a client certificate (trusted, look-alike issuer,
//! self-signed, none), AUTH, the sender and the recipients.
//!
//! May touch: outbound TCP to the daemons under test; the certificate
//! files named in [`CertFiles`]. RFCs: 5321, 3207, 4954, 8314.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// Port 25 style (STARTTLS optional).
    Smtp,
    /// Submission, 587 style.
    Submission,
    /// Implicit TLS, 465 style.
    Smtps,
}

/// Which client certificate the probe presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCert {
    /// None.
    #[default]
    None,
    /// Issued by the CA the configuration trusts.
    Trusted,
    /// Issued by a CA with the trusted CA's subject but another key.
    LookAlike,
    /// Self-signed.
    SelfSigned,
}

/// One session of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// A short name for the report.
    pub name: String,
    /// The client's (source) address, 127/8 on a test machine.
    pub client_ip: IpAddr,
    /// The listener.
    pub port: Port,
    /// Issue STARTTLS (ignored for [`Port::Smtps`]).
    #[serde(default)]
    pub starttls: bool,
    /// The client certificate.
    #[serde(default)]
    pub cert: ClientCert,
    /// AUTH PLAIN with (user, password), if any.
    #[serde(default)]
    pub auth: Option<(String, String)>,
    /// MAIL FROM address ("" for <>).
    pub mail_from: String,
    /// RCPT TO addresses.
    pub rcpts: Vec<String>,
}

/// The class of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Class {
    /// 2xx/3xx.
    Accept,
    /// 4xx.
    TempFail,
    /// 5xx.
    PermFail,
    /// The step was not taken (an earlier step ended the session, or AUTH
    /// was not offered).
    NotReached,
}

/// What one probe got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// AUTH, when the probe authenticates.
    pub auth: Option<Class>,
    /// MAIL FROM.
    pub mail: Class,
    /// Each RCPT TO, in order.
    pub rcpts: Vec<Class>,
}

/// The daemon under test: its listeners.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Address of each listener it has.
    pub addrs: HashMap<Port, SocketAddr>,
}

/// Client certificates and keys (PEM) for the probes.
#[derive(Debug, Clone, Default)]
pub struct CertFiles {
    /// By kind: (certificate chain, key).
    pub files: HashMap<String, (PathBuf, PathBuf)>,
}

/// One difference between the source and postern.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The probe.
    pub probe: String,
    /// "auth", "mail" or "rcpt N".
    pub step: String,
    /// The source daemon's class.
    pub source: Class,
    /// postern's class.
    pub postern: Class,
    /// Why this is a deliberate postern choice, when it is one.
    pub explained: Option<String>,
}

/// Compares two runs of the same probes (same order).
pub fn compare(probes: &[Probe], source: &[Verdict], postern: &[Verdict]) -> Vec<Difference> {
    let mut out = Vec::new();
    for ((p, a), b) in probes.iter().zip(source).zip(postern) {
        let mut step = |step: String, x: Class, y: Class| {
            if x != y {
                out.push(Difference { probe: p.name.clone(), step, source: x, postern: y, explained: None });
            }
        };
        if let (Some(x), Some(y)) = (a.auth, b.auth) {
            step("auth".into(), x, y);
        }
        step("mail".into(), a.mail, b.mail);
        for (i, (x, y)) in a.rcpts.iter().zip(&b.rcpts).enumerate() {
            step(format!("rcpt {}", i + 1), *x, *y);
        }
    }
    out
}

impl ClientCert {
    /// The key of this kind in [`CertFiles::files`] (`trusted`,
    /// `look-alike`, `self-signed`); `None` for [`ClientCert::None`].
    pub fn key(self) -> Option<&'static str> {
        match self {
            ClientCert::None => None,
            ClientCert::Trusted => Some("trusted"),
            ClientCert::LookAlike => Some("look-alike"),
            ClientCert::SelfSigned => Some("self-signed"),
        }
    }
}

impl CertFiles {
    /// The conventional layout: `DIR/trusted.crt` + `DIR/trusted.key`,
    /// `look-alike.*`, `self-signed.*`; kinds whose files are missing are
    /// left out.
    pub fn from_dir(dir: &std::path::Path) -> CertFiles {
        let mut files = HashMap::new();
        for kind in ["trusted", "look-alike", "self-signed"] {
            let (c, k) = (dir.join(format!("{kind}.crt")), dir.join(format!("{kind}.key")));
            if c.is_file() && k.is_file() {
                files.insert(kind.to_string(), (c, k));
            }
        }
        CertFiles { files }
    }
}

impl Class {
    /// Classifies an SMTP reply code.
    pub fn of(code: u16) -> Class {
        match code {
            200..=399 => Class::Accept,
            400..=499 => Class::TempFail,
            _ => Class::PermFail,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Accept => "accept",
            Class::TempFail => "4xx",
            Class::PermFail => "5xx",
            Class::NotReached => "not-reached",
        })
    }
}

/// The time one step (connect, handshake, one reply) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// The name the probes give in EHLO (a FQDN, so HELO checks do not refuse it).
const EHLO_NAME: &str = "parity-probe.example.net";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An SMTP client connection (plain or TLS) with its read buffer.
struct Conn {
    io: BufReader<Box<dyn Stream>>,
    log: Vec<String>,
}

/// One reply: code and the text of all its lines.
struct Reply {
    code: u16,
    text: String,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply, String> {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            let n = timeout(STEP_TIMEOUT, (&mut self.io).take(4096).read_until(b'\n', &mut line))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            self.log.push(format!("S: {line}"));
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| format!("bad reply {line:?}"))?;
            text.push_str(line.get(4..).unwrap_or(""));
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text });
            }
        }
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, String> {
        self.log.push(format!("C: {cmd}"));
        let w = async {
            self.io.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).await?;
            self.io.get_mut().flush().await
        };
        timeout(STEP_TIMEOUT, w).await.map_err(|_| "timeout".to_string())?.map_err(|e| e.to_string())?;
        self.reply().await
    }
}

/// The TLS client config of a probe: any server certificate, the probe's
/// client certificate if it has one.
fn tls_config(certs: &CertFiles, cert: ClientCert) -> Result<Arc<rustls::ClientConfig>, String> {
    let files = match cert.key() {
        None => None,
        Some(k) => Some(certs.files.get(k).ok_or_else(|| format!("no {k} client certificate given"))?),
    };
    let tls = crate::tls::client::ClientTls::build(crate::config::OutboundTls::May, &[], files.map(|(c, k)| (c.as_path(), k.as_path())))
        .map_err(|e| e.to_string())?;
    Ok(tls.config)
}

async fn handshake(io: Box<dyn Stream>, config: Arc<rustls::ClientConfig>) -> Result<Box<dyn Stream>, String> {
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = timeout(STEP_TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(name, io))
        .await
        .map_err(|_| "TLS timeout".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

/// Replays `probe` against `target`. Network errors count as
/// [`Class::NotReached`] for the steps not taken.
pub async fn replay(target: &Target, certs: &CertFiles, probe: &Probe) -> Verdict {
    replay_logged(target, certs, probe).await.0
}

/// [`replay`], also returning the transcript (`C:`/`S:` lines and the
/// error that ended the session early, if any).
pub async fn replay_logged(target: &Target, certs: &CertFiles, probe: &Probe) -> (Verdict, Vec<String>) {
    let mut v = Verdict {
        auth: probe.auth.as_ref().map(|_| Class::NotReached),
        mail: Class::NotReached,
        rcpts: vec![Class::NotReached; probe.rcpts.len()],
    };
    let mut log = Vec::new();
    if let Err(e) = session(target, certs, probe, &mut v, &mut log).await {
        log.push(format!("ended: {e}"));
    }
    (v, log)
}

async fn connect(from: IpAddr, to: SocketAddr) -> Result<TcpStream, String> {
    let sock = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(from, 0)).map_err(|e| format!("bind {from}: {e}"))?;
    timeout(STEP_TIMEOUT, sock.connect(to)).await.map_err(|_| "connect timeout".to_string())?.map_err(|e| format!("connect {to}: {e}"))
}

async fn session(target: &Target, certs: &CertFiles, probe: &Probe, v: &mut Verdict, log: &mut Vec<String>) -> Result<(), String> {
    let addr = *target.addrs.get(&probe.port).ok_or_else(|| format!("no {:?} listener", probe.port))?;
    let tcp = connect(probe.client_ip, addr).await?;
    let mut io: Box<dyn Stream> = Box::new(tcp);
    let wants_tls = probe.port == Port::Smtps || probe.starttls;
    let config = if wants_tls { Some(tls_config(certs, probe.cert)?) } else { None };
    if let (Port::Smtps, Some(c)) = (probe.port, &config) {
        io = handshake(io, c.clone()).await?;
    }
    let mut conn = Conn { io: BufReader::new(io), log: Vec::new() };
    let r = run(&mut conn, probe, config, v).await;
    // Best effort: the verdict is complete either way.
    if r.is_ok() {
        let _ = conn.command("QUIT").await;
    }
    log.append(&mut conn.log);
    r
}

async fn run(conn: &mut Conn, probe: &Probe, config: Option<Arc<rustls::ClientConfig>>, v: &mut Verdict) -> Result<(), String> {
    let greeting = conn.reply().await?;
    if greeting.code != 220 {
        return Err(format!("greeting {}", greeting.code));
    }
    let mut ehlo = conn.command(&format!("EHLO {EHLO_NAME}")).await?;
    if ehlo.code != 250 {
        return Err(format!("EHLO {}", ehlo.code));
    }
    if let (true, Port::Smtp | Port::Submission, Some(c)) = (probe.starttls, probe.port, config) {
        let r = conn.command("STARTTLS").await?;
        if r.code == 220 {
            // RFC 3207 4.2: anything buffered before the handshake is discarded.
            let old = std::mem::replace(&mut conn.io, BufReader::new(Box::new(tokio::io::empty()) as Box<dyn Stream>));
            conn.io = BufReader::new(handshake(old.into_inner(), c).await?);
            ehlo = conn.command(&format!("EHLO {EHLO_NAME}")).await?;
            if ehlo.code != 250 {
                return Err(format!("EHLO after STARTTLS {}", ehlo.code));
            }
        }
    }
    if let Some((user, pass)) = &probe.auth {
        let offers_plain = ehlo.text.lines().any(|l| {
            let u = l.to_ascii_uppercase();
            (u.starts_with("AUTH ") || u.starts_with("AUTH=")) && u.split([' ', '=']).any(|m| m == "PLAIN")
        });
        if offers_plain {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
            let r = conn.command(&format!("AUTH PLAIN {token}")).await?;
            v.auth = Some(Class::of(r.code));
        }
    }
    let r = conn.command(&format!("MAIL FROM:<{}>", probe.mail_from)).await?;
    v.mail = Class::of(r.code);
    if v.mail != Class::Accept {
        return Ok(());
    }
    for (i, rcpt) in probe.rcpts.iter().enumerate() {
        let r = conn.command(&format!("RCPT TO:<{rcpt}>")).await?;
        v.rcpts[i] = Class::of(r.code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(name: &str, n: usize) -> Probe {
        Probe {
            name: name.into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            port: Port::Smtp,
            starttls: false,
            cert: ClientCert::None,
            auth: None,
            mail_from: String::new(),
            rcpts: vec!["a@b".into(); n],
        }
    }

    #[test]
    fn compare_reports_each_differing_step() {
        use Class::*;
        let probes = vec![probe("p1", 2), probe("p2", 1)];
        let src = vec![
            Verdict { auth: Some(Accept), mail: Accept, rcpts: vec![Accept, PermFail] },
            Verdict { auth: None, mail: Accept, rcpts: vec![TempFail] },
        ];
        let pst = vec![
            Verdict { auth: Some(NotReached), mail: Accept, rcpts: vec![Accept, Accept] },
            Verdict { auth: None, mail: Accept, rcpts: vec![TempFail] },
        ];
        let d = compare(&probes, &src, &pst);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].probe.as_str(), d[0].step.as_str(), d[0].source, d[0].postern), ("p1", "auth", Accept, NotReached));
        assert_eq!((d[1].step.as_str(), d[1].source, d[1].postern), ("rcpt 2", PermFail, Accept));
        assert!(compare(&probes, &src, &src).is_empty());
    }

    #[test]
    fn reply_classes() {
        assert_eq!(Class::of(250), Class::Accept);
        assert_eq!(Class::of(354), Class::Accept);
        assert_eq!(Class::of(451), Class::TempFail);
        assert_eq!(Class::of(554), Class::PermFail);
    }

    #[test]
    fn probe_table_parses_from_toml() {
        let t: toml::Table = toml::from_str(
            "[[probe]]\nname = \"x\"\nclient_ip = \"127.0.0.2\"\nport = \"submission\"\nstarttls = true\ncert = \"look-alike\"\nauth = [\"u\", \"p\"]\nmail_from = \"\"\nrcpts = [\"a@b\"]\n",
        )
        .unwrap();
        let p: Probe = t["probe"].as_array().unwrap()[0].clone().try_into().unwrap();
        assert_eq!(p.cert, ClientCert::LookAlike);
        assert_eq!(p.auth, Some(("u".into(), "p".into())));
    }

    #[tokio::test]
    async fn unreachable_target_is_not_reached() {
        let mut t = Target::default();
        // A port nothing listens on (bound then dropped).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        t.addrs.insert(Port::Smtp, l.local_addr().unwrap());
        drop(l);
        let v = replay(&t, &CertFiles::default(), &probe("p", 2)).await;
        assert_eq!(v, Verdict { auth: None, mail: Class::NotReached, rcpts: vec![Class::NotReached; 2] });
    }
}
