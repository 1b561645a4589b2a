//! systemd readiness notification, sd_notify(3), in the few lines the
//! protocol needs instead of linking libsystemd: when `NOTIFY_SOCKET` is
//! set (systemd sets it for `Type=notify` units), each state change is one
//! datagram of `KEY=VALUE` lines to that unix socket. A path starting with
//! `@` names a socket in the abstract namespace (Linux). Without the
//! variable nothing is sent, so `postern serve` under any other supervisor
//! or by hand behaves as before.
//!
//! The daemon sends `READY=1` once every listener is bound and accepting,
//! `RELOADING=1` (with `MONOTONIC_USEC`, as systemd ≥ 253 requires) and
//! then `READY=1` around a SIGHUP reload, and `STOPPING=1` when it starts
//! draining. A failed send is logged and ignored: notification must never
//! stop the mail server.
//!
//! May touch: the socket named by `$NOTIFY_SOCKET` (send only).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for the service's main process.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`;
/// does nothing when it is unset. Errors are logged, never returned.
pub(super) fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!("sd_notify to {}: {e}", socket.to_string_lossy());
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd pairs it with.
pub(super) fn reloading() -> String {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Sends one datagram to the socket `path` (`@name`: abstract namespace).
fn send(path: &OsStr, state: &str) -> std::io::Result<()> {
    let addr = address(path)?;
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

/// The socket address of a `NOTIFY_SOCKET` value.
fn address(path: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = path.as_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        Some(b'/') => SocketAddr::from_pathname(path),
        // vsock: and relative paths are not used by systemd for services.
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=serving").unwrap();
        assert_eq!(receive(&sock), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("postern-test-{}", std::process::id());
        let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(receive(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_other_addresses() {
        for bad in ["", "relative/path", "vsock:2:1234"] {
            assert!(address(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        // Nobody listens there: an error, not a panic.
        assert!(send(OsStr::new("/nonexistent/postern-notify"), "READY=1").is_err());
    }

    #[test]
    fn reloading_carries_a_timestamp() {
        let r = reloading();
        let usec: u64 = r.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!(usec > 0);
    }
}
