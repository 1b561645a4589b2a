//! The daemon: binds listeners, drops privileges, accepts connections under
//! the connection limits, runs the queue, handles signals (SIGTERM/SIGINT:
//! drain and stop; SIGHUP: reload the configuration).
//!
//! May touch: listening sockets, the data directory (creates it), process
//! credentials (setuid/setgid after bind), the control socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use postern_wire::codes;

use crate::config::Listener;
use crate::control;
use crate::maillog;
use crate::queue::Scheduler;
use crate::session::{self, Conn, Context, REFUSE_WRITE_TIMEOUT};
use crate::settings::{Settings, Source};
use crate::spool::Spool;
use crate::auth::Throttle;
use crate::tls::{self, ServerTls};
use crate::users::{UserDb, UserStore};

/// Shared, reloadable server state.
pub struct Shared {
    /// Current settings; sessions take a snapshot when they start.
    pub settings: RwLock<Arc<Settings>>,
    /// Where the settings came from (for reload).
    pub source: Source,
    /// Open connections per client address.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Open connections in total.
    total: Mutex<usize>,
    /// Server TLS material; `None` if it could not be loaded.
    pub tls: RwLock<Option<Arc<ServerTls>>>,
    /// The user database (re-read when the file changes).
    pub users: Arc<UserStore>,
    /// Brute-force counters.
    pub throttle: Arc<Throttle>,
}

impl Shared {
    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The current TLS material.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        match self.tls.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reloads the TLS material; broken new files are logged and the old
    /// material stays in use. New handshakes use the new material; open
    /// sessions keep theirs.
    pub fn reload_tls(&self) -> bool {
        let settings = self.settings();
        match ServerTls::load(&settings) {
            Ok(new) => {
                maillog::event("tls", &[("reload", "ok"), ("fingerprint", &new.fingerprint)]);
                match self.tls.write() {
                    Ok(mut g) => *g = Some(Arc::new(new)),
                    Err(p) => *p.into_inner() = Some(Arc::new(new)),
                }
                true
            }
            Err(e) => {
                maillog::event("tls", &[("reload", "error"), ("error", &e.to_string()), ("action", "keeping old certificate")]);
                false
            }
        }
    }

    /// Reloads the configuration; an invalid one is logged and the old stays.
    pub fn reload(&self) -> bool {
        match Settings::load(&self.source) {
            Ok(new) => {
                let old = self.settings();
                if new.config.listeners.len() != old.config.listeners.len()
                    || new.config.listeners.iter().zip(&old.config.listeners).any(|(a, b)| a.address != b.address)
                {
                    maillog::event("reload", &[("warning", "listener changes need a restart")]);
                }
                if new.data_dir != old.data_dir {
                    maillog::event("reload", &[("warning", "data_dir changes need a restart; keeping the old one")]);
                }
                let mut new = new;
                new.data_dir = old.data_dir.clone();
                match self.settings.write() {
                    Ok(mut g) => *g = Arc::new(new),
                    Err(p) => *p.into_inner() = Arc::new(new),
                }
                maillog::event("reload", &[("result", "ok")]);
                self.reload_tls();
                true
            }
            Err(e) => {
                maillog::event("reload", &[("result", "error"), ("error", &e.to_string()), ("action", "keeping old config")]);
                false
            }
        }
    }
}

/// A connection slot; released on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.shared.total.lock() {
            *t = t.saturating_sub(1);
        }
        if let Ok(mut m) = self.shared.per_ip.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

fn take_slot(shared: &Arc<Shared>, ip: IpAddr, max_total: usize, max_ip: usize) -> Option<Slot> {
    let mut total = shared.total.lock().ok()?;
    let mut per_ip = shared.per_ip.lock().ok()?;
    let n = per_ip.entry(ip).or_insert(0);
    if *total >= max_total || *n >= max_ip {
        if *n == 0 {
            per_ip.remove(&ip);
        }
        return None;
    }
    *total += 1;
    *n += 1;
    Some(Slot { shared: shared.clone(), ip })
}

/// Creates the data directory layout; returns the spool.
pub fn prepare_data_dir(settings: &Settings) -> Result<Spool, String> {
    let d = &settings.data_dir;
    std::fs::create_dir_all(d).map_err(|e| format!("{}: cannot create data directory: {e}", d.display()))?;
    std::fs::create_dir_all(&settings.maildir_root)
        .map_err(|e| format!("{}: cannot create Maildir root: {e}", settings.maildir_root.display()))?;
    Spool::open(&d.join("queue")).map(|s| s.with_sync(settings.config.queue.sync)).map_err(|e| e.to_string())
}

/// Switches to `user` when running as root (after binding).
fn drop_privileges(settings: &Settings) -> Result<(), String> {
    use nix::unistd::{chown, setgid, setgroups, setuid, Uid, User};
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Some(name) = &settings.config.user else {
        maillog::event("start", &[("warning", "running as root; set `user` in the config to drop privileges")]);
        return Ok(());
    };
    let user = User::from_name(name)
        .map_err(|e| format!("user {name:?}: {e}"))?
        .ok_or_else(|| format!("key `user`: no such user {name:?}"))?;
    // The data directory must belong to the user we become.
    fn walk(p: &Path, uid: Uid, gid: nix::unistd::Gid) {
        let _ = chown(p, Some(uid), Some(gid));
        if p.is_dir() && !p.is_symlink() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), uid, gid);
                }
            }
        }
    }
    walk(&settings.data_dir, user.uid, user.gid);
    setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    maillog::event("start", &[("user", name), ("uid", &user.uid.to_string())]);
    Ok(())
}

/// Binds every listener.
async fn bind_all(listeners: &[Listener]) -> Result<Vec<(TcpListener, Listener)>, String> {
    let mut out = Vec::new();
    for l in listeners {
        let sock = TcpListener::bind(l.address).await.map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
        out.push((sock, l.clone()));
    }
    Ok(out)
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
}

/// Loads the config, prepares the data directory, binds, drops privileges
/// and starts everything. Used by `serve` and by the in-process tests.
pub async fn start(source: Source) -> Result<Running, String> {
    let settings = Settings::load(&source).map_err(|e| e.to_string())?;
    maillog::init(&settings.config.log.mail_log).map_err(|e| format!("mail log {}: {e}", settings.config.log.mail_log))?;
    let spool = prepare_data_dir(&settings)?;
    let bound = bind_all(&settings.config.listeners).await?;
    // Keys are read before dropping privileges (they may be root-only);
    // reloads later run as the unprivileged user (see docs/tls.md).
    if let Some(fp) = tls::ensure_default_certificate(&settings).map_err(|e| e.to_string())? {
        maillog::event("tls", &[("generated", "self-signed server certificate"), ("sha256", &fp)]);
    }
    let server_tls = ServerTls::load(&settings).map_err(|e| format!("TLS: {e}"))?;
    maillog::event("tls", &[("certificate_sha256", &server_tls.fingerprint)]);
    drop_privileges(&settings)?;
    let recovered = spool.recover().map_err(|e| e.to_string())?;
    if recovered > 0 {
        maillog::event("start", &[("recovered_files", &recovered.to_string())]);
    }
    let data_dir = settings.data_dir.clone();
    warn_plaintext_secrets(&settings);
    let shared = Arc::new(Shared {
        settings: RwLock::new(Arc::new(settings)),
        source,
        per_ip: Mutex::new(HashMap::new()),
        total: Mutex::new(0),
        tls: RwLock::new(Some(Arc::new(server_tls))),
        users: Arc::new(UserStore::new(&data_dir)),
        throttle: Arc::new(Throttle::default()),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (queued_tx, queued_rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler::new(shared.clone(), spool.clone(), queued_tx.clone());
    let sched_task = tokio::spawn(scheduler.clone().run(queued_rx, shutdown_rx.clone()));
    let control_task = tokio::spawn(control::serve(shared.clone(), scheduler.clone(), shutdown_rx.clone()));
    tokio::spawn(watch_tls_files(shared.clone(), shutdown_rx.clone()));
    let mut addrs = Vec::new();
    for (sock, l) in &bound {
        let addr = sock.local_addr().map_err(|e| e.to_string())?;
        addrs.push(addr);
        maillog::event("start", &[("listener", l.role.name()), ("address", &addr.to_string())]);
    }
    // mini-redis style drain: every session holds a clone of `done_tx`;
    // when all are dropped, `done_rx.recv()` returns None.
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    let mut accepts = JoinSet::new();
    for (sock, l) in bound {
        accepts.spawn(accept_loop(
            sock,
            l,
            shared.clone(),
            spool.clone(),
            queued_tx.clone(),
            shutdown_rx.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    Ok(Running { addrs, shared, shutdown_tx, done_rx, accepts, sched_task, control_task })
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
            maillog::event("stop", &[("warning", "sessions still open after shutdown_timeout; closing them")]);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.sched_task).await;
        self.control_task.abort();
        let _ = std::fs::remove_file(control::socket_path(&self.shared.settings().data_dir));
        maillog::event("stop", &[("result", "clean")]);
    }
}

/// Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the config.
pub async fn serve(source: Source) -> Result<(), String> {
    let running = start(source).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => { running.shared.reload(); }
        }
    }
    maillog::event("stop", &[("reason", "signal")]);
    running.stop().await;
    Ok(())
}

async fn accept_loop(
    sock: TcpListener,
    l: Listener,
    shared: Arc<Shared>,
    spool: Spool,
    queued: mpsc::UnboundedSender<crate::spool::QueueId>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let local = sock.local_addr().ok();
    let listener = Arc::new(l.clone());
    loop {
        let accepted = tokio::select! {
            r = sock.accept() => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept on {}: {e}", l.address);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let settings = shared.settings();
        let limits = &settings.config.limits;
        let Some(slot) = take_slot(&shared, peer.ip(), limits.max_connections, limits.max_connections_per_ip) else {
            maillog::event("reject", &[("client", &format!("[{}]:{}", peer.ip(), peer.port())), ("reason", "connection limit")]);
            tokio::spawn(refuse(stream));
            continue;
        };
        let ctx = Context {
            settings,
            spool: spool.clone(),
            queued: queued.clone(),
            shutdown: shutdown.clone(),
            tls: shared.tls(),
            listener: listener.clone(),
            users: shared.users.clone(),
            throttle: shared.throttle.clone(),
        };
        let conn = Conn { peer, local: local.unwrap_or(l.address) };
        let done = done.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            session::run(stream, conn, ctx).await;
        });
    }
}

/// Warns when the user database holds plaintext-equivalent secrets
/// although CRAM-MD5 is not enabled (`postern user passwd` drops them).
fn warn_plaintext_secrets(s: &Settings) {
    let cram = crate::auth::plaintext_secret_mechanisms_enabled(&s.config);
    if let Ok(db) = UserDb::load(&s.data_dir.join("users.json")) {
        let n = db.users.values().filter(|u| u.plain.is_some()).count();
        if n > 0 && !cram {
            maillog::event("auth", &[("warning", "plaintext-equivalent secrets stored but CRAM-MD5/DIGEST-MD5 are disabled; run `postern user purge-plain`"), ("users", &n.to_string())]);
        } else if n > 0 {
            maillog::event("auth", &[("warning", "CRAM-MD5/DIGEST-MD5 enabled: plaintext-equivalent secrets are stored in users.json"), ("users", &n.to_string())]);
        }
    }
}

/// Reloads the TLS material when its files change (checked every 5 s),
/// and warns daily about certificates close to expiry.
async fn watch_tls_files(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        ticks += 1;
        let Some(current) = shared.tls() else { continue };
        if current.files_changed() || ticks % (86400 / 5) == 0 {
            // Snapshot the times before trying: if the new files are broken
            // (or half-written), the next change triggers another attempt.
            let before = current.current_file_times();
            if !shared.reload_tls() {
                if let Ok(mut g) = shared.tls.write() {
                    // Unless a concurrent reload (SIGHUP) installed new material.
                    if g.as_ref().is_some_and(|now| Arc::ptr_eq(now, &current)) {
                        *g = Some(Arc::new(current.with_files(before)));
                    }
                }
            }
        }
    }
}

/// Tells an over-limit client to come back later (RFC 5321 §3.1 allows 421
/// as the greeting).
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(codes::too_many_connections().to_wire().as_bytes())).await;
    let _ = stream.shutdown().await;
}
