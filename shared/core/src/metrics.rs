//! Metric definitions both backends share: the chunk-duration buckets, the
//! attempt outcomes, and the Prometheus text of counters kept as plain
//! totals (the cloud keeps them in sharded DynamoDB items; the embedded
//! backend uses the `prometheus` crate with the same names and buckets).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A metric's name and help text, defined once for both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The Prometheus name.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Provider calls per outcome (label `outcome`).
pub const CHUNK_ATTEMPTS: MetricDef = MetricDef {
    name: "lotsawa_chunk_attempts_total",
    help: "Provider calls made for chunks, by outcome",
};
/// Duration of successful provider calls (label `engine`).
pub const CHUNK_DURATION: MetricDef = MetricDef {
    name: "lotsawa_chunk_duration_seconds",
    help: "Duration of successful chunk translations",
};
/// Jobs submitted since the process started (embedded backend).
pub const JOBS_SUBMITTED: MetricDef = MetricDef {
    name: "lotsawa_jobs_submitted_total",
    help: "Jobs submitted since start",
};
/// Chunks served from the translation memory.
pub const MEMORY_HITS: MetricDef = MetricDef {
    name: "lotsawa_translation_memory_hits_total",
    help: "Chunks served from the translation memory without a provider call",
};
/// Answers the quality checks refused and asked again.
pub const QUALITY_RETRIES: MetricDef = MetricDef {
    name: "lotsawa_quality_retries_total",
    help: "Provider answers rejected by the quality checks and asked again",
};
/// Tokens the provider reported (labels `engine`, `model`, `kind`:
/// `prompt` or `completion`).
pub const PROVIDER_TOKENS: MetricDef = MetricDef {
    name: "lotsawa_provider_tokens_total",
    help: "Tokens provider answers reported, by engine, model and kind",
};
/// Answers to the state machine that Step Functions refused (cloud).
pub const ANSWER_FAILURES: MetricDef = MetricDef {
    name: "lotsawa_task_answer_failures_total",
    help: "Answers to the state machine that Step Functions refused",
};

impl MetricDef {
    /// The `# HELP` and `# TYPE` lines of this metric.
    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {kind}",
            self.name, self.help, self.name
        );
    }

    /// A counter without labels: header and value.
    fn counter(&self, out: &mut String, value: u64) {
        self.header(out, "counter");
        let _ = writeln!(out, "{} {value}", self.name);
    }
}

/// Upper bounds (seconds) of `lotsawa_chunk_duration_seconds` buckets.
pub const CHUNK_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Outcomes of a provider call, the `outcome` label of
/// `lotsawa_chunk_attempts_total`.
pub const ATTEMPT_OUTCOMES: [&str; 3] = ["success", "transient_error", "permanent_error"];

/// Index of the first bucket whose bound holds `seconds`
/// (`CHUNK_DURATION_BUCKETS.len()` for +Inf).
pub fn bucket_index(seconds: f64) -> usize {
    CHUNK_DURATION_BUCKETS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(CHUNK_DURATION_BUCKETS.len())
}

/// One engine's duration histogram as plain totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationTotals {
    /// Count per bucket, not cumulative; the last entry is +Inf.
    pub buckets: [u64; CHUNK_DURATION_BUCKETS.len() + 1],
    /// Sum of observed seconds.
    pub sum: f64,
}

impl DurationTotals {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Chunk counters as plain totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkTotals {
    /// Provider calls per outcome.
    pub attempts: BTreeMap<String, u64>,
    /// Successful call durations per engine.
    pub durations: BTreeMap<String, DurationTotals>,
    /// Chunks served from the translation memory.
    pub memory_hits: u64,
    /// Provider answers rejected by the quality checks and asked again.
    pub quality_retries: u64,
    /// Answers to the cloud's state machine that Step Functions refused
    /// (other than for an ended execution).
    pub answer_failures: u64,
    /// Provider tokens by `(engine, model, kind)`.
    pub tokens: BTreeMap<(String, String, String), u64>,
}

impl ChunkTotals {
    /// Prometheus text exposition of these totals, with the same names,
    /// labels and buckets as the embedded backend's registry.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let attempts = CHUNK_ATTEMPTS.name;
        CHUNK_ATTEMPTS.header(&mut out, "counter");
        for outcome in ATTEMPT_OUTCOMES {
            let n = self.attempts.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "{attempts}{{outcome=\"{outcome}\"}} {n}");
        }
        let duration = CHUNK_DURATION.name;
        CHUNK_DURATION.header(&mut out, "histogram");
        for (engine, d) in &self.durations {
            let mut cumulative = 0;
            for (i, bound) in CHUNK_DURATION_BUCKETS.iter().enumerate() {
                cumulative += d.buckets[i];
                let _ = writeln!(
                    out,
                    "{duration}_bucket{{engine=\"{engine}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = d.count();
            let _ = writeln!(
                out,
                "{duration}_bucket{{engine=\"{engine}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "{duration}_sum{{engine=\"{engine}\"}} {}", d.sum);
            let _ = writeln!(out, "{duration}_count{{engine=\"{engine}\"}} {count}");
        }
        MEMORY_HITS.counter(&mut out, self.memory_hits);
        QUALITY_RETRIES.counter(&mut out, self.quality_retries);
        PROVIDER_TOKENS.header(&mut out, "counter");
        let tokens = PROVIDER_TOKENS.name;
        for ((engine, model, kind), n) in &self.tokens {
            let _ = writeln!(
                out,
                "{tokens}{{engine=\"{engine}\",kind=\"{kind}\",model=\"{model}\"}} {n}"
            );
        }
        ANSWER_FAILURES.counter(&mut out, self.answer_failures);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_upper_bound() {
        assert_eq!(bucket_index(0.0), 0);
        assert_eq!(bucket_index(0.001), 0);
        assert_eq!(bucket_index(0.0011), 1);
        assert_eq!(bucket_index(1.0), 7);
        assert_eq!(bucket_index(120.0), 13);
        assert_eq!(bucket_index(120.5), 14);
    }

    #[test]
    fn histogram_text_is_cumulative_and_ends_with_inf() {
        let mut d = DurationTotals::default();
        d.buckets[bucket_index(0.02)] += 2; // le 0.05
        d.buckets[bucket_index(3.0)] += 1; // le 5
        d.buckets[bucket_index(500.0)] += 1; // +Inf
        d.sum = 503.04;
        let totals = ChunkTotals {
            attempts: BTreeMap::from([("success".into(), 4), ("transient_error".into(), 2)]),
            durations: BTreeMap::from([("openai".into(), d)]),
            memory_hits: 3,
            quality_retries: 1,
            answer_failures: 0,
            tokens: BTreeMap::from([(("openai".into(), "m".into(), "prompt".into()), 12)]),
        };
        let text = totals.to_prometheus();
        for line in [
            "lotsawa_chunk_attempts_total{outcome=\"success\"} 4",
            "lotsawa_chunk_attempts_total{outcome=\"transient_error\"} 2",
            "lotsawa_chunk_attempts_total{outcome=\"permanent_error\"} 0",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"0.01\"} 0",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"0.05\"} 2",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"2.5\"} 2",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"5\"} 3",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"120\"} 3",
            "lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"+Inf\"} 4",
            "lotsawa_chunk_duration_seconds_sum{engine=\"openai\"} 503.04",
            "lotsawa_chunk_duration_seconds_count{engine=\"openai\"} 4",
            "lotsawa_translation_memory_hits_total 3",
            "lotsawa_quality_retries_total 1",
            "lotsawa_provider_tokens_total{engine=\"openai\",kind=\"prompt\",model=\"m\"} 12",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
