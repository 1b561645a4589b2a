//! Cross-field checks of `[[route]]` entries and of the smarthost's TLS
//! mode: what each route needs (a next hop for smtp/lmtp, something to
//! match), what it may not combine (`next_hop` with `next_hops`, smtp-only
//! keys on other transports, "dane" on a fixed next hop), key pairs, and
//! the domains it names. Every problem names its route and key.
//!
//! May touch: nothing (pure). RFCs: 5890/5891 (IDNA: domains are checked
//! in their A-label form).

use super::schema::{OutboundTls, RouteTransport};
use super::validate::{at, key, Issue, ValidationError};
use super::Config;

/// Runs every route check.
pub(super) fn routes(c: &Config, out: &mut Vec<Issue>) {
    if c.relay.smarthost_tls == OutboundTls::Dane {
        out.push(at(key("relay.smarthost_tls"), ValidationError::DaneNotForRoute));
    }
    for (i, r) in c.routes.iter().enumerate() {
        let here = |k: &str| key("route").index(i).key(k);
        let smtp = r.transport == RouteTransport::Smtp;
        let needs_hop = matches!(r.transport, RouteTransport::Smtp | RouteTransport::Lmtp);
        if needs_hop && r.hops().is_empty() {
            let issue = ValidationError::NextHopRequired(r.transport.as_str());
            out.push(Issue { at: here("transport"), key: "route.next_hop".into(), error: issue });
        }
        if r.next_hop.is_some() && !r.next_hops.is_empty() {
            out.push(at(here("next_hops"), ValidationError::NextHopTwice));
        }
        if r.domains.is_empty() && r.senders.is_empty() {
            out.push(at(here("transport"), ValidationError::RouteMatchesNothing));
        }
        if r.domains.is_empty() && !r.senders.is_empty() && !matches!(r.transport, RouteTransport::Smtp | RouteTransport::Mx) {
            out.push(at(here("transport"), ValidationError::SenderOnlyTransport(r.transport.as_str())));
        }
        if smtp && r.tls == OutboundTls::Dane {
            out.push(at(here("tls"), ValidationError::DaneNotForRoute));
        }
        if !smtp {
            for k in r.smtp_only_keys() {
                out.push(at(here(k), ValidationError::SmtpOnly(r.transport.as_str())));
            }
        }
        let pairs = [
            ("client_certificate", r.client_certificate.is_some(), "client_key", r.client_key.is_some()),
            ("username", r.username.is_some(), "password_file", r.password_file.is_some()),
        ];
        for (a, has_a, b, has_b) in pairs {
            if has_a && !has_b {
                out.push(at(here(a), ValidationError::Unpaired(b)));
            } else if has_b && !has_a {
                out.push(at(here(b), ValidationError::Unpaired(a)));
            }
        }
        for (k, list) in [("domains", &r.domains), ("senders", &r.senders)] {
            for (j, d) in list.iter().enumerate() {
                // `delivery::idna` would be a module cycle: the same crate call.
                let ascii = if d.is_ascii() { Ok(d.clone()) } else { idna::domain_to_ascii_strict(d) };
                let ok = ascii.is_ok_and(|a| postern_wire::address::check_domain(&a).is_ok());
                if !ok {
                    out.push(at(here(k).index(j), ValidationError::BadDomain(d.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Each bad route: the text of the error and the `file:line` it names.
    #[test]
    fn route_errors_name_line_and_key() {
        let head = "[relay]\nsmarthost = \"relay.example:25\"\n";
        for (route, line, want) in [
            ("domains = [\"a.example\"]\ntransport = \"smtp\"\ntls = \"dane\"\nnext_hop = \"h:25\"\n", 6, "dane applies to MX delivery"),
            ("domains = [\"a.example\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\nnext_hops = [\"g:25\"]\n", 7, "not both"),
            ("transport = \"smtp\"\nnext_hop = \"h:25\"\n", 4, "needs `domains`, `senders` or both"),
            ("senders = [\"a.example\"]\ntransport = \"maildir\"\n", 5, "transport must be \"smtp\" or \"mx\""),
            (
                "domains = [\"a.example\"]\ntransport = \"mx\"\nusername = \"u\"\npassword_file = \"p\"\n",
                6,
                "applies to transport = \"smtp\" only",
            ),
            ("domains = [\"a.example\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\nclient_certificate = \"c.pem\"\n", 7, "`client_key`"),
            ("domains = [\"a.example\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\npassword_file = \"p\"\n", 7, "`username`"),
            ("senders = [\"bad domain\"]\ntransport = \"smtp\"\nnext_hop = \"h:25\"\n", 4, "bad domain"),
            ("domains = [\"a.example\"]\ntransport = \"smtp\"\n", 5, "required for transport \"smtp\""),
        ] {
            let text = format!("{head}[[route]]\n{route}");
            let e = Config::parse(&text, "f.toml").expect_err(route).to_string();
            assert!(e.contains(want), "{route}: {e}");
            assert!(e.contains(&format!("f.toml:{line}:")), "{route}: want line {line}: {e}");
            assert!(e.contains("route"), "{route}: names the key: {e}");
        }
        let e = Config::parse("[relay]\nsmarthost = \"h:25\"\nsmarthost_tls = \"dane\"\n", "f.toml").expect_err("dane").to_string();
        assert!(e.contains("f.toml:3:") && e.contains("relay.smarthost_tls") && e.contains("dane applies to MX delivery"), "{e}");
    }

    #[test]
    fn good_routes_load() {
        let text = "[[route]]\nsenders = [\"partner.example\"]\ntransport = \"smtp\"\nnext_hops = [\"a:25\", \"b:25\"]\ntls = \"verify\"\n\
                    username = \"u\"\npassword_file = \"p\"\nclient_certificate = \"c\"\nclient_key = \"k\"\n\
                    [[route]]\ndomains = [\"bücher.example\"]\nsenders = [\"xn--bcher-kva.example\"]\ntransport = \"mx\"\n";
        let c = Config::parse(text, "f.toml").unwrap();
        assert_eq!(c.routes[0].hops().len(), 2);
    }
}
