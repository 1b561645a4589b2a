//! The DNS queries of the inbound checks (PTR, A/AAAA, MX) behind one small
//! trait, so the session can be tested with a table of answers and the
//! daemon asks the real DNS (`[mx] nameservers`, or the system's).
//!
//! May touch: DNS; /etc/resolv.conf (read). RFC 1035 (queries), RFC 7505
//! (null MX).

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, ResolverBuilder, TokioResolver};

use crate::directory::BoxFuture;

/// The DNS could not answer (SERVFAIL, timeout, no server): try again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTemp(pub String);

/// Records found (empty: NXDOMAIN or no records of the type), or a
/// temporary failure.
pub type Answer<T> = Result<Vec<T>, DnsTemp>;

/// The lookups the inbound checks make.
pub trait InboundDns: Send + Sync + 'static {
    /// PTR names of `ip` (without the trailing dot).
    fn ptr(&self, ip: IpAddr) -> BoxFuture<'_, Answer<String>>;
    /// A and AAAA addresses of `name`.
    fn addrs<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Answer<IpAddr>>;
    /// MX host names of `domain` ("" for a null MX, RFC 7505).
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Answer<String>>;
}

/// The real DNS through hickory, rebuilt when `mx.nameservers` changes.
#[derive(Default)]
pub struct HickoryDns {
    built: Mutex<Option<(Vec<SocketAddr>, TokioResolver)>>,
}

impl HickoryDns {
    /// The resolver for `nameservers` (built on first use or after a change).
    pub fn resolver(&self, nameservers: &[SocketAddr]) -> Result<TokioResolver, DnsTemp> {
        let mut guard = match self.built.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((have, r)) = guard.as_ref() {
            if have == nameservers {
                return Ok(r.clone());
            }
        }
        let r = build(nameservers)?;
        *guard = Some((nameservers.to_vec(), r.clone()));
        Ok(r)
    }
}

fn build(nameservers: &[SocketAddr]) -> Result<TokioResolver, DnsTemp> {
    let mut builder = builder(nameservers).map_err(|e| DnsTemp(format!("DNS configuration: {e}")))?;
    builder.options_mut().cache_size = 1024;
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}

/// A resolver builder for `mx.nameservers` (each over UDP and TCP), or the
/// system's configuration when there are none; never `/etc/hosts` (a
/// client's name, a DNS list's answer follow DNS only). Shared by the
/// inbound lookups (rDNS, HELO/sender checks, DNS lists), MX delivery,
/// MTA-STS and TLS-RPT.
pub(crate) fn builder(nameservers: &[SocketAddr]) -> Result<ResolverBuilder<TokioConnectionProvider>, String> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let mut group = Vec::new();
        for a in nameservers {
            group.push(NameServerConfig::new(*a, Protocol::Udp));
            group.push(NameServerConfig::new(*a, Protocol::Tcp));
        }
        let cfg = ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group));
        TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default())
    };
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    Ok(builder)
}

/// NXDOMAIN and NODATA are answers (no records); anything else is temporary.
fn answer<T>(r: Result<Vec<T>, ResolveError>) -> Answer<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if no_such_records(&e) => Ok(Vec::new()),
        Err(e) => Err(DnsTemp(e.to_string())),
    }
}

/// True for a real "no such records" answer: NXDOMAIN, or NOERROR with no
/// records of the type (NODATA). hickory 0.25 also reports SERVFAIL,
/// REFUSED, NOTIMP and FORMERR as `NoRecordsFound` (with that response
/// code), so `is_no_records_found()` alone would turn a DNS outage into a
/// permanent "not found" (a 550 instead of a 450).
pub(crate) fn no_such_records(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain | ResponseCode::NoError, .. })
    )
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// [`HickoryDns`] bound to the name servers of the moment.
pub struct Bound {
    resolver: Result<TokioResolver, DnsTemp>,
}

impl Bound {
    /// The resolver of `dns` for `nameservers`.
    pub fn new(dns: &HickoryDns, nameservers: &[SocketAddr]) -> Bound {
        Bound { resolver: dns.resolver(nameservers) }
    }
}

impl InboundDns for Bound {
    fn ptr(&self, ip: IpAddr) -> BoxFuture<'_, Answer<String>> {
        Box::pin(async move {
            let r = self.resolver.as_ref().map_err(|e| e.clone())?;
            answer(r.reverse_lookup(ip).await.map(|l| l.iter().map(|p| p.0.to_utf8().trim_end_matches('.').to_string()).collect()))
        })
    }

    fn addrs<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Answer<IpAddr>> {
        Box::pin(async move {
            let r = self.resolver.as_ref().map_err(|e| e.clone())?;
            answer(r.lookup_ip(fqdn(name)).await.map(|l| l.iter().collect()))
        })
    }

    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Answer<String>> {
        Box::pin(async move {
            let r = self.resolver.as_ref().map_err(|e| e.clone())?;
            answer(
                r.mx_lookup(fqdn(domain))
                    .await
                    .map(|l| l.iter().map(|m| m.exchange().to_utf8().trim_end_matches('.').to_string()).collect()),
            )
        })
    }
}

/// A fixed table of answers (tests, `explain` examples). Names not in the
/// table have no records.
#[derive(Debug, Default, Clone)]
pub struct TableDns {
    /// PTR answers by address.
    pub ptr: Vec<(IpAddr, Answer<String>)>,
    /// A/AAAA answers by name (lower case).
    pub addrs: Vec<(String, Answer<IpAddr>)>,
    /// MX answers by domain (lower case).
    pub mx: Vec<(String, Answer<String>)>,
}

impl InboundDns for TableDns {
    fn ptr(&self, ip: IpAddr) -> BoxFuture<'_, Answer<String>> {
        let a = self.ptr.iter().find(|(k, _)| *k == ip).map(|(_, v)| v.clone()).unwrap_or(Ok(Vec::new()));
        Box::pin(async move { a })
    }

    fn addrs<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Answer<IpAddr>> {
        let a = self.addrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or(Ok(Vec::new()));
        Box::pin(async move { a })
    }

    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Answer<String>> {
        let a = self.mx.iter().find(|(k, _)| k.eq_ignore_ascii_case(domain)).map(|(_, v)| v.clone()).unwrap_or(Ok(Vec::new()));
        Box::pin(async move { a })
    }
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::op::{Query, ResponseCode};
    use hickory_resolver::proto::rr::{Name, RecordType};
    use hickory_resolver::proto::ProtoError;
    use hickory_resolver::ResolveError;

    use super::no_such_records;

    fn answered(code: ResponseCode) -> ResolveError {
        let q = Box::new(Query::query(Name::from_ascii("x.example.").expect("name"), RecordType::A));
        ProtoError::nx_error(q, None, None, None, code, false, None).into()
    }

    /// Only NXDOMAIN and NODATA are "no records"; a failing server is temporary.
    #[test]
    fn servfail_is_not_an_answer() {
        for (code, none) in [
            (ResponseCode::NXDomain, true),
            (ResponseCode::NoError, true),
            (ResponseCode::ServFail, false),
            (ResponseCode::Refused, false),
            (ResponseCode::NotImp, false),
            (ResponseCode::FormErr, false),
        ] {
            assert_eq!(no_such_records(&answered(code)), none, "{code:?}");
        }
        assert!(super::answer::<std::net::IpAddr>(Err(answered(ResponseCode::ServFail))).is_err());
        assert_eq!(super::answer::<std::net::IpAddr>(Err(answered(ResponseCode::NXDomain))), Ok(Vec::new()));
    }
}
