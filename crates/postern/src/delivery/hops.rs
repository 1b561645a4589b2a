//! A route's next hops tried in order (`next_hops`; the smarthost and a
//! route with one `next_hop` are a list of one): when a hop opens no
//! session (connection refused or timed out, a 4xx/5xx greeting, EHLO
//! refused, TLS or AUTH failure) the next one is tried, like Postfix with a
//! list of relay hosts. Once a hop has taken the transaction its replies
//! are final for this attempt. The mail log's `relay=` names the hop that
//! took the mail; each skipped hop gets a `deferred` line with
//! `action=next hop`.
//!
//! May touch: through [`Smarthost`], outbound connections to the hops.
//! RFC 5321 §5.1 (try the next host on a failure to open a session).

use std::sync::Arc;

use super::pool::Smarthost;
use super::smtp::ConnError;
use super::{Attempt, BoxFuture, Message, Outcome, Transport};
use crate::maillog;

/// The next hops of one route, each with its own connection pool.
pub struct Hops {
    hops: Vec<Arc<Smarthost>>,
}

impl Hops {
    /// The hops in the order they are tried (at least one).
    pub fn new(hops: Vec<Arc<Smarthost>>) -> Hops {
        Hops { hops }
    }
}

/// What to do after hop `n` of `count` failed to open a session: the
/// index of the next hop to try, or `None` when none is left. Every
/// session-level failure moves on (the next hop may well work); errors
/// after the session opened never reach here.
pub fn next_hop(n: usize, count: usize, _error: &ConnError) -> Option<usize> {
    (n + 1 < count).then_some(n + 1)
}

impl Transport for Hops {
    fn name(&self) -> String {
        self.hops.first().map(|h| h.name()).unwrap_or_else(|| "smtp".into())
    }

    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let mut n = 0;
            loop {
                let Some(hop) = self.hops.get(n) else {
                    let reply = super::DeliveryReply::status_only(postern_wire::Enhanced(4, 3, 5), "route has no next hop");
                    return Attempt::all(Outcome::Deferred(reply), rcpts.len(), None);
                };
                match hop.try_deliver(msg, rcpts).await {
                    Ok(mut a) => {
                        a.relay.get_or_insert_with(|| hop.name());
                        return a;
                    }
                    Err(e) => match next_hop(n, self.hops.len(), &e) {
                        Some(next) => {
                            let to = rcpts.join(",");
                            let action = format!("next hop {}", self.hops[next].name());
                            let reply = e.to_string();
                            let relay = hop.name();
                            let fields = [("id", msg.id.as_str()), ("to", &to), ("relay", &relay), ("reply", &reply), ("action", &action)];
                            maillog::deferred(&fields);
                            n = next;
                        }
                        None => {
                            let mut a = Attempt::all(Outcome::Deferred(e.reply()), rcpts.len(), None);
                            a.relay = Some(hop.name());
                            return a;
                        }
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::delivery::smtp::{Dest, AUTH_ORDER};
    use crate::delivery::Dsn;
    use crate::spool::QueueId;

    /// A plain SMTP peer on loopback that greets with `greeting` and, after
    /// a 220, takes one message; returns its address.
    async fn peer(greeting: &'static str) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(format!("{greeting}\r\n").as_bytes()).await.unwrap();
                    if !greeting.starts_with("220") {
                        return;
                    }
                    let mut data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = if data {
                            if line != "." {
                                continue;
                            }
                            data = false;
                            "250 2.0.0 queued as B"
                        } else {
                            match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                                "EHLO" => "250-peer\r\n250 8BITMIME",
                                "DATA" => {
                                    data = true;
                                    "354 go"
                                }
                                "QUIT" => "221 bye",
                                _ => "250 ok",
                            }
                        };
                        w.write_all(format!("{reply}\r\n").as_bytes()).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    fn pool(addr: std::net::SocketAddr) -> Arc<Smarthost> {
        let endpoint = format!("127.0.0.1:{}", addr.port()).parse().unwrap();
        Arc::new(Smarthost::new(Dest {
            endpoint,
            lmtp: false,
            helo: "sat.example".into(),
            tls: None,
            implicit_tls: false,
            server_name: "localhost".into(),
            credentials: None,
            auth_plaintext: false,
            auth_order: AUTH_ORDER,
            recipient_policy: false,
        }))
    }

    fn message() -> Message {
        Message {
            id: QueueId::generate(),
            sender: "a@partner.example".into(),
            body: Arc::new(b"Subject: t\r\n\r\nhi\r\n".to_vec()),
            eight_bit: false,
            smtputf8: false,
            dsn: Dsn::default(),
            requiretls: false,
            tls_required_no: false,
        }
    }

    /// A port nobody listens on (bound, then closed).
    async fn closed_port() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn falls_back_in_order() {
        let rcpts = vec!["b@bank.example".to_string()];
        // First hop refuses the connection, second greets 421, third takes it.
        let (down, busy, up) = (closed_port().await, peer("421 4.3.2 busy").await, peer("220 ready").await);
        let hops = Hops::new(vec![pool(down), pool(busy), pool(up)]);
        let a = hops.deliver(&message(), &rcpts).await;
        assert!(matches!(a.outcomes[..], [Outcome::Delivered(_)]), "{a:?}");
        assert_eq!(a.relay, Some(format!("smtp:127.0.0.1:{}", up.port())), "relay= names the hop that took it");
        // Every hop down: deferred, naming the last one tried.
        let hops = Hops::new(vec![pool(down), pool(busy)]);
        let a = hops.deliver(&message(), &rcpts).await;
        assert!(matches!(&a.outcomes[..], [Outcome::Deferred(r)] if r.to_string().contains("421")), "{a:?}");
        assert_eq!(a.relay, Some(format!("smtp:127.0.0.1:{}", busy.port())));
        // The first hop up: the second is never asked.
        let hops = Hops::new(vec![pool(up), pool(down)]);
        let a = hops.deliver(&message(), &rcpts).await;
        assert_eq!(a.relay, Some(format!("smtp:127.0.0.1:{}", up.port())));
    }

    #[test]
    fn next_hop_order() {
        let e = ConnError::Closed;
        assert_eq!(next_hop(0, 3, &e), Some(1));
        assert_eq!(next_hop(1, 3, &e), Some(2));
        assert_eq!(next_hop(2, 3, &e), None);
        assert_eq!(next_hop(0, 1, &e), None);
    }
}
