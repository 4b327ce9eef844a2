//! Backoff, written once: the waits of every retry loop of both forms (a
//! chunk's provider calls, DynamoDB transactions and unprocessed items, a
//! requeue after a storage fault, the emulator's runtime loop), and the
//! per-chunk retry policy built on it. The forms only sleep.

use std::time::Duration;

use crate::engine::{EngineError, ErrorClass};

/// Exponential backoff: wait `n` (0-based) is at most `base * 2^n`,
/// capped at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait's ceiling.
    pub base: Duration,
    /// No wait is longer.
    pub cap: Duration,
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The ceiling of wait `n` (0-based): `base * 2^n`, capped.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.base
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(self.cap)
    }

    /// Wait `n` with full jitter: uniform in `[0, ceiling(n))`, `jitter`
    /// being a uniform random number in `[0, 1)` passed in so callers stay
    /// deterministic under test.
    pub fn full_jitter(&self, n: u32, jitter: f64) -> Duration {
        self.ceiling(n).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// How chunk failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Provider calls per chunk in all (first try included).
    pub max_attempts: u32,
    /// Backoff base: attempt n waits up to `base * 2^(n-1)`.
    pub base_delay: Duration,
    /// Cap on any one wait, Retry-After included.
    pub max_delay: Duration,
    /// How long a chunk may wait on the provider's rate limits (429s)
    /// without those answers counting as attempts
    /// (`LOTSAWA_THROTTLE_BUDGET_MS`); past it a 429 is an attempt like
    /// any failure.
    pub throttle_budget: Duration,
}

/// The default throttle budget: ten minutes.
pub const DEFAULT_THROTTLE_BUDGET: Duration = Duration::from_secs(600);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(60),
            throttle_budget: DEFAULT_THROTTLE_BUDGET,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// A rate limit: wait this long, then try again, the attempt not
    /// counted.
    Throttled(Duration),
    /// Fail the chunk.
    GiveUp,
}

impl RetryPolicy {
    /// Decide after a call of a chunk failed with `err`: `attempt` counted
    /// attempts so far (1-based, this one included), `throttled` the time
    /// the chunk already waited on 429s. The shared limiter's waits never
    /// count; a provider's 429 does not count while the chunk's throttled
    /// time is within the budget (its wait is then added to it).
    pub fn after_failure(
        &self,
        attempt: u32,
        throttled: Duration,
        err: &EngineError,
        jitter: f64,
    ) -> RetryDecision {
        use crate::engine::Throttle;
        match err.throttle {
            Some(Throttle::Limiter) => {
                RetryDecision::Throttled(err.retry_after.unwrap_or(crate::limits::DEFAULT_PAUSE))
            }
            Some(Throttle::Provider) if throttled < self.throttle_budget => {
                RetryDecision::Throttled(
                    crate::limits::throttle_wait(err.retry_after).min(self.max_delay),
                )
            }
            _ => self.decide(attempt, err, jitter),
        }
    }

    /// Decide after attempt number `attempt` (1-based) failed with `err`.
    /// `jitter` is a uniform random number in `[0, 1)`, passed in so the
    /// policy stays deterministic under test.
    pub fn decide(&self, attempt: u32, err: &EngineError, jitter: f64) -> RetryDecision {
        if err.class == ErrorClass::Permanent || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let jittered = Backoff::new(self.base_delay, self.max_delay)
            .full_jitter(attempt.saturating_sub(1), jitter);
        let wait = match err.retry_after {
            Some(ra) => jittered.max(ra.min(self.max_delay)),
            None => jittered,
        };
        RetryDecision::RetryAfter(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_never_overflows() {
        let b = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));
        let ms: Vec<u128> = (0..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [25, 50, 100, 200, 400, 800, 1000]);
        assert_eq!(b.ceiling(40), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.full_jitter(2, 0.5), Duration::from_millis(50));
        assert_eq!(b.full_jitter(2, 0.0), Duration::ZERO);
        assert_eq!(b.full_jitter(2, 7.0), Duration::from_millis(100));
    }
    use rstest::rstest;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            throttle_budget: Duration::from_secs(30),
        }
    }

    #[rstest]
    #[case(1, 0.999, 99)]
    #[case(2, 0.999, 199)]
    #[case(1, 0.0, 0)]
    #[case(2, 0.5, 100)]
    fn backoff_is_exponential_with_full_jitter(
        #[case] attempt: u32,
        #[case] jitter: f64,
        #[case] want_ms: u128,
    ) {
        let e = EngineError::transient("timeout");
        match policy().decide(attempt, &e, jitter) {
            RetryDecision::RetryAfter(d) => assert_eq!(d.as_millis(), want_ms),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        let e = EngineError::transient("503");
        assert_eq!(policy().decide(3, &e, 0.5), RetryDecision::GiveUp);
    }

    #[test]
    fn rate_limits_do_not_spend_attempts_within_the_budget() {
        let p = policy();
        let e = EngineError::throttled(
            "the provider answered HTTP 429",
            Some(Duration::from_secs(4)),
        );
        // Even on the last attempt, within the budget: a wait, not a failure.
        assert_eq!(
            p.after_failure(3, Duration::from_secs(10), &e, 0.5),
            RetryDecision::Throttled(Duration::from_secs(4))
        );
        // Past the budget it counts: the last attempt gives up.
        assert_eq!(
            p.after_failure(3, Duration::from_secs(30), &e, 0.5),
            RetryDecision::GiveUp
        );
        assert!(matches!(
            p.after_failure(1, Duration::from_secs(30), &e, 0.5),
            RetryDecision::RetryAfter(_)
        ));
        // The shared limiter's waits never count.
        let w = EngineError::limiter_wait(Duration::from_millis(1500));
        assert_eq!(
            p.after_failure(3, Duration::from_secs(3600), &w, 0.5),
            RetryDecision::Throttled(Duration::from_millis(1500))
        );
        // A 429 that asks for no pause still spends budget.
        let zero = EngineError::throttled("429", Some(Duration::ZERO));
        assert_eq!(
            p.after_failure(1, Duration::ZERO, &zero, 0.5),
            RetryDecision::Throttled(Duration::from_secs(1))
        );
        // Other failures are decided as before.
        let t = EngineError::transient("503");
        assert_eq!(
            p.after_failure(3, Duration::ZERO, &t, 0.5),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let e = EngineError::permanent("400 bad request");
        assert_eq!(policy().decide(1, &e, 0.5), RetryDecision::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut e = EngineError::transient("429");
        e.retry_after = Some(Duration::from_secs(2));
        assert_eq!(
            policy().decide(1, &e, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        e.retry_after = Some(Duration::from_secs(3600));
        assert_eq!(
            policy().decide(1, &e, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(10))
        );
    }
}
