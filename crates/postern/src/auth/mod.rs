//! SMTP AUTH policy around the SASL machines: which mechanisms a
//! connection may use, the EXTERNAL identity mapping, and the brute-force
//! throttle. Pure functions and an in-memory counter; no I/O.
//!
//! Policy (stricter than sendmail's `AuthOptions=A,p,y`): nothing is
//! offered or accepted before TLS unless the client is in
//! `auth.plaintext_networks`; never anonymous; CRAM-MD5 only under TLS too;
//! -PLUS mechanisms only under TLS (they need channel bindings).

pub mod dovecot;
mod throttle;

use std::net::IpAddr;

use postern_wire::sasl::{Mechanism, Success};

use crate::config::{Auth, ExternalIdentity, Listener};
use crate::tls::ClientCertIdentity;
use crate::users::UserDb;

pub use throttle::{client_key, SharedFacts, Throttle, Verdict, MAX_AUTHCID};

/// An authenticated identity: proof that a SASL exchange succeeded. The
/// fields are private, so the relay decision (which trusts it) can only get
/// one from [`Authenticated::from_exchange`] or, for `postern explain`'s
/// what-if questions, [`Authenticated::dangerous_assume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    user: String,
    mechanism: Mechanism,
}

impl Authenticated {
    /// The identity a successful SASL exchange established: only the wire
    /// crate's SASL machines can build a [`Success`].
    pub(crate) fn from_exchange(success: &Success, mechanism: Mechanism) -> Authenticated {
        Authenticated { user: success.authcid().to_ascii_lowercase(), mechanism }
    }

    /// The identity Dovecot's `OK` established (`auth.backend =
    /// "dovecot"`): only the Dovecot client's session side may call it,
    /// with the `user=` of an `OK` answer to an exchange it relayed.
    pub(crate) fn from_dovecot(user: &str, mechanism: Mechanism) -> Authenticated {
        Authenticated { user: user.to_ascii_lowercase(), mechanism }
    }

    /// The identity of a successful exchange whose password the account
    /// directory checked: the directory's canonical login (`PasswordEntry.user`,
    /// LDAP `login_attribute`) rather than what the client typed, so an
    /// alias or a differently spelled login never becomes another name.
    pub(crate) fn from_directory(success: &Success, mechanism: Mechanism, canonical: Option<&str>) -> Authenticated {
        match canonical {
            Some(c) if !c.is_empty() => Authenticated { user: c.to_ascii_lowercase(), mechanism },
            _ => Authenticated::from_exchange(success, mechanism),
        }
    }

    /// An identity nobody proved: only for `postern explain` and tests,
    /// which ask "what if this user had authenticated". Never on a path that
    /// handles a connection.
    pub fn dangerous_assume(user: &str) -> Authenticated {
        Authenticated { user: user.to_ascii_lowercase(), mechanism: Mechanism::Plain }
    }

    /// The user (lower-case).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The mechanism used.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
}

/// True if any listener may offer a mechanism that needs a
/// plaintext-equivalent secret (CRAM-MD5, DIGEST-MD5).
pub fn plaintext_secret_mechanisms_enabled(c: &crate::config::Config) -> bool {
    c.listeners.iter().any(|l| listener_mechanisms(&c.auth, l).iter().any(|m| m.needs_plaintext_secret()))
}

/// Mechanisms configured for a listener, in order.
pub fn listener_mechanisms(auth: &Auth, l: &Listener) -> Vec<Mechanism> {
    l.auth_mechanisms.as_ref().unwrap_or(&auth.mechanisms).iter().map(|m| m.0).collect()
}

/// Mechanisms usable right now: empty before TLS unless the client is in a
/// plaintext network; -PLUS only with TLS; EXTERNAL only with a verified
/// client certificate.
pub fn usable_mechanisms(auth: &Auth, l: &Listener, tls: bool, client: IpAddr, has_verified_cert: bool) -> Vec<Mechanism> {
    if !tls && !auth.plaintext_networks.iter().any(|n| n.contains(client)) {
        return Vec::new();
    }
    listener_mechanisms(auth, l)
        .into_iter()
        .filter(|m| tls || *m != Mechanism::ScramSha256Plus)
        .filter(|m| *m != Mechanism::External || has_verified_cert)
        .collect()
}

/// Maps a verified client certificate to a user in the database.
///
/// - `cn`: the subject must carry exactly one CN attribute (parsed RDNs,
///   never a DN string split on commas); none or several: no mapping.
/// - `email`: only SAN e-mail addresses in a local domain (`is_local`); a
///   user listing one in `addresses`, else the first one's local part.
/// - `fingerprint`: a user listing the certificate's SHA-256.
pub fn external_user(how: ExternalIdentity, cert: &ClientCertIdentity, db: &UserDb, is_local: impl Fn(&str) -> bool) -> Option<String> {
    cert.verified.as_ref().ok()?;
    let candidate = match how {
        ExternalIdentity::Cn => match cert.cert.subject_cns.as_slice() {
            [cn] if !cn.is_empty() => cn.to_ascii_lowercase(),
            _ => return None,
        },
        ExternalIdentity::Email => {
            let emails: Vec<String> = cert
                .cert
                .sans
                .iter()
                .filter_map(|s| s.strip_prefix("email:"))
                .map(|e| e.to_ascii_lowercase())
                .filter(|e| e.rsplit_once('@').is_some_and(|(local, domain)| !local.is_empty() && is_local(domain)))
                .collect();
            if let Some((name, _)) = db.users.iter().find(|(_, r)| r.addresses.iter().any(|a| emails.contains(&a.to_ascii_lowercase()))) {
                name.clone()
            } else {
                emails.first()?.rsplit_once('@')?.0.to_string()
            }
        }
        ExternalIdentity::Fingerprint => {
            db.users.iter().find(|(_, r)| r.certificates.iter().any(|f| f.eq_ignore_ascii_case(&cert.cert.sha256)))?.0.clone()
        }
    };
    db.users.contains_key(&candidate).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_by_state() {
        let auth = Auth { plaintext_networks: vec!["127.0.0.0/8".parse().unwrap()], ..Auth::default() };
        let l = Listener::new("127.0.0.1:25".parse().unwrap(), crate::config::Role::Smtp);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(usable_mechanisms(&auth, &l, false, far, false).is_empty());
        assert_eq!(usable_mechanisms(&auth, &l, false, lo, false), vec![Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login]);
        assert_eq!(usable_mechanisms(&auth, &l, true, far, false)[0], Mechanism::ScramSha256Plus);
    }
}

#[cfg(test)]
#[path = "external_tests.rs"]
mod external_tests;
