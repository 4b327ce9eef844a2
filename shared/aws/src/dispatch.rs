//! The dispatcher: one job-queue message → at most one Step Functions
//! execution, under the global concurrency limit.
//!
//! A message names a job run (`generation`) and a segment (a long job
//! continues in a new execution every `ChunksPerExecution` chunks). The slot
//! is taken in the same DynamoDB transaction that moves the job from pending
//! to processing; the execution is named `<job>-<run>-<segment>`, so a
//! duplicate delivery is refused by Step Functions itself
//! (`ExecutionAlreadyExists`). When no slot is free the message is returned
//! to the queue (a batch item failure) and, because the queue is FIFO with one
//! message group, nothing behind it starts first.

use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::ExecutionStatus;
use chrono::Utc;
use lotsawa_core::store::{Change, TransitionOutcome, transition, transition_by_id};
use lotsawa_core::{JobId, JobStatus, StoreError};
use serde::Deserialize;

use crate::store::{CloudError, DynamoStore, aws};

/// A job-queue message.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The job.
    pub job_id: JobId,
    /// The run (the job's `attempts` once started).
    pub generation: u32,
    /// Which execution of the run (0 first).
    #[serde(default)]
    pub segment: u32,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// An execution runs the job (started now or already running).
    Started(String),
    /// Nothing to do: the job is finished, cancelled or in another run.
    Dropped(&'static str),
    /// No slot free: try the message again later.
    Full,
}

/// The execution name of a run's segment.
pub fn execution_name(id: JobId, run: u32, segment: u32) -> String {
    format!("{id}-{run}-{segment}")
}

/// Handle one message.
#[tracing::instrument(skip_all, fields(job_id = %msg.job_id, run = msg.generation))]
pub async fn dispatch(store: &DynamoStore, msg: &JobMessage) -> Result<Dispatched, CloudError> {
    let id = msg.job_id;
    let job = match store.item(id, false).await {
        Ok(j) => j,
        Err(StoreError::NotFound(_)) => return Ok(Dispatched::Dropped("no such job")),
        Err(e) => return Err(e.into()),
    };
    let run = msg.generation;
    match job.job.status {
        JobStatus::Pending if job.job.attempts + 1 == run => {
            let start = Change::Start {
                limit: store.config.concurrency,
            };
            match transition(store, &job.job, start, Utc::now()).await? {
                TransitionOutcome::Applied(_) => {}
                TransitionOutcome::LostRace(now) if now.status == JobStatus::Pending => {
                    // Still pending: no slot was free.
                    reap(store).await?;
                    return Ok(Dispatched::Full);
                }
                TransitionOutcome::LostRace(_) | TransitionOutcome::NotAllowed(_) => {
                    return Ok(Dispatched::Dropped("job changed while claiming"));
                }
            }
        }
        JobStatus::Processing if job.job.attempts == run && job.slot == Some(run) => {
            // A redelivery after a crash before the start, or the next segment.
        }
        _ => return Ok(Dispatched::Dropped("job is not waiting for this run")),
    }
    let name = execution_name(id, run, msg.segment);
    let input =
        serde_json::json!({"jobId": id.to_string(), "generation": run, "segment": msg.segment});
    let arn = match store
        .clients
        .sfn
        .start_execution()
        .state_machine_arn(&store.config.state_machine_arn)
        .name(&name)
        .input(input.to_string())
        .send()
        .await
    {
        Ok(out) => out.execution_arn,
        Err(e) if e.code() == Some("ExecutionAlreadyExists") => {
            tracing::info!(%name, "execution already exists; duplicate delivery ignored");
            format!(
                "{}:{name}",
                store
                    .config
                    .state_machine_arn
                    .replace(":stateMachine:", ":execution:")
            )
        }
        Err(e) => return Err(aws("states")(e)),
    };
    store.set_execution(id, run, &arn).await?;
    Ok(Dispatched::Started(arn))
}

/// Release the slots of runs whose execution ended without releasing them
/// (timed out, failed or aborted outside the worker): the job fails with the
/// execution's status. Runs when the semaphore is full, and from the
/// execution-status EventBridge rule on AWS.
pub async fn reap(store: &DynamoStore) -> Result<u32, CloudError> {
    let mut released = 0;
    for job in store.processing().await? {
        let Some(arn) = &job.execution_arn else {
            continue;
        };
        let Some(run) = job.slot else { continue };
        let out = match store
            .clients
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(job_id = %job.job.id, error = %aws_sdk_sfn::error::DisplayErrorContext(&e), "describe execution failed");
                continue;
            }
        };
        let status = out.status;
        // Under the emulator, only executions that ended a while ago: moto
        // may report a passing error state before its Catch runs. On AWS the
        // status event arrives once, after the end: act on it at once.
        let settle = if store.config.emulator { 5 } else { 0 };
        let settled = out
            .stop_date
            .is_some_and(|d| Utc::now().timestamp() - d.secs() >= settle);
        if settled
            && matches!(
                status,
                ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Aborted
            )
        {
            let error = format!("the job's execution ended as {}", status.as_str());
            let fail = Change::Fail { error, chunk: None };
            if let TransitionOutcome::Applied(_) =
                transition_by_id(store, job.job.id, Some(run), fail, Utc::now()).await?
            {
                released += 1;
                tracing::warn!(job_id = %job.job.id, status = status.as_str(), "released the slot of an ended execution");
            }
        }
    }
    Ok(released)
}
