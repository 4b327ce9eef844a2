//! The engine port: one trait every translation engine implements.

use std::time::Duration;

use async_trait::async_trait;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// An engine failure with its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Retry or not.
    pub class: ErrorClass,
    /// What went wrong, safe to show to users (no secrets).
    pub message: String,
    /// The provider's Retry-After, when it sent one.
    pub retry_after: Option<Duration>,
}

impl EngineError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A failure not worth retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A previous chunk, given to the engine as context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTurn {
    /// Its source text.
    pub source: String,
    /// Its translation.
    pub translation: String,
}

/// One chunk to translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateRequest {
    /// The chunk's exact text.
    pub text: String,
    /// Model asked for by the job, if any.
    pub model: Option<String>,
    /// Earlier chunks, oldest first.
    pub context: Vec<ContextTurn>,
}

/// A translation engine.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The name jobs select it by.
    fn name(&self) -> &str;
    /// The model used when a job names none.
    fn default_model(&self) -> Option<&str>;
    /// Translate one chunk.
    async fn translate(&self, req: &TranslateRequest) -> Result<String, EngineError>;
}
