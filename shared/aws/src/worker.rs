//! The worker: answers the state machine's task tokens. Each task is one
//! step of a job run: translate the next chunk (one attempt: Step Functions
//! owns retries and backoff), complete the job, or fail it. Failures are
//! reported with the error names the state machine matches on
//! (`Lotsawa.Transient`, `Lotsawa.Permanent`).

use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata};
use chrono::Utc;
use lotsawa_core::step::{ChunkMeter, ChunkStep, StepInput, chunk_step};
use lotsawa_core::store::{Change, TransitionOutcome, transition_by_id};
use lotsawa_core::{ChunkPlan, ChunkStatus, ErrorClass, Job, JobId, JobStatus, JobStore, pipeline};
use lotsawa_engines::EngineSet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use crate::error::CloudError;
use crate::store::{Counted, DynamoStore};

/// One step of a job run, as the state machine asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    /// Translate the next chunk (one attempt).
    Chunk {
        /// Zero-based attempt of the chunk.
        #[serde(default)]
        attempt: u32,
    },
    /// Assemble the result and complete the job.
    Complete,
    /// Fail the run.
    Fail {
        /// What kind of error ended it.
        reason: ErrorClass,
        /// Zero-based attempt at which it ended (transient failures).
        #[serde(default)]
        attempt: u32,
        /// The error a `Catch` caught, when a step other than a chunk
        /// failed (the completion).
        #[serde(default)]
        caught: Option<Caught>,
    },
}

/// An error as a state machine `Catch` passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Caught {
    /// Error name.
    #[serde(rename = "Error", default)]
    pub error: Option<String>,
    /// Its cause (some emulators drop it).
    #[serde(rename = "Cause", default)]
    pub cause: Option<String>,
}

/// A task message from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The callback token.
    pub task_token: String,
    /// The job.
    pub job_id: JobId,
    /// The run.
    pub run: u32,
    /// What to do.
    #[serde(flatten)]
    pub step: Step,
}

/// A task message that does not parse: its token, when it has one, so the
/// execution is answered (failed) instead of waiting for its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedTask {
    /// The callback token, if the message had one.
    pub task_token: Option<String>,
    /// Why it does not parse.
    pub why: String,
}

impl Task {
    /// Parse a task message body.
    pub fn parse(body: &str) -> Result<Self, MalformedTask> {
        serde_json::from_str(body).map_err(|e| MalformedTask {
            task_token: serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("taskToken")?.as_str().map(str::to_owned)),
            why: format!("malformed task: {e}"),
        })
    }
}

/// `SendTask*` errors that only mean the execution no longer waits.
const EXPECTED_ANSWER_ERRORS: &[&str] = &["TaskTimedOut", "InvalidToken", "TaskDoesNotExist"];

/// The answer to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `SendTaskSuccess` with this output.
    Success(serde_json::Value),
    /// `SendTaskFailure` with this error name and cause.
    Failure(&'static str, String),
}

/// What a step tells the state machine (`$.chunk.state` for a chunk step,
/// `$.completion.state` for the end of a run); the state machine's `Route`
/// choices compare against these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// A chunk was translated and more remain.
    More,
    /// Every chunk is translated: complete the run.
    Done,
    /// The run is no longer this execution's (cancelled, retried, ended).
    Stopped,
    /// The run completed.
    Completed,
    /// The run failed (its failure recorded).
    Failed,
}

/// A step's output: `{"state": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    /// What became of the step.
    pub state: StepState,
}

impl From<StepState> for Answer {
    fn from(state: StepState) -> Self {
        Answer::Success(json!(StepOutput { state }))
    }
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
    /// A step that fails on the store or an AWS call is answered with
    /// `Lotsawa.Transient` at once (the state machine backs off and tries
    /// again with a fresh token), instead of returning the message to SQS,
    /// where it would wait out its visibility timeout and come back with a
    /// dead token.
    pub async fn handle(&self, task: &Task) -> Answer {
        let answer = match self.answer(task).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(job_id = %task.job_id, error = %e, source = ?std::error::Error::source(&e), "task step failed; answering it as transient");
                Answer::Failure(
                    ErrorClass::Transient.error_name(),
                    format!("the worker could not finish the step: {e}"),
                )
            }
        };
        self.send(&task.task_token, &answer).await;
        answer
    }

    /// Answer a malformed task with a permanent failure, when it has a token.
    pub async fn reject(&self, task: &MalformedTask) {
        if let Some(token) = &task.task_token {
            let answer = Answer::Failure(ErrorClass::Permanent.error_name(), task.why.clone());
            self.send(token, &answer).await;
        }
    }

    async fn send(&self, task_token: &str, answer: &Answer) {
        let sfn = &self.store.clients.sfn;
        let sent = match answer {
            Answer::Success(out) => sfn
                .send_task_success()
                .task_token(task_token)
                .output(out.to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.code().map(str::to_owned),
                        DisplayErrorContext(&e).to_string(),
                    )
                }),
            Answer::Failure(name, cause) => sfn
                .send_task_failure()
                .task_token(task_token)
                .error(*name)
                .cause(cause.chars().take(32_000).collect::<String>())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.code().map(str::to_owned),
                        DisplayErrorContext(&e).to_string(),
                    )
                }),
        };
        match sent {
            Ok(()) => {}
            // The execution was stopped (a cancel) or the task timed out: no
            // one waits for this answer any more.
            Err((Some(code), e)) if EXPECTED_ANSWER_ERRORS.contains(&code.as_str()) => {
                tracing::info!(%code, error = %e, "the task no longer takes an answer");
            }
            Err((code, e)) => {
                tracing::error!(code = code.as_deref().unwrap_or("-"), error = %e, "answering the task failed");
                self.count(&Counted::AnswerFailed).await;
            }
        }
    }

    /// Work out the answer to a task (no callback).
    pub async fn answer(&self, task: &Task) -> Result<Answer, CloudError> {
        let id = task.job_id;
        match task.step {
            Step::Chunk { attempt } => self.chunk(id, task.run, attempt).await,
            Step::Complete => self.complete(id, task.run).await,
            Step::Fail {
                reason,
                attempt,
                ref caught,
            } => {
                self.fail(id, task.run, reason, attempt, caught.as_ref())
                    .await
            }
        }
    }

    async fn chunk(&self, id: JobId, run: u32, attempt: u32) -> Result<Answer, CloudError> {
        // The job's settings, not its texts: a large source stays in S3.
        let job = self.store.item(id, false).await?.job;
        // The step joins the trace of the request that submitted the job
        // (its parent is set before the span is first entered).
        let span = tracing::info_span!("job.step", job.id = %id, job.run = run, attempt);
        lotsawa_telemetry::continue_trace(&span, job.trace.as_deref());
        self.chunk_of(job, run, attempt).instrument(span).await
    }

    async fn chunk_of(&self, job: Job, run: u32, attempt: u32) -> Result<Answer, CloudError> {
        let id = job.id;
        if job.status != JobStatus::Processing || job.run != run {
            return Ok(StepState::Stopped.into());
        }
        let k = job.chunks_completed;
        if k >= job.chunks_total {
            return Ok(StepState::Done.into());
        }
        // The chunk and the one before it (its context) in one query.
        let mut pair = self
            .store
            .chunk_range(id, k.saturating_sub(1), k + 1)
            .await?;
        let Some(chunk) = pair.pop().filter(|c| c.index == k) else {
            return Ok(Answer::Failure(
                ErrorClass::Permanent.error_name(),
                format!("chunk {k} is missing"),
            ));
        };
        let prev = pair.pop().filter(|c| k > 0 && c.index == k - 1);
        let plan = match ChunkPlan::new(&job, &chunk, prev.as_ref(), &self.engines) {
            Ok(p) => p,
            Err(why) => return Ok(Answer::Failure(ErrorClass::Permanent.error_name(), why)),
        };
        let more = |done: u32| -> Answer {
            if done >= job.chunks_total {
                StepState::Done.into()
            } else {
                StepState::More.into()
            }
        };
        let meter = Meter(self);
        let input = StepInput {
            job: &job,
            plan: &plan,
            chunk: &chunk,
            attempt: attempt + 1,
        };
        let step = chunk_step(
            &self.store,
            &meter,
            input,
            std::future::pending(),
            |done| async move {
                let kept = self.store.checkpoint(id, run, &done).await?;
                Ok((done, kept))
            },
        )
        .await?;
        match step {
            ChunkStep::Committed { done, .. } => {
                tracing::info!(
                    chunk = k,
                    ms = done.duration_ms.unwrap_or(0),
                    from_memory = done.from_memory,
                    "chunk translated"
                );
                Ok(more(k + 1))
            }
            ChunkStep::Failed(err) => {
                let public = err.public();
                let name = err.class.error_name();
                tracing::warn!(job_id = %id, chunk = k, error = %public,
                    detail = err.detail.as_deref().unwrap_or(""), class = name, "chunk attempt failed");
                Ok(Answer::Failure(name, public))
            }
            // Nothing stops a call here: the state machine's timeout does.
            ChunkStep::Stopped => Ok(StepState::Stopped.into()),
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
        if job.status != JobStatus::Processing || job.run != run {
            // Cancelled, or ended by a repeated task: nothing to complete.
            return Ok(StepState::Stopped.into());
        }
        if ledger.iter().any(|c| c.status != ChunkStatus::Completed) {
            return Ok(Answer::Failure(
                ErrorClass::Permanent.error_name(),
                "the job is still running this run but its chunks are not all done".into(),
            ));
        }
        let (engine_name, model) = pipeline::engine_and_model(&job, &self.engines);
        let result = pipeline::job_result(job.kind, &ledger, &engine_name, model);
        let outcome = transition_by_id(
            &self.store,
            id,
            Some(run),
            Change::Complete(result),
            Utc::now(),
        )
        .await?;
        let state = if outcome_job_moved_on(&outcome, run) {
            // Someone finished or stopped the run first (a repeated task, a
            // cancel): the job already is what it will be.
            tracing::info!(status = %now_status(&outcome), "the run ended elsewhere");
            StepState::Stopped
        } else if matches!(outcome, TransitionOutcome::Applied(_)) {
            StepState::Completed
        } else {
            return Ok(Answer::Failure(
                ErrorClass::Permanent.error_name(),
                "the job is still running this run but its chunks are not all done".into(),
            ));
        };
        if state == StepState::Completed {
            crate::dispatch::kick_or_log(&self.store).await;
        }
        self.write_ingest_result(id, item.ingest_key.as_deref())
            .await;
        Ok(state.into())
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
        caught: Option<&Caught>,
    ) -> Result<Answer, CloudError> {
        let item = self.store.item(id, false).await?;
        let k = item.job.chunks_completed;
        let error = if k >= item.job.chunks_total {
            // Every chunk is done: the completion step itself failed.
            let why = caught
                .and_then(|c| {
                    c.cause
                        .clone()
                        .filter(|c| !c.is_empty())
                        .or(c.error.clone())
                })
                .unwrap_or_else(|| "the completion step failed".to_owned());
            format!("completion_failed: assembling the result failed: {why}")
        } else {
            let last = self.store.chunk(id, k).await?.and_then(|c| c.error);
            let detail = last.unwrap_or_else(|| "no error recorded".to_owned());
            pipeline::describe_failure(k, attempts, class, &detail)
        };
        let change = Change::Fail {
            error,
            chunk: (k < item.job.chunks_total).then_some(k),
        };
        let outcome = transition_by_id(&self.store, id, Some(run), change, Utc::now()).await?;
        let state = match &outcome {
            TransitionOutcome::Applied(_) => {
                crate::dispatch::kick_or_log(&self.store).await;
                StepState::Failed
            }
            _ => {
                // Cancelled, reaped or ended by a repeated task first.
                tracing::info!(status = %now_status(&outcome), "the run ended elsewhere");
                StepState::Stopped
            }
        };
        self.write_ingest_result(id, item.ingest_key.as_deref())
            .await;
        Ok(state.into())
    }
}

/// The worker's counters for a chunk step: the shared counter items behind
/// `/metrics`.
struct Meter<'a>(&'a Worker);

#[async_trait::async_trait]
impl ChunkMeter for Meter<'_> {
    async fn memory_hit(&self) {
        self.0.count(&Counted::MemoryHit).await;
    }

    async fn attempt(
        &self,
        outcome: &'static str,
        engine: &str,
        elapsed: Option<std::time::Duration>,
        quality_retried: bool,
    ) {
        self.0
            .count(&Counted::Attempt {
                outcome,
                engine,
                seconds: elapsed.map(|d| d.as_secs_f64()),
                quality_retried,
            })
            .await;
    }
}

/// True when a refused or lost end of run `run` found the job no longer in
/// that run (finished, cancelled, retried).
fn outcome_job_moved_on(outcome: &TransitionOutcome, run: u32) -> bool {
    match outcome {
        TransitionOutcome::Applied(_) => false,
        TransitionOutcome::LostRace(now) => now.status != JobStatus::Processing || now.run != run,
        TransitionOutcome::NotAllowed(e) => e.from != JobStatus::Processing,
    }
}

/// The status a lost or refused change found, for logs.
fn now_status(outcome: &TransitionOutcome) -> String {
    match outcome {
        TransitionOutcome::Applied(j) | TransitionOutcome::LostRace(j) => j.status.to_string(),
        TransitionOutcome::NotAllowed(e) => e.from.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state machine routes on the names the worker writes: every
    /// `$.chunk.state` its `Route` compares is a [`StepState`], and a step's
    /// output reads back as one.
    #[test]
    fn the_state_machine_routes_on_the_worker_states() {
        let asl: serde_json::Value =
            serde_json::from_str(include_str!("../../../infra/statemachine/job.asl.json"))
                .expect("the state machine is JSON");
        let choices = asl["States"]["Route"]["Choices"]
            .as_array()
            .expect("Route has choices");
        assert!(!choices.is_empty());
        for c in choices {
            assert_eq!(c["Variable"], "$.chunk.state");
            let name = c["StringEquals"].clone();
            let state: StepState = serde_json::from_value(name.clone())
                .unwrap_or_else(|e| panic!("{name} is not a worker state: {e}"));
            assert_eq!(json!(state), name);
        }
        match Answer::from(StepState::More) {
            Answer::Success(v) => assert_eq!(v, json!({"state": "more"})),
            other => panic!("{other:?}"),
        }
    }

    /// The three messages the state machine sends (as in job.asl.json).
    #[test]
    fn state_machine_messages_parse_into_steps() {
        let id = JobId::new();
        let chunk =
            format!(r#"{{"action":"chunk","taskToken":"t1","jobId":"{id}","run":2,"attempt":1}}"#);
        let t = Task::parse(&chunk).expect("chunk task");
        assert_eq!(
            (t.job_id, t.run, t.step),
            (id, 2, Step::Chunk { attempt: 1 })
        );
        let complete =
            format!(r#"{{"action":"complete","taskToken":"t2","jobId":"{id}","run":1}}"#);
        assert_eq!(
            Task::parse(&complete).expect("complete").step,
            Step::Complete
        );
        let fail = format!(
            r#"{{"action":"fail","taskToken":"t3","jobId":"{id}","run":1,"reason":"transient","attempt":2}}"#
        );
        assert_eq!(
            Task::parse(&fail).expect("fail").step,
            Step::Fail {
                reason: ErrorClass::Transient,
                attempt: 2,
                caught: None,
            }
        );
        // The completion's Catch passes the caught error on (its cause may
        // be null on emulators).
        let caught = format!(
            r#"{{"action":"fail","taskToken":"t4","jobId":"{id}","run":1,"reason":"transient","caught":{{"Error":"States.Timeout","Cause":null}}}}"#
        );
        assert_eq!(
            Task::parse(&caught).expect("fail after completion").step,
            Step::Fail {
                reason: ErrorClass::Transient,
                attempt: 0,
                caught: Some(Caught {
                    error: Some("States.Timeout".into()),
                    cause: None,
                }),
            }
        );
    }

    #[test]
    fn malformed_tasks_keep_their_token_for_the_answer() {
        let bad = r#"{"action":"explode","taskToken":"tok","jobId":"nope","run":1}"#;
        let e = Task::parse(bad).expect_err("malformed");
        assert_eq!(e.task_token.as_deref(), Some("tok"));
        let id = JobId::new();
        let bad_reason = format!(
            r#"{{"action":"fail","taskToken":"t","jobId":"{id}","run":1,"reason":"maybe"}}"#
        );
        assert!(Task::parse(&bad_reason).is_err());
        assert_eq!(Task::parse("not json").expect_err("bad").task_token, None);
    }
}
