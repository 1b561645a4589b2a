//! What [`super::Conn::open_observed`] reports while it opens a connection,
//! step by step, for `postern check smarthost`; delivery passes `()`,
//! which ignores every event.
//!
//! May touch: nothing.

use std::time::Duration;

use postern_wire::Reply;

/// One step of opening a connection, as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// The TCP (or unix-socket) connection is up.
    Connected {
        /// The peer's address ("127.0.0.1:25", or the socket path).
        peer: String,
        /// How long the connect took.
        elapsed: Duration,
    },
    /// The server's greeting.
    Greeting(Reply),
    /// The reply to EHLO/LHLO; `tls` when sent inside TLS.
    Hello {
        /// The reply, extensions included.
        reply: Reply,
        /// Sent after the TLS handshake.
        tls: bool,
    },
    /// The reply to STARTTLS.
    StartTls(Reply),
    /// The TLS handshake finished; the log summary ("TLSv1.3 ... verified").
    Tls(String),
    /// AUTH succeeded with this mechanism; the final reply.
    Auth {
        /// The mechanism used.
        mech: &'static str,
        /// The 235 reply.
        reply: Reply,
    },
}

/// Receives [`Event`]s.
pub trait Observer: Send {
    /// One event.
    fn event(&mut self, e: Event);
}

/// Delivery: no one is watching.
impl Observer for () {
    fn event(&mut self, _e: Event) {}
}

/// The self-test: every event, in order.
impl Observer for Vec<Event> {
    fn event(&mut self, e: Event) {
        self.push(e);
    }
}
