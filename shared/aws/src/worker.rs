//! The worker: answers the state machine's task tokens. Each task is one
//! step of a job run: translate the next chunk (one attempt: Step Functions
//! owns retries and backoff), complete the job, or fail it. Failures are
//! reported with the error names the state machine matches on
//! (`Lotsawa.Transient`, `Lotsawa.Permanent`).

use std::time::Instant;

use chrono::Utc;
use lotsawa_core::store::{Change, TransitionOutcome, transition_by_id};
use lotsawa_core::{ChunkPlan, ChunkStatus, ErrorClass, JobId, JobStatus, JobStore, pipeline};
use lotsawa_engines::EngineSet;
use serde::Deserialize;
use serde_json::json;

use crate::store::{CloudError, Counted, DynamoStore};

/// A task message from the state machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `chunk`, `complete` or `fail`.
    pub action: String,
    /// The callback token.
    pub task_token: String,
    /// The job.
    pub job_id: String,
    /// The run.
    pub generation: u32,
    /// Zero-based attempt of the current chunk (chunk tasks).
    #[serde(default)]
    pub attempt: u32,
    /// Why the run fails (fail tasks): `transient` or `permanent`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `SendTaskSuccess` with this output.
    Success(serde_json::Value),
    /// `SendTaskFailure` with this error name and cause.
    Failure(&'static str, String),
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct Worker {
    /// The store.
    pub store: DynamoStore,
    /// Engines.
    pub engines: EngineSet,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    /// Handle a task and answer its token.
    pub async fn handle(&self, task: &Task) -> Result<Answer, CloudError> {
        let answer = self.answer(task).await?;
        let sfn = &self.store.clients.sfn;
        let sent = match &answer {
            Answer::Success(out) => sfn
                .send_task_success()
                .task_token(&task.task_token)
                .output(out.to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sfn::error::DisplayErrorContext(&e).to_string()),
            Answer::Failure(name, cause) => sfn
                .send_task_failure()
                .task_token(&task.task_token)
                .error(*name)
                .cause(cause.chars().take(32_000).collect::<String>())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sfn::error::DisplayErrorContext(&e).to_string()),
        };
        if let Err(e) = sent {
            // A stopped execution (cancel) no longer takes answers.
            tracing::warn!(job_id = %task.job_id, error = %e, "answering the task failed");
        }
        Ok(answer)
    }

    /// Work out the answer to a task (no callback).
    pub async fn answer(&self, task: &Task) -> Result<Answer, CloudError> {
        let Ok(id) = task.job_id.parse::<JobId>() else {
            return Ok(Answer::Failure(
                ErrorClass::Permanent.error_name(),
                format!("malformed job id {}", task.job_id),
            ));
        };
        match task.action.as_str() {
            "chunk" => self.chunk(id, task).await,
            "complete" => self.complete(id, task.generation).await,
            "fail" => {
                let class = match task.reason.as_deref() {
                    Some("transient") => ErrorClass::Transient,
                    _ => ErrorClass::Permanent,
                };
                self.fail(id, task.generation, class, task.attempt).await
            }
            other => Ok(Answer::Failure(
                "Lotsawa.Permanent",
                format!("unknown action {other}"),
            )),
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, run = task.generation, attempt = task.attempt))]
    async fn chunk(&self, id: JobId, task: &Task) -> Result<Answer, CloudError> {
        let job = self.store.get(id).await?;
        if job.status != JobStatus::Processing || job.attempts != task.generation {
            return Ok(Answer::Success(json!({"state": "stopped"})));
        }
        let k = job.chunks_completed;
        if k >= job.chunks_total {
            return Ok(Answer::Success(json!({"state": "done"})));
        }
        let Some(chunk) = self.store.chunk(id, k).await? else {
            return Ok(Answer::Failure(
                ErrorClass::Permanent.error_name(),
                format!("chunk {k} is missing"),
            ));
        };
        let prev = match k {
            0 => None,
            _ => self.store.chunk(id, k - 1).await?,
        };
        let plan = match ChunkPlan::new(&job, &chunk, prev.as_ref(), &self.engines) {
            Ok(p) => p,
            Err(why) => return Ok(Answer::Failure(ErrorClass::Permanent.error_name(), why)),
        };
        let more = |done: u32| {
            if done >= job.chunks_total {
                json!({"state": "done"})
            } else {
                json!({"state": "more"})
            }
        };
        if let Some(key) = &plan.memory_key
            && let Some((translation, confidence)) = self.store.memory_get(key).await?
        {
            let done = ChunkPlan::from_memory(k, translation, confidence);
            self.store.checkpoint(id, task.generation, &done).await?;
            self.count(&Counted::MemoryHit).await;
            return Ok(Answer::Success(more(k + 1)));
        }
        let engine = plan.engine.as_ref();
        let started = Instant::now();
        match pipeline::attempt(engine, &plan.task(&chunk, &job.config)).await {
            Ok(out) => {
                let elapsed = started.elapsed();
                self.count(&Counted::Attempt {
                    outcome: "success",
                    engine: engine.name(),
                    seconds: Some(elapsed.as_secs_f64()),
                    quality_retried: out.quality_retried,
                })
                .await;
                let done = plan.done(k, &out, elapsed.as_millis() as u64);
                let kept = self.store.checkpoint(id, task.generation, &done).await?;
                if kept == lotsawa_core::Checkpoint::Recorded
                    && let Some(key) = plan.memory_entry(&out)
                {
                    self.store
                        .memory_put(key, &out.text, out.confidence)
                        .await?;
                }
                tracing::info!(
                    chunk = k,
                    ms = elapsed.as_millis() as u64,
                    "chunk translated"
                );
                Ok(Answer::Success(more(k + 1)))
            }
            Err(err) => {
                self.count(&Counted::Attempt {
                    outcome: err.class.outcome(),
                    engine: engine.name(),
                    seconds: None,
                    quality_retried: false,
                })
                .await;
                self.store.note_chunk_error(id, k, &err.message).await?;
                let name = err.class.error_name();
                tracing::warn!(chunk = k, error = %err.message, class = name, "chunk attempt failed");
                Ok(Answer::Failure(name, err.message))
            }
        }
    }

    /// Add to the counters behind `/metrics`; a failure to count is logged,
    /// never a reason to fail the chunk.
    async fn count(&self, counted: &Counted<'_>) {
        if let Err(e) = self.store.count(counted).await {
            tracing::warn!(error = %e, "counting a chunk attempt failed");
        }
    }

    async fn complete(&self, id: JobId, run: u32) -> Result<Answer, CloudError> {
        let item = self.store.item(id, false).await?;
        let job = item.job;
        let ledger = self.store.chunk_range(id, 0, job.chunks_total).await?;
        if ledger.iter().any(|c| c.status != ChunkStatus::Completed)
            || job.status != JobStatus::Processing
        {
            return Ok(Answer::Success(json!({"state": "stopped"})));
        }
        let engine_name = pipeline::engine_for(&job, self.engines.default_name());
        let model = job.config.model.clone().or_else(|| {
            self.engines
                .get(&engine_name)
                .and_then(|e| e.default_model().map(str::to_owned))
        });
        let result = pipeline::job_result(job.kind, &ledger, &engine_name, model);
        let outcome = transition_by_id(
            &self.store,
            id,
            Some(run),
            Change::Complete(result),
            Utc::now(),
        )
        .await?;
        if !matches!(outcome, TransitionOutcome::Applied(_)) {
            tracing::info!(?outcome, "the run ended elsewhere");
        }
        self.write_ingest_result(id, item.ingest_key.as_deref())
            .await;
        Ok(Answer::Success(json!({"state": "completed"})))
    }

    /// Jobs created from S3 uploads get their outcome written under results/.
    async fn write_ingest_result(&self, id: JobId, key: Option<&str>) {
        if let Some(key) = key
            && let Err(e) = crate::ingest::write_result(&self.store, key, id).await
        {
            tracing::error!(job_id = %id, error = %e, "writing the ingest result failed");
        }
    }

    async fn fail(
        &self,
        id: JobId,
        run: u32,
        class: ErrorClass,
        attempts: u32,
    ) -> Result<Answer, CloudError> {
        let item = self.store.item(id, false).await?;
        let k = item.job.chunks_completed;
        let last = self.store.chunk(id, k).await?.and_then(|c| c.error);
        let detail = last.unwrap_or_else(|| "no error recorded".to_owned());
        let error = pipeline::describe_failure(k, attempts, class, &detail);
        let change = Change::Fail {
            error,
            chunk: (k < item.job.chunks_total).then_some(k),
        };
        let outcome = transition_by_id(&self.store, id, Some(run), change, Utc::now()).await?;
        if !matches!(outcome, TransitionOutcome::Applied(_)) {
            tracing::info!(?outcome, "the run ended elsewhere");
        }
        self.write_ingest_result(id, item.ingest_key.as_deref())
            .await;
        Ok(Answer::Success(json!({"state": "failed"})))
    }
}
