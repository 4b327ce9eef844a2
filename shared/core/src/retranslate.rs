//! Another engine or model on one chunk: a request to re-translate a
//! completed chunk, and one attempt at it as every form runs it. The
//! attempt goes through the chunk path (the engine's memory for that engine
//! and model, the shared provider limits, the quality checks); its answer
//! is kept as an engine revision beside the chunk's others, never made
//! current by itself. Each form keeps how it waits between attempts: a
//! sleep locally, a delayed queue message in the cloud.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::engine::{ContextTurn, EngineError};
use crate::job::{EngineName, Job, JobId};
use crate::ledger::{ChunkRecord, ChunkStatus};
use crate::pipeline::{self, ChunkPlan, EngineCatalog};
use crate::review::EngineLabel;
use crate::store::{
    ChunkUsage, Edited, JobStore, MemoryStore, ReviewStore, SegmentStore, StoreError, UsageStore,
};

/// A re-translation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retranslation {
    /// The job.
    pub job_id: JobId,
    /// The chunk.
    pub index: u32,
    /// The engine.
    pub engine: EngineName,
    /// The model (the engine's default when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Attempts made so far (0 before the first).
    #[serde(default)]
    pub attempt: u32,
    /// Milliseconds spent waiting on rate limits so far.
    #[serde(default)]
    pub throttled_ms: u64,
}

/// What one re-translation attempt did.
#[derive(Debug)]
pub enum Retranslated {
    /// A new engine revision was kept.
    Added(Box<ChunkRecord>),
    /// The engine answered a text the chunk already has from an engine (or
    /// the chunk keeps as many revisions as it may): nothing to keep.
    Unchanged,
    /// The chunk is not translated (any more): nothing to do.
    NotTranslated,
    /// The attempt failed; the caller decides whether to try again.
    Failed(EngineError),
}

/// What a re-translation works with, read from the store.
pub enum Prepared {
    /// The job and the chunk's plan under the engine and model asked for.
    Ready(Box<Job>, Box<ChunkPlan>),
    /// The job has no such chunk.
    NoChunk,
    /// The engine asked for is not configured here (why, for the log).
    Refused(String),
}

/// The job of `request` and its chunk's plan under the engine and model
/// asked for (the job as if it had named them), with the chunk before it
/// for context.
pub async fn prepare<S: JobStore + ?Sized>(
    store: &S,
    request: &Retranslation,
    engines: &dyn EngineCatalog,
) -> Result<Prepared, StoreError> {
    let job = store.get(request.job_id).await?;
    let chunks = store
        .chunks_between(job.id, request.index.saturating_sub(1), request.index + 1)
        .await?;
    let Some(chunk) = chunks.iter().find(|c| c.index == request.index) else {
        return Ok(Prepared::NoChunk);
    };
    let prev = chunks.iter().find(|c| c.index + 1 == request.index);
    let mut as_asked = job.clone();
    as_asked.config.engine = Some(request.engine.clone());
    as_asked.config.model = request.model.clone();
    Ok(match ChunkPlan::new(&as_asked, chunk, prev, engines) {
        Ok(plan) => Prepared::Ready(Box::new(job), Box::new(plan)),
        Err(why) => Prepared::Refused(why),
    })
}

/// One attempt at `request`'s chunk with `plan` (from [`prepare`]): the
/// engine's memory for that engine and model first, else one provider
/// attempt; an answer becomes an engine revision, written with a
/// compare-and-set (read again when a correction came between).
pub async fn attempt<S>(
    store: &S,
    job: &Job,
    plan: &ChunkPlan,
    index: u32,
) -> Result<Retranslated, StoreError>
where
    S: JobStore + MemoryStore + ReviewStore + SegmentStore + UsageStore + ?Sized,
{
    let Some(chunk) = read(store, job.id, index).await? else {
        return Ok(Retranslated::NotTranslated);
    };
    let remembered = match &plan.memory_key {
        Some(key) => store.memory_get(key).await?.map(|(t, _)| t),
        None => None,
    };
    let text = match remembered {
        Some(t) => t,
        None => {
            let mut task = plan.task(&chunk, &job.config);
            task.examples = crate::step::examples_for(store, plan, &chunk)
                .await
                .into_iter()
                .map(|e| ContextTurn {
                    source: e.source,
                    translation: e.translation,
                })
                .collect();
            match pipeline::attempt(plan.engine.as_ref(), &task).await {
                Ok(out) => {
                    // The calls count to the tenant's usage and budget like
                    // a chunk's (no checkpoint carries them).
                    store
                        .add_usage(&ChunkUsage {
                            tenant: job.tenant.clone(),
                            engine: plan.engine.name().to_owned(),
                            model: plan.model.clone(),
                            usage: out.usage,
                        })
                        .await?;
                    if let Some(key) = plan.memory_entry(&out) {
                        store.memory_put(key, &out.text, out.confidence).await?;
                    }
                    out.text
                }
                Err(e) => return Ok(Retranslated::Failed(e)),
            }
        }
    };
    let made_by = EngineLabel {
        engine: plan.engine.name().to_owned(),
        model: plan.model.clone(),
    };
    let first = crate::service::label_of(job);
    let mut chunk = chunk;
    for _ in 0..5 {
        let Some(edit) =
            crate::review::engine_revision(&chunk, &text, &made_by, &first, Utc::now())
        else {
            return Ok(Retranslated::Unchanged);
        };
        match store.edit_chunk(job.id, &edit).await? {
            Edited::Done => return Ok(Retranslated::Added(Box::new(edit.applied_to(&chunk)))),
            Edited::NotTranslated => return Ok(Retranslated::NotTranslated),
            Edited::Stale => match read(store, job.id, index).await? {
                Some(c) => chunk = c,
                None => return Ok(Retranslated::NotTranslated),
            },
        }
    }
    Err(StoreError::ConditionFailed(format!(
        "chunk {index} of job {} kept changing while its re-translation was written",
        job.id
    )))
}

/// The chunk, when it is completed.
async fn read<S: JobStore + ?Sized>(
    store: &S,
    id: JobId,
    index: u32,
) -> Result<Option<ChunkRecord>, StoreError> {
    Ok(store
        .chunks_between(id, index, index + 1)
        .await?
        .into_iter()
        .next()
        .filter(|c| c.status == ChunkStatus::Completed && c.translation.is_some()))
}
