//! Forward-confirmed reverse DNS (FCrDNS) of the client: the PTR names of
//! its address, then the A/AAAA records of those names; the result is
//! sendmail's `{client_resolve}` (OK, FAIL, FORGED, TEMP). The verdict is a
//! pure function over the answers ([`verdict`]); [`lookup`] asks the DNS
//! under one deadline.
//!
//! May touch: DNS (through [`InboundDns`]). RFC 1912 §2.1 (every PTR name
//! should have a matching A record), RFC 1123 §2.1 (host names).

use std::net::IpAddr;
use std::time::Duration;

use super::dns::{Answer, InboundDns};
use crate::config::Resolve;

/// PTR names checked forward at most (sendmail and Postfix stop early too):
/// a hostile PTR set must not make us send a hundred queries.
pub const MAX_PTR_NAMES: usize = 10;

/// What the reverse lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName {
    /// OK, FAIL, FORGED or TEMP.
    pub resolve: Resolve,
    /// The first usable PTR name (`{client_ptr}`), confirmed or not.
    pub ptr: Option<String>,
}

impl ClientName {
    /// The name that may be shown as the client's (`{client_name}`, the
    /// log, `Received:`): only a forward-confirmed one.
    pub fn confirmed(&self) -> Option<&str> {
        match self.resolve {
            Resolve::Ok => self.ptr.as_deref(),
            _ => None,
        }
    }
}

/// A PTR name we are willing to use: a syntactically valid host name
/// (letters, digits, hyphens, dots; labels of 1 to 63 octets, at most 253
/// in all). Anything else (spaces, brackets, `_`) could corrupt a log
/// line or a header and is ignored, as Postfix ignores a malformed name.
pub fn usable_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The verdict from the PTR answer and the forward answers of the PTR
/// names (in PTR order). Pure: tested with a table.
pub fn verdict(ip: IpAddr, ptr: &Answer<String>, forward: &[(String, Answer<IpAddr>)]) -> ClientName {
    let names: Vec<String> = match ptr {
        Err(_) => return ClientName { resolve: Resolve::Temp, ptr: None },
        Ok(v) => v.iter().filter(|n| usable_name(n)).map(|n| n.trim_end_matches('.').to_ascii_lowercase()).collect(),
    };
    let Some(first) = names.first().cloned() else {
        return ClientName { resolve: Resolve::Fail, ptr: None };
    };
    let ip = canonical(ip);
    if let Some((name, _)) = forward.iter().find(|(_, a)| a.as_ref().is_ok_and(|v| v.iter().any(|x| canonical(*x) == ip))) {
        return ClientName { resolve: Resolve::Ok, ptr: Some(name.to_ascii_lowercase()) };
    }
    // sendmail: TEMP when a forward lookup could not be made (nor the
    // rest checked), FORGED when every one answered and none matched.
    let temp = forward.iter().any(|(_, a)| a.is_err()) || forward.len() < names.len().min(MAX_PTR_NAMES);
    ClientName { resolve: if temp { Resolve::Temp } else { Resolve::Forged }, ptr: Some(first) }
}

/// IPv4-mapped IPv6 compares as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// PTR, then forward lookups (stopping at the first name that confirms),
/// all within `timeout`; past it, the verdict on what came back (TEMP).
pub async fn lookup(dns: &dyn InboundDns, ip: IpAddr, timeout: Duration) -> ClientName {
    let deadline = tokio::time::Instant::now() + timeout;
    let ip = canonical(ip);
    let Ok(ptr) = tokio::time::timeout_at(deadline, dns.ptr(ip)).await else {
        return ClientName { resolve: Resolve::Temp, ptr: None };
    };
    let names: Vec<String> = ptr
        .as_ref()
        .map(|v| v.iter().filter(|n| usable_name(n)).take(MAX_PTR_NAMES).map(|n| n.trim_end_matches('.').to_string()).collect())
        .unwrap_or_default();
    let mut forward: Vec<(String, Answer<IpAddr>)> = Vec::new();
    for name in names {
        let Ok(a) = tokio::time::timeout_at(deadline, dns.addrs(&name)).await else { break };
        let hit = a.as_ref().is_ok_and(|v| v.iter().any(|x| canonical(*x) == ip));
        forward.push((name, a));
        if hit {
            break;
        }
    }
    verdict(ip, &ptr, &forward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::dns::DnsTemp;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(v: &[&str]) -> Answer<String> {
        Ok(v.iter().map(|s| s.to_string()).collect())
    }

    fn addrs(v: &[&str]) -> Answer<IpAddr> {
        Ok(v.iter().map(|s| ip(s)).collect())
    }

    #[test]
    fn verdicts() {
        fn temp<T>() -> Answer<T> {
            Err(DnsTemp("SERVFAIL".into()))
        }
        type Case = (&'static str, Answer<String>, Vec<(String, Answer<IpAddr>)>, Resolve, Option<&'static str>);
        let table: Vec<Case> = vec![
            (
                "PTR and A agree",
                names(&["mail.example.org."]),
                vec![("mail.example.org".into(), addrs(&["192.0.2.7"]))],
                Resolve::Ok,
                Some("mail.example.org"),
            ),
            (
                "second name confirms",
                names(&["a.example", "b.example"]),
                vec![("a.example".into(), addrs(&["192.0.2.9"])), ("b.example".into(), addrs(&["192.0.2.7"]))],
                Resolve::Ok,
                Some("b.example"),
            ),
            ("no PTR", names(&[]), vec![], Resolve::Fail, None),
            ("PTR SERVFAIL", temp(), vec![], Resolve::Temp, None),
            (
                "A is another address",
                names(&["mail.example.org"]),
                vec![("mail.example.org".into(), addrs(&["192.0.2.99"]))],
                Resolve::Forged,
                Some("mail.example.org"),
            ),
            (
                "name has no A",
                names(&["mail.example.org"]),
                vec![("mail.example.org".into(), addrs(&[]))],
                Resolve::Forged,
                Some("mail.example.org"),
            ),
            (
                "forward SERVFAIL",
                names(&["mail.example.org"]),
                vec![("mail.example.org".into(), temp())],
                Resolve::Temp,
                Some("mail.example.org"),
            ),
            ("forward timed out (missing)", names(&["mail.example.org"]), vec![], Resolve::Temp, Some("mail.example.org")),
            ("malformed PTR only", names(&["bad name [1.2.3.4]"]), vec![], Resolve::Fail, None),
            (
                "upper case folded",
                names(&["MAIL.Example.ORG"]),
                vec![("MAIL.Example.ORG".into(), addrs(&["192.0.2.7"]))],
                Resolve::Ok,
                Some("mail.example.org"),
            ),
            (
                "mapped IPv6 answer",
                names(&["m.example"]),
                vec![("m.example".into(), addrs(&["::ffff:192.0.2.7"]))],
                Resolve::Ok,
                Some("m.example"),
            ),
        ];
        for (what, ptr, fwd, want, name) in table {
            let got = verdict(ip("192.0.2.7"), &ptr, &fwd);
            assert_eq!(got.resolve, want, "{what}");
            assert_eq!(got.confirmed(), if want == Resolve::Ok { name } else { None }, "{what}");
            if want != Resolve::Ok {
                assert_eq!(got.ptr.as_deref(), name, "{what}");
            }
        }
    }

    #[test]
    fn usable_names() {
        for (n, ok) in [
            ("mail.example.org", true),
            ("mail.example.org.", true),
            ("a-b.c", true),
            ("", false),
            ("-a.b", false),
            ("a..b", false),
            ("a b", false),
            ("a_b.example", false),
            ("[192.0.2.1]", false),
            ("a\r\nb", false),
        ] {
            assert_eq!(usable_name(n), ok, "{n:?}");
        }
    }

    #[tokio::test]
    async fn lookup_through_a_table() {
        use crate::inbound::dns::TableDns;
        let dns = TableDns {
            ptr: vec![(ip("192.0.2.7"), names(&["mx.example"])), (ip("192.0.2.8"), names(&["mx.example"]))],
            addrs: vec![("mx.example".into(), addrs(&["192.0.2.7"]))],
            mx: vec![],
        };
        let t = Duration::from_secs(1);
        assert_eq!(lookup(&dns, ip("192.0.2.7"), t).await.resolve, Resolve::Ok);
        assert_eq!(lookup(&dns, ip("192.0.2.8"), t).await.resolve, Resolve::Forged);
        assert_eq!(lookup(&dns, ip("192.0.2.9"), t).await.resolve, Resolve::Fail);
    }
}
