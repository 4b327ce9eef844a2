//! The in-process scheduler: starts pending jobs in FIFO order, never more
//! than `concurrency` at once, runs each job's chunks in order with the retry
//! policy, and wakes on the enqueue itself (no polling loop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use lotsawa_core::{
    ChunkRecord, ChunkStatus, Engine, EngineError, EngineKind, ErrorClass, GlossaryEntry,
    JobConfig, JobId, RetryDecision, RetryPolicy, Transition, memory, pipeline,
};
use lotsawa_engines::EngineSet;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{ChunkDone, ChunkFailure, Store, StoreError, StoredJob};

/// Cancellation handles of running jobs, shared with the service.
pub type RunningJobs = Arc<Mutex<HashMap<JobId, (u32, CancellationToken)>>>;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most jobs processing at once.
    pub concurrency: usize,
    /// Per-chunk retry policy.
    pub retry: RetryPolicy,
    /// How long in-flight chunk calls may run after a shutdown request.
    pub shutdown_grace: Duration,
}

/// Everything a job runner needs.
#[derive(Clone)]
pub(crate) struct Shared {
    pub store: Store,
    pub engines: EngineSet,
    pub metrics: Metrics,
    pub changes: broadcast::Sender<JobId>,
    pub wake: Arc<Notify>,
    pub running: RunningJobs,
    pub config: SchedulerConfig,
    /// Stop starting chunks (graceful shutdown begins).
    pub draining: CancellationToken,
    /// Abort in-flight calls (grace period over).
    pub hard_stop: CancellationToken,
}

impl Shared {
    fn publish(&self, id: JobId) {
        let _ = self.changes.send(id);
    }
}

/// Run until `draining` is cancelled, then let in-flight chunk calls finish
/// within the grace period and return.
pub(crate) async fn run(shared: Shared) {
    let mut tasks: JoinSet<(JobId, u32)> = JoinSet::new();

    // Resume jobs a crash or shutdown left processing, oldest first.
    match shared.store.processing_jobs().await {
        Ok(jobs) => {
            for (i, job) in jobs.into_iter().enumerate() {
                if i < shared.config.concurrency {
                    tracing::info!(job_id = %job.job.id, done = job.job.chunks_completed,
                        total = job.job.chunks_total, "resuming job");
                    spawn_runner(&shared, &mut tasks, job);
                } else {
                    let id = job.job.id;
                    if let Err(e) = shared
                        .store
                        .transition(id, Transition::Requeue, Some(job.job.attempts), Utc::now())
                        .await
                    {
                        tracing::error!(job_id = %id, error = %e, "cannot requeue job");
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot load processing jobs"),
    }

    loop {
        while tasks.len() < shared.config.concurrency && !shared.draining.is_cancelled() {
            match shared.store.claim_next(Utc::now()).await {
                Ok(Some(job)) => {
                    shared.publish(job.job.id);
                    spawn_runner(&shared, &mut tasks, job);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "claiming the next job failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((id, run)) = done
                    && let Ok(mut r) = shared.running.lock() {
                        // A retried job may already run again under a newer run.
                        if r.get(&id).is_some_and(|(current, _)| *current == run) {
                            r.remove(&id);
                        }
                    }
            }
            _ = shared.draining.cancelled() => break,
        }
    }

    // Draining: runners finish their in-flight call and stop before the next
    // chunk. After the grace period, abort what is still running; the jobs
    // stay `processing` and resume at the next start.
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                tracing::warn!(running = tasks.len(), "grace period over; aborting in-flight chunk calls");
                shared.hard_stop.cancel();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
}

fn spawn_runner(shared: &Shared, tasks: &mut JoinSet<(JobId, u32)>, job: StoredJob) {
    let id = job.job.id;
    let run = job.job.attempts;
    let token = CancellationToken::new();
    if let Ok(mut r) = shared.running.lock() {
        r.insert(id, (run, token.clone()));
    }
    let shared = shared.clone();
    tasks.spawn(async move {
        if let Err(e) = run_job(&shared, &job, &token).await {
            // The job stays `processing`; a restart resumes it.
            tracing::error!(job_id = %id, error = %e, "job runner stopped on a store error");
        }
        shared.publish(id);
        (id, run)
    });
}

enum Stop {
    Cancelled,
    Draining,
}

/// Outcome of translating one chunk.
enum ChunkOutcome {
    Done(ChunkDone),
    Failed { attempts: u32, err: EngineError },
    Stopped,
}

#[tracing::instrument(skip_all, fields(job_id = %job.job.id, run = job.job.attempts))]
async fn run_job(
    shared: &Shared,
    job: &StoredJob,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let run = job.job.attempts;
    let seq = job.seq;
    let engine_name = pipeline::engine_for(&job.job, shared.engines.default_name());
    let Some(engine) = shared.engines.get(&engine_name) else {
        let msg = format!(
            "engine '{engine_name}' is not configured on this server (available: {})",
            shared.engines.names().join(", ")
        );
        shared.store.fail_job(seq, run, msg, Utc::now()).await?;
        return Ok(());
    };
    let model = job
        .job
        .config
        .model
        .clone()
        .or_else(|| engine.default_model().map(str::to_owned));
    // Job terms first, then the server's glossary files.
    let mut glossary: Vec<GlossaryEntry> = job.job.config.glossary.clone();
    glossary.extend(shared.engines.glossary().entries());

    let chunks = shared.store.chunks(seq).await?;
    // The previous chunk's source and output, for context.
    let mut prev: Option<(String, String)> = None;
    for chunk in chunks.iter() {
        if chunk.status == ChunkStatus::Completed {
            prev = Some((
                chunk.source.clone(),
                chunk.translation.clone().unwrap_or_default(),
            ));
            continue;
        }
        if cancel.is_cancelled() || shared.draining.is_cancelled() {
            return Ok(());
        }
        let outcome = translate_chunk(
            shared,
            seq,
            engine.as_ref(),
            &job.job.config,
            model.clone(),
            &glossary,
            chunk,
            prev.as_ref().map(|(s, t)| (s.as_str(), t.as_str())),
            cancel,
        )
        .await?;
        match outcome {
            ChunkOutcome::Stopped => return Ok(()),
            ChunkOutcome::Done(done) => {
                prev = Some((chunk.source.clone(), done.translation.clone()));
                let kept = shared.store.complete_chunk(seq, run, done).await?;
                shared.publish(job.job.id);
                if !kept {
                    // Cancelled (or retried) while the call was in flight.
                    return Ok(());
                }
            }
            ChunkOutcome::Failed { attempts, err } => {
                let job_error = describe_failure(chunk.index, attempts, &err);
                tracing::warn!(chunk = chunk.index, attempts, error = %err.message, "chunk failed for good");
                shared
                    .store
                    .fail_chunk(
                        seq,
                        run,
                        ChunkFailure {
                            index: chunk.index,
                            attempts,
                            error: err.message.clone(),
                            job_error,
                        },
                        Utc::now(),
                    )
                    .await?;
                return Ok(());
            }
        }
    }

    // Every chunk is done: assemble from the committed ledger.
    let ledger = shared.store.chunks(seq).await?;
    if ledger.iter().any(|c| c.status != ChunkStatus::Completed) {
        return Ok(());
    }
    let result = pipeline::job_result(job.job.kind, &ledger, engine.name(), model);
    shared
        .store
        .complete_job(seq, run, result, Utc::now())
        .await?;
    Ok(())
}

/// Translate one chunk: translation memory, then attempts with backoff
/// between transport failures (each attempt runs the shared pipeline: quality
/// retry and reviewer included).
#[allow(clippy::too_many_arguments)]
async fn translate_chunk(
    shared: &Shared,
    seq: i64,
    engine: &dyn Engine,
    config: &JobConfig,
    model: Option<String>,
    glossary: &[GlossaryEntry],
    chunk: &ChunkRecord,
    prev: Option<(&str, &str)>,
    cancel: &CancellationToken,
) -> Result<ChunkOutcome, StoreError> {
    let is_model = engine.kind() == EngineKind::Model;
    let relevant = pipeline::relevant_glossary(glossary, &chunk.source);
    let memory_key =
        is_model.then(|| memory::key(&chunk.source, engine.name(), model.as_deref(), &relevant));
    if let Some(key) = &memory_key
        && let Some((translation, confidence)) = shared.store.memory_get(key.clone()).await?
    {
        shared.metrics.memory_hits.inc();
        return Ok(ChunkOutcome::Done(ChunkDone {
            index: chunk.index,
            translation,
            duration_ms: None,
            attempts: 0,
            confidence,
            from_memory: true,
            context: None,
            warning: None,
        }));
    }
    let context = if is_model {
        chunk
            .context
            .as_deref()
            .and_then(pipeline::decode_context)
            .unwrap_or_else(|| pipeline::context_for(prev))
    } else {
        Vec::new()
    };
    let task = pipeline::ChunkTask {
        index: chunk.index,
        source: &chunk.source,
        model: model.clone(),
        config,
        glossary: relevant,
        context: context.clone(),
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let outcome = tokio::select! {
            r = pipeline::attempt(engine, &task) => Ok(r),
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            _ = shared.hard_stop.cancelled() => Err(Stop::Draining),
        };
        let result = match outcome {
            Ok(r) => r,
            Err(Stop::Cancelled) => {
                tracing::info!(chunk = chunk.index, "cancelled; in-flight call aborted");
                return Ok(ChunkOutcome::Stopped);
            }
            Err(Stop::Draining) => return Ok(ChunkOutcome::Stopped),
        };
        let err = match result {
            Ok(out) => {
                let elapsed = started.elapsed();
                if out.quality_retried {
                    shared.metrics.quality_retries.inc();
                }
                shared
                    .metrics
                    .chunk_attempts
                    .with_label_values(&["success"])
                    .inc();
                shared
                    .metrics
                    .chunk_duration
                    .with_label_values(&[engine.name()])
                    .observe(elapsed.as_secs_f64());
                if let (Some(key), None) = (&memory_key, &out.warning) {
                    shared
                        .store
                        .memory_put(key.clone(), out.text.clone(), out.confidence, Utc::now())
                        .await?;
                }
                return Ok(ChunkOutcome::Done(ChunkDone {
                    index: chunk.index,
                    translation: out.text,
                    duration_ms: Some(elapsed.as_millis() as u64),
                    attempts: attempt,
                    confidence: out.confidence,
                    from_memory: false,
                    context: pipeline::encode_context(&context),
                    warning: out.warning,
                }));
            }
            Err(err) => err,
        };
        shared
            .metrics
            .chunk_attempts
            .with_label_values(&[err.class.outcome()])
            .inc();
        let jitter: f64 = rand::random();
        match shared.config.retry.decide(attempt, &err, jitter) {
            RetryDecision::RetryAfter(wait) => {
                tracing::warn!(chunk = chunk.index, attempt, error = %err.message,
                    wait_ms = wait.as_millis() as u64, "chunk failed; retrying");
                shared
                    .store
                    .note_chunk_error(seq, chunk.index, err.message.clone())
                    .await
                    .ok();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Ok(ChunkOutcome::Stopped),
                    _ = shared.draining.cancelled() => return Ok(ChunkOutcome::Stopped),
                }
            }
            RetryDecision::GiveUp => {
                return Ok(ChunkOutcome::Failed {
                    attempts: attempt,
                    err,
                });
            }
        }
    }
}

fn describe_failure(index: u32, attempts: u32, err: &EngineError) -> String {
    match err.class {
        ErrorClass::Permanent => format!("chunk {index} failed: {}", err.message),
        ErrorClass::Transient => format!(
            "chunk {index} failed after {attempts} attempts: {}",
            err.message
        ),
    }
}
