//! HELO/EHLO name checks and the sender-domain check: pure verdicts over
//! the name, the client, our own names and what the DNS answered; the
//! session decides when to ask and when to refuse
//! (`[inbound.rdns] reject_at`).
//!
//! May touch: nothing (pure). RFC 5321 §4.1.1.1 (the HELO name is the
//! client's FQDN or an address literal), §4.1.3 (address literals), §2.3.5
//! (domain names), RFC 7505 (null MX: the domain sends no mail back).

use std::net::IpAddr;

use postern_wire::{Enhanced, Reply};

use super::dns::Answer;
use super::rdns::usable_name;

/// What is wrong with a HELO/EHLO name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeloProblem {
    /// No dot, or not a valid host name (Postfix `reject_non_fqdn_helo_hostname`,
    /// `reject_invalid_helo_hostname`).
    NotFqdn,
    /// An address literal that is not the client's address.
    ForeignLiteral,
    /// Our own host name, `localhost`, or one of our addresses.
    OwnName,
    /// The name has no A/AAAA record (`reject_unknown_helo_hostname`).
    NotFound,
    /// The DNS could not say whether the name exists.
    Temp,
}

impl HeloProblem {
    /// The word for logs and `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeloProblem::NotFqdn => "not-fqdn",
            HeloProblem::ForeignLiteral => "foreign-literal",
            HeloProblem::OwnName => "own-name",
            HeloProblem::NotFound => "not-found",
            HeloProblem::Temp => "temp",
        }
    }

    /// `550 5.7.1 <helo>: Helo command rejected: <reason>` (450 4.7.1 when temporary).
    pub fn reply(self, helo: &str) -> Reply {
        let helo: String = helo.chars().filter(|c| !c.is_control()).take(255).collect();
        let reason = match self {
            HeloProblem::NotFqdn => "need fully-qualified hostname",
            HeloProblem::ForeignLiteral => "address literal is not your address",
            HeloProblem::OwnName => "you are not me",
            HeloProblem::NotFound => "Host not found",
            HeloProblem::Temp => "Host not found (temporary DNS failure)",
        };
        let text = format!("<{helo}>: Helo command rejected: {reason}");
        match self {
            HeloProblem::Temp => Reply::new(450, Enhanced(4, 7, 1), text),
            _ => Reply::new(550, Enhanced(5, 7, 1), text),
        }
    }
}

/// Which HELO checks are on, and who we are.
#[derive(Debug, Clone, Copy)]
pub struct HeloPolicy<'a> {
    /// `helo_require_fqdn`.
    pub require_fqdn: bool,
    /// `helo_reject_own_name`.
    pub reject_own_name: bool,
    /// Our `hostname`.
    pub hostname: &'a str,
    /// Our addresses (listeners, the connection's local address).
    pub our_addrs: &'a [IpAddr],
}

/// An address literal's address (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub fn literal(name: &str) -> Option<IpAddr> {
    let inner = name.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The syntax and own-name checks (no DNS). Pure: tested with a table.
pub fn check(name: &str, client: IpAddr, p: &HeloPolicy<'_>) -> Option<HeloProblem> {
    if let Some(ip) = literal(name) {
        if p.reject_own_name && ip != client && p.our_addrs.contains(&ip) {
            return Some(HeloProblem::OwnName);
        }
        if p.require_fqdn && ip != client {
            return Some(HeloProblem::ForeignLiteral);
        }
        return None;
    }
    let bare = name.trim_end_matches('.').to_ascii_lowercase();
    if p.reject_own_name {
        let own = bare == p.hostname.trim_end_matches('.').to_ascii_lowercase()
            || bare == "localhost"
            || bare.ends_with(".localhost")
            || bare == "localhost.localdomain";
        if own {
            return Some(HeloProblem::OwnName);
        }
    }
    if p.require_fqdn && (!bare.contains('.') || !usable_name(&bare) || bare.parse::<IpAddr>().is_ok()) {
        return Some(HeloProblem::NotFqdn);
    }
    None
}

/// `helo_require_resolve`: the verdict on the name's A/AAAA answer.
pub fn check_resolves(addrs: &Answer<IpAddr>) -> Option<HeloProblem> {
    match addrs {
        Err(_) => Some(HeloProblem::Temp),
        Ok(v) if v.is_empty() => Some(HeloProblem::NotFound),
        Ok(_) => None,
    }
}

/// The sender domain's standing (`sender_domain_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderDomain {
    /// MX, A or AAAA records exist.
    Ok,
    /// NXDOMAIN, or no MX and no address.
    Unknown,
    /// A null MX (RFC 7505): the domain receives no mail, so no bounce can reach it.
    NullMx,
    /// The DNS failed.
    Temp,
}

impl SenderDomain {
    /// The word for logs and `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderDomain::Ok => "ok",
            SenderDomain::Unknown => "unknown",
            SenderDomain::NullMx => "null-mx",
            SenderDomain::Temp => "temp",
        }
    }

    /// The refusal (`None` for [`SenderDomain::Ok`]).
    pub fn reply(self, sender: &str, domain: &str) -> Option<Reply> {
        let (code, enhanced, why) = match self {
            SenderDomain::Ok => return None,
            SenderDomain::Unknown => (550, Enhanced(5, 1, 8), "Domain not found".to_string()),
            SenderDomain::NullMx => (550, Enhanced(5, 7, 27), format!("Domain {domain} does not accept mail (null MX)")),
            SenderDomain::Temp => (450, Enhanced(4, 1, 8), "Domain not found (temporary DNS failure)".to_string()),
        };
        Some(Reply::new(code, enhanced, format!("<{sender}>: Sender address rejected: {why}")))
    }
}

/// The verdict from the MX answer and, when there was no MX, the A/AAAA
/// answer (`None`: not asked). Pure: tested with a table.
pub fn sender_verdict(mx: &Answer<String>, addrs: Option<&Answer<IpAddr>>) -> SenderDomain {
    match mx {
        Err(_) => SenderDomain::Temp,
        Ok(v) if v.len() == 1 && v[0].is_empty() => SenderDomain::NullMx,
        Ok(v) if !v.is_empty() => SenderDomain::Ok,
        Ok(_) => match addrs {
            None => SenderDomain::Temp,
            Some(Err(_)) => SenderDomain::Temp,
            Some(Ok(a)) if a.is_empty() => SenderDomain::Unknown,
            Some(Ok(_)) => SenderDomain::Ok,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::dns::DnsTemp;

    #[test]
    fn helo_table() {
        let ours: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let all = HeloPolicy { require_fqdn: true, reject_own_name: true, hostname: "mx.example.org", our_addrs: &ours };
        let none = HeloPolicy { require_fqdn: false, reject_own_name: false, ..all };
        let fqdn_only = HeloPolicy { reject_own_name: false, ..all };
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let table: &[(&str, &HeloPolicy, Option<HeloProblem>)] = &[
            ("mail.example.net", &all, None),
            ("mail.example.net.", &all, None),
            ("localhost", &all, Some(HeloProblem::OwnName)),
            ("localhost", &fqdn_only, Some(HeloProblem::NotFqdn)),
            ("localhost", &none, None),
            ("LOCALHOST.localdomain", &all, Some(HeloProblem::OwnName)),
            ("workstation", &all, Some(HeloProblem::NotFqdn)),
            ("bad_name.example", &all, Some(HeloProblem::NotFqdn)),
            ("a..b", &all, Some(HeloProblem::NotFqdn)),
            ("198.51.100.7", &all, Some(HeloProblem::NotFqdn)),
            ("MX.example.org", &all, Some(HeloProblem::OwnName)),
            ("mx.example.org", &fqdn_only, None),
            ("[198.51.100.7]", &all, None),
            ("[198.51.100.8]", &all, Some(HeloProblem::ForeignLiteral)),
            ("[198.51.100.8]", &none, None),
            ("[192.0.2.1]", &all, Some(HeloProblem::OwnName)),
            ("[192.0.2.1]", &fqdn_only, Some(HeloProblem::ForeignLiteral)),
            ("[IPv6:2001:db8::1]", &all, Some(HeloProblem::OwnName)),
            ("[IPv6:2001:db8::2]", &all, Some(HeloProblem::ForeignLiteral)),
            ("[not an address]", &all, Some(HeloProblem::NotFqdn)),
        ];
        for (name, p, want) in table {
            assert_eq!(check(name, client, p), *want, "{name}");
        }
    }

    #[test]
    fn helo_replies() {
        assert_eq!(HeloProblem::NotFqdn.reply("box").summary(), "550 5.7.1 <box>: Helo command rejected: need fully-qualified hostname");
        assert_eq!(HeloProblem::Temp.reply("x.example").code, 450);
        assert_eq!(check_resolves(&Ok(vec![])), Some(HeloProblem::NotFound));
        assert_eq!(check_resolves(&Err(DnsTemp("x".into()))), Some(HeloProblem::Temp));
        assert_eq!(check_resolves(&Ok(vec!["192.0.2.1".parse().unwrap()])), None);
    }

    #[test]
    fn sender_table() {
        fn temp<T>() -> Answer<T> {
            Err(DnsTemp("SERVFAIL".into()))
        }
        let a: Answer<IpAddr> = Ok(vec!["192.0.2.1".parse().unwrap()]);
        let table: Vec<(Answer<String>, Option<Answer<IpAddr>>, SenderDomain)> = vec![
            (Ok(vec!["mx.example".into()]), None, SenderDomain::Ok),
            (Ok(vec![]), Some(a), SenderDomain::Ok),
            (Ok(vec![]), Some(Ok(vec![])), SenderDomain::Unknown),
            (Ok(vec![]), Some(temp()), SenderDomain::Temp),
            (temp(), None, SenderDomain::Temp),
            (Ok(vec!["".into()]), None, SenderDomain::NullMx),
            (Ok(vec![]), None, SenderDomain::Temp),
        ];
        for (mx, addrs, want) in table {
            assert_eq!(sender_verdict(&mx, addrs.as_ref()), want, "{mx:?} {addrs:?}");
        }
        let r = SenderDomain::Unknown.reply("a@nx.example", "nx.example").unwrap();
        assert_eq!(r.summary(), "550 5.1.8 <a@nx.example>: Sender address rejected: Domain not found");
        assert_eq!(
            SenderDomain::Temp.reply("a@x", "x").unwrap().summary(),
            "450 4.1.8 <a@x>: Sender address rejected: Domain not found (temporary DNS failure)"
        );
        assert!(SenderDomain::Ok.reply("a@x", "x").is_none());
    }
}
