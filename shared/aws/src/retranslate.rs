//! Re-translations in the cloud: the API sends each to the worker's queue
//! as a message of its own (no task token: no execution waits on it); the
//! worker makes one attempt per message through the chunk path, and sends
//! the next attempt back to its queue delayed by the chunk retry policy's
//! backoff, or by a rate limit's wait (no attempt spent within the
//! throttle budget), until an engine revision is kept or the policy gives
//! up.

use std::time::Duration;

use lotsawa_core::retranslate::{Prepared, Retranslated, Retranslation, attempt, prepare};
use lotsawa_core::retry::{RetryDecision, RetryPolicy};

use crate::error::CloudError;
use crate::worker::Worker;

impl Worker {
    /// One attempt at `request`; the next one queued when the policy says
    /// so. What became of it, for the log.
    pub async fn retranslate(&self, request: Retranslation) -> Result<&'static str, CloudError> {
        let store = &self.store;
        let (job, plan) = match prepare(store, &request, &self.engines).await? {
            Prepared::Ready(job, plan) => (job, plan),
            Prepared::NoChunk => return Ok("no such chunk"),
            Prepared::Refused(why) => {
                tracing::warn!(job_id = %request.job_id, chunk = request.index, why, "re-translation refused");
                return Ok("refused");
            }
        };
        // A spent monthly budget stops re-translations as it stops jobs.
        if self
            .budgets
            .spent(store, &job.tenant, chrono::Utc::now())
            .await?
            .is_some()
        {
            return Ok("the tenant's monthly token budget is spent");
        }
        let err = match attempt(store, &job, &plan, request.index).await? {
            Retranslated::Added(_) => return Ok("added"),
            Retranslated::Unchanged => return Ok("unchanged"),
            Retranslated::NotTranslated => return Ok("not translated"),
            Retranslated::Failed(e) => e,
        };
        let policy = RetryPolicy {
            throttle_budget: store.config.throttle_budget,
            ..RetryPolicy::default()
        };
        let throttled = Duration::from_millis(request.throttled_ms);
        let counted = err.throttle.is_none() || throttled >= policy.throttle_budget;
        let attempts = request.attempt + u32::from(counted);
        let mut next = request.clone();
        next.attempt = attempts;
        let wait = match policy.after_failure(attempts.max(1), throttled, &err, rand::random()) {
            RetryDecision::GiveUp => {
                tracing::warn!(job_id = %job.id, chunk = request.index, error = %err.public(),
                    "re-translation gave up");
                return Ok("gave up");
            }
            RetryDecision::RetryAfter(wait) => wait,
            RetryDecision::Throttled(wait) => {
                next.throttled_ms = request.throttled_ms.saturating_add(wait.as_millis() as u64);
                wait
            }
        };
        // SQS delays in whole seconds: a shorter wait is at least a second.
        let wait = wait.max(Duration::from_secs(1));
        store.messages.retranslate(&next, wait).await?;
        Ok("tried again later")
    }
}
