//! The per-chunk retry policy: exponential backoff with full jitter.

use std::time::Duration;

use crate::engine::{EngineError, ErrorClass};

/// How chunk failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Provider calls per chunk in all (first try included).
    pub max_attempts: u32,
    /// Backoff base: attempt n waits up to `base * 2^(n-1)`.
    pub base_delay: Duration,
    /// Cap on any one wait, Retry-After included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Fail the chunk.
    GiveUp,
}

impl RetryPolicy {
    /// Decide after attempt number `attempt` (1-based) failed with `err`.
    /// `jitter` is a uniform random number in `[0, 1)`, passed in so the
    /// policy stays deterministic under test.
    pub fn decide(&self, attempt: u32, err: &EngineError, jitter: f64) -> RetryDecision {
        if err.class == ErrorClass::Permanent || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let exp = self
            .base_delay
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_delay);
        let jittered = exp.mul_f64(jitter.clamp(0.0, 1.0));
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
    use rstest::rstest;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
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
            RetryDecision::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        let e = EngineError::transient("503");
        assert_eq!(policy().decide(3, &e, 0.5), RetryDecision::GiveUp);
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
