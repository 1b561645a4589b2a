//! Prometheus metrics: the registry, the counters fed by the mail log
//! ([`observe`], called once per log line by `maillog`), the two timed
//! histograms (queue commit, delivery attempt) and the gauges that are
//! filled at scrape time from a [`Snapshot`] (queue, certificates).
//! docs/operations.md ("Metrics") lists every metric with its labels.
//!
//! A leaf: it imports nothing from the crate, so `maillog`, `session` and
//! `queue` can all call it without a cycle. The HTTP endpoint and the
//! scrape-time facts live in `monitor`.
//!
//! May touch: nothing (memory only).

mod observe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use observe::observe;

/// A label set: `(name, value)` pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets of the delivery and commit histograms, in seconds: 1 ms to 5 min.
const LATENCY_BUCKETS: [f64; 16] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Buckets of the arrival-to-delivery delay, in seconds: 10 ms to 5 days.
const DELAY_BUCKETS: [f64; 14] =
    [0.01, 0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 12.0 * 3600.0, 86400.0, 2.0 * 86400.0, 5.0 * 86400.0];
/// At most this many open connections are remembered (client -> listener),
/// so a lost `disconnect` line cannot make the map grow without bound.
const MAX_TRACKED_CLIENTS: usize = 100_000;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn delay_histogram() -> Histogram {
    Histogram::new(DELAY_BUCKETS)
}

/// Every metric of the daemon.
struct Metrics {
    registry: Registry,
    connections: Counters,
    sessions: Gauge,
    received: Counters,
    delivered: Counters,
    deferred: Counters,
    failed: Counters,
    bounces: Counters,
    expired: Counter,
    tls_handshakes: Counters,
    tls_failures: Counters,
    auth_successes: Counters,
    auth_failures: Counters,
    rejects: Counters,
    commit_seconds: Histogram,
    attempt_seconds: Histograms,
    delay_seconds: Histograms,
    queue_messages: Family<Labels, Gauge>,
    queue_bytes: Family<Labels, Gauge>,
    queue_oldest: Gauge,
    queue_corrupt: Gauge,
    cert_expiry: Family<Labels, Gauge>,
    start_time: Gauge,
    build_info: Family<Labels, Gauge>,
    /// Open connections: client text (`[ip]:port`) -> listener name, so a
    /// `queued` line (which names the client) is counted for its listener.
    clients: Mutex<HashMap<String, String>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("postern");
        let m = Metrics {
            registry: Registry::default(),
            connections: Counters::default(),
            sessions: Gauge::default(),
            received: Counters::default(),
            delivered: Counters::default(),
            deferred: Counters::default(),
            failed: Counters::default(),
            bounces: Counters::default(),
            expired: Counter::default(),
            tls_handshakes: Counters::default(),
            tls_failures: Counters::default(),
            auth_successes: Counters::default(),
            auth_failures: Counters::default(),
            rejects: Counters::default(),
            commit_seconds: latency_histogram(),
            attempt_seconds: Histograms::new_with_constructor(latency_histogram),
            delay_seconds: Histograms::new_with_constructor(delay_histogram),
            queue_messages: Family::default(),
            queue_bytes: Family::default(),
            queue_oldest: Gauge::default(),
            queue_corrupt: Gauge::default(),
            cert_expiry: Family::default(),
            start_time: Gauge::default(),
            build_info: Family::default(),
            clients: Mutex::new(HashMap::new()),
        };
        r.register("build_info", "Version of the running postern (value 1)", m.build_info.clone());
        r.register("start_time_seconds", "Unix time the process started", m.start_time.clone());
        r.register("connections", "SMTP connections accepted, by listener", m.connections.clone());
        r.register("sessions", "SMTP sessions open now", m.sessions.clone());
        r.register(
            "messages_received",
            "Messages queued (250 after DATA/BDAT), by listener; `local` for the sendmail command",
            m.received.clone(),
        );
        r.register("recipients_delivered", "Recipients delivered, by transport (maildir, lmtp, smtp, mx, ...)", m.delivered.clone());
        r.register("recipients_deferred", "Delivery attempts that failed temporarily, per recipient, by transport", m.deferred.clone());
        r.register("recipients_failed", "Recipients that failed permanently (bounced), by transport", m.failed.clone());
        r.register("bounces", "Non-delivery reports: queued, or suppressed (null sender)", m.bounces.clone());
        r.register("recipients_expired", "Recipients that outlived queue.max_lifetime (then bounced)", m.expired.clone());
        r.register("tls_handshakes", "Inbound TLS handshakes that succeeded, by protocol version", m.tls_handshakes.clone());
        r.register("tls_handshake_failures", "Inbound TLS handshakes that failed or timed out", m.tls_failures.clone());
        r.register("auth_successes", "SMTP AUTH successes, by mechanism", m.auth_successes.clone());
        r.register(
            "auth_failures",
            "SMTP AUTH failures, by mechanism and result (fail: bad credentials; refused: mechanism not allowed here; banned: throttled client)",
            m.auth_failures.clone(),
        );
        r.register("rejects", "Refused commands and connections, by stage (SMTP verb) and the rule that refused", m.rejects.clone());
        r.register(
            "queue_commit_duration_seconds",
            "Time to make an accepted message durable (spool commit with fsync) before the 250",
            m.commit_seconds.clone(),
        );
        r.register(
            "delivery_attempt_duration_seconds",
            "Duration of one delivery attempt (one route of one message), by transport",
            m.attempt_seconds.clone(),
        );
        r.register(
            "delivery_delay_seconds",
            "Time from arrival to successful delivery, per recipient, by transport",
            m.delay_seconds.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the queue, by state (active: not tried yet, deferred: tried and waiting for a retry, hold)",
            m.queue_messages.clone(),
        );
        r.register("queue_size_bytes", "Size of the queued messages, by state", m.queue_bytes.clone());
        r.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest active or deferred message (0 when there is none)",
            m.queue_oldest.clone(),
        );
        r.register("queue_corrupt_envelopes", "Queue envelopes that cannot be read (see postern queue list)", m.queue_corrupt.clone());
        r.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry (notAfter, unix time) of the server certificate, the outbound client certificate, the built-in CA and the client certificates it issued",
            m.cert_expiry.clone(),
        );
        m.build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())]).set(1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        m.start_time.set(i64::try_from(now).unwrap_or(0));
        Metrics { registry: r, ..m }
    }
}

/// Records how long a spool commit took (called once per accepted message).
pub fn commit_duration(d: Duration) {
    metrics().commit_seconds.observe(d.as_secs_f64());
}

/// Records how long one delivery attempt took; `relay` is the attempt's
/// `relay=` log value (its transport is the part before the first `:`).
pub fn delivery_duration(relay: &str, d: Duration) {
    metrics().attempt_seconds.get_or_create(&vec![("transport", observe::transport(relay))]).observe(d.as_secs_f64());
}

/// Queue state names, as used in labels and `postern status`.
pub const QUEUE_STATES: [&str; 3] = ["active", "deferred", "hold"];

/// The facts read at scrape time (by `monitor`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Messages per state, in the order of [`QUEUE_STATES`].
    pub queue_messages: [u64; 3],
    /// Bytes per state, likewise.
    pub queue_bytes: [u64; 3],
    /// Age of the oldest active or deferred message, seconds.
    pub oldest_age_seconds: u64,
    /// Envelopes that could not be read.
    pub corrupt: u64,
    /// Certificates: `(kind, name, notAfter unix time)`.
    pub certificates: Vec<(String, String, i64)>,
}

/// Content type of [`render`] with `openmetrics == false`.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`render`] with `openmetrics == true`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Sets the scrape-time gauges from `snap` and encodes every metric: in the
/// OpenMetrics text format, or in the classic Prometheus text format 0.0.4
/// (what `promtool check metrics`, curl and older scrapers read).
pub fn render(snap: &Snapshot, openmetrics: bool) -> String {
    metrics().render(snap, openmetrics)
}

impl Metrics {
    fn render(&self, snap: &Snapshot, openmetrics: bool) -> String {
        let m = self;
        for (i, state) in QUEUE_STATES.iter().enumerate() {
            let l = vec![("state", state.to_string())];
            m.queue_messages.get_or_create(&l).set(gauge_value(snap.queue_messages[i]));
            m.queue_bytes.get_or_create(&l).set(gauge_value(snap.queue_bytes[i]));
        }
        m.queue_oldest.set(gauge_value(snap.oldest_age_seconds));
        m.queue_corrupt.set(gauge_value(snap.corrupt));
        // Certificates come and go (renewal, revocation): only the current ones.
        m.cert_expiry.clear();
        for (kind, name, not_after) in &snap.certificates {
            m.cert_expiry.get_or_create(&vec![("kind", kind.clone()), ("name", name.clone())]).set(*not_after);
        }
        let mut out = String::new();
        if encode(&mut out, &m.registry).is_err() {
            return String::new();
        }
        if openmetrics {
            out
        } else {
            to_text_format(&out)
        }
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// OpenMetrics text -> Prometheus text format 0.0.4: a counter family's
/// `# HELP`/`# TYPE` lines name the `_total` sample, and `# EOF` goes.
fn to_text_format(om: &str) -> String {
    let counters: Vec<&str> = om.lines().filter_map(|l| l.strip_prefix("# TYPE ").and_then(|rest| rest.strip_suffix(" counter"))).collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].iter().find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(&name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
