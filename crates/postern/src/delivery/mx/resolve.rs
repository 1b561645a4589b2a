//! MX and address lookups through hickory-resolver (the system
//! configuration, or `mx.nameservers`), and the order MX hosts are tried in.
//!
//! May touch: DNS. RFCs: 5321 §5.1 (MX, implicit MX), 7505 (null MX).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;

use super::{Hosts, MxError};

/// The resolver.
pub struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// System configuration, or these name servers (UDP and TCP).
    pub fn new(nameservers: &[SocketAddr]) -> Result<MxResolver, MxError> {
        // Mail routing must follow DNS, not /etc/hosts (the shared builder
        // sees to it); and keep answers fresh.
        let mut builder = crate::inbound::dns::builder(nameservers).map_err(MxError::DnsConfig)?;
        builder.options_mut().cache_size = 256;
        // Both families for MX hosts (the default asks AAAA only when there
        // is no A record): an IPv6 address is another way in when the IPv4
        // ones refuse. `addrs` puts IPv4 first, as before.
        builder.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        Ok(MxResolver { resolver: builder.build() })
    }

    /// MX hosts of a domain, best first (random among equal preferences).
    pub async fn hosts(&self, domain: &str) -> Result<Hosts, MxError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> =
                    lookup.iter().map(|m| (m.preference(), m.exchange().to_ascii().trim_end_matches('.').to_ascii_lowercase())).collect();
                if mx.len() == 1 && mx[0].1.is_empty() {
                    return Ok(Hosts::NullMx);
                }
                mx.retain(|(_, h)| !h.is_empty());
                Ok(Hosts::Try(order(mx, rand::random::<u64>())))
            }
            Err(e) => match no_mx(&e) {
                Some(NoMx::NoDomain) => Ok(Hosts::NoDomain),
                Some(NoMx::Implicit) => Ok(Hosts::Try(vec![domain.to_string()])), // implicit MX
                None => Err(MxError::MxLookup { domain: domain.to_string(), reason: e.to_string() }),
            },
        }
    }

    /// Addresses of a host, IPv6 and IPv4.
    pub async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, MxError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        self.resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map(|l| {
                let mut ips: Vec<IpAddr> = l.iter().collect();
                ips.sort_by_key(|ip| ip.is_ipv6()); // stable: IPv4 first, DNS order within a family
                ips
            })
            .map_err(|e| MxError::HostLookup { host: host.to_string(), reason: e.to_string() })
    }
}

/// What a failed MX lookup means, when it is an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMx {
    /// NXDOMAIN: the domain does not exist.
    NoDomain,
    /// NODATA: no MX records; the domain itself is the host (RFC 5321 §5.1).
    Implicit,
}

/// Only NXDOMAIN and NODATA are answers; SERVFAIL, REFUSED, a timeout
/// (`None`) are temporary: hickory 0.25 reports SERVFAIL and REFUSED as
/// "no records found" too, which once made an outage an implicit MX.
pub fn no_mx(e: &hickory_resolver::ResolveError) -> Option<NoMx> {
    if !crate::inbound::dns::no_such_records(e) {
        None
    } else if e.is_nx_domain() {
        Some(NoMx::NoDomain)
    } else {
        Some(NoMx::Implicit)
    }
}

/// Sorts by preference; equal preferences are shuffled with `seed` (pure, tested).
pub fn order(mut mx: Vec<(u16, String)>, seed: u64) -> Vec<String> {
    let mut state = seed | 1;
    let mut keyed: Vec<(u16, u64, String)> = mx
        .drain(..)
        .map(|(p, h)| {
            // xorshift: a cheap deterministic shuffle key per entry
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (p, state, h)
        })
        .collect();
    keyed.sort();
    let mut seen = Vec::new();
    for (_, _, h) in keyed {
        if !seen.contains(&h) {
            seen.push(h);
        }
    }
    seen
}
