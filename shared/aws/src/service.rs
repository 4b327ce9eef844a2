//! [`CloudService`]: the [`JobService`] port on DynamoDB, SQS, Step
//! Functions and S3, behind the same HTTP Router as the local server.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lotsawa_core::ledger::partial_output;
use lotsawa_core::service::ChunkOutput;
use lotsawa_core::{
    EngineName, Job, JobId, JobPage, JobService, JobStatus, JobView, ListQuery, NewJob, Progress,
    ServiceError,
};

use crate::items::JobItem;
use crate::store::{CloudError, DynamoStore};

impl From<CloudError> for ServiceError {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::NotFound(id) => ServiceError::NotFound(id),
            c @ CloudError::Conflict { .. } => ServiceError::Conflict(c.to_string()),
            CloudError::Build(m) if m.starts_with("cursor") => ServiceError::Invalid(m),
            other => ServiceError::Internal(Box::new(other)),
        }
    }
}

/// The cloud job service.
#[derive(Debug, Clone)]
pub struct CloudService {
    store: DynamoStore,
    engines: Vec<String>,
    default_engine: String,
}

impl CloudService {
    /// A service over `store`; `engines` are the names jobs may ask for.
    pub fn new(store: DynamoStore, engines: Vec<String>, default_engine: String) -> Self {
        Self {
            store,
            engines,
            default_engine,
        }
    }

    async fn view(&self, item: JobItem, with_partial: bool) -> Result<JobView, ServiceError> {
        let job = item.job;
        let finished = job.status == JobStatus::Completed;
        let progress = if job.status == JobStatus::Processing {
            let (remaining, recent) = self.store.progress_inputs(&job).await?;
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
            Some(partial_output(
                &self.store.chunks(job.id, 0, job.chunks_completed).await?,
            ))
        } else {
            None
        };
        Ok(JobView {
            job,
            progress,
            partial,
        })
    }
}

#[async_trait]
impl JobService for CloudService {
    #[tracing::instrument(skip_all)]
    async fn submit(&self, new: NewJob) -> Result<Job, ServiceError> {
        let engine = match &new.config.engine {
            Some(e) => e.clone(),
            None => {
                EngineName::parse(&self.default_engine).map_err(|e| ServiceError::Invalid(e.0))?
            }
        };
        if !self.engines.iter().any(|e| e == engine.as_str()) {
            return Err(ServiceError::Invalid(format!(
                "engine '{engine}' is not available on this deployment (available: {})",
                self.engines.join(", ")
            )));
        }
        let (job, chunks) = lotsawa_core::pipeline::new_job(new, engine, Utc::now());
        self.store.put_new_job(&job, &chunks).await?;
        self.store.enqueue(job.id, 1, 0).await?;
        tracing::info!(job_id = %job.id, chunks = job.chunks_total, "job enqueued");
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<JobView, ServiceError> {
        let item = self.store.get(id, true).await?;
        self.view(item, true).await
    }

    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError> {
        let page = self
            .store
            .list(query.status, query.kind, query.limit, query.cursor)
            .await?;
        let mut jobs = Vec::with_capacity(page.jobs.len());
        for j in page.jobs {
            jobs.push(self.view(j, false).await?);
        }
        Ok(JobPage {
            jobs,
            next_cursor: page.next,
        })
    }

    #[tracing::instrument(skip_all, fields(job_id = %id))]
    async fn cancel(&self, id: JobId) -> Result<Job, ServiceError> {
        let item = self.store.cancel(id, Utc::now()).await?;
        // A job created from an upload says how it ended under results/,
        // so a pipeline waiting there learns of the cancel too.
        if let Some(key) = item.ingest_key.as_deref()
            && let Err(e) = crate::ingest::write_result(&self.store, key, id).await
        {
            tracing::error!(job_id = %id, error = %e, "writing the cancelled job's record failed");
        }
        Ok(item.job)
    }

    #[tracing::instrument(skip_all, fields(job_id = %id))]
    async fn retry(&self, id: JobId) -> Result<Job, ServiceError> {
        Ok(self.store.retry(id).await?.job)
    }

    async fn chunks_from(&self, id: JobId, from: u32) -> Result<Vec<ChunkOutput>, ServiceError> {
        let job = self.store.get(id, false).await?.job;
        let chunks = self.store.chunks(id, from, job.chunks_total).await?;
        Ok(chunks
            .into_iter()
            .filter(|c| c.status == lotsawa_core::ChunkStatus::Completed)
            .map(|c| ChunkOutput {
                index: c.index,
                translation: c.translation.unwrap_or_default(),
            })
            .collect())
    }

    async fn wait_for_change(&self, _id: JobId, max_wait: Duration) {
        // No change feed here: the stream polls the table.
        tokio::time::sleep(max_wait.min(Duration::from_millis(500))).await;
    }

    fn engines(&self) -> Vec<String> {
        self.engines.clone()
    }

    async fn metrics(&self) -> Result<String, ServiceError> {
        let counts = self.store.counts().await?;
        let slots = self.store.slots_in_use().await?;
        let mut out =
            String::from("# HELP lotsawa_jobs Jobs by status\n# TYPE lotsawa_jobs gauge\n");
        for (st, n) in &counts {
            out.push_str(&format!("lotsawa_jobs{{status=\"{}\"}} {n}\n", st.as_str()));
        }
        let pending = counts
            .iter()
            .find(|(s, _)| *s == JobStatus::Pending)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        out.push_str(
            "# HELP lotsawa_queue_depth Jobs waiting to start\n# TYPE lotsawa_queue_depth gauge\n",
        );
        out.push_str(&format!(
            "lotsawa_queue_depth{{queue=\"default\"}} {pending}\n"
        ));
        out.push_str("# HELP lotsawa_slots_in_use Concurrency slots held\n# TYPE lotsawa_slots_in_use gauge\n");
        out.push_str(&format!("lotsawa_slots_in_use {slots}\n"));
        out.push_str(&self.store.chunk_totals().await?.to_prometheus());
        Ok(out)
    }

    async fn healthy(&self) -> Result<(), ServiceError> {
        self.store.slots_in_use().await?;
        Ok(())
    }
}
