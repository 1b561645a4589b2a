//! When the smarthost client may send its credentials, and with which SASL
//! mechanism (review F8): pure decisions over how the connection is
//! protected and what the server offers, used by `smtp::Conn` and by
//! `postern config check`.
//!
//! A password mechanism (PLAIN, LOGIN) hands the password to whoever holds
//! the connection, so it goes only over TLS whose certificate verified: with
//! `tls = "may"` or `"encrypt"` (smarthost or route) a man in the middle can present any
//! certificate and offer only `AUTH PLAIN LOGIN`. SCRAM-SHA-256 never sends
//! the password and checks the server's signature, so it may run over TLS
//! that did not verify. `auth_plaintext = true` is the operator's
//! explicit opt-out of both rules.
//!
//! May touch: nothing. RFC 4954, RFC 4616 (PLAIN), RFC 7677 (SCRAM-SHA-256).

use crate::config::{tls_name, Outbound, OutboundTls, RouteTransport};

/// How the connection credentials would travel over is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// No TLS.
    Plaintext,
    /// TLS whose server certificate did not verify (or was not checked).
    UnverifiedTls,
    /// TLS with a certificate verified for the server's name.
    VerifiedTls,
}

/// Why no AUTH is attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No TLS and `auth_plaintext = false`.
    NoTls,
    /// Only password mechanisms (PLAIN, LOGIN) are usable, over TLS that did not verify.
    Unverified,
    /// No offered mechanism is one we use.
    NoMechanism,
}

/// SASL mechanisms that send the password itself.
fn sends_password(mech: &str) -> bool {
    matches!(mech, "PLAIN" | "LOGIN")
}

/// The mechanism to authenticate with: the first of `order` (best first)
/// that the server `offered` and that may run over `channel`.
/// `dangerous_plaintext` is `smarthost_auth_plaintext` / a route's `auth_plaintext`.
pub fn pick_mechanism(
    channel: Channel,
    dangerous_plaintext: bool,
    offered: &[String],
    order: &[&'static str],
) -> Result<&'static str, Refusal> {
    if channel == Channel::Plaintext && !dangerous_plaintext {
        return Err(Refusal::NoTls);
    }
    let usable: Vec<&'static str> = order.iter().copied().filter(|m| offered.iter().any(|o| o == m)).collect();
    let safe = |m: &&'static str| dangerous_plaintext || channel == Channel::VerifiedTls || !sends_password(m);
    match (usable.iter().copied().find(safe), usable.first()) {
        (Some(m), _) => Ok(m),
        (None, Some(_)) => Err(Refusal::Unverified),
        (None, None) => Err(Refusal::NoMechanism),
    }
}

/// `config check`'s warning for a password of the smarthost or an smtp
/// route that could go over TLS that does not verify, with the fix;
/// `None` when it cannot.
pub fn config_warning(o: &Outbound) -> Option<String> {
    if o.credentials.is_none() || o.tls == OutboundTls::Verify {
        return None;
    }
    let (tls, plaintext) = (o.key("tls"), o.key("auth_plaintext"));
    Some(if o.auth_plaintext {
        format!(
            "{plaintext} = true: the password ({}) may be sent in the clear or over TLS that does not verify, to anyone \
             on the path; set {tls} = \"verify\" and {plaintext} = false",
            o.label()
        )
    } else {
        format!(
            "{} is set with {tls} = \"{}\": PLAIN/LOGIN are refused (mail waits, 4.7.0) unless the next hop's \
             certificate verifies; set {tls} = \"verify\" (and {} if it uses a private CA)",
            o.key("username"),
            tls_name(o.tls),
            o.key("ca_files"),
        )
    })
}

/// [`config_warning`] for the smarthost and every smtp route.
pub fn config_warnings(c: &crate::config::Config) -> Vec<String> {
    let routes = c.routes.iter().enumerate().filter(|(_, r)| r.transport == RouteTransport::Smtp).map(|(i, r)| Outbound::route(i, r));
    Outbound::smarthost(&c.relay).into_iter().chain(routes).filter_map(|o| config_warning(&o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &[&str] = &["SCRAM-SHA-256", "PLAIN", "LOGIN"];

    fn offered(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn password_mechanisms_need_verified_tls() {
        use Channel::*;
        for (channel, plaintext_ok, offer, want) in [
            (VerifiedTls, false, "PLAIN LOGIN", Ok("PLAIN")),
            (VerifiedTls, false, "LOGIN", Ok("LOGIN")),
            (VerifiedTls, false, "PLAIN SCRAM-SHA-256", Ok("SCRAM-SHA-256")),
            // F8: a man in the middle with any certificate offers only PLAIN/LOGIN.
            (UnverifiedTls, false, "PLAIN LOGIN", Err(Refusal::Unverified)),
            (UnverifiedTls, false, "LOGIN", Err(Refusal::Unverified)),
            (UnverifiedTls, false, "PLAIN SCRAM-SHA-256", Ok("SCRAM-SHA-256")),
            (UnverifiedTls, false, "CRAM-MD5", Err(Refusal::NoMechanism)),
            (Plaintext, false, "PLAIN SCRAM-SHA-256", Err(Refusal::NoTls)),
            // The operator's explicit opt-out.
            (Plaintext, true, "PLAIN", Ok("PLAIN")),
            (UnverifiedTls, true, "LOGIN", Ok("LOGIN")),
            (VerifiedTls, false, "", Err(Refusal::NoMechanism)),
        ] {
            assert_eq!(pick_mechanism(channel, plaintext_ok, &offered(offer), ORDER), want, "{channel:?} {plaintext_ok} {offer:?}");
        }
    }

    #[test]
    fn config_check_explains_the_fix() {
        use crate::config::Relay;
        let mut r = Relay { smarthost: Some("smtp.example:587".parse().unwrap()), ..Relay::default() };
        let w = |r: &Relay| config_warning(&Outbound::smarthost(r).unwrap());
        assert_eq!(w(&r), None, "no credentials");
        r.smarthost_username = Some("u".into());
        r.smarthost_password_file = Some("p".into());
        let text = w(&r).unwrap();
        assert!(text.contains("relay.smarthost_tls = \"verify\"") && text.contains("\"may\""), "{text}");
        r.smarthost_tls = OutboundTls::Verify;
        assert_eq!(w(&r), None);
        r.smarthost_auth_plaintext = true;
        assert_eq!(w(&r), None, "verify is never downgraded");
        r.smarthost_tls = OutboundTls::Encrypt;
        assert!(w(&r).unwrap().contains("relay.smarthost_auth_plaintext = false"));
        // A route names its own keys.
        let c = crate::config::Config::parse(
            "[[route]]\nsenders=[\"p.example\"]\ntransport=\"smtp\"\nnext_hop=\"h:25\"\nusername=\"u\"\npassword_file=\"p\"\n",
            "t",
        )
        .unwrap();
        let all = config_warnings(&c);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].contains("route[1].tls = \"verify\"") && all[0].contains("route[1].ca_files"), "{all:?}");
    }
}
