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
        /// Seconds the chunk has waited on rate limits so far.
        #[serde(default)]
        throttled: u64,
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

/// A re-translation as the worker's queue carries it
/// (`{"action": "retranslate", …}`, no task token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetranslateMessage {
    /// Always `retranslate`.
    pub action: String,
    /// The re-translation.
    #[serde(flatten)]
    pub request: lotsawa_core::retranslate::Retranslation,
}

impl RetranslateMessage {
    /// The message of `request`.
    pub fn new(request: lotsawa_core::retranslate::Retranslation) -> Self {
        Self {
            action: "retranslate".into(),
            request,
        }
    }

    /// The re-translation in a queue message, when it is one.
    pub fn parse(body: &str) -> Option<lotsawa_core::retranslate::Retranslation> {
        serde_json::from_str::<Self>(body)
            .ok()
            .filter(|m| m.action == "retranslate")
            .map(|m| m.request)
    }
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
    /// A rate limit: wait `wait` seconds, then try the chunk again without
    /// spending an attempt.
    Throttled,
}

/// A step's output: `{"state": …}` (and `"wait"` seconds when throttled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    /// What became of the step.
    pub state: StepState,
    /// Seconds to wait (throttled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// Seconds of that wait the provider's 429s asked for: what the chunk's
    /// throttle budget spends (the shared limiter's own waits spend none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<u64>,
}

impl From<StepState> for Answer {
    fn from(state: StepState) -> Self {
        Answer::Success(json!(StepOutput {
            state,
            wait: None,
            spent: None,
        }))
    }
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct Worker {
    /// The store.
    pub store: DynamoStore,
    /// Engines.
    pub engines: EngineSet,
    /// Tenants' budgets, read at most a second ago (a warm function keeps
    /// them between invocations).
    pub budgets: std::sync::Arc<lotsawa_core::usage::BudgetCache>,
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
            Step::Chunk { attempt, throttled } => {
                self.chunk(id, task.run, attempt, throttled).await
            }
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

    async fn chunk(
        &self,
        id: JobId,
        run: u32,
        attempt: u32,
        throttled: u64,
    ) -> Result<Answer, CloudError> {
        // The job's settings, not its texts: a large source stays in S3.
        let job = self.store.item(id, false).await?.job;
        // The step joins the trace of the request that submitted the job
        // (its parent is set before the span is first entered).
        let span = tracing::info_span!("job.step", job.id = %id, job.run = run, attempt);
        lotsawa_telemetry::continue_trace(&span, job.trace.as_deref());
        self.chunk_of(job, run, attempt, throttled)
            .instrument(span)
            .await
    }

    /// One chunk step: the next unfinished chunk, or with
    /// `config.parallelChunks` above 1 every unfinished chunk of the window
    /// of that many from the first unfinished one, translated at once. Each
    /// chunk commits as it is translated; a failure of any answers the task
    /// (the committed ones stay), the earliest chunk's failure first.
    async fn chunk_of(
        &self,
        job: Job,
        run: u32,
        attempt: u32,
        throttled: u64,
    ) -> Result<Answer, CloudError> {
        let id = job.id;
        if job.status != JobStatus::Processing || job.run != run {
            return Ok(StepState::Stopped.into());
        }
        let done = job.chunks_completed;
        if done >= job.chunks_total {
            return Ok(StepState::Done.into());
        }
        if let Some(spent) = self
            .budgets
            .spent(&self.store, &job.tenant, Utc::now())
            .await?
        {
            // The run ends here, failed with `budget_exhausted`; the
            // execution ends as stopped (nothing to retry).
            tracing::warn!(job_id = %id, budget = spent.budget, used = spent.used,
                "monthly token budget spent; the run stops");
            let change = Change::Fail {
                error: spent.job_error(),
                chunk: None,
            };
            let outcome = transition_by_id(&self.store, id, Some(run), change, Utc::now()).await?;
            if matches!(outcome, TransitionOutcome::Applied(_)) {
                crate::dispatch::kick_or_log(&self.store).await;
            }
            return Ok(StepState::Stopped.into());
        }
        let width = job.config.parallel_chunks.max(1);
        let ledger = self.window_ledger(&job).await?;
        let Some(first) = ledger
            .iter()
            .find(|c| c.status != ChunkStatus::Completed)
            .map(|c| c.index)
        else {
            return Ok(StepState::Done.into());
        };
        let window: Vec<&lotsawa_core::ChunkRecord> = ledger
            .iter()
            .filter(|c| c.index >= first && c.index < first + width)
            .filter(|c| c.status != ChunkStatus::Completed)
            .collect();
        let prev_of = |index: u32| {
            index
                .checked_sub(1)
                .and_then(|p| ledger.iter().find(|c| c.index == p))
        };
        let mut plans = Vec::with_capacity(window.len());
        for chunk in &window {
            match ChunkPlan::new(&job, chunk, prev_of(chunk.index), &self.engines) {
                Ok(p) => plans.push(p),
                Err(why) => return Ok(Answer::Failure(ErrorClass::Permanent.error_name(), why)),
            }
        }
        let meter = Meter(self);
        let steps = futures::future::join_all(window.iter().zip(&plans).map(|(chunk, plan)| {
            let input = StepInput {
                job: &job,
                plan,
                chunk,
                attempt: attempt + 1,
            };
            chunk_step(
                &self.store,
                &meter,
                input,
                std::future::pending(),
                move |done| async move {
                    let kept = self.store.checkpoint(id, run, &done).await?;
                    Ok((done, kept))
                },
            )
        }))
        .await;
        let (mut failure, mut wait, mut spent, mut recorded) = (None, None, 0u64, 0u32);
        for (chunk, step) in window.iter().zip(steps) {
            match step? {
                ChunkStep::Committed { done, kept } => {
                    tracing::info!(
                        chunk = chunk.index,
                        ms = done.duration_ms.unwrap_or(0),
                        from_memory = done.from_memory,
                        "chunk translated"
                    );
                    match kept {
                        lotsawa_core::Checkpoint::RunEnded => {
                            return Ok(StepState::Stopped.into());
                        }
                        lotsawa_core::Checkpoint::Recorded => recorded += 1,
                        lotsawa_core::Checkpoint::AlreadyDone => {}
                    }
                }
                ChunkStep::Failed(err) => {
                    tracing::warn!(job_id = %id, chunk = chunk.index, error = %err.public(),
                        detail = err.detail.as_deref().unwrap_or(""), class = err.class.error_name(), "chunk attempt failed");
                    // A rate limit within the budget spends no attempt:
                    // the state machine waits and asks again.
                    let policy = lotsawa_core::RetryPolicy {
                        throttle_budget: self.store.config.throttle_budget,
                        ..Default::default()
                    };
                    if let lotsawa_core::RetryDecision::Throttled(w) = policy.after_failure(
                        attempt + 1,
                        std::time::Duration::from_secs(throttled),
                        &err,
                        0.5,
                    ) {
                        let secs = w.as_secs_f64().ceil().max(1.0) as u64;
                        wait = wait.max(Some(secs));
                        // Only the provider's 429s spend the throttle budget.
                        if err.throttle == Some(lotsawa_core::engine::Throttle::Provider) {
                            spent = spent.max(secs);
                        }
                    } else if failure
                        .as_ref()
                        .is_none_or(|f: &lotsawa_core::EngineError| {
                            f.class != ErrorClass::Permanent
                        })
                    {
                        failure = Some(err);
                    }
                }
                ChunkStep::Stopped => return Ok(StepState::Stopped.into()),
            }
        }
        // Attempts and throttled time count per chunk: a step that
        // committed chunks made progress, so a transient failure or a rate
        // limit of another chunk of its window is tried again with the next
        // step's fresh count. Without progress they count; a permanent
        // failure always ends the run.
        match failure {
            Some(err) if err.class == ErrorClass::Permanent || recorded == 0 => {
                return Ok(Answer::Failure(err.class.error_name(), err.public()));
            }
            _ => {}
        }
        if let Some(wait) = wait
            && recorded == 0
        {
            return Ok(Answer::Success(json!(StepOutput {
                state: StepState::Throttled,
                wait: Some(wait),
                spent: Some(spent),
            })));
        }
        // Only this execution commits this run's chunks: the count is the
        // one read plus what this step recorded.
        Ok(if done + recorded >= job.chunks_total {
            StepState::Done.into()
        } else {
            StepState::More.into()
        })
    }

    /// The chunks around the first unfinished one: chunks commit in any
    /// order within a window of `parallelChunks`, so the count of committed
    /// chunks runs ahead of the first unfinished one by less than a window
    /// (it lies in `done - width + 1 ..= done`); the chunk before it comes
    /// too (its context).
    async fn window_ledger(&self, job: &Job) -> Result<Vec<lotsawa_core::ChunkRecord>, CloudError> {
        let width = job.config.parallel_chunks.max(1);
        let done = job.chunks_completed;
        Ok(self
            .store
            .chunk_range(
                job.id,
                done.saturating_sub(width),
                (done + width).min(job.chunks_total),
            )
            .await?)
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
        let label = pipeline::result_label(&job, &self.engines);
        let result = pipeline::job_result(job.kind, &ledger, &label);
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
        // The first unfinished chunk failed (with parallel chunks the count
        // of committed chunks may run ahead of it); none: the completion.
        let failed = self
            .window_ledger(&item.job)
            .await?
            .into_iter()
            .find(|c| c.status != ChunkStatus::Completed);
        let error = match &failed {
            None => {
                let why = caught
                    .and_then(|c| {
                        c.cause
                            .clone()
                            .filter(|c| !c.is_empty())
                            .or(c.error.clone())
                    })
                    .unwrap_or_else(|| "the completion step failed".to_owned());
                format!("completion_failed: assembling the result failed: {why}")
            }
            Some(c) => {
                let detail = c.error.as_deref().unwrap_or("no error recorded");
                pipeline::describe_failure(c.index, attempts, class, detail)
            }
        };
        let change = Change::Fail {
            error,
            chunk: failed.map(|c| c.index),
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

    async fn tokens(&self, engine: &str, model: &str, usage: lotsawa_core::usage::Usage) {
        self.0
            .count(&Counted::Tokens {
                engine,
                model,
                usage,
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
        let throttled = StepOutput {
            state: StepState::Throttled,
            wait: Some(3),
            spent: Some(3),
        };
        assert_eq!(
            json!(throttled),
            json!({"state": "throttled", "wait": 3, "spent": 3})
        );
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
            (
                id,
                2,
                Step::Chunk {
                    attempt: 1,
                    throttled: 0
                }
            )
        );
        let throttled = format!(
            r#"{{"action":"chunk","taskToken":"t1","jobId":"{id}","run":2,"attempt":0,"throttled":12}}"#
        );
        assert_eq!(
            Task::parse(&throttled).expect("chunk task").step,
            Step::Chunk {
                attempt: 0,
                throttled: 12
            }
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
