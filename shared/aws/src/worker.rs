//! The worker: answers the state machine's task tokens. Each task is one
//! step of a job run: translate the next chunk (one attempt: Step Functions
//! owns retries and backoff), complete the job, or fail it. Failures are
//! reported with the error names the state machine matches on
//! (`Lotsawa.Transient`, `Lotsawa.Permanent`).

use std::time::Instant;

use chrono::Utc;
use lotsawa_core::{
    ChunkRecord, ChunkStatus, EngineKind, GlossaryEntry, JobId, JobStatus, memory, pipeline,
};
use lotsawa_engines::EngineSet;
use serde::Deserialize;
use serde_json::json;

use crate::store::{CloudError, Counted, DynamoStore, Ending};

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
                "Lotsawa.Permanent",
                format!("malformed job id {}", task.job_id),
            ));
        };
        match task.action.as_str() {
            "chunk" => self.chunk(id, task).await,
            "complete" => self.complete(id, task.generation).await,
            "fail" => {
                self.fail(
                    id,
                    task.generation,
                    task.reason.as_deref().unwrap_or("permanent"),
                    task.attempt,
                )
                .await
            }
            other => Ok(Answer::Failure(
                "Lotsawa.Permanent",
                format!("unknown action {other}"),
            )),
        }
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, run = task.generation, attempt = task.attempt))]
    async fn chunk(&self, id: JobId, task: &Task) -> Result<Answer, CloudError> {
        let job = self.store.get(id, false).await?;
        if job.job.status != JobStatus::Processing || job.job.attempts != task.generation {
            return Ok(Answer::Success(json!({"state": "stopped"})));
        }
        let k = job.job.chunks_completed;
        if k >= job.job.chunks_total {
            return Ok(Answer::Success(json!({"state": "done"})));
        }
        let Some(chunk) = self.store.chunk(id, k).await? else {
            return Ok(Answer::Failure(
                "Lotsawa.Permanent",
                format!("chunk {k} is missing"),
            ));
        };
        let chunk = chunk.record;
        let engine_name = pipeline::engine_for(&job.job, self.engines.default_name());
        let Some(engine) = self.engines.get(&engine_name) else {
            return Ok(Answer::Failure(
                "Lotsawa.Permanent",
                format!("engine '{engine_name}' is not configured on this deployment"),
            ));
        };
        let model = job
            .job
            .config
            .model
            .clone()
            .or_else(|| engine.default_model().map(str::to_owned));
        let mut glossary: Vec<GlossaryEntry> = job.job.config.glossary.clone();
        glossary.extend(self.engines.glossary().entries());
        let relevant = pipeline::relevant_glossary(&glossary, &chunk.source);
        let is_model = engine.kind() == EngineKind::Model;
        let key = is_model
            .then(|| memory::key(&chunk.source, engine.name(), model.as_deref(), &relevant));
        let more = |done: u32| {
            if done >= job.job.chunks_total {
                json!({"state": "done"})
            } else {
                json!({"state": "more"})
            }
        };
        if let Some(key) = &key
            && let Some((translation, confidence)) = self.store.memory_get(key).await?
        {
            let record = ChunkRecord {
                translation: Some(translation),
                confidence,
                from_memory: true,
                attempts: 0,
                duration_ms: None,
                ..chunk.clone()
            };
            self.store
                .complete_chunk(id, task.generation, &record)
                .await?;
            self.count(&Counted::MemoryHit).await;
            return Ok(Answer::Success(more(k + 1)));
        }
        let prev = if k > 0 {
            self.store.chunk(id, k - 1).await?.map(|c| c.record)
        } else {
            None
        };
        let context = if is_model {
            chunk
                .context
                .as_deref()
                .and_then(pipeline::decode_context)
                .unwrap_or_else(|| {
                    pipeline::context_for(
                        prev.as_ref()
                            .filter(|p| p.status == ChunkStatus::Completed)
                            .map(|p| (p.source.as_str(), p.translation.as_deref().unwrap_or(""))),
                    )
                })
        } else {
            Vec::new()
        };
        let t = pipeline::ChunkTask {
            index: k,
            source: &chunk.source,
            model: model.clone(),
            config: &job.job.config,
            glossary: relevant,
            context: context.clone(),
        };
        let started = Instant::now();
        match pipeline::attempt(engine.as_ref(), &t).await {
            Ok(out) => {
                let seconds = started.elapsed().as_secs_f64();
                self.count(&Counted::Attempt {
                    outcome: "success",
                    engine: engine.name(),
                    seconds: Some(seconds),
                    quality_retried: out.quality_retried,
                })
                .await;
                let record = ChunkRecord {
                    translation: Some(out.text.clone()),
                    confidence: out.confidence,
                    from_memory: false,
                    attempts: 1,
                    duration_ms: Some(started.elapsed().as_millis() as u64),
                    context: pipeline::encode_context(&context),
                    warning: out.warning.clone(),
                    ..chunk.clone()
                };
                let kept = self
                    .store
                    .complete_chunk(id, task.generation, &record)
                    .await?;
                if let (Some(key), None, true) = (&key, &out.warning, kept) {
                    self.store
                        .memory_put(key, &out.text, out.confidence)
                        .await?;
                }
                tracing::info!(
                    chunk = k,
                    ms = started.elapsed().as_millis() as u64,
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
        let job = self.store.get(id, false).await?;
        let ledger = self.store.chunks(id, 0, job.job.chunks_total).await?;
        if ledger.iter().any(|c| c.status != ChunkStatus::Completed)
            || job.job.status != JobStatus::Processing
        {
            return Ok(Answer::Success(json!({"state": "stopped"})));
        }
        let engine_name = pipeline::engine_for(&job.job, self.engines.default_name());
        let model = job.job.config.model.clone().or_else(|| {
            self.engines
                .get(&engine_name)
                .and_then(|e| e.default_model().map(str::to_owned))
        });
        let result = pipeline::job_result(job.job.kind, &ledger, &engine_name, model);
        self.store
            .finish(id, run, Ending::Completed(result), Utc::now())
            .await?;
        self.write_ingest_result(id, job.ingest_key.as_deref())
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
        reason: &str,
        attempts: u32,
    ) -> Result<Answer, CloudError> {
        let job = self.store.get(id, false).await?;
        let k = job.job.chunks_completed;
        let last = self.store.chunk(id, k).await?.and_then(|c| c.record.error);
        let detail = last.unwrap_or_else(|| "no error recorded".to_owned());
        let error = if reason == "transient" {
            format!(
                "chunk {k} failed after {} attempts: {detail}",
                attempts.max(1)
            )
        } else {
            format!("chunk {k} failed: {detail}")
        };
        self.store
            .finish(
                id,
                run,
                Ending::Failed {
                    error,
                    chunk: Some(k),
                },
                Utc::now(),
            )
            .await?;
        self.write_ingest_result(id, job.ingest_key.as_deref())
            .await;
        Ok(Answer::Success(json!({"state": "failed"})))
    }
}
