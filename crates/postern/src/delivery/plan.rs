//! What delivery would do with one recipient of mail from one sender, for
//! `postern explain` and `postern config check --rcpt`: the route (from
//! [`super::route`], the function the queue uses), its next hops in the
//! order they are tried, the TLS mode, and whether a client certificate
//! and AUTH would be used. Nothing is connected to or read.
//!
//! May touch: nothing (pure).

use serde::Serialize;

use super::{route, Route};
use crate::config::{tls_name, Outbound, RouteTransport};
use crate::settings::Settings;

/// The delivery plan of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Which route, and why it matched ("[[route]] 2: senders partner.example").
    pub route: String,
    /// "maildir", "lmtp", "smtp" or "mx".
    pub transport: &'static str,
    /// Next hops in order (empty for Maildir and MX).
    pub next_hops: Vec<String>,
    /// TLS mode: a route's or the smarthost's `tls`, `[mx] tls`, `local.lmtp_tls`; `None` for Maildir.
    pub tls: Option<&'static str>,
    /// The client certificate presented (path), if any.
    pub client_certificate: Option<String>,
    /// AUTH: "as USER" with the mechanisms allowed, if credentials are configured.
    pub auth: Option<String>,
}

impl Plan {
    /// The plan as text lines (`route:`, `next hop:`, `tls:`, `client cert:`, `auth:`).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("route:       {} (transport {})", self.route, self.transport)];
        if !self.next_hops.is_empty() {
            let order = if self.next_hops.len() > 1 { " (in order)" } else { "" };
            out.push(format!("next hop:    {}{order}", self.next_hops.join(", ")));
        }
        if let Some(t) = self.tls {
            out.push(format!("tls:         {t}"));
        }
        if self.transport == "smtp" {
            out.push(format!("client cert: {}", self.client_certificate.as_deref().unwrap_or("none")));
            out.push(format!("auth:        {}", self.auth.as_deref().unwrap_or("no")));
        }
        out
    }
}

/// What a route matched on, for the plan's `route`.
fn why(r: &crate::config::Route) -> String {
    let mut parts = Vec::new();
    if !r.domains.is_empty() {
        parts.push(format!("domains {}", r.domains.join(" ")));
    }
    if !r.senders.is_empty() {
        parts.push(format!("senders {}", r.senders.join(" ")));
    }
    parts.join(", ")
}

/// The plan for `address` in mail from `sender` (empty for `<>`).
pub fn plan(s: &Settings, sender: &str, address: &str) -> Plan {
    let none = |route: String, transport, tls| Plan { route, transport, next_hops: Vec::new(), tls, client_certificate: None, auth: None };
    let lmtp = || s.config.local.lmtp.as_ref().map(|e| e.to_string()).into_iter().collect::<Vec<_>>();
    match route(s, sender, address) {
        Route::Maildir => none("local (Maildir)".into(), "maildir", None),
        Route::Lmtp => Plan { next_hops: lmtp(), ..none("local (LMTP)".into(), "lmtp", Some(tls_name(s.config.local.lmtp_tls))) },
        Route::Mx(domain) => {
            let which = match super::matching_route(s, sender, address) {
                Some(i) => format!("[[route]] {}: {}; MX of {domain}", i + 1, why(&s.config.routes[i])),
                None => format!("MX of {domain}"),
            };
            none(which, "mx", Some(tls_name(s.config.mx.tls)))
        }
        Route::Smarthost => match Outbound::smarthost(&s.config.relay) {
            Some(o) => smtp("smarthost (relay.smarthost)".into(), &o, s),
            None => none("smarthost (not configured)".into(), "smtp", None),
        },
        Route::Custom(i) => {
            let r = &s.config.routes[i];
            let label = format!("[[route]] {}: {}", i + 1, why(r));
            match r.transport {
                RouteTransport::Smtp => smtp(label, &Outbound::route(i, r), s),
                RouteTransport::Lmtp => Plan {
                    next_hops: r.hops().iter().map(|e| e.to_string()).collect(),
                    ..none(label, "lmtp", Some(tls_name(s.config.local.lmtp_tls)))
                },
                RouteTransport::Maildir => none(label, "maildir", None),
                RouteTransport::Mx => none(label, "mx", Some(tls_name(s.config.mx.tls))),
            }
        }
    }
}

/// The plan of an SMTP next hop (smarthost or route).
fn smtp(route: String, o: &Outbound, s: &Settings) -> Plan {
    let auth = o.credentials.as_ref().map(|(u, _)| {
        let when = if o.auth_plaintext {
            "any channel (auth_plaintext = true)"
        } else if o.tls == crate::config::OutboundTls::Verify {
            "SCRAM-SHA-256, PLAIN or LOGIN over verified TLS"
        } else {
            "SCRAM-SHA-256 over TLS; PLAIN/LOGIN only if the certificate verifies"
        };
        format!("as {u}: {when}")
    });
    Plan {
        route,
        transport: "smtp",
        next_hops: o.hops.iter().map(|e| e.to_string()).collect(),
        tls: Some(tls_name(o.effective_tls())).map(|t| if o.implicit_tls { implicit(t) } else { t }),
        client_certificate: o.client_certificate.as_ref().map(|(c, _)| s.resolve(c).display().to_string()),
        auth,
    }
}

/// The TLS mode name with implicit TLS.
fn implicit(t: &'static str) -> &'static str {
    match t {
        "verify" => "verify (implicit TLS)",
        _ => "encrypt (implicit TLS)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Source;

    #[test]
    fn plans() {
        let src = Source { config: None, data_dir: Some("/d".into()) };
        let text = concat!(
            "[local]\ndomains=[\"here.example\"]\n[relay]\nsmarthost=\"provider.example:587\"\nsmarthost_tls=\"verify\"\n",
            "smarthost_username=\"sat\"\nsmarthost_password_file=\"pw\"\n",
            "[[route]]\nsenders=[\"partner.example\"]\ntransport=\"smtp\"\nnext_hops=[\"gw1:25\",\"gw2:25\"]\ntls=\"encrypt\"\n",
            "client_certificate=\"c.pem\"\nclient_key=\"k.pem\"\n",
            "[[route]]\ndomains=[\"direct.example\"]\ntransport=\"mx\"\n",
        );
        let s = Settings::from_config(Config::parse(text, "t").unwrap(), &src).unwrap();
        let p = plan(&s, "a@partner.example", "b@other.example");
        assert_eq!(p.route, "[[route]] 1: senders partner.example");
        assert_eq!(p.next_hops, ["gw1:25", "gw2:25"]);
        assert_eq!(p.tls, Some("encrypt"));
        assert_eq!(p.client_certificate.as_deref(), Some("/d/c.pem"));
        assert_eq!(p.auth, None);
        assert!(p.lines().iter().any(|l| l == "next hop:    gw1:25, gw2:25 (in order)"), "{:?}", p.lines());
        let p = plan(&s, "a@else.example", "b@other.example");
        assert_eq!((p.route.as_str(), p.tls), ("smarthost (relay.smarthost)", Some("verify")));
        assert!(p.auth.as_deref().is_some_and(|a| a.starts_with("as sat:")), "{p:?}");
        assert_eq!(plan(&s, "a@partner.example", "b@here.example").transport, "maildir");
        let p = plan(&s, "", "b@direct.example");
        assert_eq!((p.transport, p.route.as_str()), ("mx", "[[route]] 2: domains direct.example; MX of direct.example"));
    }
}
