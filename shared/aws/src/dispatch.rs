//! The dispatcher: job-queue messages → Step Functions executions, under
//! the global concurrency limit.
//!
//! The table is the queue: a pending job waits as a pending item, and a
//! job-queue message is a wake-up. On one, the dispatcher claims the oldest
//! pending jobs into the free slots (each slot taken in the same DynamoDB
//! transaction that moves its job to processing) and starts their
//! executions, named `<job>-<run>-<segment>` so a repeated start is refused
//! by Step Functions itself (`ExecutionAlreadyExists`). A job that finds no
//! slot costs no further receives: whatever frees a slot (a run's end, a
//! cancel, a settled execution, the sweep) sends a wake-up again
//! ([`kick`]). A long job continues in a new execution every
//! `ChunksPerExecution` chunks (a message naming the next segment).

use crate::messages::JobMessage;
use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::ExecutionStatus;
use chrono::Utc;
use lotsawa_core::store::{Change, TransitionOutcome, transition_by_id};
use lotsawa_core::{AdmissionStore, JobId, JobStatus, JobStore, StoreError};
use serde::Deserialize;

use crate::error::{CloudError, aws};
use crate::store::DynamoStore;

/// How long an execution must have ended before a sweep settles it (its own
/// status event normally does it first).
pub const REAP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the sweep keeps trying to start a claimed run before it fails
/// the run and frees its slot.
pub const START_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// An execution runs the job (started now or already running).
    Started(String),
    /// Nothing to do: the job is finished, cancelled or in another run.
    Dropped(&'static str),
    /// No slot free: the job stays pending in the table, and the message
    /// is done with; the run that frees a slot sends it again
    /// ([`kick`]), so waiting costs no receives and never reaches the DLQ.
    Waiting,
}

/// The execution name of a run's segment.
pub fn execution_name(id: JobId, run: u32, segment: u32) -> String {
    format!("{id}-{run}-{segment}")
}

/// Handle one message. A message for a segment after the first continues
/// its run. Any other message is a wake-up: the oldest pending jobs are
/// started into the free slots (first come, first served across the
/// deployment), then the message's own job if it is still pending (the
/// listing index may not show a job created a moment ago). A job that
/// finds no slot waits in the table; the run that frees one kicks it.
#[tracing::instrument(skip_all, fields(job_id = %msg.job_id, run = msg.run))]
pub async fn dispatch(store: &DynamoStore, msg: &JobMessage) -> Result<Dispatched, CloudError> {
    let id = msg.job_id;
    let job = match store.item(id, false).await {
        Ok(j) => j,
        Err(StoreError::NotFound(_)) => return Ok(Dispatched::Dropped("no such job")),
        Err(e) => return Err(e.into()),
    };
    let run = msg.run;
    match job.job.status {
        JobStatus::Pending if job.job.run + 1 == run => {}
        JobStatus::Processing if job.job.run == run && job.slot == Some(run) => {
            // A redelivery after a crash before the start, or the next
            // segment; a repeated message for a segment already started
            // changes nothing (it must not point the job at an older one).
            let started = job
                .execution_arn
                .as_deref()
                .and_then(segment_of_execution)
                .is_some_and(|current| current >= msg.segment);
            if started {
                return Ok(Dispatched::Dropped("segment already started"));
            }
            let arn = start_run(store, id, run, msg.segment).await?;
            return Ok(Dispatched::Started(arn));
        }
        _ => return Ok(Dispatched::Dropped("job is not waiting for this run")),
    }
    let limit = store.config.concurrency;
    // The oldest waiting jobs first, while slots are free.
    for _ in 0..limit {
        let Some(oldest) = store.claim_next(limit, Utc::now()).await? else {
            break;
        };
        let arn = start_run(store, oldest.id, oldest.run, 0).await?;
        if oldest.id == id {
            return Ok(Dispatched::Started(arn));
        }
    }
    match store.claim(&job.job, limit, Utc::now()).await? {
        TransitionOutcome::Applied(j) => {
            Ok(Dispatched::Started(start_run(store, id, j.run, 0).await?))
        }
        TransitionOutcome::LostRace(now) if now.status == JobStatus::Pending => {
            // No slot free. Runs whose status event was lost may hold
            // slots: sweep them (the sweep kicks waiting jobs into slots it
            // frees), at most once a minute per instance: a sweep costs a
            // DescribeExecution per running job, and a burst of wake-ups
            // against a full semaphore would otherwise pay it every time.
            // The sweep's own failures are the sweep's: this wake-up is done.
            if sweep_due(Utc::now().timestamp())
                && let Err(e) = reap(store, REAP_MIN_AGE).await
            {
                tracing::warn!(error = %e, "sweep from a wake-up failed");
            }
            Ok(Dispatched::Waiting)
        }
        TransitionOutcome::LostRace(_) | TransitionOutcome::NotAllowed(_) => {
            Ok(Dispatched::Dropped("job changed while claiming"))
        }
    }
}

/// When this instance last swept from a wake-up (Unix seconds).
static LAST_SWEEP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);

/// True (and the time taken) when this instance has not swept from a
/// wake-up within [`REAP_MIN_AGE`].
fn sweep_due(now: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = LAST_SWEEP.load(Ordering::Relaxed);
    last.saturating_add(REAP_MIN_AGE.as_secs() as i64) <= now
        && LAST_SWEEP
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Start the execution of a claimed run's segment (named
/// `<job>-<run>-<segment>`: a repeated start is refused by Step Functions)
/// and record it on the job.
async fn start_run(
    store: &DynamoStore,
    id: JobId,
    run: u32,
    segment: u32,
) -> Result<String, CloudError> {
    let name = execution_name(id, run, segment);
    let input = JobMessage::new(id, run, segment).to_json();
    let arn = match store
        .clients
        .sfn
        .start_execution()
        .state_machine_arn(&store.config.state_machine_arn)
        .name(&name)
        .input(input)
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
    store.set_execution(id, run, segment, &arn).await?;
    tracing::info!(job_id = %id, run, segment, %arn, "execution started");
    Ok(arn)
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

/// The job, run and segment an execution name (`<job>-<run>-<segment>`)
/// belongs to.
fn parse_execution(arn: &str) -> Option<(JobId, u32, u32)> {
    let name = arn.rsplit(':').next()?;
    let mut parts = name.rsplitn(3, '-');
    let segment: u32 = parts.next()?.parse().ok()?;
    let run: u32 = parts.next()?.parse().ok()?;
    let id: JobId = parts.next()?.parse().ok()?;
    Some((id, run, segment))
}

/// The job and run an execution belongs to.
pub fn run_of_execution(arn: &str) -> Option<(JobId, u32)> {
    parse_execution(arn).map(|(id, run, _)| (id, run))
}

/// The segment an execution runs.
pub fn segment_of_execution(arn: &str) -> Option<u32> {
    parse_execution(arn).map(|(_, _, segment)| segment)
}

/// Send the oldest pending jobs the run messages that start them, as many
/// as slots are free. Called by whatever frees a slot (a run that ends, a
/// cancel, a settled execution, the sweep): jobs that found no slot wait in
/// the table, not in the queue. A kick is its own message (its own
/// deduplication id); a job it starts twice is started once (claim
/// compare-and-set, execution names). Pending jobs go by creation time.
pub async fn kick(store: &DynamoStore) -> Result<u32, CloudError> {
    let free = store
        .config
        .concurrency
        .saturating_sub(store.slots_in_use().await?);
    if free == 0 {
        return Ok(0);
    }
    let mut sent = 0;
    for id in store.next_pending(free).await? {
        let job = match store.item(id, false).await {
            Ok(j) => j.job,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if job.status == JobStatus::Pending {
            store.messages.enqueue(id, job.run + 1, 0).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// [`kick`] for a caller that has already freed its slot: a failure is
/// logged, and the sweep starts the waiting jobs later.
pub async fn kick_or_log(store: &DynamoStore) {
    if let Err(e) = kick(store).await {
        tracing::warn!(error = %e, "starting waiting jobs failed; the sweep will");
    }
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
    if job.job.status != JobStatus::Processing || job.job.run != run || !current {
        return Ok(false);
    }
    let error = match change.status.as_str() {
        "FAILED" | "TIMED_OUT" | "ABORTED" => {
            format!(
                "execution_ended: the job's execution ended as {}",
                change.status
            )
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
            "execution_ended: the job's execution ended as SUCCEEDED without finishing the job"
                .to_owned()
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
        // A job made from an upload says how it ended under results/, as
        // when its worker or a cancel ends it (its record said "pending").
        if let Some(key) = job.ingest_key.as_deref()
            && let Err(e) = crate::ingest::write_result(store, key, id).await
        {
            tracing::error!(job_id = %id, error = %e, "writing the settled job's record failed");
        }
        kick(store).await?;
    }
    Ok(ended)
}

/// The sweep for status events that never came: every run still holding a
/// slot whose execution ended at least `min_age` ago is settled as its
/// event would have settled it. Runs on a schedule, and when the semaphore
/// is full.
pub async fn reap(store: &DynamoStore, min_age: std::time::Duration) -> Result<u32, CloudError> {
    let mut released = 0;
    let mut first_error = None;
    for job in store.processing().await? {
        let Some(arn) = &job.execution_arn else {
            // Claimed (processing, slot taken) but no execution recorded:
            // the start failed or the dispatcher stopped between the claim
            // and the start. Start it now (the execution name makes a start
            // that did happen answer `ExecutionAlreadyExists`, which records
            // it); a failed start is tried again by the next sweep, and the
            // slot is never lost.
            let claimed_long_ago = job
                .job
                .started_at
                .is_none_or(|at| (Utc::now() - at).num_seconds() >= min_age.as_secs() as i64);
            if job.slot == Some(job.job.run) && claimed_long_ago {
                let (id, run) = (job.job.id, job.job.run);
                tracing::warn!(job_id = %id, run, "a claimed run without an execution: starting it");
                if let Err(e) = start_run(store, id, run, 0).await {
                    let waited = job
                        .job
                        .started_at
                        .map_or(0, |at| (Utc::now() - at).num_seconds());
                    if waited >= START_GIVE_UP.as_secs() as i64 {
                        // Starts keep failing (a denied call, a deleted state
                        // machine): fail the run and free its slot; the job
                        // can be retried.
                        let error = format!(
                            "dispatch_failed: the run could not be started in {waited} s: {e}"
                        );
                        let fail = Change::Fail { error, chunk: None };
                        if matches!(
                            transition_by_id(store, id, Some(run), fail, Utc::now()).await?,
                            TransitionOutcome::Applied(_)
                        ) {
                            tracing::error!(job_id = %id, run, "gave up starting a claimed run");
                            released += 1;
                        }
                    } else {
                        tracing::warn!(job_id = %id, error = %e, "starting a claimed run failed; the next sweep tries again");
                        first_error.get_or_insert(e);
                    }
                }
            }
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
        let handed_off = out.status == ExecutionStatus::Succeeded
            && out.output().is_some_and(|o| o.contains("\"handedOff\""));
        if handed_off && old_enough {
            // The segment handed the run on, but the next one never started
            // (its message was lost or went to the dead-letter queue): start
            // it here (its name makes a start that did happen harmless).
            if let Some(segment) = segment_of_execution(arn) {
                let (id, run) = (job.job.id, job.job.run);
                tracing::warn!(job_id = %id, run, next = segment + 1, "a handed-off run whose next segment never started: starting it");
                if let Err(e) = start_run(store, id, run, segment + 1).await {
                    first_error.get_or_insert(e);
                }
            }
            continue;
        }
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
    // Waiting jobs whose kick was lost start here.
    kick(store).await?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(released),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_semaphore_sweeps_at_most_once_a_minute() {
        let t = 1_000_000_000;
        assert!(sweep_due(t));
        assert!(!sweep_due(t + 1));
        assert!(!sweep_due(t + 59));
        assert!(sweep_due(t + 60));
        assert!(!sweep_due(t + 61));
    }

    #[test]
    fn execution_names_name_their_run() {
        let id = JobId::new();
        let arn = format!(
            "arn:aws:states:us-east-1:123456789012:execution:lotsawa-jobs:{}",
            execution_name(id, 3, 1)
        );
        assert_eq!(run_of_execution(&arn), Some((id, 3)));
        assert_eq!(segment_of_execution(&arn), Some(1));
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
