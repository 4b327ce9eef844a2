//! The job model, its identifiers and validated inputs, and the one status
//! transition function.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::validation::ValidationError;

/// A UUID identifier type: random when new, parsed from its hyphenated
/// form with an error naming what it identifies.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
            /// The UUID inside.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
            /// The same identifier every time for the same `name` (a UUID
            /// v5), for what is created from events that may be delivered
            /// more than once.
            pub fn derived(name: &str) -> Self {
                const NAMESPACE: Uuid = Uuid::from_u128(0x6c6f_7473_6177_4000_8000_6a6f_6273_0001);
                Self(Uuid::new_v5(&NAMESPACE, name.as_bytes()))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| {
                    ValidationError(format!(
                        concat!("'{}' is not a valid ", $what, " id (expected a UUID)"),
                        s
                    ))
                })
            }
        }
    };
}

uuid_id!(
    /// A job identifier: a UUID v4.
    JobId,
    "job"
);

uuid_id!(
    /// A batch identifier: a UUID v4.
    BatchId,
    "batch"
);

uuid_id!(
    /// A glossary identifier: a UUID v4.
    GlossaryId,
    "glossary"
);

/// A job's place in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    /// The batch.
    pub id: BatchId,
    /// The item's position in it (0 first); it also spaces the item's turn
    /// in the queue (see [`crate::batch`]).
    pub index: u32,
}

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Tibetan to English translation through an engine.
    Translation,
    /// Tibetan Unicode to Extended Wylie (EWTS).
    Transliteration,
}

impl JobType {
    /// Every type this build accepts.
    pub const ALL: &'static [JobType] = &[JobType::Translation, JobType::Transliteration];
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Translation => "translation",
            JobType::Transliteration => "transliteration",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobType {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                ValidationError(format!(
                    "unknown job type '{s}' (supported: translation, transliteration)"
                ))
            })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting in the FIFO queue.
    Pending,
    /// A worker is translating its chunks.
    Processing,
    /// Every chunk translated; the result is available.
    Completed,
    /// A chunk failed for good.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: &'static [JobStatus] = &[
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// True once the job will not change again without a retry.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The one place a status changes. Stores persist the result with a
    /// compare-and-set on `self`, so a stale writer can never move a job back.
    pub fn apply(self, transition: Transition) -> Result<JobStatus, TransitionError> {
        use JobStatus::*;
        use Transition::*;
        let next = match (self, transition) {
            (Pending, Start) => Processing,
            (Processing, Complete) => Completed,
            (Processing, Fail) => Failed,
            (Pending, Cancel) | (Processing, Cancel) => Cancelled,
            (Failed, Retry) | (Cancelled, Retry) => Pending,
            // Only used when a restarted server has more processing jobs than
            // its concurrency allows: the extras go back to the queue head.
            (Processing, Requeue) => Pending,
            (Pending, Complete | Fail | Retry | Requeue)
            | (Processing, Start | Retry)
            | (Completed, _)
            | (Failed, Start | Complete | Fail | Cancel | Requeue)
            | (Cancelled, Start | Complete | Fail | Cancel | Requeue) => {
                return Err(TransitionError {
                    from: self,
                    transition,
                });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                ValidationError(format!(
                    "unknown status '{s}' (one of: pending, processing, completed, failed, cancelled)"
                ))
            })
    }
}

/// A request to change a job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A worker claims the job.
    Start,
    /// The last chunk was translated.
    Complete,
    /// A chunk failed for good.
    Fail,
    /// A client cancelled the job.
    Cancel,
    /// A client asked to run a failed or cancelled job again.
    Retry,
    /// A processing job goes back to the queue (restart with lower concurrency).
    Requeue,
}

/// A transition that the job's current status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition:?} a job that is {from}")]
pub struct TransitionError {
    /// Status the job was in.
    pub from: JobStatus,
    /// What was asked.
    pub transition: Transition,
}

/// Tibetan (or any) source text: never empty nor only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceText(String);

impl SourceText {
    /// Validate raw text.
    pub fn parse(s: String) -> Result<Self, ValidationError> {
        if s.trim().is_empty() {
            return Err(ValidationError(
                "sourceText must contain some non-whitespace text".into(),
            ));
        }
        if s.chars().all(invisible) {
            return Err(ValidationError(
                "sourceText is made only of invisible or control characters".into(),
            ));
        }
        Ok(Self(s))
    }

    /// Whether the text has Tibetan script (U+0F00–U+0FFF).
    pub fn has_tibetan(&self) -> bool {
        self.0
            .chars()
            .any(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c))
    }

    /// What a job of `kind` needs of its text: a translation translates
    /// Tibetan, so its text must have some.
    pub fn check_for(&self, kind: JobType) -> Result<(), ValidationError> {
        match kind {
            JobType::Translation if !self.has_tibetan() => Err(ValidationError(
                "sourceText has no Tibetan script: a translation job translates Tibetan".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Consume into the inner string.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Whether a character shows nothing: whitespace, controls, and format
/// characters such as zero-width spaces, joiners, bidi marks and variation
/// selectors.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}')
}

/// Largest chunk, in characters, that a job may ask for.
pub const MAX_CHUNK_SIZE: u32 = 100_000;

/// Target chunk size in characters (Unicode scalar values), 1..=100000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// The default: 2000 characters.
    pub const DEFAULT: ChunkSize = ChunkSize(2000);
    /// Validate a size.
    pub fn new(n: u32) -> Result<Self, ValidationError> {
        if n == 0 || n > MAX_CHUNK_SIZE {
            return Err(ValidationError(format!(
                "chunkSize must be between 1 and {MAX_CHUNK_SIZE}, got {n}"
            )));
        }
        Ok(Self(n))
    }
    /// The size in characters.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u32> for ChunkSize {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<ChunkSize> for u32 {
    fn from(c: ChunkSize) -> u32 {
        c.0
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An engine name: lowercase ASCII letters, digits and '-', 1..=32 long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EngineName(String);

impl EngineName {
    /// Validate a name's shape (whether it is configured is checked elsewhere).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError(format!("'{s}' is not a valid engine name")))
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EngineName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EngineName> for String {
    fn from(e: EngineName) -> String {
        e.0
    }
}

impl fmt::Display for EngineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-job settings, stored with the job and used by every chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobConfig {
    /// Engine to use; `None` means the server's default.
    pub engine: Option<EngineName>,
    /// Model to ask the engine for; `None` means the engine's default.
    pub model: Option<String>,
    /// Target chunk size in characters.
    pub chunk_size: ChunkSize,
    /// Ask a second model call to review each chunk (engines issue).
    pub use_helper_ai: bool,
    /// Confidence below which a chunk is flagged (0..=1).
    pub quality_threshold: f64,
    /// Terms this job must translate this way; they win over every other glossary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glossary: Vec<crate::glossary::GlossaryEntry>,
    /// Where the job's terminal event is POSTed, signed (checked by the
    /// address guard at submission and before each delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Chunks of this job in flight at once (1..=[`MAX_PARALLEL_CHUNKS`]).
    /// Above 1, a chunk's context is the previous chunk's source only.
    #[serde(default = "one")]
    pub parallel_chunks: u32,
    /// Queue priority, [`MIN_PRIORITY`]..=[`MAX_PRIORITY`]: higher first,
    /// first come first served within one.
    #[serde(default)]
    pub priority: i8,
    /// The glossaries whose terms the job took at submission (they are in
    /// `glossary`, after the job's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glossary_ids: Vec<GlossaryId>,
    /// How many similar segments of the tenant's memory a model engine
    /// gets as examples for each chunk (0 turns it off).
    #[serde(default = "default_examples")]
    pub examples: u32,
}

fn one() -> u32 {
    1
}

fn default_examples() -> u32 {
    DEFAULT_EXAMPLES
}

/// Examples a model engine gets for each chunk unless a job says otherwise.
pub const DEFAULT_EXAMPLES: u32 = 3;
/// The most examples a job may ask for.
pub const MAX_EXAMPLES: u32 = 10;

/// The most chunks of one job in flight at once.
pub const MAX_PARALLEL_CHUNKS: u32 = 64;
/// The lowest queue priority.
pub const MIN_PRIORITY: i8 = -10;
/// The highest queue priority.
pub const MAX_PRIORITY: i8 = 10;

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            engine: None,
            model: None,
            chunk_size: ChunkSize::DEFAULT,
            use_helper_ai: false,
            quality_threshold: 0.8,
            glossary: Vec::new(),
            callback_url: None,
            parallel_chunks: 1,
            priority: 0,
            glossary_ids: Vec::new(),
            examples: DEFAULT_EXAMPLES,
        }
    }
}

/// A validated submission.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Whose job it is (the caller's tenant).
    pub tenant: crate::auth::Tenant,
    /// What to produce.
    pub kind: JobType,
    /// The text.
    pub source: SourceText,
    /// Settings.
    pub config: JobConfig,
    /// The submitting request's `traceparent`, when traces are on.
    pub trace: Option<String>,
}

impl NewJob {
    /// What makes two submissions the same request (idempotency keys): its
    /// type, text and settings, however the JSON was written.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.kind.as_str().as_bytes());
        h.update([0u8]);
        h.update(self.source.as_str().as_bytes());
        h.update([0u8]);
        h.update(
            serde_json::to_string(&self.config)
                .unwrap_or_default()
                .as_bytes(),
        );
        crate::digest::hex(&h.finalize())
    }
}

/// The output of a completed job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// The whole output text.
    pub translation: String,
    /// The engine's own confidence in 0..=1, when it reports one.
    pub confidence: Option<f64>,
    /// Sum of chunk processing time, in milliseconds.
    pub processing_time: u64,
    /// Engine that produced it.
    pub engine: String,
    /// Model, when the engine has one.
    pub model: Option<String>,
    /// Chunks flagged by the quality checks, one message each.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Chunks served from the translation memory instead of the provider.
    #[serde(default)]
    pub chunks_from_memory: u32,
    /// The provider calls, tokens and cost (results finished before usage
    /// was counted have none).
    #[serde(default)]
    pub usage: Option<crate::usage::JobUsage>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Identifier.
    pub id: JobId,
    /// Whose job it is.
    pub tenant: crate::auth::Tenant,
    /// Type.
    pub kind: JobType,
    /// Status.
    pub status: JobStatus,
    /// Source text.
    pub source: String,
    /// Settings, with the engine resolved at submission.
    pub config: JobConfig,
    /// Output once completed.
    pub result: Option<JobResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Chunks translated so far.
    pub chunks_completed: u32,
    /// Chunks in all.
    pub chunks_total: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its current run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Its run number: how many times it has been started (1 on the first
    /// run, +1 per retry). Provider calls are counted per chunk, apart.
    pub run: u32,
    /// The delivery of its last terminal event to `config.callback_url`.
    pub callback: Option<Callback>,
    /// The batch it belongs to, if any.
    pub batch: Option<BatchRef>,
    /// The W3C `traceparent` of the request that submitted it, when traces
    /// are on: every run's spans continue that trace, on either form and
    /// after a restart.
    pub trace: Option<String>,
    /// Chunks reviewed, and edits of chunks' text.
    pub review: crate::review::ReviewCounts,
}

/// Where a callback delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackStatus {
    /// Not delivered yet; attempts remain.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed (or the address is refused).
    Failed,
}

impl CallbackStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// The delivery of one event to a job's callback URL, stored with the job
/// in the same commit as the transition that made the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// Where it stands.
    pub status: CallbackStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the receiver took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The event's body, fixed when the event happened.
    pub event: String,
}

impl Callback {
    /// A new delivery of `event`, due at once.
    pub fn pending(event: String, now: DateTime<Utc>) -> Self {
        Self {
            status: CallbackStatus::Pending,
            attempts: 0,
            last_error: None,
            delivered_at: None,
            next_attempt_at: Some(now),
            event,
        }
    }
}

impl Job {
    /// Percent complete, 0..=100, derived from the ledger counts.
    pub fn percent(&self) -> u8 {
        if self.status == JobStatus::Completed {
            return 100;
        }
        if self.chunks_total == 0 {
            return 0;
        }
        ((u64::from(self.chunks_completed) * 100) / u64::from(self.chunks_total)).min(100) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;
    use Transition::*;
    use rstest::rstest;

    #[rstest]
    #[case(Pending, Start, Some(Processing))]
    #[case(Processing, Complete, Some(Completed))]
    #[case(Processing, Fail, Some(Failed))]
    #[case(Pending, Cancel, Some(Cancelled))]
    #[case(Processing, Cancel, Some(Cancelled))]
    #[case(Failed, Retry, Some(Pending))]
    #[case(Cancelled, Retry, Some(Pending))]
    #[case(Processing, Requeue, Some(Pending))]
    #[case(Completed, Retry, None)]
    #[case(Completed, Cancel, None)]
    #[case(Failed, Cancel, None)]
    #[case(Cancelled, Cancel, None)]
    #[case(Pending, Complete, None)]
    #[case(Processing, Start, None)]
    #[case(Processing, Retry, None)]
    #[case(Pending, Retry, None)]
    #[case(Cancelled, Start, None)]
    fn transitions(#[case] from: JobStatus, #[case] t: Transition, #[case] to: Option<JobStatus>) {
        assert_eq!(from.apply(t).ok(), to);
    }

    #[rstest]
    #[case("", false)]
    #[case("   \n\t ", false)]
    #[case("བཀྲ་ཤིས།", true)]
    fn source_text(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(SourceText::parse(s.into()).is_ok(), ok);
    }

    #[test]
    fn sources_need_visible_text_and_translations_tibetan() {
        for bad in ["\u{200B}\u{200D}\u{FEFF}", "\u{0007}\u{0000} \u{202E}"] {
            let e = SourceText::parse(bad.into()).expect_err("invisible");
            assert!(e.0.contains("invisible"), "{}", e.0);
        }
        let english = SourceText::parse("just English".into()).expect("visible");
        assert!(!english.has_tibetan());
        assert!(english.check_for(JobType::Translation).is_err());
        assert!(english.check_for(JobType::Transliteration).is_ok());
        let mixed = SourceText::parse("Verse 1: ཀ་ཁ།".into()).expect("text");
        assert!(mixed.check_for(JobType::Translation).is_ok());
    }

    #[test]
    fn chunk_size_bounds() {
        assert!(ChunkSize::new(0).is_err());
        assert!(ChunkSize::new(1).is_ok());
        assert!(ChunkSize::new(MAX_CHUNK_SIZE + 1).is_err());
    }

    #[test]
    fn ids_and_names_parse() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert!("nope".parse::<JobId>().is_err());
        assert_eq!(JobId::derived("s3://b/k@1"), JobId::derived("s3://b/k@1"));
        assert_ne!(JobId::derived("s3://b/k@1"), JobId::derived("s3://b/k@2"));
        assert!("translation".parse::<JobType>().is_ok());
        assert!("poetry".parse::<JobType>().is_err());
        assert!("cancelled".parse::<JobStatus>().is_ok());
        assert!("done".parse::<JobStatus>().is_err());
        assert!(EngineName::parse("openai").is_ok());
        assert!(EngineName::parse("Open AI").is_err());
    }
}
