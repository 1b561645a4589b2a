//! The reporter's background task: writes the day's counts every
//! `tls_rpt.save_interval` (and at shutdown), and once a day, after the
//! UTC day boundary plus a random delay (RFC 8460 §4.1: spread the load
//! on report receivers), sends the finished days' reports. Run by the
//! scheduler, which takes the queued reports' ids.
//!
//! May touch: `DATA/tlsrpt/`, DNS and the spool (through `send.rs`).
//! RFCs: 8460 §4.1.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::report::{day_of, day_start};
use super::send::{queued_ids, send_day};
use super::store::Reporter;
use crate::maillog;
use crate::settings::Settings;
use crate::spool::{QueueId, Spool};
use crate::time::now_unix;

/// The longest random delay after midnight UTC before reports go out.
pub const MAX_DELAY: u64 = 3600;

/// When the reports of the day before `now`'s day go out: that day's
/// midnight plus `jitter` seconds (below [`MAX_DELAY`]). Pure.
pub fn send_time(now: u64, jitter: u64) -> u64 {
    day_start(day_of(now)) + jitter % MAX_DELAY
}

/// Runs until `shutdown`; `settings` gives the current settings.
pub async fn run(
    reporter: Arc<Reporter>,
    settings: impl Fn() -> Arc<Settings> + Send + 'static,
    spool: Spool,
    queued: mpsc::UnboundedSender<QueueId>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Today's run: if it is already past (a restart), it happens at once.
    let mut send_at = send_time(now_unix(), rand::random::<u64>());
    loop {
        let s = settings();
        reporter.set_max_domains(s.config.tls_rpt.max_domains);
        let now = now_unix();
        let wait = s.config.tls_rpt.save_interval.min(Duration::from_secs(send_at.saturating_sub(now))).max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|v| *v) => break,
        }
        let now = now_unix();
        if let Err(e) = reporter.save_at(now) {
            maillog::error(&[("error", &format!("tlsrpt: cannot save counts in {}: {e}", reporter.dir().display()))]);
        }
        if now >= send_at {
            if s.config.tls_rpt.enabled {
                for day in reporter.pending(now) {
                    let sent = send_day(&reporter, &s, &spool, day, now).await;
                    for id in queued_ids(&sent) {
                        let _ = queued.send(id);
                    }
                }
            }
            send_at = send_time(now + 86_400, rand::random::<u64>());
        }
    }
    if let Err(e) = reporter.save_at(now_unix()) {
        maillog::error(&[("error", &format!("tlsrpt: cannot save counts in {}: {e}", reporter.dir().display()))]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::tlsrpt::report::parse_day;

    #[test]
    fn reports_go_out_after_midnight_utc_with_a_delay() {
        let midnight = day_start(parse_day("2026-12-06").unwrap());
        assert_eq!(send_time(midnight + 5000, 0), midnight);
        assert_eq!(send_time(midnight + 86_399, 1234), midnight + 1234);
        assert_eq!(send_time(midnight, MAX_DELAY + 7), midnight + 7);
        for j in [0, 1, u64::MAX] {
            let t = send_time(midnight + 86_400, j);
            assert!(t >= midnight + 86_400 && t < midnight + 86_400 + MAX_DELAY);
        }
    }
}
