//! One chunk step, the same on every form: the translation memory, one
//! provider attempt, the commit, then the memory write. The local
//! scheduler and the cloud worker both call [`chunk_step`]; each keeps only
//! how it waits between attempts (a sleep locally, the state machine's
//! backoff in the cloud) and what commits a chunk (a checkpoint, or the
//! last chunk with the job's completion).

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use crate::engine::EngineError;
use crate::job::Job;
use crate::ledger::ChunkRecord;
use crate::pipeline::{self, ChunkPlan};
use crate::store::{Checkpoint, ChunkDone, JobStore, MemoryStore, SegmentStore, StoreError};

/// What a chunk step counts for `/metrics`; each form keeps its counters
/// its own way (process counters locally, shared counter items in the
/// cloud). Counting never fails a chunk.
#[async_trait]
pub trait ChunkMeter: Send + Sync {
    /// A chunk served from the translation memory.
    async fn memory_hit(&self);
    /// One provider attempt: its outcome (one of
    /// [`crate::metrics::ATTEMPT_OUTCOMES`]), the engine, how long a
    /// successful call took, and whether the quality checks asked again.
    async fn attempt(
        &self,
        outcome: &'static str,
        engine: &str,
        elapsed: Option<Duration>,
        quality_retried: bool,
    );
    /// The tokens a successful attempt's calls reported, for
    /// `lotsawa_provider_tokens_total`.
    async fn tokens(&self, engine: &str, model: &str, usage: crate::usage::Usage);
    /// Whether the provider may be called now: the last check before a
    /// call, for a runner whose right to the job can lapse (a lease on a
    /// shared store). False stops the step without a call.
    async fn may_call(&self) -> bool {
        true
    }
}

/// What one chunk step works on.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    /// The job, in the run the step belongs to.
    pub job: &'a Job,
    /// The chunk's plan: engine, memory key, context.
    pub plan: &'a ChunkPlan,
    /// The chunk.
    pub chunk: &'a ChunkRecord,
    /// Which provider attempt of the chunk this is (1-based).
    pub attempt: u32,
}

/// What became of one chunk step.
#[derive(Debug)]
pub enum ChunkStep {
    /// Translated (or served from memory) and committed; `kept` says
    /// whether the commit recorded it or found the run moved on.
    Committed {
        /// What was committed.
        done: ChunkDone,
        /// The commit's answer.
        kept: Checkpoint,
    },
    /// The attempt failed; its error is noted on the chunk.
    Failed(EngineError),
    /// `stop` ended the provider call before it answered (a cancel, a
    /// shutdown): nothing was committed.
    Stopped,
}

/// One step of `chunk` of `job`: a translation-memory hit is committed as
/// it is; otherwise one provider attempt (the pipeline's quality retry and
/// reviewer included), whose answer is committed by `commit` and, once the
/// commit recorded it, remembered (model engines, answers the checks did
/// not flag). A failed attempt is counted and noted on the chunk. `stop`
/// ends the provider call when it completes first; the lookups and the
/// commit are never cut short (a commit may hand a slot on).
///
/// The step is a `chunk` span (job id, run, chunk index, attempt, outcome)
/// and its provider call a `provider.call` span inside it (engine, model,
/// attempt, outcome): the traces both forms export.
pub async fn chunk_step<S, F, Fut>(
    store: &S,
    meter: &dyn ChunkMeter,
    input: StepInput<'_>,
    stop: impl Future<Output = ()>,
    commit: F,
) -> Result<ChunkStep, StoreError>
where
    S: JobStore + MemoryStore + SegmentStore + ?Sized,
    F: FnOnce(ChunkDone) -> Fut,
    Fut: Future<Output = Result<(ChunkDone, Checkpoint), StoreError>>,
{
    let span = tracing::info_span!(
        "chunk",
        job.id = %input.job.id,
        job.run = input.job.run,
        chunk.index = input.chunk.index,
        attempt = input.attempt,
        outcome = tracing::field::Empty,
    );
    let step = step_in_span(store, meter, input, stop, commit)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &step {
            Ok(ChunkStep::Committed { done, .. }) if done.from_memory => "memory",
            Ok(ChunkStep::Committed { .. }) => "success",
            Ok(ChunkStep::Failed(e)) => e.class.outcome(),
            Ok(ChunkStep::Stopped) => "stopped",
            Err(_) => "store_error",
        },
    );
    step
}

async fn step_in_span<S, F, Fut>(
    store: &S,
    meter: &dyn ChunkMeter,
    input: StepInput<'_>,
    stop: impl Future<Output = ()>,
    commit: F,
) -> Result<ChunkStep, StoreError>
where
    S: JobStore + MemoryStore + SegmentStore + ?Sized,
    F: FnOnce(ChunkDone) -> Fut,
    Fut: Future<Output = Result<(ChunkDone, Checkpoint), StoreError>>,
{
    let StepInput {
        job,
        plan,
        chunk,
        attempt,
    } = input;
    // A person's translation of this very source wins over any engine's;
    // then the engine's own earlier answer to the same request.
    let remembered = match &plan.memory_key {
        // People's translations stay with their tenant (see the service).
        Some(key) => match store.human_segment(&plan.tenant, &chunk.source).await? {
            Some(text) => Some((text, None)),
            None => store.memory_get(key).await?,
        },
        None => None,
    };
    if let Some((translation, confidence)) = remembered {
        let (done, kept) =
            commit(ChunkPlan::from_memory(chunk.index, translation, confidence)).await?;
        meter.memory_hit().await;
        return Ok(ChunkStep::Committed { done, kept });
    }
    let engine = plan.engine.as_ref();
    let mut task = plan.task(chunk, &job.config);
    let examples = examples_for(store, plan, chunk).await;
    task.examples = examples
        .iter()
        .map(|e| crate::engine::ContextTurn {
            source: e.source.clone(),
            translation: e.translation.clone(),
        })
        .collect();
    let call = tracing::info_span!(
        "provider.call",
        engine = engine.name(),
        model = task
            .model
            .as_deref()
            .or(engine.default_model())
            .unwrap_or(""),
        attempt,
        outcome = tracing::field::Empty,
    );
    if !meter.may_call().await {
        return Ok(ChunkStep::Stopped);
    }
    let started = Instant::now();
    let Some(result) = until_stopped(pipeline::attempt(engine, &task), stop)
        .instrument(call.clone())
        .await
    else {
        call.record("outcome", "stopped");
        return Ok(ChunkStep::Stopped);
    };
    call.record(
        "outcome",
        match &result {
            Ok(_) => "success",
            Err(e) => e.class.outcome(),
        },
    );
    match result {
        Ok(out) => {
            let elapsed = started.elapsed();
            meter
                .attempt("success", engine.name(), Some(elapsed), out.quality_retried)
                .await;
            if out.usage.tokens() > 0 {
                let model = plan.model.as_deref().unwrap_or("");
                meter.tokens(engine.name(), model, out.usage).await;
            }
            let mut done = plan.done(chunk.index, &out, elapsed.as_millis() as u64);
            done.examples = crate::segments::encode_examples(&examples);
            let (done, kept) = commit(done).await?;
            if kept == Checkpoint::Recorded
                && let Some(key) = plan.memory_entry(&out)
            {
                store.memory_put(key, &out.text, out.confidence).await?;
                // The segment memory is for examples: a failure to add to
                // it costs a later chunk an example, never this chunk.
                if let Err(e) = store
                    .segment_put(&plan.memory_tenant, &chunk.source, &out.text, false)
                    .await
                {
                    tracing::warn!(job_id = %job.id, chunk = chunk.index, error = %e, "remembering a segment failed");
                }
            }
            Ok(ChunkStep::Committed { done, kept })
        }
        // The shared limiter had no share: nothing was sent, nothing to
        // count or note.
        Err(err) if err.throttle == Some(crate::engine::Throttle::Limiter) => {
            Ok(ChunkStep::Failed(err))
        }
        Err(err) => {
            meter
                .attempt(err.class.outcome(), engine.name(), None, false)
                .await;
            store
                .note_chunk_error(job.id, chunk.index, &err.public())
                .await?;
            Ok(ChunkStep::Failed(err))
        }
    }
}

/// The examples for a chunk sent to a model engine: its own tenant's
/// segments (people's translations) and the engines' memory, the most
/// similar first. Examples help; they never fail a chunk: a failed lookup
/// is logged and the chunk goes without.
pub async fn examples_for<S: SegmentStore + ?Sized>(
    store: &S,
    plan: &ChunkPlan,
    chunk: &ChunkRecord,
) -> Vec<crate::segments::Example> {
    if plan.examples == 0 {
        return Vec::new();
    }
    let mut tenants = vec![&plan.tenant];
    if plan.memory_tenant != plan.tenant {
        tenants.push(&plan.memory_tenant);
    }
    let mut found = Vec::new();
    for tenant in tenants {
        match store
            .similar_segments(tenant, &chunk.source, plan.examples, crate::fuzzy::USEFUL)
            .await
        {
            Ok(e) => found.extend(e),
            Err(e) => {
                tracing::warn!(chunk = chunk.index, error = %e, "looking up examples failed; the chunk goes without");
            }
        }
    }
    crate::segments::bounded(found, plan.examples)
}

/// `work`'s output, or `None` when `stop` completes first (checked first on
/// every wake-up, so a stop is not delayed by a busy call).
async fn until_stopped<T>(
    work: impl Future<Output = T>,
    stop: impl Future<Output = ()>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut stop = std::pin::pin!(stop);
    std::future::poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_ends_the_call_and_a_finished_call_is_kept() {
        let stopped = until_stopped(std::future::pending::<u32>(), async {}).await;
        assert_eq!(stopped, None);
        let done = until_stopped(async { 7 }, std::future::pending()).await;
        assert_eq!(done, Some(7));
        // Both ready: the stop wins (a cancelled job sends no answer on).
        assert_eq!(until_stopped(async { 7 }, async {}).await, None);
    }
}
