//! The in-process harness: a real `Context` (settings from a TOML string,
//! a spool, a user, the self-signed certificate) and a client speaking
//! over `tokio::io::duplex`, optionally through a rustls client.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::client::TlsStream;

use crate::auth::Throttle;
use crate::config::Config;
use crate::session::{run, Conn, Context};
use crate::settings::{Settings, Source};
use crate::spool::{QueueId, Spool};
use crate::tls::{self, ServerTls};
use crate::users::{UserDb, UserStore};

const BASE: &str = r#"
hostname = "mx.test"
[[listener]]
address = "127.0.0.1:0"
role = "smtp"
[[listener]]
address = "127.0.0.1:0"
role = "submission"
[local]
domains = ["mx.test"]
users = ["alice", "bob"]
[relay]
networks = []
"#;

static NEXT_PORT: AtomicU16 = AtomicU16::new(41000);

pub(super) fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A context like the server builds for each connection.
pub(super) struct Harness {
    _dir: tempfile::TempDir,
    settings: Arc<Settings>,
    tls: Arc<ServerTls>,
    users: Arc<UserStore>,
    throttle: Arc<Throttle>,
    spool: Spool,
    queued: mpsc::UnboundedSender<QueueId>,
    _queued_rx: mpsc::UnboundedReceiver<QueueId>,
    shutdown: watch::Receiver<bool>,
    _shutdown_tx: watch::Sender<bool>,
    port: u16,
    /// The services every session gets: those the settings configure, but
    /// no DNS (tests that want rDNS set their own).
    pub(super) services: Arc<crate::services::Services>,
}

impl Harness {
    /// `extra` is TOML appended to the base config (sections only).
    pub(super) async fn new(extra: &str) -> Harness {
        Harness::build(extra, false)
    }

    /// [`Harness::new`] with the built-in CA (`postern ca init`) made first.
    pub(super) async fn with_ca(extra: &str) -> Harness {
        Harness::build(extra, true)
    }

    fn build(extra: &str, ca: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!("{BASE}\n{extra}");
        let config = Config::parse(&text, "test.toml").expect("config");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        if ca {
            crate::ca::Ca::new(&data).init("Test CA", 30, false).expect("CA");
        }
        let source = Source { config: None, data_dir: Some(data.clone()) };
        let settings = Settings::from_config(config, &source).expect("settings");
        tls::ensure_default_certificate(&settings).expect("certificate");
        let server_tls = ServerTls::load(&settings).expect("server TLS");
        let mut db = UserDb::load(&data.join("users.json")).expect("empty user db");
        db.set_password("alice", "secret pw", false).expect("password");
        db.save(&data.join("users.json")).expect("users.json");
        let spool = Spool::open(&data.join("queue")).expect("spool");
        let (queued, queued_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let services = Arc::new(crate::services::Services { rdns: None, ..crate::services::Services::new(&settings) });
        Harness {
            _dir: dir,
            settings: Arc::new(settings),
            tls: Arc::new(server_tls),
            users: Arc::new(UserStore::new(&data)),
            throttle: Arc::new(Throttle::default()),
            services,
            spool,
            queued,
            _queued_rx: queued_rx,
            shutdown,
            _shutdown_tx: shutdown_tx,
            port: NEXT_PORT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sessions from now on use these shared counters (`[cluster] redis`).
    pub(super) fn set_counters(&mut self, counters: Arc<dyn crate::counters::SharedCounters>) {
        self.services = Arc::new(crate::services::Services { counters: Some(counters), ..Default::default() });
    }

    /// A session on the listener with this label (name, or role when it
    /// has none), over a pipe, from 127.0.0.1.
    pub(super) async fn connect(&self, role: &str) -> Client<DuplexStream> {
        self.connect_from(role, [127, 0, 0, 1].into()).await
    }

    /// A session on the listener with this role, over a pipe, from `peer`.
    pub(super) async fn connect_from(&self, role: &str, peer: std::net::IpAddr) -> Client<DuplexStream> {
        let io = self.connect_raw_from(role, peer, 64 * 1024);
        Client { io, buf: Vec::new(), cert: self.cert() }
    }

    /// The bare client end of a session whose pipe holds `buffer` octets each way.
    pub(super) fn connect_raw(&self, role: &str, buffer: usize) -> DuplexStream {
        self.connect_raw_from(role, [127, 0, 0, 1].into(), buffer)
    }

    /// [`Harness::connect_raw`] from `peer`.
    fn connect_raw_from(&self, role: &str, peer: std::net::IpAddr, buffer: usize) -> DuplexStream {
        let listener = self.settings.config.listeners.iter().find(|l| l.label() == role).expect("listener label").clone();
        let ctx = Context {
            settings: self.settings.clone(),
            spool: self.spool.clone(),
            queued: self.queued.clone(),
            shutdown: self.shutdown.clone(),
            tls: Some(self.tls.clone()),
            listener: Arc::new(listener),
            users: self.users.clone(),
            throttle: self.throttle.clone(),
            services: self.services.clone(),
        };
        let conn = Conn { peer: (peer, self.port).into(), local: ([127, 0, 0, 1], 25).into() };
        let (client, server) = tokio::io::duplex(buffer);
        tokio::spawn(run(server, conn, ctx));
        client
    }

    /// The text of a queued message, by the id in "queued as ID".
    pub(super) fn body(&self, id: &str) -> String {
        let id = crate::spool::QueueId::parse(id.trim()).expect("queue id");
        String::from_utf8_lossy(&self.spool.read_body(&id).expect("queued body")).into_owned()
    }

    /// The envelope of a queued message, by the id in "queued as ID".
    pub(super) fn envelope(&self, id: &str) -> crate::spool::Envelope {
        let id = crate::spool::QueueId::parse(id.trim()).expect("queue id");
        self.spool.load(&id).expect("queued envelope").0
    }

    /// The sender that signals shutdown to every session, as SIGTERM does.
    pub(super) fn shutdown_handle(&self) -> watch::Sender<bool> {
        self._shutdown_tx.clone()
    }

    /// A session after greeting, STARTTLS and the handshake (no EHLO yet).
    pub(super) async fn connect_tls(&self, role: &str) -> Client<TlsStream<DuplexStream>> {
        self.connect_tls_from(role, [127, 0, 0, 1].into()).await
    }

    /// [`Harness::connect_tls`] from `peer`.
    pub(super) async fn connect_tls_from(&self, role: &str, peer: std::net::IpAddr) -> Client<TlsStream<DuplexStream>> {
        let mut c = self.connect_from(role, peer).await;
        c.expect("220 ").await;
        c.send("STARTTLS").await;
        c.expect("220 2.0.0").await;
        c.starttls().await
    }

    fn cert(&self) -> Vec<u8> {
        let (cert_path, _) = tls::server_paths(&self.settings);
        std::fs::read(cert_path).expect("certificate file")
    }

    /// True if a mail log line of this test's clients contains `text`.
    pub(super) fn log_has(&self, text: &str) -> bool {
        let me = format!("]:{}", self.port);
        let lines = match crate::maillog::CAPTURED.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        lines.iter().any(|l| l.contains(&me) && l.contains(text))
    }
}

/// The client side of a test session.
pub(super) struct Client<T> {
    io: T,
    buf: Vec<u8>,
    cert: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Client<T> {
    /// Sends `text` and CRLF in one write (several lines = pipelining).
    pub(super) async fn send(&mut self, text: &str) {
        let data = format!("{text}\r\n");
        self.io.write_all(data.as_bytes()).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(20), self.io.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .expect("read");
            assert!(n > 0, "connection closed; buffered {:?}", String::from_utf8_lossy(&self.buf));
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one whole reply (all its lines) and returns it, lines joined by "\n".
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Reads one reply and asserts that its first line starts with `prefix`.
    pub(super) async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// Reads one reply and asserts that its last line starts with `prefix`.
    pub(super) async fn expect_last(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        let last = r.lines().last().unwrap_or("").replacen('-', " ", 1);
        assert!(last.starts_with(prefix), "expected last line {prefix:?}, got {r:?}");
        r
    }

    /// The TLS handshake over this connection (after "220 Ready").
    pub(super) async fn starttls(self) -> Client<TlsStream<T>> {
        self.try_starttls().await.expect("TLS handshake")
    }

    /// The TLS handshake, without a client certificate; `Err` if it failed.
    pub(super) async fn try_starttls(self) -> std::io::Result<Client<TlsStream<T>>> {
        assert!(self.buf.is_empty(), "unread plaintext before the handshake");
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&self.cert).expect("certificate PEM");
        roots.add(der).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("mx.test").expect("name");
        let io = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, self.io).await?;
        Ok(Client { io, buf: Vec::new(), cert: self.cert })
    }

    /// Sends `text` and reads: true if the server ended the connection (or
    /// the TLS layer failed) instead of answering. With TLS 1.3 the server
    /// judges a client's certificate after the client's handshake ended, so
    /// a refusal shows on the first read.
    pub(super) async fn send_finds_closed(&mut self, text: &str) -> bool {
        let data = format!("{text}\r\n");
        if self.io.write_all(data.as_bytes()).await.is_err() || self.io.flush().await.is_err() {
            return true;
        }
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(20), self.io.read(&mut chunk)).await.expect("timed out waiting for a reply") {
            Ok(0) | Err(_) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
        }
    }
}
