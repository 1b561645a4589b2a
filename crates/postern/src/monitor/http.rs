//! The metrics endpoint: `GET /metrics` over HTTP/1.1 (hyper), nothing
//! else. Bounded like the SMTP listeners: a request head of at most
//! [`MAX_REQUEST`] octets, [`HEADER_TIMEOUT`] to send it, [`CONNECTION_TIMEOUT`]
//! per connection, at most [`MAX_CONNECTIONS`] at once (more are closed).
//!
//! May touch: the metrics listening socket and its connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::Monitor;
use crate::metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// Largest request head (request line and headers) read, in octets; hyper
/// answers 431 beyond it.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (keep-alive included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// What the endpoint needs: the page for a scrape. [`Monitor`] is the real
/// one; tests use a fixed page.
pub trait Scrape: Send + Sync + 'static {
    /// The metrics page in the OpenMetrics or the classic text format.
    fn scrape(&self, openmetrics: bool) -> String;
}

impl Scrape for Monitor {
    fn scrape(&self, openmetrics: bool) -> String {
        Monitor::scrape(self, openmetrics)
    }
}

/// Serves the endpoint on `listener` until shutdown.
pub async fn serve(listener: TcpListener, source: Arc<dyn Scrape>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(source, &req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_REQUEST);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// One request: `GET`/`HEAD /metrics` -> 200, another path -> 404,
/// another method -> 405. The format follows `Accept` (OpenMetrics when
/// the scraper asks for it, as Prometheus does; else text 0.0.4).
async fn respond(source: Arc<dyn Scrape>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found; metrics are at /metrics");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let openmetrics = req.headers().get_all(ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    // The spool scan and certificate reads are blocking file I/O.
    let Ok(page) = tokio::task::spawn_blocking(move || source.scrape(openmetrics)).await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed");
    };
    let mut r = Response::new(Full::new(Bytes::from(page)));
    let ct = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { TEXT_CONTENT_TYPE };
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}
