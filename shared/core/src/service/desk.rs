//! The translator's desk over the store: a job's chunks with their
//! revisions, corrections under `If-Match`, and a completed job's result
//! assembled again once its chunks were corrected.

use super::*;
use crate::ledger::ChunkRecord;
use crate::review::{EditError, EditRequest, Editor, EngineLabel};
use crate::store::Edited;

/// A job's chunks as the desk shows them.
#[derive(Debug, Clone)]
pub struct ChunkSheet {
    /// The job, without source and result texts.
    pub job: Job,
    /// What made the chunks' first revisions.
    pub label: EngineLabel,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRecord>,
}

/// What made a job's chunks: its result's engine and model once it has
/// one, else the engine and model it asks for.
pub fn label_of(job: &Job) -> EngineLabel {
    match &job.result {
        Some(r) => EngineLabel {
            engine: r.engine.clone(),
            model: r.model.clone(),
        },
        None => EngineLabel {
            engine: crate::pipeline::engine_for(job, ""),
            model: job.config.model.clone(),
        },
    }
}

impl From<EditError> for ServiceError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotTranslated(_) | EditError::Full(_) => {
                ServiceError::Conflicted(e.to_string())
            }
            EditError::Invalid(m) => ServiceError::Invalid(m),
        }
    }
}

impl Service {
    /// The caller's job (brief) and its label.
    async fn desk_job(
        &self,
        tenant: &Tenant,
        id: JobId,
    ) -> Result<(Job, EngineLabel), ServiceError> {
        // The brief job: no source or result texts to read (in the cloud
        // they may be S3 objects) for a chunk.
        let job = owned(tenant, self.store.get_brief(id).await?)?;
        let label = label_of(&job);
        Ok((job, label))
    }

    /// Every chunk of the caller's job, with what made them.
    pub async fn sheet(&self, tenant: &Tenant, id: JobId) -> Result<ChunkSheet, ServiceError> {
        let (job, label) = self.desk_job(tenant, id).await?;
        let chunks = self.store.chunks(id, 0).await?;
        Ok(ChunkSheet { job, label, chunks })
    }

    /// One chunk of the caller's job, with what made it.
    pub async fn one_chunk(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
    ) -> Result<(ChunkRecord, EngineLabel), ServiceError> {
        let (job, label) = self.desk_job(tenant, id).await?;
        let chunk = self.chunk_of(&job, index).await?;
        Ok((chunk, label))
    }

    async fn chunk_of(&self, job: &Job, index: u32) -> Result<ChunkRecord, ServiceError> {
        if index >= job.chunks_total {
            return Err(ServiceError::ChunkNotFound {
                id: job.id,
                index,
                total: job.chunks_total,
            });
        }
        self.store
            .chunks_between(job.id, index, index + 1)
            .await?
            .into_iter()
            .next()
            .ok_or(ServiceError::ChunkNotFound {
                id: job.id,
                index,
                total: job.chunks_total,
            })
    }

    /// Correct chunk `index` of the caller's job: `if_match` must name the
    /// chunk's current tag. The chunk as written, with its label.
    pub async fn correct(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        index: u32,
        if_match: Option<&str>,
        request: &EditRequest,
    ) -> Result<(ChunkRecord, EngineLabel), ServiceError> {
        let (job, label) = self.desk_job(&caller.tenant, id).await?;
        let chunk = self.chunk_of(&job, index).await?;
        let Some(if_match) = if_match else {
            return Err(ServiceError::PreconditionRequired(format!(
                "send If-Match with the chunk's ETag ({}) from GET /api/jobs/{id}/chunks, so a change made meanwhile is not overwritten",
                crate::review::etag(&chunk)
            )));
        };
        if chunk.status != ChunkStatus::Completed || chunk.translation.is_none() {
            return Err(EditError::NotTranslated(index).into());
        }
        // A stale client is told so before anything about its request.
        let tag = crate::review::etag(&chunk);
        if !crate::review::if_match_holds(if_match, &tag) {
            return Err(ServiceError::Stale(format!(
                "chunk {index} changed since it was read: its ETag is now {tag}; read it again"
            )));
        }
        let edit = crate::review::plan(
            &chunk,
            request,
            &label,
            &Editor {
                key_id: caller.key_id.clone(),
                at: Utc::now(),
            },
        )?;
        match self.store.edit_chunk(id, &edit).await? {
            Edited::Done => {}
            Edited::Stale => {
                return Err(ServiceError::Stale(format!(
                    "chunk {index} changed while this edit was made; read it again"
                )));
            }
            Edited::NotTranslated => {
                return Err(EditError::NotTranslated(index).into());
            }
        }
        self.remember(&job, &chunk, &edit).await;
        let written = edit.applied_to(&chunk);
        Ok((written, label))
    }

    /// A person's new current text goes into the tenant's memory, where it
    /// wins over engines' for the same source. The correction is already
    /// written: a failure here is logged, not answered.
    async fn remember(&self, job: &Job, chunk: &ChunkRecord, edit: &crate::review::ChunkEdit) {
        let human = edit
            .revisions
            .iter()
            .any(|r| r.n == edit.current && r.origin == crate::review::Origin::Human);
        // A transliteration's correction is no translation of its source.
        if !(edit.text_changed && human) || job.kind != crate::job::JobType::Translation {
            return;
        }
        // A person's translation stays in its own tenant's memory, even on
        // a server that shares the engines' memory: it is served without a
        // provider call, and one tenant must not decide another's output.
        if let Err(e) = self
            .store
            .segment_put(&job.tenant, &chunk.source, &edit.translation, true)
            .await
        {
            tracing::warn!(chunk = chunk.index, error = %e, "remembering a correction failed");
        }
    }

    /// Check a re-translation of chunk `index` and hand it to the runner.
    pub async fn start_retranslation(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
        engine: &str,
        model: Option<String>,
    ) -> Result<(), ServiceError> {
        let (job, _) = self.desk_job(tenant, id).await?;
        if job.kind == crate::job::JobType::Transliteration {
            return Err(ServiceError::Conflicted(
                "a transliteration has no engine to choose".into(),
            ));
        }
        let engine = crate::job::EngineName::parse(engine)
            .map_err(|e| ServiceError::Invalid(format!("engine: {}", e.0)))?;
        let engine = self.engines.resolve(Some(&engine))?;
        let model = match model.map(|m| m.trim().to_owned()) {
            Some(m) if m.is_empty() || m.len() > 200 => {
                return Err(ServiceError::Invalid(
                    "model must be 1 to 200 characters".into(),
                ));
            }
            other => other,
        };
        self.engines.check_model(&engine, model.as_deref())?;
        let chunk = self.chunk_of(&job, index).await?;
        if chunk.status != ChunkStatus::Completed {
            return Err(EditError::NotTranslated(index).into());
        }
        if chunk.review.revisions.len() >= crate::review::MAX_REVISIONS {
            return Err(ServiceError::Conflicted(format!(
                "chunk {index} keeps {} revisions, the most it may",
                crate::review::MAX_REVISIONS
            )));
        }
        self.runner
            .retranslate(crate::retranslate::Retranslation {
                job_id: id,
                index,
                engine,
                model,
                attempt: 0,
                throttled_ms: 0,
            })
            .await
    }

    /// Take a TMX file's pairs into the tenant's memory as people's
    /// translations; how many were taken.
    pub async fn import_memory(&self, tenant: &Tenant, xml: &str) -> Result<usize, ServiceError> {
        let pairs = crate::exchange::parse_tmx(xml, crate::segments::MAX_IMPORT_SEGMENTS)
            .map_err(|e| ServiceError::Invalid(format!("the TMX file: {e}")))?;
        use futures::StreamExt;
        let memory = tenant.clone();
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(bo, en)| !bo.trim().is_empty() && !en.trim().is_empty())
            .collect();
        let taken = pairs.len();
        // Several writes at once: a file of 2,000 units fits within an API
        // gateway's 30 s on a table too.
        let mut writes = futures::stream::iter(pairs)
            .map(|(bo, en)| {
                let memory = memory.clone();
                async move { self.store.segment_put(&memory, &bo, &en, true).await }
            })
            .buffer_unordered(16);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(taken)
    }

    /// A completed job's result with its text assembled from its chunks'
    /// current revisions, once any chunk was corrected.
    pub(super) async fn with_current_text(&self, mut job: Job) -> Result<Job, ServiceError> {
        if job.review.edits == 0 || job.status != JobStatus::Completed {
            return Ok(job);
        }
        if let Some(result) = job.result.as_mut() {
            let ledger = self.store.chunks(job.id, 0).await?;
            result.translation = crate::pipeline::assemble_output(job.kind, &ledger);
        }
        Ok(job)
    }
}

/// What an XLIFF import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Units whose target became a new current revision.
    pub updated: Vec<u32>,
    /// Units whose reviewed state changed (XLIFF `final` is reviewed).
    pub reviewed: Vec<u32>,
    /// Units that matched their chunk as it is.
    pub unchanged: u32,
    /// Units not applied, with why (a chunk not translated yet, or one
    /// that changed while the import ran).
    pub skipped: Vec<(u32, String)>,
}

/// Most units one import may hold.
pub const MAX_IMPORT_UNITS: usize = 20_000;

/// The exchange state of a chunk: `initial` without a translation,
/// `translated` for an engine's text, `reviewed` for a person's text not
/// yet marked reviewed, `final` once marked reviewed.
pub fn state_of(chunk: &ChunkRecord) -> crate::exchange::SegmentState {
    use crate::exchange::SegmentState;
    if chunk.status != ChunkStatus::Completed || chunk.translation.is_none() {
        return SegmentState::Initial;
    }
    if chunk.review.reviewed {
        return SegmentState::Final;
    }
    let current = crate::review::current_of(chunk);
    let human = chunk
        .review
        .revisions
        .iter()
        .any(|r| r.n == current && r.origin == crate::review::Origin::Human);
    if human {
        SegmentState::Reviewed
    } else {
        SegmentState::Translated
    }
}

/// A job's chunks as exchange segments (each with its current text and the
/// current revision's note).
pub fn segments_of(chunks: &[ChunkRecord]) -> Vec<crate::exchange::Segment> {
    chunks
        .iter()
        .map(|c| {
            let current = crate::review::current_of(c);
            crate::exchange::Segment {
                index: c.index,
                source: c.source.clone(),
                target: c
                    .translation
                    .clone()
                    .filter(|_| c.status == ChunkStatus::Completed),
                state: state_of(c),
                note: c
                    .review
                    .revisions
                    .iter()
                    .find(|r| r.n == current)
                    .and_then(|r| r.note.clone()),
            }
        })
        .collect()
}

impl Service {
    /// Turn each changed target of an XLIFF 2 document into a human
    /// revision of its chunk. Every unit must name one of the job's chunks
    /// (`c<index>`) with that chunk's source, or nothing is written.
    pub async fn import_xliff(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        xml: &str,
    ) -> Result<ImportReport, ServiceError> {
        let units = crate::exchange::parse_xliff(xml, MAX_IMPORT_UNITS)
            .map_err(|e| ServiceError::Invalid(format!("the XLIFF file: {e}")))?;
        let sheet = self.sheet(&caller.tenant, id).await?;
        let mut bad = Vec::new();
        let mut matched = Vec::with_capacity(units.len());
        for unit in &units {
            let chunk =
                crate::exchange::unit_index(&unit.id).and_then(|i| sheet.chunks.get(i as usize));
            match chunk {
                None => bad.push(format!(
                    "unit '{}' names no chunk of this job (its units are c0 to c{})",
                    unit.id.chars().take(40).collect::<String>(),
                    sheet.chunks.len().saturating_sub(1)
                )),
                Some(c)
                    if crate::memory::normalize(&c.source)
                        != crate::memory::normalize(&unit.source) =>
                {
                    bad.push(format!(
                        "unit '{}' has a source other than chunk {}'s",
                        unit.id, c.index
                    ))
                }
                Some(c) => matched.push((c, unit)),
            }
        }
        if !bad.is_empty() {
            let more = bad.len().saturating_sub(5);
            let mut text = bad.into_iter().take(5).collect::<Vec<_>>().join("; ");
            if more > 0 {
                text.push_str(&format!("; and {more} more"));
            }
            return Err(ServiceError::Unprocessable(format!(
                "the XLIFF file does not match job {id}'s chunks, so nothing was imported: {text}"
            )));
        }
        let mut report = ImportReport::default();
        let editor = crate::review::Editor {
            key_id: caller.key_id.clone(),
            at: Utc::now(),
        };
        for (chunk, unit) in matched {
            let target = unit.target.as_deref().filter(|t| !t.trim().is_empty());
            let final_state = unit.state == Some(crate::exchange::SegmentState::Final);
            let Some(target) = target else {
                report.unchanged += 1;
                continue;
            };
            if chunk.status != ChunkStatus::Completed {
                report
                    .skipped
                    .push((chunk.index, "the chunk is not translated yet".into()));
                continue;
            }
            let changed = chunk.translation.as_deref() != Some(target);
            // `final` marks the chunk reviewed and another state unmarks
            // it; a unit without a state (several tools leave it out)
            // leaves the mark as it is, unless its text changed.
            let reviewed = match unit.state {
                Some(_) if final_state != chunk.review.reviewed || changed => Some(final_state),
                _ => None,
            };
            let request = crate::review::EditRequest {
                text: changed.then(|| target.to_owned()),
                reviewed,
                ..Default::default()
            };
            if request.text.is_none() && request.reviewed.is_none() {
                report.unchanged += 1;
                continue;
            }
            let edit = match crate::review::plan(chunk, &request, &sheet.label, &editor) {
                Ok(e) => e,
                Err(e) => {
                    report.skipped.push((chunk.index, e.to_string()));
                    continue;
                }
            };
            match self.store.edit_chunk(id, &edit).await? {
                Edited::Done => {
                    self.remember(&sheet.job, chunk, &edit).await;
                    if edit.text_changed {
                        report.updated.push(chunk.index);
                    }
                    if edit.reviewed_delta != 0 {
                        report.reviewed.push(chunk.index);
                    }
                }
                Edited::Stale => report.skipped.push((
                    chunk.index,
                    "the chunk changed while the file was imported; export it again".into(),
                )),
                Edited::NotTranslated => report
                    .skipped
                    .push((chunk.index, "the chunk is not translated yet".into())),
            }
        }
        Ok(report)
    }
}
