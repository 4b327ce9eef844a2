//! A submission's JSON ([`SubmitRequest`]) checked and turned into the
//! core's [`NewJob`]: one place for the 400 answers about a job's text and
//! settings, shared by `POST /api/jobs` and each item of `POST /api/batches`
//! so a batch item is refused exactly as the same job alone would be.

use lotsawa_core::{ChunkSize, EngineName, JobConfig, JobType, NewJob, SourceText, Tenant};

use crate::ApiError;
use crate::dto::SubmitRequest;

/// The job `req` asks for, owned by `tenant`; a 400 naming the first bad
/// field otherwise.
pub(crate) fn to_new_job(tenant: Tenant, req: SubmitRequest) -> Result<NewJob, ApiError> {
    let source = SourceText::parse(req.source_text).map_err(|e| ApiError::bad_request(e.0))?;
    let kind = match req.kind.as_deref() {
        None => JobType::Translation,
        Some(k) => k
            .parse::<JobType>()
            .map_err(|e| ApiError::bad_request(e.0))?,
    };
    let c = req.config.unwrap_or_default();
    let mut config = JobConfig::default();
    if let Some(engine) = c.engine {
        config.engine = Some(EngineName::parse(&engine).map_err(|e| ApiError::bad_request(e.0))?);
    }
    if let Some(model) = c.model {
        let model = model.trim().to_owned();
        if model.is_empty() || model.len() > 200 {
            return Err(ApiError::bad_request(
                "config.model must be 1 to 200 characters",
            ));
        }
        config.model = Some(model);
    }
    if let Some(size) = c.chunk_size {
        let size = u32::try_from(size).map_err(|_| {
            ApiError::bad_request(format!(
                "chunkSize must be between 1 and 100000, got {size}"
            ))
        })?;
        config.chunk_size = ChunkSize::new(size).map_err(|e| ApiError::bad_request(e.0))?;
    }
    if let Some(h) = c.use_helper_ai {
        config.use_helper_ai = h;
    }
    if let Some(terms) = c.glossary {
        use lotsawa_core::glossary::{MAX_JOB_GLOSSARY_BYTES, MAX_JOB_TERMS, check_term};
        if terms.len() > MAX_JOB_TERMS {
            return Err(ApiError::bad_request(format!(
                "config.glossary holds at most {MAX_JOB_TERMS} terms"
            )));
        }
        let bytes: usize = terms.iter().map(|t| t.bo.len() + t.en.len()).sum();
        if bytes > MAX_JOB_GLOSSARY_BYTES {
            return Err(ApiError::bad_request(format!(
                "config.glossary holds at most {MAX_JOB_GLOSSARY_BYTES} bytes of terms"
            )));
        }
        for (i, t) in terms.into_iter().enumerate() {
            if let Err(why) = check_term(t.bo.trim(), t.en.trim()) {
                return Err(ApiError::bad_request(format!("config.glossary[{i}] {why}")));
            }
            config.glossary.push(lotsawa_core::GlossaryEntry {
                bo: t.bo.trim().to_owned(),
                en: t.en.trim().to_owned(),
            });
        }
    }
    if let Some(url) = c.callback_url {
        // Its address is checked by the service (it resolves the host).
        config.callback_url = Some(url.trim().to_owned());
    }
    if let Some(p) = c.parallel_chunks {
        use lotsawa_core::job::MAX_PARALLEL_CHUNKS;
        config.parallel_chunks = u32::try_from(p)
            .ok()
            .filter(|p| (1..=MAX_PARALLEL_CHUNKS).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "config.parallelChunks must be an integer from 1 to {MAX_PARALLEL_CHUNKS}, got {p}"
                ))
            })?;
    }
    if let Some(p) = c.priority {
        use lotsawa_core::job::{MAX_PRIORITY, MIN_PRIORITY};
        config.priority = i8::try_from(p)
            .ok()
            .filter(|p| (MIN_PRIORITY..=MAX_PRIORITY).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "config.priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, got {p}"
                ))
            })?;
    }
    if let Some(ids) = c.glossary_ids {
        use lotsawa_core::glossaries::MAX_JOB_GLOSSARIES;
        if ids.len() > MAX_JOB_GLOSSARIES {
            return Err(ApiError::bad_request(format!(
                "config.glossaryIds names at most {MAX_JOB_GLOSSARIES} glossaries"
            )));
        }
        for (i, id) in ids.iter().enumerate() {
            let id = id.parse().map_err(|e: lotsawa_core::ValidationError| {
                ApiError::bad_request(format!("config.glossaryIds[{i}]: {}", e.0))
            })?;
            if !config.glossary_ids.contains(&id) {
                config.glossary_ids.push(id);
            }
        }
    }
    if let Some(n) = c.examples {
        use lotsawa_core::job::MAX_EXAMPLES;
        config.examples = u32::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_EXAMPLES)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "config.examples must be an integer from 0 to {MAX_EXAMPLES}, got {n}"
                ))
            })?;
    }
    if let Some(q) = c.quality_threshold {
        if !(0.0..=1.0).contains(&q) {
            return Err(ApiError::bad_request(format!(
                "qualityThreshold must be between 0 and 1, got {q}"
            )));
        }
        config.quality_threshold = q;
    }
    Ok(NewJob {
        tenant,
        kind,
        source,
        config,
        trace: lotsawa_telemetry::current_traceparent(),
    })
}
