//! Retry timing, pure: exponential from `queue.retry_min`, capped at
//! `queue.retry_max`, with ±10% jitter so retries of many messages do not
//! arrive in step (chasquid's `nextDelay`, Postfix's backoff).
//!
//! May touch: nothing.

use std::time::Duration;

/// The delay before attempt `attempts + 1`, given `attempts` made so far
/// (≥ 1) and `jitter` in [0, 1).
pub fn retry_delay(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp.min(31)).min(max);
    let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        let table = [(1, 0.5, 300), (2, 0.5, 600), (3, 0.5, 1200), (4, 0.5, 2400), (5, 0.5, 3600), (40, 0.5, 3600)];
        for (attempts, jitter, want) in table {
            assert_eq!(retry_delay(attempts, min, max, jitter).as_secs(), want, "attempts {attempts}");
        }
        assert_eq!(retry_delay(1, min, max, 0.0).as_secs(), 270);
        assert_eq!(retry_delay(1, min, max, 0.999_999).as_secs(), 329);
        assert_eq!(retry_delay(1, Duration::ZERO, max, 0.5).as_secs(), 1);
    }
}
