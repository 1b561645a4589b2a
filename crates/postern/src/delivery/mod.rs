//! Delivery behind one trait. A [`Transport`] takes one message and some of
//! its recipients and returns one [`Outcome`] per recipient, in order, each
//! carrying a typed [`DeliveryReply`].
//!
//! Transports: [`maildir::Maildir`] (local, RFC-less but qmail's maildir(5)),
//! [`lmtp::Lmtp`] (RFC 2033), [`pool::Smarthost`] (RFC 5321 client with a
//! connection pool, over [`smtp::Conn`]) and [`mx::MxDelivery`] (RFC 5321
//! §5.1). The scheduler (`queue/`) decides when; routing ([`route`]) decides
//! which, and [`Transports`] builds (or reuses) the transport of a route.
//!
//! May touch: through the transports, the network and the Maildir root.

pub mod credentials;
pub mod idna;
pub mod lmtp;
pub mod maildir;
pub mod mta_sts;
pub mod mx;
pub mod pool;
pub mod probe;
pub mod reply;
pub mod smtp;
pub mod tlsrpt;
mod transports;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{LocalDelivery, RouteTransport};
use crate::settings::Settings;
use crate::spool::QueueId;

pub use reply::DeliveryReply;
pub use transports::{SetupError, Transports};

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a delivery attempt did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the remote reply or a local description.
    Delivered(DeliveryReply),
    /// Temporary failure: try again later.
    Deferred(DeliveryReply),
    /// Permanent failure: bounce.
    Failed(DeliveryReply),
}

impl Outcome {
    /// The reply or reason.
    pub fn reply(&self) -> &DeliveryReply {
        match self {
            Outcome::Delivered(r) | Outcome::Deferred(r) | Outcome::Failed(r) => r,
        }
    }

    /// Maps a peer's reply: 2xx delivered, 4xx deferred, 5xx failed.
    pub fn from_reply(r: &postern_wire::Reply) -> Outcome {
        let t = DeliveryReply::from_wire(r);
        if r.is_positive() {
            Outcome::Delivered(t)
        } else if r.is_permanent() {
            Outcome::Failed(t)
        } else {
            Outcome::Deferred(t)
        }
    }
}

/// The result of one delivery attempt over one transport.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// One outcome per recipient, in order.
    pub outcomes: Vec<Outcome>,
    /// How the connection was protected, for the log: `None` for local
    /// delivery, `Some("none")` for plaintext, or e.g.
    /// `Some("TLSv1.3 TLS13_AES_256_GCM_SHA384 verified")`.
    pub tls: Option<String>,
    /// The next hop speaks DSN (RFC 3461): success notices are its job.
    pub dsn: bool,
    /// Where the mail went, for `relay=`, when more precise than
    /// [`Transport::name`] (MX delivery names the host that took it).
    pub relay: Option<String>,
}

impl Attempt {
    /// Every recipient gets the same outcome.
    pub fn all(o: Outcome, n: usize, tls: Option<String>) -> Attempt {
        Attempt { outcomes: vec![o; n], tls, dsn: false, relay: None }
    }
}

/// DSN parameters to pass on to a DSN-capable next hop (RFC 3461 §4).
#[derive(Debug, Clone, Default)]
pub struct Dsn {
    /// RET=.
    pub ret: Option<String>,
    /// ENVID= (decoded).
    pub envid: Option<String>,
    /// Per recipient address: (NOTIFY=, ORCPT= decoded).
    pub rcpts: std::collections::HashMap<String, (Option<String>, Option<String>)>,
}

/// A message handed to a transport.
#[derive(Debug, Clone)]
pub struct Message {
    /// Queue id (for logs and headers).
    pub id: QueueId,
    /// Envelope sender, empty for `<>`.
    pub sender: String,
    /// The message text (CRLF).
    pub body: Arc<Vec<u8>>,
    /// Declared 8BITMIME when received.
    pub eight_bit: bool,
    /// Needs SMTPUTF8.
    pub smtputf8: bool,
    /// DSN parameters.
    pub dsn: Dsn,
}

/// A delivery mechanism.
pub trait Transport: Send + Sync {
    /// Name for the mail log's `relay=` field.
    fn name(&self) -> String;
    /// Delivers `msg` to `rcpts`; returns one outcome per recipient, in order.
    fn deliver<'a>(&'a self, msg: &'a Message, rcpts: &'a [String]) -> BoxFuture<'a, Attempt>;
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Local domain, Maildir.
    Maildir,
    /// Local domain, LMTP.
    Lmtp,
    /// Non-local, through the smarthost.
    Smarthost,
    /// Non-local and no smarthost, or a `[[route]]` with `transport = "mx"`:
    /// MX delivery to this domain.
    Mx(String),
    /// A `[[route]]` entry (index into `config.routes`) with a next hop or Maildir.
    Custom(usize),
}

impl Route {
    /// Local delivery (Maildir or LMTP by `local.delivery`): success
    /// notices are ours to send, and there is no Remote-MTA.
    pub fn is_local(&self) -> bool {
        matches!(self, Route::Maildir | Route::Lmtp)
    }
}

/// Decides the route of one recipient address. Pure.
pub fn route(s: &Settings, address: &str) -> Route {
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    if let Some(i) = s.config.routes.iter().position(|r| r.domains.iter().any(|d| d.eq_ignore_ascii_case(&domain))) {
        return match s.config.routes[i].transport {
            RouteTransport::Mx => Route::Mx(domain),
            _ => Route::Custom(i),
        };
    }
    if s.is_local_domain(&domain) {
        return match s.config.local.delivery {
            LocalDelivery::Maildir => Route::Maildir,
            LocalDelivery::Lmtp => Route::Lmtp,
        };
    }
    if s.config.relay.smarthost.is_some() {
        Route::Smarthost
    } else {
        Route::Mx(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Source;

    #[test]
    fn routes() {
        let src = Source { config: None, data_dir: Some("/x".into()) };
        let cfg = Config::parse("[local]\ndomains=[\"here.example\"]\n", "t").unwrap();
        let s = Settings::from_config(cfg, &src).unwrap();
        assert_eq!(route(&s, "a@here.example"), Route::Maildir);
        assert_eq!(route(&s, "a@HERE.example"), Route::Maildir);
        assert_eq!(route(&s, "a@there.example"), Route::Mx("there.example".into()));
        let cfg = Config::parse(
            "[local]\ndomains=[\"here.example\"]\ndelivery=\"lmtp\"\nlmtp=\"127.0.0.1:24\"\n[relay]\nsmarthost=\"relay.example:25\"\n",
            "t",
        )
        .unwrap();
        let s = Settings::from_config(cfg, &src).unwrap();
        assert_eq!(route(&s, "a@here.example"), Route::Lmtp);
        assert_eq!(route(&s, "a@there.example"), Route::Smarthost);
        let cfg = Config::parse(
            "[relay]\nsmarthost=\"relay.example:25\"\n[[route]]\ndomains=[\"backup.example\"]\ntransport=\"smtp\"\nnext_hop=\"10.0.0.1:25\"\n",
            "t",
        )
        .unwrap();
        let s = Settings::from_config(cfg, &src).unwrap();
        assert_eq!(route(&s, "a@BACKUP.example"), Route::Custom(0));
        assert_eq!(route(&s, "a@other.example"), Route::Smarthost);
        assert!(s.relay_domains.contains("backup.example"));
        let cfg =
            Config::parse("[relay]\nsmarthost=\"relay.example:25\"\n[[route]]\ndomains=[\"direct.example\"]\ntransport=\"mx\"\n", "t")
                .unwrap();
        let s = Settings::from_config(cfg, &src).unwrap();
        assert_eq!(route(&s, "a@Direct.example"), Route::Mx("direct.example".into()));
        assert_eq!(route(&s, "a@other.example"), Route::Smarthost);
    }
}
