//! [`LocalService`]: the [`JobService`] port on the SQLite store and the
//! in-process scheduler.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lotsawa_core::ledger::partial_output;
use lotsawa_core::service::ChunkOutput;
use lotsawa_core::{
    EngineName, Job, JobId, JobPage, JobService, JobStatus, JobView, ListQuery, NewJob, Progress,
    ServiceError, Transition,
};
use tokio::sync::broadcast;

use crate::scheduler::Shared;
use crate::store::{ListFilter, StoreError, StoredJob, decode_cursor, encode_cursor};

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ServiceError::NotFound(id),
            StoreError::Closed => ServiceError::Unavailable("the server is shutting down".into()),
            other => ServiceError::Internal(Box::new(other)),
        }
    }
}

/// The embedded backend's job service.
#[derive(Clone)]
pub struct LocalService {
    pub(crate) shared: Shared,
}

impl std::fmt::Debug for LocalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalService").finish_non_exhaustive()
    }
}

impl LocalService {
    async fn view(&self, stored: StoredJob, with_partial: bool) -> Result<JobView, ServiceError> {
        let job = stored.job;
        let finished = job.status == JobStatus::Completed;
        let progress = if job.status == JobStatus::Processing {
            let (remaining, recent) = self
                .shared
                .store
                .progress_inputs(stored.seq, job.attempts)
                .await?;
            Progress::derive(
                job.chunks_completed,
                job.chunks_total,
                remaining,
                false,
                &recent,
            )
        } else {
            Progress::derive(job.chunks_completed, job.chunks_total, 0, finished, &[])
        };
        let partial = if with_partial && !finished && job.chunks_completed > 0 {
            Some(partial_output(&self.shared.store.chunks(stored.seq).await?))
        } else {
            None
        };
        Ok(JobView {
            job,
            progress,
            partial,
        })
    }

    /// Apply a client's transition; a status that does not allow it is a
    /// conflict explained by `what`.
    async fn transition(
        &self,
        id: JobId,
        transition: Transition,
        what: &str,
    ) -> Result<Job, ServiceError> {
        match self
            .shared
            .store
            .transition(id, transition, None, Utc::now())
            .await
        {
            Ok(job) => Ok(job),
            Err(StoreError::Transition(t)) => Err(ServiceError::Conflict(format!(
                "job {id} is {}; {what}",
                t.from
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl JobService for LocalService {
    #[tracing::instrument(skip_all)]
    async fn submit(&self, new: NewJob) -> Result<Job, ServiceError> {
        let engines = &self.shared.engines;
        let engine = match &new.config.engine {
            Some(e) => e.clone(),
            None => {
                EngineName::parse(engines.default_name()).map_err(|e| ServiceError::Invalid(e.0))?
            }
        };
        if engines.get(engine.as_str()).is_none() {
            return Err(ServiceError::Invalid(format!(
                "engine '{engine}' is not available on this server (available: {})",
                engines.names().join(", ")
            )));
        }
        let (job, chunks) = lotsawa_core::pipeline::new_job(new, engine, Utc::now());
        self.shared.store.insert_job(job.clone(), chunks).await?;
        self.shared.metrics.jobs_submitted.inc();
        tracing::info!(job_id = %job.id, chunks = job.chunks_total, "job enqueued");
        self.shared.wake.notify_one();
        let _ = self.shared.changes.send(job.id);
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<JobView, ServiceError> {
        let stored = self.shared.store.get(id).await?;
        self.view(stored, true).await
    }

    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError> {
        let before_seq = match &query.cursor {
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ServiceError::Invalid(format!("cursor '{c}' is not a valid cursor"))
            })?),
            None => None,
        };
        let (rows, more) = self
            .shared
            .store
            .list(ListFilter {
                status: query.status,
                kind: query.kind,
                limit: query.limit,
                before_seq,
            })
            .await?;
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(r.seq))
        } else {
            None
        };
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            jobs.push(self.view(r, false).await?);
        }
        Ok(JobPage { jobs, next_cursor })
    }

    #[tracing::instrument(skip_all, fields(job_id = %id))]
    async fn cancel(&self, id: JobId) -> Result<Job, ServiceError> {
        let job = self
            .transition(
                id,
                Transition::Cancel,
                "only pending or processing jobs can be cancelled",
            )
            .await?;
        if let Ok(running) = self.shared.running.lock()
            && let Some((_, token)) = running.get(&id)
        {
            token.cancel();
        }
        tracing::info!("job cancelled");
        let _ = self.shared.changes.send(id);
        Ok(job)
    }

    #[tracing::instrument(skip_all, fields(job_id = %id))]
    async fn retry(&self, id: JobId) -> Result<Job, ServiceError> {
        let job = self
            .transition(
                id,
                Transition::Retry,
                "only failed or cancelled jobs can be retried",
            )
            .await?;
        tracing::info!("job queued again");
        self.shared.wake.notify_one();
        let _ = self.shared.changes.send(id);
        Ok(job)
    }

    async fn chunks_from(&self, id: JobId, from: u32) -> Result<Vec<ChunkOutput>, ServiceError> {
        let stored = self.shared.store.get(id).await?;
        Ok(self
            .shared
            .store
            .completed_chunks_from(stored.seq, from)
            .await?)
    }

    async fn wait_for_change(&self, id: JobId, max_wait: Duration) {
        let mut rx = self.shared.changes.subscribe();
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(changed) if changed == id => return,
                    Ok(_) => continue,
                    // Missed some: the job may be among them.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep(max_wait) => {}
            _ = self.shared.draining.cancelled() => {}
        }
    }

    fn engines(&self) -> Vec<String> {
        self.shared.engines.names()
    }

    async fn metrics(&self) -> Result<String, ServiceError> {
        let counts = self.shared.store.counts().await?;
        Ok(self.shared.metrics.render(&counts))
    }

    async fn healthy(&self) -> Result<(), ServiceError> {
        if self.shared.draining.is_cancelled() {
            return Err(ServiceError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        self.shared
            .store
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await?;
        Ok(())
    }
}

/// Convenience for holders of the concrete type.
pub type SharedService = Arc<LocalService>;
