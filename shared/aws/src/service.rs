//! [`CloudRunner`]: what the cloud adds to the one job service: a queued
//! run goes to the FIFO job queue for the dispatcher, a cancelled run's
//! execution is stopped, and a watcher polls the table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sfn::error::DisplayErrorContext;
use lotsawa_core::{EngineChoice, Job, JobId, JobStatus, Runner, Service, ServiceError};

use crate::store::DynamoStore;

/// The cloud's runner.
#[derive(Debug, Clone)]
pub struct CloudRunner {
    store: DynamoStore,
}

/// The cloud job service over `store`: `engines` are the names jobs may ask
/// for; `models`, per engine, the models the deployment's rights cover.
pub fn cloud_service(
    store: DynamoStore,
    engines: Vec<String>,
    default_engine: String,
    models: Vec<(String, Vec<String>)>,
) -> Service {
    let (max_chunks, rate, max_pending, max_batch_items, callbacks) = (
        store.config.max_chunks,
        store.config.rate,
        store.config.max_pending,
        store.config.max_batch_items,
        store.config.webhooks.clone(),
    );
    Service::new(
        Arc::new(store.clone()),
        Arc::new(CloudRunner { store }),
        EngineChoice {
            names: engines,
            default: default_engine,
            place: "deployment",
            models,
        },
    )
    .with_max_chunks(max_chunks)
    .with_rate(rate)
    .with_max_pending(max_pending)
    .with_max_batch_items(max_batch_items)
    .with_callbacks(match &callbacks {
        Some(w) => Ok(lotsawa_core::webhook::Callbacks::new(
            w.policy.clone(),
            Arc::new(lotsawa_delivery::DnsResolver),
        )),
        None => Err("this deployment has no webhook queue and secret configured".into()),
    })
}

#[async_trait]
impl Runner for CloudRunner {
    async fn queued(&self, job: &Job) -> Result<(), ServiceError> {
        // The run the dispatcher starts is the next one.
        self.store.messages.enqueue(job.id, job.run + 1, 0).await?;
        tracing::info!(job_id = %job.id, chunks = job.chunks_total, "job enqueued");
        Ok(())
    }

    async fn cancelled(&self, job: &Job, was: JobStatus) {
        let item = match self.store.item(job.id, false).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "reading the cancelled job failed");
                return;
            }
        };
        if was == JobStatus::Processing
            && let Some(arn) = &item.execution_arn
            && let Err(e) = self
                .store
                .clients
                .sfn
                .stop_execution()
                .execution_arn(arn)
                .error("Lotsawa.Cancelled")
                .cause("job cancelled")
                .send()
                .await
        {
            tracing::warn!(job_id = %job.id, error = %DisplayErrorContext(&e), "stopping the execution failed");
        }
        if was == JobStatus::Processing {
            crate::dispatch::kick_or_log(&self.store).await;
        }
        // A job created from an upload says how it ended under results/,
        // so a pipeline waiting there learns of the cancel too.
        if let Some(key) = item.ingest_key.as_deref()
            && let Err(e) = crate::ingest::write_result(&self.store, key, job.id).await
        {
            tracing::error!(job_id = %job.id, error = %e, "writing the cancelled job's record failed");
        }
    }

    async fn wait_for_change(&self, _id: JobId, _seen: &mut u64, max_wait: Duration) {
        // No change feed here: the stream polls the job's pulse once a second.
        tokio::time::sleep(max_wait.min(Duration::from_secs(1))).await;
    }

    async fn retranslate(
        &self,
        request: lotsawa_core::retranslate::Retranslation,
    ) -> Result<(), ServiceError> {
        self.store
            .messages
            .retranslate(&request, Duration::ZERO)
            .await?;
        tracing::info!(job_id = %request.job_id, chunk = request.index, "re-translation queued");
        Ok(())
    }

    async fn extra_metrics(&self) -> Result<String, ServiceError> {
        Ok(self.store.chunk_totals().await?.to_prometheus())
    }

    fn ready(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}
