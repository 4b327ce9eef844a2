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

/// How long an execution must have ended before a sweep settles it (its own
/// status event normally does it first).
pub const REAP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

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
                    // Still pending: no slot was free. Runs whose status
                    // event was lost may hold slots: sweep them.
                    reap(store, REAP_MIN_AGE).await?;
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

/// An execution status change, as EventBridge delivers it
/// (`detail` of a "Step Functions Execution Status Change" event).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionChange {
    /// The execution.
    pub execution_arn: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
}

/// The job and run an execution name (`<job>-<run>-<segment>`) belongs to.
pub fn run_of_execution(arn: &str) -> Option<(JobId, u32)> {
    let name = arn.rsplit(':').next()?;
    let mut parts = name.rsplitn(3, '-');
    let _segment: u32 = parts.next()?.parse().ok()?;
    let run: u32 = parts.next()?.parse().ok()?;
    let id: JobId = parts.next()?.parse().ok()?;
    Some((id, run))
}

/// Act on one ended execution: a run it leaves `processing` (its worker
/// never finished it: a timeout, a failure outside the worker, a stop, or a
/// success that lost its completion) fails and releases its slot. A success
/// that handed the run to its next segment, and any execution that is not
/// the run's current one, change nothing. True when a run was ended here.
pub async fn settle_execution(
    store: &DynamoStore,
    change: &ExecutionChange,
) -> Result<bool, CloudError> {
    let Some((id, run)) = run_of_execution(&change.execution_arn) else {
        tracing::warn!(arn = %change.execution_arn, "an execution that is not a job run");
        return Ok(false);
    };
    let job = match store.item(id, false).await {
        Ok(j) => j,
        Err(StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let current = job
        .execution_arn
        .as_deref()
        .is_none_or(|a| a == change.execution_arn);
    if job.job.status != JobStatus::Processing || job.job.attempts != run || !current {
        return Ok(false);
    }
    let error = match change.status.as_str() {
        "FAILED" | "TIMED_OUT" | "ABORTED" => {
            format!("the job's execution ended as {}", change.status)
        }
        "SUCCEEDED" => {
            let out = store
                .clients
                .sfn
                .describe_execution()
                .execution_arn(&change.execution_arn)
                .send()
                .await
                .map_err(aws("states"))?;
            if out.output().is_some_and(|o| o.contains("\"handedOff\"")) {
                // The run goes on in its next segment.
                return Ok(false);
            }
            "the job's execution ended as SUCCEEDED without finishing the job".to_owned()
        }
        _ => return Ok(false),
    };
    let fail = Change::Fail { error, chunk: None };
    let ended = matches!(
        transition_by_id(store, id, Some(run), fail, Utc::now()).await?,
        TransitionOutcome::Applied(_)
    );
    if ended {
        tracing::warn!(job_id = %id, status = %change.status, "ended the run of an execution that ended without finishing it");
    }
    Ok(ended)
}

/// The sweep for status events that never came: every run still holding a
/// slot whose execution ended at least `min_age` ago is settled as its
/// event would have settled it. Runs on a schedule, and when the semaphore
/// is full.
pub async fn reap(store: &DynamoStore, min_age: std::time::Duration) -> Result<u32, CloudError> {
    let mut released = 0;
    for job in store.processing().await? {
        let Some(arn) = &job.execution_arn else {
            continue;
        };
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
        let old_enough = out
            .stop_date
            .is_some_and(|d| Utc::now().timestamp() - d.secs() >= min_age.as_secs() as i64);
        if out.status != ExecutionStatus::Running && old_enough {
            let change = ExecutionChange {
                execution_arn: arn.clone(),
                status: out.status.as_str().to_owned(),
            };
            if settle_execution(store, &change).await? {
                released += 1;
            }
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_name_their_run() {
        let id = JobId::new();
        let arn = format!(
            "arn:aws:states:us-east-1:123456789012:execution:lotsawa-jobs:{}",
            execution_name(id, 3, 1)
        );
        assert_eq!(run_of_execution(&arn), Some((id, 3)));
        assert_eq!(
            run_of_execution("arn:aws:states:x:execution:sm:manual-run"),
            None
        );
    }

    #[test]
    fn status_events_parse_from_their_detail() {
        let event = r#"{"version":"0","id":"e","detail-type":"Step Functions Execution Status Change",
            "source":"aws.states","account":"123456789012","time":"2026-12-01T00:00:00Z","region":"us-east-1",
            "resources":["arn:aws:states:us-east-1:123456789012:execution:sm:x"],
            "detail":{"executionArn":"arn:aws:states:us-east-1:123456789012:execution:sm:x",
            "stateMachineArn":"arn:aws:states:us-east-1:123456789012:stateMachine:sm","name":"x",
            "status":"TIMED_OUT","startDate":1,"stopDate":2,"input":"{}","output":null}}"#;
        let e: aws_lambda_events::eventbridge::EventBridgeEvent<ExecutionChange> =
            serde_json::from_str(event).expect("event");
        assert_eq!(e.detail.status, "TIMED_OUT");
    }
}
