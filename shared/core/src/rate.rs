//! Per-tenant token buckets for job creation: the arithmetic, kept by the
//! stores (a bucket is `tokens` as of `at`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A creation rate: `per_minute` tokens a minute, at most `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per minute.
    pub per_minute: u32,
    /// Most tokens a bucket holds (and a new bucket starts with).
    pub burst: u32,
}

/// A bucket after one request: its new level, and how long to wait when
/// the request found it empty (`None`: a token was taken).
pub fn take(
    limit: RateLimit,
    tokens: Option<f64>,
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (f64, Option<Duration>) {
    let burst = f64::from(limit.burst.max(1));
    let per_ms = f64::from(limit.per_minute.max(1)) / 60_000.0;
    let level = match (tokens, at) {
        (Some(t), Some(at)) => {
            let elapsed = (now - at).num_milliseconds().max(0) as f64;
            (t + elapsed * per_ms).min(burst)
        }
        _ => burst,
    };
    if level >= 1.0 {
        (level - 1.0, None)
    } else {
        let wait_ms = ((1.0 - level) / per_ms).ceil().max(1.0);
        (level, Some(Duration::from_millis(wait_ms as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 2,
        };
        let t0 = Utc::now();
        let (t, w) = take(limit, None, None, t0);
        assert_eq!((t, w), (1.0, None));
        let (t, w) = take(limit, Some(t), Some(t0), t0);
        assert_eq!((t, w), (0.0, None));
        let (t, w) = take(limit, Some(t), Some(t0), t0);
        assert_eq!(t, 0.0);
        assert_eq!(w, Some(Duration::from_secs(1)));
        // Half a second later: half a token, half a second to wait.
        let half = t0 + chrono::Duration::milliseconds(500);
        let (_, w) = take(limit, Some(0.0), Some(t0), half);
        assert_eq!(w, Some(Duration::from_millis(500)));
        // A long pause refills only up to the burst.
        let later = t0 + chrono::Duration::hours(1);
        let (t, w) = take(limit, Some(0.0), Some(t0), later);
        assert_eq!((t, w), (1.0, None));
    }
}
