//! [`LocalRunner`]: what the embedded backend adds to the one job service:
//! it wakes the in-process scheduler, aborts a cancelled job's in-flight
//! call, and tells SSE watchers of changes.

use std::time::Duration;

use async_trait::async_trait;
use lotsawa_core::{Job, JobId, JobStatus, Runner, ServiceError};

use crate::scheduler::Shared;

/// The embedded backend's runner.
#[derive(Clone)]
pub struct LocalRunner {
    pub(crate) shared: Shared,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner").finish_non_exhaustive()
    }
}

#[async_trait]
impl Runner for LocalRunner {
    async fn queued(&self, job: &Job) -> Result<(), ServiceError> {
        if job.run == 0 {
            self.shared.metrics.jobs_submitted.inc();
        }
        tracing::info!(job_id = %job.id, chunks = job.chunks_total, "job enqueued");
        self.shared.wake.notify_one();
        self.shared.announce.notify_one();
        self.shared.changes.publish(job.id);
        Ok(())
    }

    async fn cancelled(&self, job: &Job, was: JobStatus) {
        if was == JobStatus::Processing
            && let Ok(running) = self.shared.running.lock()
            && let Some((_, token)) = running.get(&job.id)
        {
            token.cancel();
        }
        tracing::info!(job_id = %job.id, "job cancelled");
        self.shared.changes.publish(job.id);
    }

    async fn wait_for_change(&self, id: JobId, seen: &mut u64, max_wait: Duration) {
        tokio::select! {
            _ = self.shared.changes.wait(id, seen, max_wait) => {}
            _ = self.shared.draining.cancelled() => {}
        }
    }

    async fn extra_metrics(&self) -> Result<String, ServiceError> {
        Ok(self.shared.metrics.render())
    }

    fn ready(&self) -> Result<(), ServiceError> {
        if self.shared.draining.is_cancelled() {
            return Err(ServiceError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        Ok(())
    }

    async fn retranslate(
        &self,
        request: lotsawa_core::retranslate::Retranslation,
    ) -> Result<(), ServiceError> {
        crate::retranslate::start(&self.shared, request)
    }
}
