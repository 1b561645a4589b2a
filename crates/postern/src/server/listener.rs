//! The accept loop of one listener, the connection slots that enforce
//! `limits.max_connections` and `limits.max_connections_per_ip` (IPv6
//! clients counted per `limits.ipv6_prefix` network), and the TLS file
//! watcher.
//!
//! May touch: the listening sockets, accepted connections (only to refuse
//! them with 421, RFC 5321 §3.1), the TLS files (through `Shared`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use postern_wire::codes;

use crate::config::Listener;
use crate::maillog;
use crate::session::{self, Conn, Context, REFUSE_WRITE_TIMEOUT};
use crate::spool::{QueueId, Spool};
use crate::state::Shared;

/// Open connections, in total and per client address (shared by all listeners).
#[derive(Clone, Default)]
pub(super) struct Slots(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection slot; released on drop.
pub(super) struct Slot {
    slots: Slots,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.slots.0.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// The key a client is counted under: its IPv4 address (IPv4-mapped IPv6
/// unmapped first), or its IPv6 network of `ipv6_prefix` bits. One /64 is
/// usually one customer, who can pick any of its 2^64 addresses (F3).
pub(super) fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

impl Slots {
    /// A slot for a connection from `ip` (a [`client_key`]), or `None` over either limit.
    pub(super) fn take(&self, ip: IpAddr, max_total: usize, max_ip: usize) -> Option<Slot> {
        let mut c = self.0.lock().ok()?;
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= max_total || n >= max_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Some(Slot { slots: self.clone(), ip })
    }
}

/// What every accept loop hands to its sessions.
pub(super) struct Wiring {
    pub(super) shared: Arc<Shared>,
    pub(super) slots: Slots,
    pub(super) spool: Spool,
    pub(super) queued: mpsc::UnboundedSender<QueueId>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Held by every session; the server's drain waits for all clones to drop.
    pub(super) done: mpsc::Sender<()>,
}

/// Accepts connections on `sock` until shutdown; one session task each.
pub(super) async fn accept_loop(sock: TcpListener, l: Listener, w: Wiring) {
    let Wiring { shared, slots, spool, queued, mut shutdown, done } = w;
    let local = sock.local_addr().ok();
    let listener = Arc::new(l.clone());
    loop {
        let accepted = tokio::select! {
            r = sock.accept() => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let (stream, peer) = match accepted {
            // A `[::]` listener sees IPv4 clients as ::ffff:a.b.c.d; every
            // later use (log, Received:, milter macros, policy, fail2ban)
            // wants the plain IPv4 form, as Postfix gives it.
            Ok((s, p)) => (s, std::net::SocketAddr::new(p.ip().to_canonical(), p.port())),
            Err(e) => {
                tracing::warn!("accept on {}: {e}", l.address);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let settings = shared.settings();
        let limits = &settings.config.limits;
        let key = client_key(peer.ip(), limits.ipv6_prefix);
        let Some(slot) = slots.take(key, limits.max_connections, limits.max_connections_per_ip) else {
            maillog::reject(&[("client", &format!("[{}]:{}", peer.ip(), peer.port())), ("reason", "connection limit")]);
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
            services: shared.services.clone(),
        };
        let conn = Conn { peer, local: local.unwrap_or(l.address) };
        let done = done.clone();
        // Boxed: awaiting it inside the task would hold it twice.
        let session = Box::pin(session::run(stream, conn, ctx));
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            session.await;
        });
    }
}

/// Reloads the TLS material when its files change (checked every 5 s),
/// and warns daily about certificates close to expiry.
pub(super) async fn watch_tls_files(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        ticks += 1;
        let Some(current) = shared.tls() else { continue };
        if current.files_changed() || ticks.is_multiple_of(86400 / 5) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_enforce_both_limits_and_release_on_drop() {
        let slots = Slots::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = slots.take(a, 3, 2).unwrap();
        let s2 = slots.take(a, 3, 2).unwrap();
        assert!(slots.take(a, 3, 2).is_none(), "per-IP limit");
        let s3 = slots.take(b, 3, 2).unwrap();
        assert!(slots.take(b, 3, 2).is_none(), "total limit");
        drop(s1);
        let _s4 = slots.take(b, 3, 2).unwrap();
        drop((s2, s3));
        assert_eq!(slots.0.lock().unwrap().per_ip.get(&a), None);
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("192.0.2.7", 64, "192.0.2.7"),
            ("::ffff:192.0.2.7", 64, "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48, "2001:db8:1::"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 1, "::"),
            ("::1", 64, "::"),
        ];
        for (addr, prefix, want) in cases {
            assert_eq!(client_key(ip(addr), prefix), ip(want), "{addr}/{prefix}");
        }
        // Two addresses of one /64 share the per-IP limit; another /64 does not.
        let slots = Slots::default();
        let _a = slots.take(client_key(ip("2001:db8::1"), 64), 10, 1).unwrap();
        assert!(slots.take(client_key(ip("2001:db8::2"), 64), 10, 1).is_none());
        assert!(slots.take(client_key(ip("2001:db8:0:1::1"), 64), 10, 1).is_some());
    }
}
