//! Untrusted routing, refused for clients that may not relay (those whose
//! recipient was only `accept`ed): address literals that point into this
//! host or a private network (`user@[127.0.0.1]`, `[IPv6:::1]`, RFC 1918,
//! link-local...), and, for relay domains, source routes hidden in the
//! local part: `%`, `!` or a quoted `@` (Postfix `allow_untrusted_routing =
//! no`), which a next hop may still honour and forward onwards. Pure.
//!
//! MAIL FROM literals are not checked here: a sender literal is fine, and
//! MX delivery never connects to this host (`delivery::mx::Myself`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use postern_wire::{codes, Mailbox, Path};

use super::{classify, evaluate, Facts, RcptDecision};
use crate::config::{RcptClass, RuleAction};
use crate::settings::Settings;

/// Is the domain an address literal (`[a.b.c.d]`, `[ipv6:...]`) of a
/// loopback, private, link-local or otherwise internal address?
pub fn is_internal_literal(domain: &str) -> bool {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else { return false };
    let ip = match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => inner[5..].parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => inner.parse::<Ipv4Addr>().map(IpAddr::V4),
    };
    // An unparsable literal cannot be delivered to either: treat it as internal.
    ip.map_or(true, is_internal)
}

/// Loopback, unspecified, RFC 1918, CGNAT (RFC 6598), link-local,
/// multicast, broadcast, reserved, IPv6 ULA; IPv4-mapped IPv6 as IPv4.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (first & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (first & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        }
    }
}

/// Does the local part carry a source route (`%`, `!`, or an `@` in quotes)?
pub fn has_source_route(local: &str) -> bool {
    local.contains(['%', '!', '@'])
}

/// Could this client relay? The same rules, asked for a recipient in no
/// local or relay domain (as Postfix asks `smtpd_relay_restrictions`).
pub fn may_relay(s: &Settings, f: &Facts<'_>) -> bool {
    let local = match f.rcpt {
        Path::Mailbox(m) => m.local.clone(),
        _ => "postmaster".into(),
    };
    let probe = Path::Mailbox(Mailbox { local, domain: "relay-probe.invalid".into() });
    evaluate(s, &Facts { rcpt: &probe, ..f.clone() }).action == RuleAction::Relay
}

/// The refusal for a recipient that the rules `accept`ed, if it routes
/// somewhere untrusted and the client may not relay; `addr` is the
/// recipient for the reply.
pub fn refusal(s: &Settings, f: &Facts<'_>, action: RuleAction, addr: &str) -> Option<RcptDecision> {
    let Path::Mailbox(m) = f.rcpt else { return None };
    if action != RuleAction::Accept {
        return None; // relayed (trusted), or refused anyway
    }
    let (rule, text) = if is_internal_literal(&m.domain) {
        ("address-literal", "Relay access denied (address literal of an internal network)")
    } else if classify(s, f.rcpt) == RcptClass::Relay && has_source_route(&m.local) {
        ("untrusted-routing", "Relay access denied (source route in the local part)")
    } else {
        return None;
    };
    if may_relay(s, f) {
        return None;
    }
    let reply = codes::relay_denied().with_text(format!("<{addr}>: {text}"));
    Some(RcptDecision::Reject { reply, rule: rule.into(), origin: "built-in".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_literals() {
        for (d, want) in [
            ("[127.0.0.1]", true),
            ("[127.1.2.3]", true),
            ("[0.0.0.0]", true),
            ("[10.0.0.5]", true),
            ("[172.16.0.1]", true),
            ("[192.168.1.1]", true),
            ("[169.254.1.1]", true),
            ("[100.64.0.1]", true),
            ("[255.255.255.255]", true),
            ("[ipv6:::1]", true),
            ("[IPv6:::]", true),
            ("[ipv6:fe80::1]", true),
            ("[ipv6:fd00::1]", true),
            ("[ipv6:::ffff:127.0.0.1]", true),
            ("[ipv6:::ffff:10.1.1.1]", true),
            ("[nonsense]", true),
            ("[192.0.2.1]", false),
            ("[198.51.100.7]", false),
            ("[100.128.0.1]", false),
            ("[ipv6:2001:db8::1]", false),
            ("example.org", false),
            ("127.0.0.1.example", false),
        ] {
            assert_eq!(is_internal_literal(d), want, "{d}");
        }
    }

    #[test]
    fn source_routes() {
        for (l, want) in [("victim%evil.example", true), ("evil.example!victim", true), ("\"victim@evil.example\"", true), ("a.b+c", false)]
        {
            assert_eq!(has_source_route(l), want, "{l}");
        }
    }
}
