//! The daemon's composition root: loads the config, prepares the data
//! directory, binds the listeners, drops privileges, and wires the shared
//! state ([`crate::state`]), the scheduler, the control socket and the
//! accept loops together; handles signals (SIGTERM/SIGINT: drain and stop;
//! SIGHUP: reload the configuration and reopen the mail log).
//!
//! Dependencies point one way: `server -> {state, control, queue, session}`.
//!
//! May touch: listening sockets, the data directory (creates it), process
//! credentials (setuid/setgid after bind, `privdrop`), the control socket.

mod listener;
mod local_modes;
mod logs;
mod notify;
mod privdrop;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Listener;
use crate::control::{self, Control};
use crate::maillog;
use crate::monitor::{self, Monitor};
use crate::queue::Scheduler;
use crate::settings::{Settings, Source};
use crate::spool::{QueueId, Spool};
use crate::state::Shared;
use crate::tls::{self, ServerTls};
use crate::users::UserDb;

/// Why the daemon could not start (or run). Printed by `postern serve`.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration could not be loaded or is invalid.
    #[error("{0}")]
    Config(String),
    /// The mail log could not be opened.
    #[error("mail log {path}: {source}")]
    MailLog {
        /// The configured `log.mail_log`.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory of the data directory could not be created.
    #[error("{}: cannot create {what}: {source}", path.display())]
    DataDir {
        /// "data directory" or "Maildir root".
        what: &'static str,
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spool could not be opened or recovered.
    #[error("{0}")]
    Spool(#[from] crate::spool::SpoolError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The default certificate could not be generated.
    #[error("{0}")]
    DefaultCertificate(String),
    /// The server TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Dropping privileges failed.
    #[error(transparent)]
    Privileges(#[from] privdrop::PrivilegeError),
    /// A socket or signal handler could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Creates the data directory layout; returns the spool.
pub fn prepare_data_dir(settings: &Settings) -> Result<Spool, ServerError> {
    let d = &settings.data_dir;
    // 0700 whatever the umask (review F13); an existing directory keeps its mode.
    let private = |p: &std::path::Path| std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p);
    private(d).map_err(|source| ServerError::DataDir { what: "data directory", path: d.clone(), source })?;
    private(&settings.maildir_root).map_err(|source| ServerError::DataDir {
        what: "Maildir root",
        path: settings.maildir_root.clone(),
        source,
    })?;
    Ok(Spool::open(&d.join("queue"))?.with_sync(settings.config.queue.sync))
}

/// Connections the kernel may hold completed for us before we accept them
/// (the kernel caps it at `net.core.somaxconn`, 4096 on current Linux).
/// `TcpListener::bind` asks for 128 (the std and mio figure): with a few
/// hundred clients connecting at once the queue overflows, the kernel drops
/// their handshakes' last ACKs and they wait out retransmission timers of a
/// second and more (measured: 138 instead of 2,400 msg/s at 300 concurrent
/// connections, docs/performance.md "Growth").
const LISTEN_BACKLOG: u32 = 4096;

/// The kernel's cap on listen backlogs, if it can be read.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// Binds every listener.
async fn bind_all(listeners: &[Listener]) -> Result<Vec<(TcpListener, Listener)>, ServerError> {
    if let Some(cap) = somaxconn().filter(|&m| m < 1024) {
        tracing::warn!(
            "net.core.somaxconn is {cap}: each listener holds at most {cap} connections not yet accepted \
             (postern asks for {LISTEN_BACKLOG}); a burst of clients beyond that waits out handshake retransmissions"
        );
    }
    let mut out = Vec::new();
    for l in listeners {
        let sock = bind_listener(l.address).map_err(|source| ServerError::Bind { addr: l.address, source })?;
        out.push((sock, l.clone()));
    }
    Ok(out)
}

/// A listening socket on `addr` with [`LISTEN_BACKLOG`]; otherwise as
/// `TcpListener::bind` makes it (SO_REUSEADDR; a `[::]` socket takes IPv4
/// too, unless the system says otherwise).
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// What the control socket drives: the scheduler and the shared state.
struct Daemon {
    shared: Arc<Shared>,
    scheduler: Scheduler,
    spool: Spool,
    monitor: Arc<Monitor>,
}

impl Control for Daemon {
    fn flush_all(&self) -> usize {
        self.scheduler.rescan(true)
    }

    fn kick(&self, id: QueueId) {
        self.scheduler.kick(id);
    }

    fn reload(&self) -> String {
        reload_and_reopen(&self.shared)
    }

    fn reload_tls(&self) -> bool {
        self.shared.reload_tls()
    }

    fn flush_matching(&self, what: &control::FlushMatch) -> usize {
        local_modes::flush_matching(&self.spool, &self.scheduler, what)
    }

    fn reload_aliases(&self) -> Result<usize, String> {
        local_modes::reload_aliases(&self.shared)
    }

    fn status(&self, id: &QueueId) -> Option<String> {
        local_modes::status(&self.spool, &self.scheduler, id)
    }

    fn reopen_log(&self) -> Result<(), String> {
        logs::reopen(&self.shared)
    }

    fn daemon_status(&self) -> String {
        serde_json::to_string(&self.monitor.status()).unwrap_or_default()
    }

    fn tlsrpt<'a>(&'a self, args: Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>> {
        let (s, scheduler, spool) = (self.shared.settings(), self.scheduler.clone(), self.spool.clone());
        // A task of its own: a control client that gives up does not cut a send short.
        let job = tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reporter = scheduler.tls_reporter(&s);
            let now = crate::time::now_unix();
            let (answer, ids) = crate::delivery::tlsrpt::command::run(&reporter, &s, &spool, &args, now).await;
            for id in ids {
                scheduler.kick(id);
            }
            answer
        });
        Box::pin(async move { job.await.unwrap_or_else(|e| format!("error {e}")) })
    }
}

/// SIGHUP and `reload`: reloads the config, then reopens the mail log
/// (a new `log.mail_log` or `log.format` takes effect here).
/// Returns the control socket's answer (`ok ...`, `partial ...`, `error ...`).
fn reload_and_reopen(shared: &Shared) -> String {
    let answer = shared.reload();
    let _ = logs::reopen(shared);
    answer
}

/// A running server (listeners, scheduler, control socket).
pub struct Running {
    /// The bound listener addresses, in config order.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Shared state (settings, reload).
    pub shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    done_rx: mpsc::Receiver<()>,
    accepts: JoinSet<()>,
    sched_task: tokio::task::JoinHandle<()>,
    control_task: tokio::task::JoinHandle<()>,
    /// Held while running: `queue move` waits for the daemon to stop.
    _spool_lock: Option<crate::queue::moveout::SpoolLock>,
    /// The spool (its name pool is stopped last).
    spool: Spool,
}

/// Loads the config, prepares the data directory, binds, drops privileges
/// and starts everything. Used by `serve` and by the in-process tests.
pub async fn start(source: Source) -> Result<Running, ServerError> {
    let settings = Settings::load(&source).map_err(|e| ServerError::Config(e.to_string()))?;
    // The same checks as `postern config check`, with the same messages.
    let report = crate::preflight::check(&settings);
    if !report.errors.is_empty() {
        return Err(ServerError::Config(report.errors.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")));
    }
    maillog::init(&settings.config.log.mail_log, settings.config.log.format.into())
        .map_err(|source| ServerError::MailLog { path: settings.config.log.mail_log.clone(), source })?;
    for w in &report.warnings {
        maillog::start(&[("warning", &w.to_string())]);
    }
    let spool = prepare_data_dir(&settings)?;
    // So that the CLI finds this daemon's config and data (crate::locate).
    if let Err(e) = crate::locate::DaemonRecord::this(source.config.as_deref(), &settings.data_dir).write(&settings.data_dir) {
        maillog::error(&[("error", &format!("cannot record the daemon in {}/daemon.json: {e}", settings.data_dir.display()))]);
    }
    let bound = bind_all(&settings.config.listeners).await?;
    logs::banner(&settings, &bound);
    let metrics_sock = monitor::bind(&settings).await.map_err(|(addr, source)| ServerError::Bind { addr, source })?;
    // Keys are read before dropping privileges (they may be root-only);
    // reloads later run as the unprivileged user (see docs/tls.md).
    if let Some(fp) = tls::ensure_default_certificate(&settings).map_err(|e| ServerError::DefaultCertificate(e.to_string()))? {
        maillog::tls(&[("generated", "self-signed server certificate"), ("sha256", &fp)]);
    }
    let server_tls = ServerTls::load(&settings).map_err(|e| ServerError::Tls(e.to_string()))?;
    maillog::tls(&[("certificate_sha256", &server_tls.fingerprint)]);
    privdrop::drop_privileges(&settings)?;
    let spool_lock = crate::queue::moveout::daemon_lock(&spool)?;
    let recovered = spool.recover()?;
    if recovered > 0 {
        maillog::start(&[("recovered_files", &recovered.to_string())]);
    }
    spool.start_name_pool();
    warn_plaintext_secrets(&settings);
    let control_path = control::socket_path(&settings.data_dir);
    let shared = Arc::new(Shared::new(settings, source, server_tls));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (queued_tx, queued_rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler::new(shared.settings.clone(), shared.users.clone(), spool.clone(), queued_tx.clone());
    if let Some(d) = &shared.services.directory {
        scheduler.use_directory(d.clone());
    }
    let sched_task = tokio::spawn(scheduler.clone().run(queued_rx, shutdown_rx.clone()));
    let monitor = monitor::start(shared.clone(), spool.clone(), &bound, metrics_sock, shutdown_rx.clone());
    let daemon: Arc<dyn Control> = Arc::new(Daemon { shared: shared.clone(), scheduler, spool: spool.clone(), monitor: monitor.clone() });
    let control_task = tokio::spawn(control::serve(control_path, daemon, shutdown_rx.clone()));
    // Mail from `sendmail` (any local user): DATA/maildrop -> the queue.
    tokio::spawn(crate::maildrop::pickup::run(shared.settings.clone(), spool.clone(), queued_tx.clone(), shutdown_rx.clone()));
    tokio::spawn(listener::watch_tls_files(shared.clone(), shutdown_rx.clone()));
    tokio::spawn(local_modes::watch_aliases(shared.clone(), shutdown_rx.clone()));
    let mut addrs = Vec::new();
    for (sock, l) in &bound {
        let addr = sock.local_addr()?;
        addrs.push(addr);
        maillog::start(&[("listener", l.role.name()), ("address", &addr.to_string())]);
    }
    // mini-redis style drain: every session holds a clone of `done_tx`;
    // when all are dropped, `done_rx.recv()` returns None.
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    let slots = listener::Slots::default();
    let mut accepts = JoinSet::new();
    for (i, (sock, l)) in bound.into_iter().enumerate() {
        let accept = listener::accept_loop(
            sock,
            l,
            listener::Wiring {
                shared: shared.clone(),
                slots: slots.clone(),
                spool: spool.clone(),
                queued: queued_tx.clone(),
                shutdown: shutdown_rx.clone(),
                done: done_tx.clone(),
            },
        );
        accepts.spawn(monitor.track(i, accept));
    }
    drop(done_tx);
    Ok(Running { addrs, shared, shutdown_tx, done_rx, accepts, sched_task, control_task, _spool_lock: spool_lock, spool })
}

impl Running {
    /// Stops accepting, lets sessions finish within `limits.shutdown_timeout`,
    /// stops the scheduler and removes the control socket.
    pub async fn stop(mut self) {
        let _ = self.shutdown_tx.send(true);
        let grace = self.shared.settings().config.limits.shutdown_timeout;
        while self.accepts.join_next().await.is_some() {}
        let drained = tokio::time::timeout(grace, self.done_rx.recv()).await;
        if drained.is_err() {
            maillog::stop(&[("warning", "sessions still open after shutdown_timeout; closing them")]);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.sched_task).await;
        self.spool.stop_name_pool();
        self.control_task.abort();
        let _ = std::fs::remove_file(control::socket_path(&self.shared.settings().data_dir));
        crate::locate::DaemonRecord::remove(&self.shared.settings().data_dir);
        maillog::stop(&[("result", "clean")]);
    }
}

/// Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the config.
pub async fn serve(source: Source) -> Result<(), ServerError> {
    // Handlers first: a SIGHUP right after the listeners are up (logrotate,
    // systemctl reload) must not kill the daemon with the default action.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = start(source).await?;
    // Every listener is bound and accepting: tell systemd (Type=notify).
    let listening: Vec<String> = running.addrs.iter().map(|a| a.to_string()).collect();
    notify::notify(&format!("READY=1\nSTATUS=accepting mail on {}", listening.join(" ")));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                notify::notify(&notify::reloading());
                let ok = !reload_and_reopen(&running.shared).starts_with("error");
                notify::notify(if ok { "READY=1\nSTATUS=reloaded" } else { "READY=1\nSTATUS=reload failed, running the previous configuration" });
            }
        }
    }
    notify::notify("STOPPING=1\nSTATUS=draining sessions");
    maillog::stop(&[("reason", "signal")]);
    running.stop().await;
    Ok(())
}

/// Warns when the user database holds plaintext-equivalent secrets
/// although CRAM-MD5 is not enabled (`postern user passwd` drops them).
fn warn_plaintext_secrets(s: &Settings) {
    let cram = crate::auth::plaintext_secret_mechanisms_enabled(&s.config);
    if let Ok(db) = UserDb::load(&s.data_dir.join("users.json")) {
        let n = db.users.values().filter(|u| u.plain.is_some()).count();
        if n > 0 && !cram {
            maillog::auth(&[
                ("warning", "plaintext-equivalent secrets stored but CRAM-MD5/DIGEST-MD5 are disabled; run `postern user purge-plain`"),
                ("users", &n.to_string()),
            ]);
        } else if n > 0 {
            maillog::auth(&[
                ("warning", "CRAM-MD5/DIGEST-MD5 enabled: plaintext-equivalent secrets are stored in users.json"),
                ("users", &n.to_string()),
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The listen backlog is ours, not the 128 `TcpListener::bind` asks for:
    /// 160 clients that connect at once are all waiting to be accepted,
    /// instead of 129 with the rest retrying their handshakes a second or
    /// more later (the growth bench's cliff above ~130 connections).
    #[tokio::test]
    async fn a_burst_of_clients_waits_in_the_backlog() {
        // More than the 129 a backlog of 128 lets wait; fewer where the
        // kernel caps the backlog lower (net.core.somaxconn), and few
        // enough descriptors for a test process (2 n).
        let n = super::somaxconn().map_or(160, |m| (m as usize).min(160));
        let listener = super::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let std_listener = listener.into_std().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let clients: Vec<_> = (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // On loopback the handshakes are done when connect() returns; a
        // capped queue would hold the rest back for a SYN-ACK retransmit
        // (1 s and more), well past this bounded wait.
        let mut accepted = Vec::new();
        for _ in 0..30 {
            while let Ok((s, _)) = std_listener.accept() {
                accepted.push(s);
            }
            if accepted.len() == n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(accepted.len(), n, "connections waiting in the backlog");
        drop(clients);
    }
}
