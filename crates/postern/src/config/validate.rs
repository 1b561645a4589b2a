//! Cross-field checks, run once at load on a config that parsed. Every
//! check runs: the result is the list of every problem, each with the place
//! in the file it is about.
//!
//! May touch: nothing (pure). RFCs: 5321 §4.5.3.1 (line length).

use super::load::KeyPath;
use super::schema::LocalDelivery;
use super::{Config, RateKey, RateWhat};

/// A cross-field problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `listener = []`: nothing would listen.
    #[error("at least one listener is needed")]
    NoListener,
    /// Two listeners bind the same address, or one binds the wildcard
    /// address (0.0.0.0 / ::) on a port another binds specifically.
    #[error("{0} is bound by another listener too ({1}); the second bind would fail with \"Address already in use\"")]
    DuplicateAddress(std::net::SocketAddr, std::net::SocketAddr),
    /// A rule names a listener that does not exist: it could never match.
    #[error("no [[listener]] named {0:?} (listeners are named by `name`, else by their role: {1})")]
    UnknownRuleListener(String, String),
    /// `local.delivery = "lmtp"` without `local.lmtp`.
    #[error("required when local.delivery = \"lmtp\"")]
    LmtpRequired,
    /// `auth.backend = "dovecot"` without `auth.dovecot_socket`.
    #[error("required when auth.backend = \"dovecot\" (e.g. \"unix:/var/spool/postfix/private/auth\")")]
    DovecotSocketRequired,
    /// `limits.max_line_length` below the RFC minimum.
    #[error("must be at least 512 (RFC 5321 §4.5.3.1)")]
    LineTooShort,
    /// A count that must be positive is 0.
    #[error("must be at least 1")]
    Zero,
    /// One key of a pair that must be given together is missing.
    #[error("goes together with `{0}`, which is missing")]
    Unpaired(&'static str),
    /// A `[[rule]]` without `action`.
    #[error("[[rule]] needs `action` (accept, relay, reject, tempfail; hold with spf/dkim/dmarc/arc)")]
    RuleWithoutAction,
    /// An action that does not fit the rule's stage: `relay` with
    /// message-stage criteria (spf, dkim, dmarc, arc), `hold` without.
    #[error("action {0:?} {1}")]
    RuleActionStage(&'static str, &'static str),
    /// `rcpt` beside message-stage criteria: a message has many recipients.
    #[error("a rule with spf/dkim/dmarc/arc is decided once per message, after DATA: `rcpt` cannot be one of its criteria")]
    RuleRcptAtMessageStage,
    /// A `[[route]]` whose transport needs `next_hop` has none.
    #[error("required for transport {0:?}")]
    NextHopRequired(&'static str),
    /// `tls = "dane"` on a route or the smarthost: DANE needs the MX
    /// host names of a DNSSEC-signed domain.
    #[error("dane applies to MX delivery ([mx] tls); use \"verify\" (with ca_files) for a fixed next hop")]
    DaneNotForRoute,
    /// Both `next_hop` and `next_hops` in one route.
    #[error("give `next_hop` (one) or `next_hops` (a list), not both")]
    NextHopTwice,
    /// A route with neither `domains` nor `senders`.
    #[error("a [[route]] needs `domains`, `senders` or both")]
    RouteMatchesNothing,
    /// A key that only smtp routes take, on another transport.
    #[error("applies to transport = \"smtp\" only (this route has transport = {0:?})")]
    SmtpOnly(&'static str),
    /// A sender-only route whose transport cannot replace the smarthost or MX delivery.
    #[error(
        "a route with `senders` and no `domains` replaces the smarthost or MX delivery: transport must be \"smtp\" or \"mx\", not {0:?}"
    )]
    SenderOnlyTransport(&'static str),
    /// Two `[[milter]]` entries with one name.
    #[error("{0:?} is defined twice")]
    DuplicateMilter(String),
    /// A listener names a milter that is not defined.
    #[error("listener {listener:?}: no [[milter]] named {name:?}")]
    UnknownListenerMilter {
        /// The listener's label.
        listener: String,
        /// The milter name.
        name: String,
    },
    /// `local.sendmail_milters` names a milter that is not defined.
    #[error("no [[milter]] named {0:?}")]
    UnknownMilter(String),
    /// `queue.retry_min` above `queue.retry_max`.
    #[error("must not exceed queue.retry_max")]
    RetryOrder,
    /// A domain that is not a valid domain name.
    #[error("bad domain {0:?}")]
    BadDomain(String),
    /// A certificate pin (`cert_sha256`, `cert_spki_sha256`) that is not hex:
    /// it could never match.
    #[error("{0:?} is not a hex SHA-256 (hex digits, colons allowed)")]
    BadPin(String),
    /// `limits.ipv6_prefix` that is no IPv6 prefix length.
    #[error("must be between 1 and 128")]
    BadPrefix,
    /// An `[inbound.*]` prefix length outside 1..=32 (IPv4) or 1..=128 (IPv6).
    #[error("must be between 1 and {0}")]
    PrefixRange(u8),
    /// `what = "connections"` with a key other than "client": connections
    /// are counted before AUTH and MAIL.
    #[error("connections are counted per client only (key = \"client\")")]
    ConnectionsPerClient,
    /// A local user name that cannot be a mailbox name.
    #[error("{0:?} is not a valid mailbox name (letters, digits, . _ - + =)")]
    BadMailboxName(String),
    /// F5: a listener requires verified client certificates, but no client
    /// CA is configured, so no certificate could ever verify.
    #[error(
        "listener {0:?} requires client certificates, but no client CA is configured: set tls.client_ca_files or run `postern ca init`"
    )]
    RequiredWithoutClientCa(String),
    /// A `cert_subject` / `cert_issuer` pattern that is not a DN.
    #[error("{0}")]
    BadDn(String),
    /// A problem in `[ldap]` (config/schema_ldap.rs says which).
    #[error("{0}")]
    Ldap(String),
    /// A problem in `[sql]` (missing url, an inline password, an unknown
    /// `:name` in a query).
    #[error("{0}")]
    Sql(String),
    /// `mx.tls = "dane"` with a name server whose AD bit cannot be trusted.
    #[error("{0}")]
    Dane(String),
    /// `auth.backend` names a directory that is not configured.
    #[error("auth.backend = {0:?} needs a [{0}] table")]
    BackendMissing(&'static str),
}

/// A problem and where it is: `at` is located in the file, `key` is named.
#[derive(Debug)]
pub(super) struct Issue {
    /// Where in the file (the nearest existing key is used when absent).
    pub(super) at: KeyPath,
    /// The key named in the message.
    pub(super) key: String,
    /// The problem.
    pub(super) error: ValidationError,
}

impl Issue {
    /// True if this issue would only echo a problem already reported at
    /// `tainted` (a key taken out or a value replaced by a placeholder).
    pub(super) fn echoes(&self, tainted: &KeyPath) -> bool {
        if *tainted == self.at {
            return true;
        }
        let t = tainted.dotted();
        let simple = t.split('.').count() == tainted.len();
        simple && (t == self.key || matches!(self.error, ValidationError::Unpaired(other) if other == t))
    }
}

pub(super) fn at(path: KeyPath, error: ValidationError) -> Issue {
    Issue { key: path.dotted(), at: path, error }
}

pub(super) fn key(k: &str) -> KeyPath {
    KeyPath::root().keys(k)
}

/// Runs every check.
pub(super) fn check(c: &Config) -> Vec<Issue> {
    let mut out = Vec::new();
    listeners(c, &mut out);
    limits(c, &mut out);
    inbound_rate(c, &mut out);
    pairs(c, &mut out);
    for (i, r) in c.rules.iter().enumerate() {
        let r = r.get_ref();
        if r.action.is_none() {
            out.push(at(key("rule").index(i), ValidationError::RuleWithoutAction));
        }
        let message = r.is_message_stage();
        if let Some(a) = r.action.filter(|a| !a.fits(message)) {
            let why = if message {
                "is for recipients (RCPT): a rule with spf/dkim/dmarc/arc decides about a whole message"
            } else {
                "needs a message-stage criterion (spf, dkim, dmarc or arc)"
            };
            out.push(at(key("rule").index(i).key("action"), ValidationError::RuleActionStage(a.as_str(), why)));
        }
        if message && r.rcpt.is_some() {
            out.push(at(key("rule").index(i).key("rcpt"), ValidationError::RuleRcptAtMessageStage));
        }
        for (k, dn) in [("cert_subject", &r.cert_subject), ("cert_issuer", &r.cert_issuer)] {
            if let Some(Err(e)) = dn.as_deref().map(crate::dn::Dn::parse) {
                out.push(at(key("rule").index(i).key(k), ValidationError::BadDn(e.to_string())));
            }
        }
        for (k, pins) in [("cert_sha256", &r.cert_sha256), ("cert_spki_sha256", &r.cert_spki_sha256)] {
            for (j, pin) in pins.iter().flatten().enumerate() {
                if pin.is_empty() || !pin.chars().all(|ch| ch.is_ascii_hexdigit() || ch == ':') {
                    out.push(at(key("rule").index(i).key(k).index(j), ValidationError::BadPin(pin.clone())));
                }
            }
        }
    }
    rule_listeners(c, &mut out);
    super::validate_route::routes(c, &mut out);
    if c.mx.tls == super::OutboundTls::Dane && !c.mx.nameservers.is_empty() {
        if let Some(why) = super::schema_mx::untrusted_resolvers(&c.mx.nameservers, c.mx.dnssec_trust_remote_ad) {
            out.push(at(key("mx.nameservers"), ValidationError::Dane(why)));
        }
    }
    milters(c, &mut out);
    domains(c, &mut out);
    for (k, e) in c.ldap.as_ref().map(|l| super::schema_ldap::check(l, c.sql.is_some())).unwrap_or_default() {
        out.push(at(key("ldap").key(k), ValidationError::Ldap(e)));
    }
    if c.auth.backend == super::AuthBackend::Ldap && c.ldap.is_none() {
        out.push(at(key("auth.backend"), ValidationError::Ldap("\"ldap\" needs an [ldap] table (docs/directory.md)".into())));
    }
    if let Some(sql) = &c.sql {
        for (k, msg) in sql.problems() {
            out.push(at(key("sql").key(k), ValidationError::Sql(msg)));
        }
    }
    if c.auth.backend == super::AuthBackend::Sql && c.sql.is_none() {
        out.push(at(key("auth").key("backend"), ValidationError::BackendMissing("sql")));
    }
    for (i, u) in c.local.users.iter().enumerate() {
        if !crate::aliases::is_local_name(&u.to_ascii_lowercase()) {
            out.push(at(key("local.users").index(i), ValidationError::BadMailboxName(u.to_ascii_lowercase())));
        }
    }
    out
}

fn listeners(c: &Config, out: &mut Vec<Issue>) {
    if c.listeners.is_empty() {
        out.push(at(key("listener"), ValidationError::NoListener));
    }
    for (i, l) in c.listeners.iter().enumerate() {
        // Port 0 asks the kernel for a free port: never a clash (tests).
        if let Some(o) = c.listeners[..i].iter().find(|o| clashes(o.address, l.address)) {
            out.push(at(key("listener").index(i).key("address"), ValidationError::DuplicateAddress(l.address, o.address)));
        }
    }
}

/// True when binding both would fail: the same port (not 0: the kernel
/// picks a free one) on the same address, or the wildcard address of the
/// same family (Linux refuses 0.0.0.0:25 next to 127.0.0.1:25 without
/// SO_REUSEPORT). `[::]` is dual-stack on Linux by default
/// (net.ipv6.bindv6only = 0), so it also clashes with IPv4 addresses.
pub(super) fn clashes(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let dual = |x: std::net::SocketAddr| x.is_ipv6() && x.ip().is_unspecified();
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || dual(a) || dual(b) || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// Rules naming listeners that do not exist.
fn rule_listeners(c: &Config, out: &mut Vec<Issue>) {
    let labels: Vec<&str> = c.listeners.iter().map(|l| l.label()).collect();
    for (i, r) in c.rules.iter().enumerate() {
        for (j, name) in r.get_ref().listener.iter().flatten().enumerate() {
            if !labels.iter().any(|l| l.eq_ignore_ascii_case(name)) {
                let e = ValidationError::UnknownRuleListener(name.clone(), labels.join(", "));
                out.push(at(key("rule").index(i).key("listener").index(j), e));
            }
        }
    }
}

fn limits(c: &Config, out: &mut Vec<Issue>) {
    if c.local.delivery == LocalDelivery::Lmtp && c.local.lmtp.is_none() {
        out.push(Issue { at: key("local.delivery"), key: "local.lmtp".into(), error: ValidationError::LmtpRequired });
    }
    if c.auth.backend == super::AuthBackend::Dovecot && c.auth.dovecot_socket.is_none() {
        let e = ValidationError::DovecotSocketRequired;
        out.push(Issue { at: key("auth.backend"), key: "auth.dovecot_socket".into(), error: e });
    }
    if c.limits.max_line_length < 512 {
        out.push(at(key("limits.max_line_length"), ValidationError::LineTooShort));
    }
    let counts = [
        ("limits.max_recipients", c.limits.max_recipients),
        ("limits.max_connections", c.limits.max_connections),
        ("queue.concurrency", c.queue.concurrency),
        ("mx.domain_concurrency", c.mx.domain_concurrency),
        ("mta_sts.max_policies", c.mta_sts.max_policies),
        ("mta_sts.https_port", usize::from(c.mta_sts.https_port)),
        ("tls_rpt.max_domains", c.tls_rpt.max_domains),
        ("limits.max_junk_commands", c.limits.max_junk_commands as usize),
    ];
    for (k, v) in counts {
        if v < 1 {
            out.push(at(key(k), ValidationError::Zero));
        }
    }
    if !(1..=128).contains(&c.limits.ipv6_prefix) {
        out.push(at(key("limits.ipv6_prefix"), ValidationError::BadPrefix));
    }
    if c.queue.retry_min > c.queue.retry_max {
        out.push(at(key("queue.retry_min"), ValidationError::RetryOrder));
    }
}

fn inbound_rate(c: &Config, out: &mut Vec<Issue>) {
    let (r, g) = (&c.inbound.rate, &c.inbound.greylist);
    for (k, v, max) in [
        ("inbound.rate.ipv4_prefix", r.ipv4_prefix, 32),
        ("inbound.rate.ipv6_prefix", r.ipv6_prefix, 128),
        ("inbound.greylist.ipv4_prefix", g.ipv4_prefix, 32),
        ("inbound.greylist.ipv6_prefix", g.ipv6_prefix, 128),
    ] {
        if !(1..=max).contains(&v) {
            out.push(at(key(k), ValidationError::PrefixRange(max)));
        }
    }
    for (i, l) in r.limit.iter().enumerate() {
        if l.what == RateWhat::Connections && l.key != RateKey::Client {
            out.push(at(key("inbound.rate.limit").index(i).key("key"), ValidationError::ConnectionsPerClient));
        }
        if l.max < 1 || l.per.is_zero() {
            out.push(at(key("inbound.rate.limit").index(i).key(if l.max < 1 { "max" } else { "per" }), ValidationError::Zero));
        }
    }
}

fn pairs(c: &Config, out: &mut Vec<Issue>) {
    let r = &c.relay;
    let pairs = [
        (
            "relay.smarthost_client_certificate",
            r.smarthost_client_certificate.is_some(),
            "relay.smarthost_client_key",
            r.smarthost_client_key.is_some(),
        ),
        ("relay.smarthost_username", r.smarthost_username.is_some(), "relay.smarthost_password_file", r.smarthost_password_file.is_some()),
        ("tls.certificate", c.tls.certificate.is_some(), "tls.key", c.tls.key.is_some()),
    ];
    for (a, has_a, b, has_b) in pairs {
        if has_a && !has_b {
            out.push(at(key(a), ValidationError::Unpaired(b)));
        } else if has_b && !has_a {
            out.push(at(key(b), ValidationError::Unpaired(a)));
        }
    }
}

fn milters(c: &Config, out: &mut Vec<Issue>) {
    for (i, m) in c.milters.iter().enumerate() {
        if c.milters[..i].iter().any(|o| o.name == m.name) {
            out.push(at(key("milter").index(i).key("name"), ValidationError::DuplicateMilter(m.name.clone())));
        }
    }
    let known = |name: &String| c.milters.iter().any(|m| &m.name == name);
    for (i, l) in c.listeners.iter().enumerate() {
        for (j, name) in l.milters.iter().enumerate() {
            if !known(name) {
                let e = ValidationError::UnknownListenerMilter { listener: l.label().to_string(), name: name.clone() };
                out.push(at(key("listener").index(i).key("milters").index(j), e));
            }
        }
    }
    for (j, name) in c.local.sendmail_milters.iter().enumerate() {
        if !known(name) {
            out.push(at(key("local.sendmail_milters").index(j), ValidationError::UnknownMilter(name.clone())));
        }
    }
}

fn domains(c: &Config, out: &mut Vec<Issue>) {
    let local = c.local.domains.iter().flatten().enumerate().map(|(i, d)| (key("local.domains").index(i), d));
    let relay = c.relay.domains.iter().enumerate().map(|(i, d)| (key("relay.domains").index(i), d));
    for (path, d) in local.chain(relay) {
        if postern_wire::address::check_domain(d).is_err() {
            out.push(at(path, ValidationError::BadDomain(d.to_string())));
        }
    }
}
