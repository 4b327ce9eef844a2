//! Re-translations on the embedded backend: each runs as a task of its
//! own, attempt after attempt with the chunk retry policy's backoff (a
//! rate limit's wait spends no attempt within the throttle budget), until
//! an engine revision is kept or the policy gives up.

use std::time::Duration;

use lotsawa_core::ServiceError;
use lotsawa_core::retranslate::{Prepared, Retranslated, Retranslation, attempt, prepare};
use lotsawa_core::retry::RetryDecision;

use crate::scheduler::Shared;

/// Start `request` in the background.
pub(crate) fn start(shared: &Shared, request: Retranslation) -> Result<(), ServiceError> {
    if shared.draining.is_cancelled() {
        return Err(ServiceError::Unavailable(
            "the server is shutting down".into(),
        ));
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let (id, index) = (request.job_id, request.index);
        match run(&shared, request).await {
            Ok(outcome) => {
                tracing::info!(job_id = %id, chunk = index, outcome, "re-translation ended")
            }
            Err(e) => {
                tracing::warn!(job_id = %id, chunk = index, error = %e, "re-translation failed")
            }
        }
        shared.changes.publish(id);
    });
    Ok(())
}

async fn run(shared: &Shared, request: Retranslation) -> Result<&'static str, String> {
    let store = &*shared.store;
    let (job, plan) = match prepare(store, &request, &shared.engines)
        .await
        .map_err(|e| e.to_string())?
    {
        Prepared::Ready(job, plan) => (job, plan),
        Prepared::NoChunk => return Ok("no such chunk"),
        Prepared::Refused(why) => return Err(why),
    };
    let policy = shared.config.retry;
    let mut attempts = 0u32;
    let mut throttled = Duration::ZERO;
    loop {
        if shared.draining.is_cancelled() {
            return Ok("stopped by the shutdown");
        }
        // A spent monthly budget stops re-translations as it stops jobs.
        if shared
            .budgets
            .spent(store, &job.tenant, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok("the tenant's monthly token budget is spent");
        }
        let outcome = attempt(store, &job, &plan, request.index)
            .await
            .map_err(|e| e.to_string())?;
        let err = match outcome {
            Retranslated::Added(_) => return Ok("added"),
            Retranslated::Unchanged => return Ok("unchanged"),
            Retranslated::NotTranslated => return Ok("not translated"),
            Retranslated::Failed(e) => e,
        };
        let counted = err.throttle.is_none() || throttled >= policy.throttle_budget;
        if counted {
            attempts += 1;
        }
        match policy.after_failure(attempts.max(1), throttled, &err, rand::random()) {
            RetryDecision::GiveUp => return Err(err.public()),
            RetryDecision::RetryAfter(wait) => tokio::time::sleep(wait).await,
            RetryDecision::Throttled(wait) => {
                throttled += wait;
                tokio::time::sleep(wait).await;
            }
        }
    }
}
