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

/// Context as stored with a chunk (JSON).
pub fn encode_context(turns: &[ContextTurn]) -> Option<String> {
    if turns.is_empty() {
        return None;
    }
    let v: Vec<serde_json::Value> = turns
        .iter()
        .map(|t| serde_json::json!({"source": t.source, "translation": t.translation}))
        .collect();
    Some(serde_json::Value::Array(v).to_string())
}

/// Context read back from a chunk.
pub fn decode_context(s: &str) -> Option<Vec<ContextTurn>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(s).ok()?;
    v.iter()
        .map(|t| {
            Some(ContextTurn {
                source: t.get("source")?.as_str()?.to_owned(),
                translation: t.get("translation")?.as_str()?.to_owned(),
            })
        })
        .collect()
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
    };
    let mut quality_retried = false;
    let (out, warning) = loop {
        let out = engine.translate(&request).await?;
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
                )));
            }
            Some(issue) => break (out, Some(format!("chunk {}: {issue}", task.index))),
        }
    };
    let mut confidence = out.confidence;
    let mut warning = warning;
    if is_model && task.config.use_helper_ai {
        let review = ReviewRequest {
            source: task.source.to_owned(),
            translation: out.text.clone(),
            glossary: task.glossary.clone(),
            model: task.model.clone(),
        };
        match engine.review(&review).await {
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
    })
}
