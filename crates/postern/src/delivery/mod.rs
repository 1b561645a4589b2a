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
pub mod dane;
pub mod hops;
/// IDNA conversions live at the top level (settings use them too).
pub use crate::idna;
pub mod lmtp;
pub mod maildir;
pub mod mta_sts;
pub mod mx;
pub mod plan;
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
    /// MAIL FROM carried REQUIRETLS (RFC 8689): only verified TLS to a
    /// next hop that offers REQUIRETLS, else 5.7.30 (`smtp::policy`).
    pub requiretls: bool,
    /// The header says `TLS-Required: No` (RFC 8689 §5, parsed once when
    /// the message is loaded): the recipient domain's TLS policy failures
    /// (mx.tls encrypt/verify, DANE, MTA-STS) fall back to opportunistic
    /// TLS. Ignored when `requiretls` is set.
    pub tls_required_no: bool,
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

/// The domain of an address in its A-label form, lower-case (`None`
/// without a domain; a domain that is no valid IDN is kept lower-case).
fn ascii_domain(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    Some(idna::to_ascii(d).unwrap_or_else(|_| d.to_lowercase()))
}

/// True when `list` (config domains, UTF-8 or A-labels) holds `ascii`.
fn holds(list: &[String], ascii: &str) -> bool {
    list.iter().any(|d| idna::to_ascii(d).is_ok_and(|a| a == ascii) || d.eq_ignore_ascii_case(ascii))
}

/// The first `[[route]]` (index) that takes `address` in mail from
/// `sender`, by the rules of [`route`].
pub fn matching_route(s: &Settings, sender: &str, address: &str) -> Option<usize> {
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    let ascii = ascii_domain(address).unwrap_or_default();
    let from = ascii_domain(sender);
    let local = s.is_local_domain(&domain) || s.is_local_domain(&ascii);
    let matches = |r: &crate::config::Route| {
        let by_rcpt = if r.domains.is_empty() { !local && !r.senders.is_empty() } else { holds(&r.domains, &ascii) };
        let by_sender = r.senders.is_empty() || from.as_deref().is_some_and(|f| holds(&r.senders, f));
        by_rcpt && by_sender
    };
    s.config.routes.iter().position(matches)
}

/// Decides the route of one recipient address of mail from `sender`
/// (empty for `<>`). Pure. `[[route]]`s are tried in order: one matches
/// when its `domains` (if any) hold the recipient's domain and its
/// `senders` (if any) hold the sender's domain; a route without `domains`
/// (sender-dependent relaying) never takes local domains. Then local
/// delivery, then the smarthost, then MX. Domains compare as A-labels.
pub fn route(s: &Settings, sender: &str, address: &str) -> Route {
    let domain = address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    if let Some(i) = matching_route(s, sender, address) {
        return match s.config.routes[i].transport {
            RouteTransport::Mx => Route::Mx(domain),
            _ => Route::Custom(i),
        };
    }
    let local = s.is_local_domain(&domain) || ascii_domain(address).is_some_and(|a| s.is_local_domain(&a));
    if local {
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

/// True for a route a non-local domain takes when no `[[route]]` names
/// it: the smarthost, MX delivery, or a sender-only `[[route]]` (which
/// replaces those). A virtual domain of the account directory overrides
/// such a route (delivered locally), never one that names the domain.
pub fn is_default_route(s: &Settings, rt: &Route) -> bool {
    match rt {
        Route::Smarthost | Route::Mx(_) => true,
        Route::Custom(i) => s.config.routes.get(*i).is_some_and(|r| r.domains.is_empty()),
        Route::Maildir | Route::Lmtp => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Source;

    fn settings(text: &str) -> Settings {
        let src = Source { config: None, data_dir: Some("/x".into()) };
        Settings::from_config(Config::parse(text, "t").unwrap(), &src).unwrap()
    }

    #[test]
    fn routes() {
        let s = settings("[local]\ndomains=[\"here.example\"]\n");
        assert_eq!(route(&s, "", "a@here.example"), Route::Maildir);
        assert_eq!(route(&s, "", "a@HERE.example"), Route::Maildir);
        assert_eq!(route(&s, "", "a@there.example"), Route::Mx("there.example".into()));
        let s = settings(
            "[local]\ndomains=[\"here.example\"]\ndelivery=\"lmtp\"\nlmtp=\"127.0.0.1:24\"\n[relay]\nsmarthost=\"relay.example:25\"\n",
        );
        assert_eq!(route(&s, "", "a@here.example"), Route::Lmtp);
        assert_eq!(route(&s, "", "a@there.example"), Route::Smarthost);
        let s = settings(
            "[relay]\nsmarthost=\"relay.example:25\"\n[[route]]\ndomains=[\"backup.example\"]\ntransport=\"smtp\"\nnext_hop=\"10.0.0.1:25\"\n",
        );
        assert_eq!(route(&s, "", "a@BACKUP.example"), Route::Custom(0));
        assert_eq!(route(&s, "", "a@other.example"), Route::Smarthost);
        assert!(s.relay_domains.contains("backup.example"));
        let s = settings("[relay]\nsmarthost=\"relay.example:25\"\n[[route]]\ndomains=[\"direct.example\"]\ntransport=\"mx\"\n");
        assert_eq!(route(&s, "", "a@Direct.example"), Route::Mx("direct.example".into()));
        assert_eq!(route(&s, "", "a@other.example"), Route::Smarthost);
    }

    /// Sender-dependent routes, recipient routes, both, local domains and IDNA.
    #[test]
    fn routes_by_sender_and_recipient() {
        let s = settings(concat!(
            "[local]\ndomains=[\"here.example\"]\n",
            "[relay]\nsmarthost=\"provider.example:587\"\n",
            // 0: mail from partner.example to bank.example
            "[[route]]\ndomains=[\"bank.example\"]\nsenders=[\"partner.example\"]\ntransport=\"smtp\"\nnext_hop=\"bank-gw:25\"\n",
            // 1: anything from partner.example (sender-dependent relayhost)
            "[[route]]\nsenders=[\"partner.example\", \"bücher.example\"]\ntransport=\"smtp\"\nnext_hops=[\"gw1:25\", \"gw2:25\"]\n",
            // 2: a recipient domain given in UTF-8
            "[[route]]\ndomains=[\"münchen.example\"]\ntransport=\"smtp\"\nnext_hop=\"muc:25\"\n",
            // 3: a recipient domain given as A-labels, from one sender only
            "[[route]]\ndomains=[\"xn--zrich-kva.example\"]\nsenders=[\"here.example\"]\ntransport=\"mx\"\n",
        ));
        for (from, to, want) in [
            ("a@partner.example", "b@bank.example", Route::Custom(0)),
            ("a@PARTNER.example", "b@other.example", Route::Custom(1)),
            ("a@other.example", "b@bank.example", Route::Smarthost),
            ("a@other.example", "b@other.example", Route::Smarthost),
            ("", "b@other.example", Route::Smarthost),
            // A sender-only route never takes local mail.
            ("a@partner.example", "b@here.example", Route::Maildir),
            ("a@partner.example", "b@HERE.example", Route::Maildir),
            // IDNA: a UTF-8 sender domain in config matches its xn-- form and back.
            ("a@xn--bcher-kva.example", "b@other.example", Route::Custom(1)),
            ("a@BÜCHER.example", "b@other.example", Route::Custom(1)),
            ("a@x.example", "b@xn--mnchen-3ya.example", Route::Custom(2)),
            ("a@x.example", "b@münchen.example", Route::Custom(2)),
            ("a@here.example", "b@zürich.example", Route::Mx("zürich.example".into())),
            ("a@x.example", "b@zürich.example", Route::Smarthost),
        ] {
            assert_eq!(route(&s, from, to), want, "from {from:?} to {to:?}");
        }
        assert!(s.relay_domains.contains("münchen.example"), "a route without senders makes relay domains");
        assert!(!s.relay_domains.contains("bank.example"), "a route with senders does not");
        assert!(is_default_route(&s, &Route::Custom(1)));
        assert!(!is_default_route(&s, &Route::Custom(0)));
    }
}
