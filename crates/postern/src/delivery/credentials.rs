//! When the smarthost client may send its credentials, and with which SASL
//! mechanism (review F8): pure decisions over how the connection is
//! protected and what the server offers, used by `smtp::Conn` and by
//! `postern config check`.
//!
//! A password mechanism (PLAIN, LOGIN) hands the password to whoever holds
//! the connection, so it goes only over TLS whose certificate verified: with
//! `smarthost_tls = "may"` or `"encrypt"` a man in the middle can present any
//! certificate and offer only `AUTH PLAIN LOGIN`. SCRAM-SHA-256 never sends
//! the password and checks the server's signature, so it may run over TLS
//! that did not verify. `smarthost_auth_plaintext = true` is the operator's
//! explicit opt-out of both rules.
//!
//! May touch: nothing. RFC 4954, RFC 4616 (PLAIN), RFC 7677 (SCRAM-SHA-256).

use crate::config::{OutboundTls, Relay};

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
    /// No TLS and `smarthost_auth_plaintext = false`.
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
/// `dangerous_plaintext` is `smarthost_auth_plaintext`.
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

/// `config check`'s warning for a smarthost password that could go over
/// TLS that does not verify, with the fix; `None` when it cannot.
pub fn config_warning(r: &Relay) -> Option<String> {
    if r.smarthost.is_none() || r.smarthost_username.is_none() || r.smarthost_tls == OutboundTls::Verify {
        return None;
    }
    Some(if r.smarthost_auth_plaintext {
        "smarthost_auth_plaintext = true: the smarthost password may be sent in the clear or over TLS that \
         does not verify, to anyone on the path; set smarthost_tls = \"verify\" and smarthost_auth_plaintext = false"
            .to_string()
    } else {
        format!(
            "smarthost_username is set with smarthost_tls = \"{}\": PLAIN/LOGIN are refused (mail waits, 4.7.0) unless \
             the smarthost's certificate verifies; set smarthost_tls = \"verify\" (and smarthost_ca_files if it uses \
             a private CA)",
            match r.smarthost_tls {
                OutboundTls::None => "none",
                OutboundTls::May => "may",
                OutboundTls::Encrypt => "encrypt",
                OutboundTls::Verify => "verify",
                OutboundTls::Dane => "dane",
            }
        )
    })
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
        let mut r = Relay { smarthost: Some("smtp.example:587".parse().unwrap()), ..Relay::default() };
        assert_eq!(config_warning(&r), None, "no credentials");
        r.smarthost_username = Some("u".into());
        let w = config_warning(&r).unwrap();
        assert!(w.contains("smarthost_tls = \"verify\"") && w.contains("\"may\""), "{w}");
        r.smarthost_tls = OutboundTls::Verify;
        assert_eq!(config_warning(&r), None);
        r.smarthost_auth_plaintext = true;
        assert_eq!(config_warning(&r), None, "verify is never downgraded");
        r.smarthost_tls = OutboundTls::Encrypt;
        assert!(config_warning(&r).unwrap().contains("smarthost_auth_plaintext = false"));
    }
}
