//! One attempt at a chunk, as every backend runs it: the engine call, the
//! quality checks with their one quality retry, and the optional reviewer.
//! Transport retries and the translation memory belong to the backend (the
//! local scheduler, or Step Functions and DynamoDB in the cloud).

use std::collections::HashSet;

use crate::engine::{
    ContextTurn, Engine, EngineError, EngineKind, ReviewRequest, TranslateRequest,
};
use crate::glossary::{GlossaryEntry, entries_in, normalize_term};
use crate::job::JobConfig;
use crate::quality;

/// How much of the previous chunk an engine sees as context.
pub const CONTEXT_CHARS: usize = 600;

fn tail(s: &str, max_chars: usize) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(max_chars)).collect()
}

/// The context of a chunk: the tail of the previous chunk and its output.
pub fn context_for(prev: Option<(&str, &str)>) -> Vec<ContextTurn> {
    match prev {
        Some((source, translation)) => vec![ContextTurn {
            source: tail(source, CONTEXT_CHARS),
            translation: tail(translation, CONTEXT_CHARS),
        }],
        None => Vec::new(),
    }
}

/// Context as stored with a chunk (JSON: `[{"source", "translation"}]`).
pub fn encode_context(turns: &[ContextTurn]) -> Option<String> {
    if turns.is_empty() {
        return None;
    }
    serde_json::to_string(turns).ok()
}

/// Context read back from a chunk (`None` when it does not parse).
pub fn decode_context(s: &str) -> Option<Vec<ContextTurn>> {
    serde_json::from_str(s).ok()
}

/// Glossary entries of `all` that occur in `source`, first occurrence of a
/// term winning (job entries come first in `all`).
pub fn relevant_glossary(all: &[GlossaryEntry], source: &str) -> Vec<GlossaryEntry> {
    let mut seen = HashSet::new();
    entries_in(all, source)
        .into_iter()
        .filter(|e| seen.insert(normalize_term(&e.bo)))
        .cloned()
        .collect()
}

/// The engines a backend offers, as the chunk plan needs them.
pub trait EngineCatalog: Send + Sync {
    /// The engine called `name`.
    fn engine(&self, name: &str) -> Option<std::sync::Arc<dyn Engine>>;
    /// The default engine's name.
    fn default_engine(&self) -> &str;
    /// Every engine's name.
    fn engine_names(&self) -> Vec<String>;
    /// The server's glossary entries (after the job's own).
    fn server_glossary(&self) -> Vec<GlossaryEntry>;
    /// One translation memory for every tenant (the operator's choice,
    /// `LOTSAWA_SHARED_MEMORY=1`); otherwise each tenant has its own.
    fn shared_memory(&self) -> bool {
        false
    }
    /// The price of `engine` with `model`, from the server's price table.
    fn price(&self, _engine: &str, _model: Option<&str>) -> Option<crate::usage::Price> {
        None
    }
}

/// What a job's result names: its engine, its model, and their price.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultLabel {
    /// The engine.
    pub engine: String,
    /// The model, when the engine has one.
    pub model: Option<String>,
    /// Dollars per million tokens, when the price table has them.
    pub price: Option<crate::usage::Price>,
}

/// The label of `job`'s result on this backend.
pub fn result_label(job: &crate::job::Job, engines: &dyn EngineCatalog) -> ResultLabel {
    let (engine, model) = engine_and_model(job, engines);
    let price = engines.price(&engine, model.as_deref());
    ResultLabel {
        engine,
        model,
        price,
    }
}

/// The engine a job runs on and the model it asks for: the job's own
/// model, else the engine's default (none when the engine is missing).
pub fn engine_and_model(
    job: &crate::job::Job,
    engines: &dyn EngineCatalog,
) -> (String, Option<String>) {
    let name = engine_for(job, engines.default_engine());
    let model = job.config.model.clone().or_else(|| {
        engines
            .engine(&name)
            .and_then(|e| e.default_model().map(str::to_owned))
    });
    (name, model)
}

/// Everything one chunk needs before its first attempt.
#[derive(Clone)]
pub struct ChunkPlan {
    /// The engine.
    pub engine: std::sync::Arc<dyn Engine>,
    /// The model asked for (the job's, else the engine's default).
    pub model: Option<String>,
    /// Glossary entries that occur in the chunk, job terms winning.
    pub glossary: Vec<GlossaryEntry>,
    /// The translation memory key (model engines only).
    pub memory_key: Option<String>,
    /// Context from the previous chunk (model engines only): the one stored
    /// with the chunk when it was tried before, so a resumed chunk sees the
    /// same context.
    pub context: Vec<ContextTurn>,
    /// Whose job (its usage is counted to the tenant).
    pub tenant: crate::auth::Tenant,
    /// Whose memory the chunk reads and writes: the job's tenant, or the
    /// one memory of a server that shares it.
    pub memory_tenant: crate::auth::Tenant,
    /// Similar segments of the memory to give the engine (model engines:
    /// the job's `examples`, else 0).
    pub examples: usize,
}

impl std::fmt::Debug for ChunkPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkPlan")
            .field("engine", &self.engine.name())
            .field("model", &self.model)
            .field("glossary", &self.glossary.len())
            .field("memory_key", &self.memory_key)
            .finish_non_exhaustive()
    }
}

impl ChunkPlan {
    /// Plan `chunk` of `job`, given the chunk before it (when there is one).
    /// `Err` is the job's failure text: the job names an engine this
    /// backend does not have.
    pub fn new(
        job: &crate::job::Job,
        chunk: &crate::ledger::ChunkRecord,
        prev: Option<&crate::ledger::ChunkRecord>,
        engines: &dyn EngineCatalog,
    ) -> Result<Self, String> {
        let (name, model) = engine_and_model(job, engines);
        let engine = engines.engine(&name).ok_or_else(|| {
            format!(
                "engine '{name}' is not configured here (available: {})",
                engines.engine_names().join(", ")
            )
        })?;
        let mut all = job.config.glossary.clone();
        all.extend(engines.server_glossary());
        let glossary = relevant_glossary(&all, &chunk.source);
        let is_model = engine.kind() == EngineKind::Model;
        let shared = crate::auth::Tenant::default();
        let memory_tenant = if engines.shared_memory() {
            &shared
        } else {
            &job.tenant
        };
        let memory_key = is_model.then(|| {
            crate::memory::key(
                memory_tenant,
                &chunk.source,
                engine.name(),
                model.as_deref(),
                &glossary,
            )
        });
        let context = if is_model {
            chunk
                .context
                .as_deref()
                .and_then(decode_context)
                .unwrap_or_else(|| {
                    if job.config.parallel_chunks > 1 {
                        // Chunks in flight together: the previous chunk's
                        // translation may not exist yet, so every chunk
                        // gets its source only (the same on every run).
                        context_for(prev.map(|p| (p.source.as_str(), "")))
                    } else {
                        context_for(
                            prev.filter(|p| p.status == crate::ledger::ChunkStatus::Completed)
                                .map(|p| {
                                    (p.source.as_str(), p.translation.as_deref().unwrap_or(""))
                                }),
                        )
                    }
                })
        } else {
            Vec::new()
        };
        Ok(Self {
            engine,
            model,
            glossary,
            memory_key,
            context,
            tenant: job.tenant.clone(),
            memory_tenant: memory_tenant.clone(),
            examples: if is_model && job.kind == crate::job::JobType::Translation {
                job.config.examples as usize
            } else {
                0
            },
        })
    }

    /// The task of one attempt.
    pub fn task<'a>(
        &self,
        chunk: &'a crate::ledger::ChunkRecord,
        config: &'a JobConfig,
    ) -> ChunkTask<'a> {
        ChunkTask {
            index: chunk.index,
            source: &chunk.source,
            model: self.model.clone(),
            config,
            glossary: self.glossary.clone(),
            context: self.context.clone(),
            examples: Vec::new(),
        }
    }

    /// The checkpoint of a chunk served from the translation memory.
    pub fn from_memory(
        index: u32,
        translation: String,
        confidence: Option<f64>,
    ) -> crate::store::ChunkDone {
        crate::store::ChunkDone {
            index,
            translation,
            duration_ms: None,
            provider_calls: 0,
            confidence,
            from_memory: true,
            context: None,
            warning: None,
            usage: None,
            examples: None,
        }
    }

    /// The checkpoint of a successful attempt that took `duration_ms`.
    pub fn done(
        &self,
        index: u32,
        out: &AttemptOutput,
        duration_ms: u64,
    ) -> crate::store::ChunkDone {
        crate::store::ChunkDone {
            index,
            translation: out.text.clone(),
            duration_ms: Some(duration_ms),
            provider_calls: 1,
            confidence: out.confidence,
            from_memory: false,
            context: encode_context(&self.context),
            warning: out.warning.clone(),
            usage: Some(crate::store::ChunkUsage {
                tenant: self.tenant.clone(),
                engine: self.engine.name().to_owned(),
                model: self.model.clone(),
                usage: out.usage,
            }),
            examples: None,
        }
    }

    /// Whether this answer may go into the translation memory: model
    /// engines only, and only answers the checks did not flag.
    pub fn memory_entry<'a>(&'a self, out: &AttemptOutput) -> Option<&'a str> {
        match (&self.memory_key, &out.warning) {
            (Some(key), None) => Some(key.as_str()),
            _ => None,
        }
    }
}

/// The job's error when chunk `index` failed for good after `attempts`
/// provider calls; `public` is the engine error's `code: message`, and the
/// job's error starts with that code.
pub fn describe_failure(
    index: u32,
    attempts: u32,
    class: crate::engine::ErrorClass,
    public: &str,
) -> String {
    let (code, message) = split_code(public);
    let code = code.unwrap_or(crate::engine::codes::ENGINE_FAILED);
    match class {
        crate::engine::ErrorClass::Permanent => format!("{code}: chunk {index} failed: {message}"),
        crate::engine::ErrorClass::Transient => format!(
            "{code}: chunk {index} failed after {} attempts: {message}",
            attempts.max(1)
        ),
    }
}

/// `("code", "message")` of a `code: message` text whose code is a
/// snake_case word; `(None, text)` otherwise.
pub fn split_code(text: &str) -> (Option<&str>, &str) {
    match text.split_once(": ") {
        Some((code, rest))
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            (Some(code), rest)
        }
        _ => (None, text),
    }
}

/// What one successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutput {
    /// The chunk's output.
    pub text: String,
    /// Engine or reviewer confidence.
    pub confidence: Option<f64>,
    /// What the quality checks or the reviewer flagged.
    pub warning: Option<String>,
    /// True when the first answer was rejected and asked again.
    pub quality_retried: bool,
    /// The attempt's provider calls and the tokens they reported.
    pub usage: crate::usage::Usage,
}

/// One chunk to attempt.
#[derive(Debug, Clone)]
pub struct ChunkTask<'a> {
    /// Its index, for messages.
    pub index: u32,
    /// Its source text.
    pub source: &'a str,
    /// Model asked for.
    pub model: Option<String>,
    /// The job's settings.
    pub config: &'a JobConfig,
    /// Glossary entries that occur in the chunk.
    pub glossary: Vec<GlossaryEntry>,
    /// Context from the previous chunk.
    pub context: Vec<ContextTurn>,
    /// Similar translated segments, as examples.
    pub examples: Vec<ContextTurn>,
}

/// Call the engine once (plus one quality retry for a model engine whose
/// answer fails the checks, plus the reviewer when asked for).
pub async fn attempt(
    engine: &dyn Engine,
    task: &ChunkTask<'_>,
) -> Result<AttemptOutput, EngineError> {
    let is_model = engine.kind() == EngineKind::Model;
    let mut request = TranslateRequest {
        text: task.source.to_owned(),
        model: task.model.clone(),
        context: if is_model {
            task.context.clone()
        } else {
            Vec::new()
        },
        glossary: task.glossary.clone(),
        rejected_because: None,
        examples: if is_model {
            task.examples.clone()
        } else {
            Vec::new()
        },
    };
    let mut quality_retried = false;
    let mut usage = crate::usage::Usage::default();
    let (out, warning) = loop {
        let out = engine.translate(&request).await?;
        if is_model {
            usage += out.usage.unwrap_or(crate::usage::Usage::call(0, 0));
        }
        if !is_model {
            break (out, None);
        }
        match quality::check(task.source, &out.text, &task.glossary) {
            None => break (out, None),
            Some(issue) if !quality_retried => {
                quality_retried = true;
                request.rejected_because = Some(issue.to_string());
            }
            Some(issue) if issue.is_unusable() => {
                return Err(EngineError::permanent(format!(
                    "the provider's answer failed the quality check twice: {issue}"
                ))
                .coded(crate::engine::codes::QUALITY_REJECTED));
            }
            Some(issue) => break (out, Some(format!("chunk {}: {issue}", task.index))),
        }
    };
    // Every translation gets a number: the reviewer's below, else the
    // engine's own (token probabilities, offline coverage) weighed by the
    // quality checks, else the checks alone.
    let checked = is_model.then(|| quality::score(task.source, &out.text, &task.glossary));
    let mut confidence = match (out.confidence, checked) {
        (Some(c), Some(q)) => Some(((c * q) * 1000.0).round() / 1000.0),
        (c, q) => c.or(q),
    };
    let mut warning = warning;
    if is_model && task.config.use_helper_ai {
        let review = ReviewRequest {
            source: task.source.to_owned(),
            translation: out.text.clone(),
            glossary: task.glossary.clone(),
            model: task.model.clone(),
        };
        let reviewed = engine.review(&review).await;
        let sent = !matches!(
            &reviewed,
            Err(e) if e.throttle == Some(crate::engine::Throttle::Limiter)
        );
        if is_model && sent {
            usage += reviewed
                .as_ref()
                .ok()
                .and_then(|r| r.usage)
                .unwrap_or(crate::usage::Usage::call(0, 0));
        }
        match reviewed.map(|r| r.confidence) {
            Ok(c) => {
                confidence = Some(c);
                if c < task.config.quality_threshold && warning.is_none() {
                    warning = Some(format!(
                        "chunk {}: reviewer confidence {c:.2} is below the threshold {:.2}",
                        task.index, task.config.quality_threshold
                    ));
                }
            }
            Err(e) => {
                warning.get_or_insert(format!(
                    "chunk {}: the review failed: {}",
                    task.index, e.message
                ));
            }
        }
    }
    Ok(AttemptOutput {
        text: out.text,
        confidence,
        warning,
        quality_retried,
        usage,
    })
}

/// A job's output text from its ledger (each chunk's current text):
/// translations joined keeping the source layout, transliterations
/// concatenated exactly.
pub fn assemble_output(kind: crate::job::JobType, ledger: &[crate::ledger::ChunkRecord]) -> String {
    match kind {
        crate::job::JobType::Transliteration => ledger
            .iter()
            .map(|c| c.translation.as_deref().unwrap_or(""))
            .collect(),
        crate::job::JobType::Translation => crate::ledger::assemble(
            ledger
                .iter()
                .map(|c| (c.source.as_str(), c.translation.as_deref().unwrap_or(""))),
        ),
    }
}

/// A job's result, assembled from its completed ledger: translations are
/// joined keeping the source layout, transliterations concatenated exactly;
/// confidence is the mean of the chunks' confidences weighted by their size.
pub fn job_result(
    kind: crate::job::JobType,
    ledger: &[crate::ledger::ChunkRecord],
    label: &ResultLabel,
) -> crate::job::JobResult {
    let translation = assemble_output(kind, ledger);
    let weighted: Vec<(f64, f64)> = ledger
        .iter()
        .filter_map(|c| {
            c.confidence
                .map(|v| (v, c.source.chars().count().max(1) as f64))
        })
        .collect();
    let confidence = (!weighted.is_empty()).then(|| {
        let w: f64 = weighted.iter().map(|(_, w)| w).sum();
        let v = weighted.iter().map(|(v, w)| v * w).sum::<f64>() / w;
        (v * 1000.0).round() / 1000.0
    });
    crate::job::JobResult {
        translation,
        confidence,
        processing_time: ledger.iter().filter_map(|c| c.duration_ms).sum(),
        engine: label.engine.clone(),
        model: label.model.clone(),
        warnings: ledger.iter().filter_map(|c| c.warning.clone()).collect(),
        chunks_from_memory: ledger.iter().filter(|c| c.from_memory).count() as u32,
        usage: Some(crate::usage::JobUsage::priced(
            ledger.iter().map(|c| c.usage).sum(),
            label.price,
        )),
    }
}

/// The engine a job runs on: `ewts` for transliteration, else its own or
/// the default.
pub fn engine_for(job: &crate::job::Job, default: &str) -> String {
    match job.kind {
        crate::job::JobType::Transliteration => "ewts".to_owned(),
        crate::job::JobType::Translation => job
            .config
            .engine
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|| default.to_owned()),
    }
}

/// A new pending job and its chunks, from a validated submission whose
/// engine is already resolved.
pub fn new_job(
    new: crate::job::NewJob,
    engine: crate::job::EngineName,
    now: chrono::DateTime<chrono::Utc>,
) -> (crate::job::Job, Vec<String>) {
    let mut config = new.config;
    config.engine = Some(engine);
    let source = new.source.into_inner();
    let chunks: Vec<String> = crate::segment::segment(&source, config.chunk_size.get())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let job = crate::job::Job {
        trace: new.trace,
        review: Default::default(),
        id: crate::job::JobId::new(),
        tenant: new.tenant,
        kind: new.kind,
        status: crate::job::JobStatus::Pending,
        source,
        config,
        result: None,
        error: None,
        chunks_completed: 0,
        chunks_total: chunks.len() as u32,
        created_at: now,
        started_at: None,
        completed_at: None,
        cancelled_at: None,
        run: 0,
        callback: None,
        batch: None,
    };
    (job, chunks)
}

/// A job that could not start (an unusable upload): a pending job with no
/// chunks whose one run is started and failed at once, through the
/// transition table like every other job.
pub fn rejected_job(
    tenant: crate::auth::Tenant,
    kind: crate::job::JobType,
    config: JobConfig,
    error: String,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::job::Job, crate::job::TransitionError> {
    use crate::store::{Change, JobPatch};
    let pending = crate::job::Job {
        id: crate::job::JobId::new(),
        tenant,
        kind,
        status: crate::job::JobStatus::Pending,
        source: String::new(),
        config,
        result: None,
        error: None,
        chunks_completed: 0,
        chunks_total: 0,
        created_at: now,
        started_at: None,
        completed_at: None,
        cancelled_at: None,
        run: 0,
        callback: None,
        batch: None,
        trace: None,
        review: Default::default(),
    };
    let started =
        JobPatch::plan(&pending, Change::Start { limit: u32::MAX }, now)?.applied_to(&pending);
    let fail = Change::Fail { error, chunk: None };
    Ok(JobPatch::plan(&started, fail, now)?.applied_to(&started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobConfig, JobType, NewJob, SourceText};

    #[test]
    fn context_is_stored_as_the_json_earlier_builds_wrote() {
        let turns = vec![ContextTurn {
            source: "བཀྲ་ཤིས།".into(),
            translation: "Good \"fortune\".".into(),
        }];
        let stored = encode_context(&turns).expect("some context");
        let written_before = r#"[{"source":"བཀྲ་ཤིས།","translation":"Good \"fortune\"."}]"#;
        assert_eq!(stored, written_before);
        assert_eq!(decode_context(written_before), Some(turns));
        assert_eq!(encode_context(&[]), None);
        assert_eq!(decode_context(r#"[{"source":"ཀ"}]"#), None);
    }

    #[test]
    fn rejected_jobs_are_failed_runs() {
        let now = chrono::Utc::now();
        let j = rejected_job(
            crate::auth::Tenant::default(),
            JobType::Translation,
            JobConfig::default(),
            "bad".into(),
            now,
        )
        .expect("a failed job");
        assert_eq!(j.status, crate::job::JobStatus::Failed);
        assert_eq!(j.error.as_deref(), Some("bad"));
        assert_eq!((j.run, j.completed_at), (1, Some(now)));
    }
    use crate::ledger::{ChunkRecord, ChunkStatus};

    fn rec(source: &str, out: &str, confidence: Option<f64>) -> ChunkRecord {
        ChunkRecord {
            index: 0,
            source: source.into(),
            status: ChunkStatus::Completed,
            provider_calls: 1,
            translation: Some(out.into()),
            error: None,
            duration_ms: Some(10),
            run: 1,
            confidence,
            from_memory: false,
            context: None,
            warning: None,
            usage: crate::usage::Usage::call(7, 3),
            review: Default::default(),
            examples: None,
        }
    }

    #[test]
    fn results_weight_confidence_by_size() {
        let ledger = [rec("ཀཀཀ\n", "A", Some(1.0)), rec("ཀ", "B", Some(0.0))];
        let label = |e: &str| ResultLabel {
            engine: e.to_owned(),
            ..Default::default()
        };
        let r = job_result(JobType::Translation, &ledger, &label("offline"));
        assert_eq!(r.translation, "A\nB");
        assert_eq!(r.confidence, Some(0.8));
        assert_eq!(r.processing_time, 20);
        let r = job_result(JobType::Transliteration, &ledger, &label("ewts"));
        assert_eq!(r.translation, "AB");
        // Usage is the ledger's sum, priced when the table has the model.
        let usage = r.usage.expect("usage");
        assert_eq!(
            (usage.calls, usage.prompt_tokens, usage.completion_tokens),
            (2, 14, 6)
        );
        assert_eq!(usage.cost_usd, None);
        let priced = ResultLabel {
            engine: "openai".into(),
            model: Some("m".into()),
            price: Some(crate::usage::Price {
                input: 1.0,
                output: 10.0,
            }),
        };
        let r = job_result(JobType::Translation, &ledger, &priced);
        assert_eq!(r.usage.and_then(|u| u.cost_usd), Some(0.000074));
    }

    #[test]
    fn new_jobs_are_segmented_pending_jobs() {
        let new = NewJob {
            trace: None,
            tenant: crate::auth::Tenant::default(),
            kind: JobType::Translation,
            source: SourceText::parse("ཀ། ཁ།".into()).expect("text"),
            config: JobConfig::default(),
        };
        let engine = crate::job::EngineName::parse("offline").expect("name");
        let (job, chunks) = new_job(new, engine, chrono::Utc::now());
        assert_eq!(chunks.concat(), "ཀ། ཁ།");
        assert_eq!(job.chunks_total as usize, chunks.len());
        assert_eq!(
            job.config.engine.map(|e| e.to_string()),
            Some("offline".into())
        );
    }
}
