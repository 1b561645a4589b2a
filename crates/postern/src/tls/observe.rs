//! An observed copy of a [`ClientTls`] for `postern check smarthost`: the
//! same rustls config (same CAs, same verifier, same client certificate),
//! with the server certificate verifier and the client certificate
//! resolver wrapped so that the check can show what happened inside the
//! handshake: the server's chain (also when it did not verify), whether the
//! server sent a CertificateRequest (RFC 8446 §4.3.2, RFC 5246 §7.4.4) with
//! which acceptable CA names, and whether we answered with a certificate.
//!
//! May touch: nothing (wraps an already loaded config).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::client::{server_verifier, ClientTls};
use super::TlsError;

/// What the handshake showed (filled in while it runs).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The server's chain as sent, end entity first (DER).
    pub chain: Vec<CertificateDer<'static>>,
    /// The server sent a CertificateRequest.
    pub cert_requested: bool,
    /// The acceptable CA names of the request (RFC 4514 text), if it sent any.
    pub acceptable_cas: Vec<String>,
    /// We answered with a certificate.
    pub cert_sent: bool,
}

/// The shared record of one observed handshake.
#[derive(Debug, Default)]
pub struct Observation(Mutex<Seen>);

impl Observation {
    /// What was seen so far.
    pub fn seen(&self) -> Seen {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Seen)) {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Arc<Observation>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.with(|s| {
            s.chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        });
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct RecordingResolver {
    inner: Arc<dyn ResolvesClientCert>,
    seen: Arc<Observation>,
}

impl ResolvesClientCert for RecordingResolver {
    // rustls calls this only when the server sent a CertificateRequest.
    fn resolve(&self, root_hint_subjects: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let answer = self.inner.resolve(root_hint_subjects, sigschemes);
        self.seen.with(|s| {
            s.cert_requested = true;
            s.acceptable_cas = root_hint_subjects.iter().map(|d| dn_text(d)).collect();
            s.cert_sent = answer.is_some();
        });
        answer
    }
    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// A distinguished name from a CertificateRequest as RFC 4514 text. rustls
/// hands over the DER of the Name; older versions left out the outer
/// SEQUENCE header, so that form is accepted too.
fn dn_text(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    let parse = |d: &[u8]| match x509_parser::x509::X509Name::from_der(d) {
        Ok((rest, name)) if rest.is_empty() && !name.to_string().is_empty() => Some(name.to_string()),
        _ => None,
    };
    let mut wrapped = vec![0x30];
    match der.len() {
        n if n < 0x80 => wrapped.push(n as u8),
        n if n < 0x100 => wrapped.extend_from_slice(&[0x81, n as u8]),
        n => wrapped.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    wrapped.extend_from_slice(der);
    parse(der).or_else(|| parse(&wrapped)).unwrap_or_else(|| format!("(unparsable, {} octets)", der.len()))
}

impl ClientTls {
    /// `dangerous_`: a copy of this config whose handshakes are recorded in
    /// the returned [`Observation`]; the verifier and the certificate sent
    /// are the same. For the smarthost self-test only, never for delivery.
    pub fn dangerous_observed(&self) -> Result<(ClientTls, Arc<Observation>), TlsError> {
        let seen = Arc::new(Observation::default());
        let mut config = (*self.config).clone();
        let inner = server_verifier(self.policy, &self.roots)?;
        config.dangerous().set_certificate_verifier(Arc::new(RecordingVerifier { inner, seen: seen.clone() }));
        config.client_auth_cert_resolver =
            Arc::new(RecordingResolver { inner: config.client_auth_cert_resolver.clone(), seen: seen.clone() });
        Ok((ClientTls { config: Arc::new(config), roots: self.roots.clone(), policy: self.policy, dane: None }, seen))
    }
}

/// The validity period of a certificate, unix seconds (not before, not after).
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_request_names_print_as_text() {
        // SET { SEQUENCE { OID 2.5.4.3 (CN), UTF8String "postern CA" } }: the Name without its outer header, then with it.
        let mut inner = vec![0x31, 0x13, 0x30, 0x11, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x0a];
        inner.extend_from_slice(b"postern CA");
        assert_eq!(dn_text(&inner), "CN=postern CA");
        let mut full = vec![0x30, 0x15];
        full.extend_from_slice(&inner);
        assert_eq!(dn_text(&full), "CN=postern CA");
        assert!(dn_text(b"\x31\x10\x30").starts_with("(unparsable"), "{}", dn_text(b"\x31\x10\x30"));
    }
}
