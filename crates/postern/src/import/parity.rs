//! Decision parity: replays a table of SMTP sessions ([`Probe`]) against a
//! daemon and classifies each reply ([`Verdict`]), so the source MTA and
//! postern with the imported configuration can be compared step by step
//! ([`compare`]). Used by `postern import … --verify` and the interop tests.
//!
//! A probe picks the client address (any 127/8 address: the source address
//! is bound, so `mynetworks`-style rules see it), the listener (25, 587,
//! 465), STARTTLS, a client certificate (trusted, look-alike issuer,
//! self-signed, none), AUTH, the sender and the recipients.
//!
//! May touch: outbound TCP to the daemons under test; the certificate
//! files named in [`CertFiles`]. RFCs: 5321, 3207, 4954, 8314.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// Port 25 style (STARTTLS optional).
    Smtp,
    /// Submission, 587 style.
    Submission,
    /// Implicit TLS, 465 style.
    Smtps,
}

/// Which client certificate the probe presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCert {
    /// None.
    #[default]
    None,
    /// Issued by the CA the configuration trusts.
    Trusted,
    /// Issued by a CA with the trusted CA's subject but another key.
    LookAlike,
    /// Self-signed.
    SelfSigned,
}

/// One session of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// A short name for the report.
    pub name: String,
    /// The client's (source) address, 127/8 on a test machine.
    pub client_ip: IpAddr,
    /// The listener.
    pub port: Port,
    /// Issue STARTTLS (ignored for [`Port::Smtps`]).
    #[serde(default)]
    pub starttls: bool,
    /// The client certificate.
    #[serde(default)]
    pub cert: ClientCert,
    /// AUTH PLAIN with (user, password), if any.
    #[serde(default)]
    pub auth: Option<(String, String)>,
    /// MAIL FROM address ("" for <>).
    pub mail_from: String,
    /// RCPT TO addresses.
    pub rcpts: Vec<String>,
}

/// The class of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Class {
    /// 2xx/3xx.
    Accept,
    /// 4xx.
    TempFail,
    /// 5xx.
    PermFail,
    /// The step was not taken (an earlier step ended the session, or AUTH
    /// was not offered).
    NotReached,
}

/// What one probe got.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// AUTH, when the probe authenticates.
    pub auth: Option<Class>,
    /// MAIL FROM.
    pub mail: Class,
    /// Each RCPT TO, in order.
    pub rcpts: Vec<Class>,
}

/// The daemon under test: its listeners.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Address of each listener it has.
    pub addrs: HashMap<Port, SocketAddr>,
}

/// Client certificates and keys (PEM) for the probes.
#[derive(Debug, Clone, Default)]
pub struct CertFiles {
    /// By kind: (certificate chain, key).
    pub files: HashMap<String, (PathBuf, PathBuf)>,
}

/// One difference between the source and postern.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The probe.
    pub probe: String,
    /// "auth", "mail" or "rcpt N".
    pub step: String,
    /// The source daemon's class.
    pub source: Class,
    /// postern's class.
    pub postern: Class,
    /// Why this is a deliberate postern choice, when it is one.
    pub explained: Option<String>,
}

/// Replays `probe` against `target`. Network errors count as
/// [`Class::NotReached`] for the steps not taken.
pub async fn replay(_target: &Target, _certs: &CertFiles, probe: &Probe) -> Verdict {
    // Stub: the engine is written in its own change.
    Verdict {
        auth: probe.auth.as_ref().map(|_| Class::NotReached),
        mail: Class::NotReached,
        rcpts: vec![Class::NotReached; probe.rcpts.len()],
    }
}

/// Compares two runs of the same probes (same order).
pub fn compare(probes: &[Probe], source: &[Verdict], postern: &[Verdict]) -> Vec<Difference> {
    let mut out = Vec::new();
    for ((p, a), b) in probes.iter().zip(source).zip(postern) {
        let mut step = |step: String, x: Class, y: Class| {
            if x != y {
                out.push(Difference { probe: p.name.clone(), step, source: x, postern: y, explained: None });
            }
        };
        if let (Some(x), Some(y)) = (a.auth, b.auth) {
            step("auth".into(), x, y);
        }
        step("mail".into(), a.mail, b.mail);
        for (i, (x, y)) in a.rcpts.iter().zip(&b.rcpts).enumerate() {
            step(format!("rcpt {}", i + 1), *x, *y);
        }
    }
    out
}
