//! Unit tests of the TLS material: errors that name the file, the default
//! certificate, and client-certificate verification against the built-in
//! CA (valid, look-alike CA, revoked).

use super::*;
use crate::ca::{Ca, Kind};
use crate::config::{ClientCertMode, Config};
use crate::settings::{Settings, Source};

fn settings(data_dir: &std::path::Path) -> Settings {
    let cfg = Config::parse("", "t.toml").unwrap();
    Settings::from_config(cfg, &Source { config: None, data_dir: Some(data_dir.to_path_buf()) }).unwrap()
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = load_certs(&missing).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }));
    assert!(e.to_string().starts_with(&format!("{}: cannot read: ", missing.display())), "{e}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    assert_eq!(load_certs(&empty).unwrap_err().to_string(), format!("{}: no certificate found", empty.display()));
    assert!(matches!(load_key(&empty), Err(TlsError::NoPrivateKey { .. })));
}

#[test]
fn default_certificate_and_client_verification() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    // First start: a self-signed certificate; second start: kept.
    let fp = ensure_default_certificate(&s).unwrap().expect("created");
    assert_eq!(ensure_default_certificate(&s).unwrap(), None);
    let tls = ServerTls::load(&s).unwrap();
    assert_eq!(tls.fingerprint, fp);
    assert!(!tls.can_require(), "no client CA yet");
    assert!(!Arc::ptr_eq(&tls.config(ClientCertMode::Required), &tls.config(ClientCertMode::Optional)), "never falls back (F5)");

    let ca = Ca::new(dir.path());
    ca.init("Test CA", 30, false).unwrap();
    let (_, alice, _) = ca.issue(Kind::Client, "alice", &[], 30, false).unwrap();
    let s = settings(dir.path());
    assert!(ServerTls::load(&s).unwrap().can_require());
    let verifier = CertVerifier::load(&s).unwrap();
    let id = verifier.identify(&load_certs(&alice).unwrap()).unwrap();
    assert_eq!(id.verified.as_deref(), Ok("CN=Test CA"), "{}", id.verdict());
    assert!(id.cert.subject.contains("alice"), "{}", id.cert.subject);

    // Same CA name, another key: never verifies.
    let other = tempfile::tempdir().unwrap();
    let fake = Ca::new(other.path());
    fake.init("Test CA", 30, false).unwrap();
    let (_, mallory, _) = fake.issue(Kind::Client, "mallory", &[], 30, false).unwrap();
    let id = verifier.identify(&load_certs(&mallory).unwrap()).unwrap();
    assert!(id.verified.is_err(), "{}", id.verdict());

    // Revoked: the CRL is honoured once reloaded.
    let serial = ca.list().unwrap().into_iter().find(|i| i.kind == Kind::Client).unwrap().serial;
    ca.revoke(&serial).unwrap();
    let verifier = CertVerifier::load(&settings(dir.path())).unwrap();
    let id = verifier.identify(&load_certs(&alice).unwrap()).unwrap();
    assert_eq!(id.verified, Err("certificate revoked".to_string()));
}

#[test]
fn verify_errors_read_as_before() {
    assert_eq!(VerifyError::NoClientCa.to_string(), "no client CA configured");
    assert_eq!(VerifyError::Rejected(webpki::Error::UnknownIssuer).to_string(), "unknown issuer");
    assert_eq!(VerifyError::WrongName("mx.example".into()).to_string(), "certificate not valid for mx.example");
}

/// F5: `required` without a client CA fails closed: a handshake without a
/// certificate fails instead of falling back to `optional`.
#[tokio::test]
async fn required_without_client_ca_refuses_the_handshake() {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    ensure_default_certificate(&s).unwrap();
    let tls = ServerTls::load(&s).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let (cert_path, _) = server_paths(&s);
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(cert_path).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = s.hostname.clone();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio_rustls::TlsAcceptor::from(tls.config(ClientCertMode::Required)).accept(b);
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let connect = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, a);
    let (server, _client) = tokio::join!(accept, connect);
    assert!(server.is_err(), "the server accepted a client without a certificate");
}
