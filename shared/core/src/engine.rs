//! The engine port: one trait every translation engine implements.

use std::time::Duration;

use async_trait::async_trait;

use crate::glossary::GlossaryEntry;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Timeouts, connection errors, HTTP 429 and 5xx.
    Transient,
    /// Other 4xx, invalid responses: retrying cannot help.
    Permanent,
}

impl ErrorClass {
    /// The error name a state machine's `ErrorEquals` matches on.
    pub fn error_name(self) -> &'static str {
        match self {
            ErrorClass::Transient => "Lotsawa.Transient",
            ErrorClass::Permanent => "Lotsawa.Permanent",
        }
    }

    /// The `outcome` label of a failed attempt in `lotsawa_chunk_attempts_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient_error",
            ErrorClass::Permanent => "permanent_error",
        }
    }
}

/// An engine failure with its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Retry or not.
    pub class: ErrorClass,
    /// A stable code clients can match on (`provider_unavailable`, …).
    pub code: &'static str,
    /// What went wrong, safe to show to users: no provider text, account
    /// ids, ARNs or key tails (those go in `detail`).
    pub message: String,
    /// What the provider said, for the log only.
    pub detail: Option<String>,
    /// The provider's Retry-After, when it sent one.
    pub retry_after: Option<Duration>,
    /// Set when the failure is a rate limit rather than a fault.
    pub throttle: Option<Throttle>,
}

/// A failure that says "not now" rather than "not so".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The provider answered 429 (or 503 with Retry-After).
    Provider,
    /// The shared limiter has no share free yet (a gate that cannot wait
    /// itself, in the cloud): the call was never sent.
    Limiter,
}

/// Stable error codes a job's `error` starts with.
pub mod codes {
    /// The provider did not answer, timed out, or answered 429/5xx.
    pub const PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
    /// The provider refused the request (a 4xx other than 429).
    pub const PROVIDER_REJECTED: &str = "provider_rejected";
    /// The provider refused the credentials (401/403, access denied).
    pub const PROVIDER_AUTH: &str = "provider_auth";
    /// The provider's answer could not be used.
    pub const PROVIDER_INVALID_RESPONSE: &str = "provider_invalid_response";
    /// The answer failed the quality checks on every try.
    pub const QUALITY_REJECTED: &str = "quality_rejected";
    /// The shared limiter had no share free (never a job's error).
    pub const PROVIDER_THROTTLED: &str = "provider_throttled";
    /// Any other engine failure.
    pub const ENGINE_FAILED: &str = "engine_failed";
}

impl EngineError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            code: codes::PROVIDER_UNAVAILABLE,
            message: message.into(),
            detail: None,
            retry_after: None,
            throttle: None,
        }
    }
    /// A failure not worth retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            code: codes::ENGINE_FAILED,
            message: message.into(),
            detail: None,
            retry_after: None,
            throttle: None,
        }
    }
    /// The same error under a stable code.
    pub fn coded(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    /// The same error with what the provider said (logged, never shown).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    /// The provider's rate limit (429, or 503 with Retry-After).
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        let mut e = Self::transient(message);
        e.retry_after = retry_after;
        e.throttle = Some(Throttle::Provider);
        e
    }
    /// The shared limiter asks the caller to come back after `wait`.
    pub fn limiter_wait(wait: Duration) -> Self {
        let mut e = Self::transient("waiting for the provider's rate limit");
        e.code = codes::PROVIDER_THROTTLED;
        e.retry_after = Some(wait);
        e.throttle = Some(Throttle::Limiter);
        e
    }
    /// What users see: `code: message`.
    pub fn public(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// A previous chunk, given to the engine as context (stored with a chunk
/// as JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContextTurn {
    /// Its source text.
    pub source: String,
    /// Its translation.
    pub translation: String,
}

/// One chunk to translate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TranslateRequest {
    /// The chunk's exact text.
    pub text: String,
    /// Model asked for by the job, if any.
    pub model: Option<String>,
    /// Earlier chunks, oldest first.
    pub context: Vec<ContextTurn>,
    /// Glossary entries that occur in the chunk, job entries first.
    pub glossary: Vec<GlossaryEntry>,
    /// Why the previous answer was rejected, on a quality retry.
    pub rejected_because: Option<String>,
    /// Similar segments already translated (the tenant's memory, people's
    /// first), as examples of wording: not part of the text.
    pub examples: Vec<ContextTurn>,
}

impl TranslateRequest {
    /// The most output tokens a provider may spend on this chunk: two per
    /// source character plus 256 for short chunks (a Tibetan syllable of ~4
    /// characters becomes one to three English tokens), at most
    /// [`MAX_OUTPUT_TOKENS`]. Bounds what one runaway answer can cost.
    pub fn max_tokens(&self) -> u32 {
        let chars = u32::try_from(self.text.chars().count()).unwrap_or(u32::MAX);
        chars
            .saturating_mul(2)
            .saturating_add(256)
            .min(MAX_OUTPUT_TOKENS)
    }
}

/// The most output tokens any translation call asks for.
pub const MAX_OUTPUT_TOKENS: u32 = 8192;

/// The most output tokens a review call asks for (a small JSON object).
pub const REVIEW_MAX_TOKENS: u32 = 64;

/// What an engine produced for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    /// The output text.
    pub text: String,
    /// The engine's own confidence in 0..=1, when it has one.
    pub confidence: Option<f64>,
    /// The tokens the provider reported for the call (model engines).
    pub usage: Option<crate::usage::Usage>,
}

impl EngineOutput {
    /// Output without a confidence.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            confidence: None,
            usage: None,
        }
    }
}

/// What kind of engine it is: decides translation memory, context and
/// quality checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Deterministic and local (echo, EWTS, offline gloss): no memory, no
    /// context, no quality checks.
    Local,
    /// A language model behind a provider: memory, context, quality checks.
    Model,
}

/// A second opinion on a translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRequest {
    /// The source chunk.
    pub source: String,
    /// The translation to review.
    pub translation: String,
    /// Glossary entries that occur in the source.
    pub glossary: Vec<GlossaryEntry>,
    /// Model.
    pub model: Option<String>,
}

/// A reviewer's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reviewed {
    /// Confidence in 0..=1.
    pub confidence: f64,
    /// The tokens the provider reported for the call.
    pub usage: Option<crate::usage::Usage>,
}

/// A translation engine.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The name jobs select it by.
    fn name(&self) -> &str;
    /// The model used when a job names none.
    fn default_model(&self) -> Option<&str>;
    /// Local or model engine.
    fn kind(&self) -> EngineKind {
        EngineKind::Local
    }
    /// Translate one chunk.
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError>;
    /// Review a translation; returns a confidence in 0..=1 and the tokens
    /// the call reported.
    async fn review(&self, _req: &ReviewRequest) -> Result<Reviewed, EngineError> {
        Err(EngineError::permanent(format!(
            "engine '{}' cannot review translations",
            self.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> TranslateRequest {
        TranslateRequest {
            text: text.to_owned(),
            model: None,
            context: Vec::new(),
            glossary: Vec::new(),
            rejected_because: None,
            examples: Vec::new(),
        }
    }

    #[test]
    fn output_tokens_grow_with_the_chunk_and_stop_at_the_cap() {
        assert_eq!(req("").max_tokens(), 256);
        assert_eq!(req("ཀ་ཁ་ག།").max_tokens(), 256 + 2 * 6);
        assert!(req(&"ཀ་".repeat(500)).max_tokens() > req(&"ཀ་".repeat(50)).max_tokens());
        assert_eq!(req(&"ཀ་".repeat(100_000)).max_tokens(), MAX_OUTPUT_TOKENS);
    }
}
