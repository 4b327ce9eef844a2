//! Prometheus metrics of the embedded backend.

use lotsawa_core::metrics::{
    ATTEMPT_OUTCOMES, CHUNK_ATTEMPTS, CHUNK_DURATION, CHUNK_DURATION_BUCKETS, JOBS_SUBMITTED,
    MEMORY_HITS, PROVIDER_TOKENS, QUALITY_RETRIES,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Counters and histograms kept in memory; the job gauges come from the
/// store through the shared service.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Provider calls per outcome (`success`, `transient_error`, `permanent_error`).
    pub chunk_attempts: IntCounterVec,
    /// Duration of successful chunk calls, per engine.
    pub chunk_duration: HistogramVec,
    /// Jobs submitted since start.
    pub jobs_submitted: IntCounter,
    /// Chunks served from the translation memory.
    pub memory_hits: IntCounter,
    /// Provider answers rejected by the quality checks and asked again.
    pub quality_retries: IntCounter,
    /// Tokens provider answers reported, per engine, model and kind.
    pub provider_tokens: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let chunk_attempts = IntCounterVec::new(
            Opts::new(CHUNK_ATTEMPTS.name, CHUNK_ATTEMPTS.help),
            &["outcome"],
        )
        .expect("valid metric");
        let chunk_duration = HistogramVec::new(
            HistogramOpts::new(CHUNK_DURATION.name, CHUNK_DURATION.help)
                .buckets(CHUNK_DURATION_BUCKETS.to_vec()),
            &["engine"],
        )
        .expect("valid metric");
        let jobs_submitted =
            IntCounter::new(JOBS_SUBMITTED.name, JOBS_SUBMITTED.help).expect("valid metric");
        let memory_hits =
            IntCounter::new(MEMORY_HITS.name, MEMORY_HITS.help).expect("valid metric");
        let quality_retries =
            IntCounter::new(QUALITY_RETRIES.name, QUALITY_RETRIES.help).expect("valid metric");
        let provider_tokens = IntCounterVec::new(
            Opts::new(PROVIDER_TOKENS.name, PROVIDER_TOKENS.help),
            &["engine", "model", "kind"],
        )
        .expect("valid metric");
        for c in [
            Box::new(chunk_attempts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(provider_tokens.clone()),
            Box::new(chunk_duration.clone()),
            Box::new(jobs_submitted.clone()),
            Box::new(memory_hits.clone()),
            Box::new(quality_retries.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for outcome in ATTEMPT_OUTCOMES {
            chunk_attempts.with_label_values(&[outcome]);
        }
        Self {
            registry,
            chunk_attempts,
            chunk_duration,
            jobs_submitted,
            memory_hits,
            quality_retries,
            provider_tokens,
        }
    }

    /// The text exposition of the counters.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
