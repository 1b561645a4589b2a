//! Policy discovery over the network: the `_mta-sts.DOMAIN` TXT lookup
//! and the HTTPS fetch of `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
//! (RFC 8461 §3.3): a WebPKI-verifying rustls client (SNI and name
//! `mta-sts.DOMAIN`), hyper's HTTP/1.1 client, no redirects, status 200
//! only, `Content-Type: text/plain`, at most 64 KiB, one time limit for
//! the whole fetch. Behind the [`Discovery`] trait so the cache logic can
//! be tested without a network.
//!
//! May touch: DNS (`mx.nameservers` or the system's), outbound TCP to
//! port `mta_sts.https_port` of `mta-sts.DOMAIN`; reads the CA files when
//! built. RFCs: 8461 §3.1, §3.3; 9110 (HTTP), 6125 (names in certificates).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::OutboundTls;
use crate::delivery::tlsrpt::FailureType;
use crate::delivery::BoxFuture;
use crate::tls::ClientTls;

/// Largest policy body read (RFC 8461 §3.3: senders may limit it to 64 KB).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Why the policy could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// `mta-sts.DOMAIN` has no address, or the lookup failed.
    #[error("DNS lookup of {host}: {reason}")]
    Dns {
        /// The policy host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// Every address refused, or only loopback addresses (refused unless
    /// `mx.dangerous_allow_loopback`).
    #[error("connect to {host}: {reason}")]
    Connect {
        /// The policy host.
        host: String,
        /// The last error.
        reason: String,
    },
    /// The HTTPS certificate did not verify for `mta-sts.DOMAIN`.
    #[error("certificate of {host}: {reason}")]
    Certificate {
        /// The policy host.
        host: String,
        /// What rustls said.
        reason: String,
    },
    /// The TLS handshake failed otherwise.
    #[error("TLS with {host}: {reason}")]
    Tls {
        /// The policy host.
        host: String,
        /// What rustls said.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// A redirect, which MTA-STS forbids following (§3.3).
    #[error("HTTP {status} redirect to {location:?} (not followed, RFC 8461 §3.3)")]
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// Any other status than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// Not `text/plain`.
    #[error("Content-Type {0:?} is not text/plain")]
    ContentType(String),
    /// Longer than [`MAX_POLICY_BYTES`].
    #[error("policy longer than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("policy is not UTF-8 text")]
    NotText,
    /// `mta_sts.fetch_timeout` passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl FetchError {
    /// The TLS-RPT result type (RFC 8460 §4.3.2.2).
    pub fn failure_type(&self) -> FailureType {
        match self {
            FetchError::Certificate { .. } => FailureType::StsWebpkiInvalid,
            _ => FailureType::StsPolicyFetchError,
        }
    }
}

/// Where policies come from.
pub trait Discovery: Send + Sync {
    /// The TXT records of `_mta-sts.DOMAIN` (character strings joined);
    /// empty for NXDOMAIN or no TXT records; `Err` when the DNS failed.
    fn txt<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// The policy body of `domain`.
    fn fetch<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, FetchError>>;
}

/// The real DNS and HTTPS.
pub struct Network {
    resolver: hickory_resolver::TokioResolver,
    tls: Arc<ClientTls>,
    port: u16,
    timeout: Duration,
    allow_loopback: bool,
}

impl Network {
    /// A resolver for `nameservers` (empty: the system's) and a verifying
    /// TLS client over `cas`.
    pub fn new(nameservers: &[SocketAddr], cas: &[PathBuf], port: u16, timeout: Duration, allow_loopback: bool) -> Result<Network, String> {
        let mut builder = crate::inbound::dns::builder(nameservers).map_err(|e| format!("DNS configuration: {e}"))?;
        builder.options_mut().cache_size = 256;
        let tls = ClientTls::build(OutboundTls::Verify, cas, None).map_err(|e| e.to_string())?;
        Ok(Network { resolver: builder.build(), tls: Arc::new(tls), port, timeout, allow_loopback })
    }

    async fn fetch_inner(&self, domain: &str) -> Result<String, FetchError> {
        let host = format!("mta-sts.{domain}");
        let ips: Vec<IpAddr> = match self.resolver.lookup_ip(format!("{host}.").as_str()).await {
            Ok(l) => l.iter().collect(),
            Err(e) => return Err(FetchError::Dns { host, reason: e.to_string() }),
        };
        let mut last = String::from("no address");
        let mut tcp = None;
        for ip in ips {
            let ip = ip.to_canonical();
            if !self.allow_loopback && (ip.is_loopback() || ip.is_unspecified()) {
                last = format!("{ip} is this host (mx.dangerous_allow_loopback is off)");
                continue;
            }
            match TcpStream::connect((ip, self.port)).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{ip}:{}: {e}", self.port),
            }
        }
        let tcp = tcp.ok_or_else(|| FetchError::Connect { host: host.clone(), reason: last })?;
        let name = ServerName::try_from(host.clone()).map_err(|e| FetchError::Tls { host: host.clone(), reason: e.to_string() })?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.config.clone()).connect(name, tcp).await.map_err(|e| {
            let cert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            let reason = e.to_string();
            if cert {
                FetchError::Certificate { host: host.clone(), reason }
            } else {
                FetchError::Tls { host: host.clone(), reason }
            }
        })?;
        let http = |e: hyper::Error| FetchError::Http(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await.map_err(http)?;
        let driver = tokio::spawn(conn);
        let authority = if self.port == 443 { host.clone() } else { format!("{host}:{}", self.port) };
        let req = hyper::Request::get("/.well-known/mta-sts.txt")
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, concat!("postern/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection() {
                let location = resp.headers().get(hyper::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                return Err(FetchError::Redirect { status, location });
            }
            if status != 200 {
                return Err(FetchError::Status(status));
            }
            let ctype = resp.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            if !is_text_plain(&ctype) {
                return Err(FetchError::ContentType(ctype));
            }
            let body = Limited::new(resp.into_body(), MAX_POLICY_BYTES).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    FetchError::TooLarge
                } else {
                    FetchError::Http(e.to_string())
                }
            })?;
            String::from_utf8(body.to_bytes().to_vec()).map_err(|_| FetchError::NotText)
        }
        .await;
        driver.abort();
        result
    }
}

/// `text/plain`, with or without parameters (`; charset=utf-8`). Pure.
pub fn is_text_plain(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
}

impl Discovery for Network {
    fn txt<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let name = format!("_mta-sts.{domain}.");
            match tokio::time::timeout(self.timeout, self.resolver.txt_lookup(name.as_str())).await {
                Err(_) => Err(format!("timed out after {:?}", self.timeout)),
                Ok(Ok(l)) => {
                    Ok(l.iter().map(|t| t.txt_data().iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>()).collect())
                }
                Ok(Err(e)) if crate::inbound::dns::no_such_records(&e) => Ok(Vec::new()),
                Ok(Err(e)) => Err(e.to_string()),
            }
        })
    }

    fn fetch<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<String, FetchError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.fetch_inner(domain)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout(self.timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, ok) in [
            ("text/plain", true),
            ("text/plain; charset=utf-8", true),
            ("Text/Plain ;charset=us-ascii", true),
            ("text/html", false),
            ("", false),
            ("text/plainx", false),
        ] {
            assert_eq!(is_text_plain(ct), ok, "{ct:?}");
        }
        assert_eq!(FetchError::Certificate { host: "h".into(), reason: "r".into() }.failure_type(), FailureType::StsWebpkiInvalid);
        assert_eq!(FetchError::Status(404).failure_type(), FailureType::StsPolicyFetchError);
    }
}
