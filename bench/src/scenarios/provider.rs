//! Provider limits against a provider that enforces them. A fake
//! OpenAI-compatible server on loopback answers chat completions after a
//! random latency and refuses, with a 429 and `Retry-After`, any call
//! beyond its requests per minute, tokens per minute (token buckets
//! refilled continuously, holding one second of rate) or concurrent calls,
//! as a real provider does. The local backend calls it through the OpenAI
//! engine under `LOTSAWA_LIMITS`-style limits and the in-process gate, job
//! concurrency 3, with one 2,000-chunk volume and smaller jobs from three
//! tenants, in three variants: one chunk of a job at a time with the
//! provider's limits configured; 8 chunks at a time with the same limits;
//! 8 at a time with limits configured at twice what the provider allows
//! (so only its 429s keep the rate down). Every job of a variant takes its
//! `parallel_chunks`.
//!
//! Figures per variant: the share of the provider's RPM budget used while
//! work waited (accepted calls ÷ RPM × minutes from the first call to the
//! last answer), 429s per 1,000 calls (all, and those over the concurrency
//! limit), the volume's time against its bound (its chunks ÷ RPM) and
//! every job's time against theirs, failed jobs, the most calls the
//! provider had in flight, and how far the usage the results report
//! differs from what the provider counted. The provider's buckets start
//! full, as a real provider's do after a quiet spell, so a run that keeps
//! it busy can read one second of rate above 100% of the budget (5% over
//! a 20 s run) and below 1× its bound.
//!
//! Latency and rates are scaled five-fold from a real provider's (see
//! `args::FULL`) so the three variants take about three minutes in a debug
//! build; `Retry-After` stays at one second, so each 429 costs relatively
//! more here than against a real provider.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use lotsawa_core::limits::ProviderLimits;
use lotsawa_core::{
    ChunkSize, EngineName, JobConfig, JobId, JobService, JobStatus, JobType, NewJob, SourceText,
    Tenant,
};
use lotsawa_engines::{EngineSet, LocalGate, OpenAiEngine, OpenAiSettings};
use serde_json::{Value, json};

use crate::args::Sizes;
use crate::fixture::backend_with;
use crate::report::Figures;

/// The model the jobs use (the engine's default) and the limits name.
const MODEL: &str = "bench-model";
/// Calls the fake provider serves at once.
pub(crate) const CONCURRENT: u32 = 16;
/// Tokens per minute the provider allows per request per minute: a call
/// here costs about 150–250 tokens, so requests, not tokens, are what
/// binds, while the token bucket is still enforced.
pub(crate) const TOKENS_PER_REQUEST: u64 = 400;
/// The provider's `Retry-After` on a 429, in seconds (what real providers
/// send; not scaled with the latency).
const RETRY_AFTER_SECS: u64 = 1;
/// Characters per chunk: one sentence `ཀ་ཁ་ག་N།` (at most 12 characters
/// here) fits, two never do, so a job of N lines has N chunks.
const CHUNK_SIZE: u32 = 16;
/// Job concurrency of the backend (the server's default).
const JOB_CONCURRENCY: u32 = 3;
/// The tenants of the smaller jobs, in turn.
const TENANTS: [&str; 3] = ["tenant-a", "tenant-b", "tenant-c"];

/// Requests per minute, tokens per minute and calls in flight.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rpm: u32,
    tpm: u64,
    concurrent: u32,
}

impl Limits {
    /// These limits `factor` times over.
    fn times(self, factor: u32) -> Self {
        Self {
            rpm: self.rpm * factor,
            tpm: self.tpm * u64::from(factor),
            concurrent: self.concurrent * factor,
        }
    }
}

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    let real = Limits {
        rpm: sizes.provider_rpm,
        tpm: u64::from(sizes.provider_rpm) * TOKENS_PER_REQUEST,
        concurrent: CONCURRENT,
    };
    for (parallel, factor) in [(1u32, 1u32), (8, 1), (8, 2)] {
        let m = measure(sizes, real, parallel, factor).await;
        let limit = if factor == 1 {
            "limits = provider's".to_owned()
        } else {
            format!("limits {factor}× provider's")
        };
        let what = format!("provider, parallel {parallel}, {limit}");
        figures.add(
            format!("{what}: RPM budget used while work waited"),
            "%",
            m.budget_used,
        );
        figures.add(
            format!("{what}: 429s per 1,000 calls"),
            "per 1,000",
            m.throttled_per_1000,
        );
        figures.add(
            format!("{what}: 429s per 1,000 calls, over the concurrency limit"),
            "per 1,000",
            m.concurrent_per_1000,
        );
        figures.add(
            format!(
                "{what}: volume time ÷ ({} chunks ÷ {} RPM)",
                sizes.provider_chunks, real.rpm
            ),
            "×",
            m.volume_ratio,
        );
        figures.add(
            format!("{what}: all jobs' time ÷ ({} chunks ÷ RPM)", m.all_chunks),
            "×",
            m.all_ratio,
        );
        figures.add(format!("{what}: volume time"), "s", m.volume_secs);
        figures.add(format!("{what}: failed jobs"), "jobs", m.failed);
        figures.add(
            format!("{what}: most calls in flight at the provider"),
            "calls",
            m.max_in_flight,
        );
        figures.add(
            format!("{what}: usage mismatch, calls (results − provider)"),
            "calls",
            m.calls_mismatch,
        );
        figures.add(
            format!("{what}: usage mismatch, tokens (results − provider)"),
            "tokens",
            m.tokens_mismatch,
        );
    }
}

/// One variant's figures.
struct Measured {
    budget_used: f64,
    throttled_per_1000: f64,
    concurrent_per_1000: f64,
    volume_ratio: f64,
    all_ratio: f64,
    volume_secs: f64,
    all_chunks: usize,
    failed: f64,
    max_in_flight: f64,
    calls_mismatch: f64,
    tokens_mismatch: f64,
}

/// A job the scenario submitted.
struct Submitted {
    tenant: Tenant,
    id: JobId,
    chunks: usize,
}

/// Run one variant: every job at `parallel` chunks at a time, the limits
/// configured at `factor` times the provider's `real` ones.
async fn measure(sizes: Sizes, real: Limits, parallel: u32, factor: u32) -> Measured {
    let fake = Arc::new(FakeProvider::new(
        real,
        sizes.provider_latency_ms,
        u64::from(parallel * 16 + factor),
    ));
    let (url, server) = fake.clone().serve().await;
    let configured = real.times(factor);
    let limits = ProviderLimits::parse(&format!(
        "openai:{MODEL} rpm={} tpm={} concurrent={}",
        configured.rpm, configured.tpm, configured.concurrent
    ))
    .expect("limits");
    let engine = OpenAiEngine::new(OpenAiSettings {
        base_url: format!("{url}/v1"),
        api_key: None,
        model: MODEL.to_owned(),
        timeout: Duration::from_secs(30),
    })
    .expect("openai client");
    let engines = EngineSet::from_engines(vec![Arc::new(engine)], "openai")
        .with_limits(limits, Arc::new(LocalGate::new()));
    let dir = tempfile::tempdir().expect("tempdir");
    let b = backend_with(dir.path().join("provider.db"), JOB_CONCURRENCY, engines).await;
    let svc = b.service();

    // The volume first, so it holds a slot from the start; the smaller
    // jobs take the other slots in turn. Sentences are numbered across the
    // variant so no chunk repeats another (a repeat would be served from
    // the translation memory without a call).
    let started = Instant::now();
    let mut next_sentence = 0;
    let mut jobs = Vec::with_capacity(1 + sizes.provider_small.len());
    for (k, &chunks) in std::iter::once(&sizes.provider_chunks)
        .chain(sizes.provider_small)
        .enumerate()
    {
        let tenant = if k == 0 {
            Tenant::default()
        } else {
            Tenant::parse(TENANTS[(k - 1) % TENANTS.len()]).expect("tenant")
        };
        let source: String = (next_sentence..next_sentence + chunks)
            .map(|n| format!("ཀ་ཁ་ག་{n}།\n"))
            .collect();
        next_sentence += chunks;
        let job = svc
            .submit(NewJob {
                trace: None,
                tenant: tenant.clone(),
                kind: JobType::Translation,
                source: SourceText::parse(source).expect("text"),
                config: JobConfig {
                    engine: Some(EngineName::parse("openai").expect("engine")),
                    chunk_size: ChunkSize::new(CHUNK_SIZE).expect("size"),
                    parallel_chunks: parallel,
                    ..JobConfig::default()
                },
            })
            .await
            .expect("submit");
        assert_eq!(
            job.chunks_total as usize, chunks,
            "a job of {chunks} sentences should have {chunks} chunks"
        );
        jobs.push(Submitted {
            tenant,
            id: job.id,
            chunks,
        });
    }
    let all_chunks: usize = jobs.iter().map(|j| j.chunks).sum();

    // Wait for every job to end, but not for ever: far longer than the
    // slowest variant (every call one after another at the longest
    // latency) takes, so only a hang reaches it.
    let slowest = Duration::from_millis(sizes.provider_latency_ms.1.max(1)) * all_chunks as u32;
    let deadline = started + Duration::from_secs(120) + slowest * 4;
    let store = svc.store().clone();
    while ended(&store).await < jobs.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut failed = 0u32;
    let (mut calls, mut tokens) = (0u64, 0u64);
    let mut volume_secs = started.elapsed().as_secs_f64();
    let mut first_created: Option<DateTime<Utc>> = None;
    let mut last_ended: Option<DateTime<Utc>> = None;
    let mut unfinished = false;
    for (k, j) in jobs.iter().enumerate() {
        let Ok(view) = svc.get(&j.tenant, j.id).await else {
            failed += 1;
            continue;
        };
        let job = view.job;
        first_created = Some(first_created.map_or(job.created_at, |t| t.min(job.created_at)));
        match job.completed_at {
            Some(done) => last_ended = Some(last_ended.map_or(done, |t| t.max(done))),
            None => unfinished = true,
        }
        if job.status != JobStatus::Completed {
            failed += 1;
            continue;
        }
        if let Some(usage) = job.result.and_then(|r| r.usage) {
            calls += usage.calls;
            tokens += usage.prompt_tokens + usage.completion_tokens;
        }
        if k == 0
            && let Some(done) = job.completed_at
        {
            volume_secs = secs_between(job.created_at, done);
        }
    }
    // An unfinished job ran at least until now.
    let all_secs = match (first_created, last_ended, unfinished) {
        (Some(first), Some(last), false) => secs_between(first, last),
        _ => started.elapsed().as_secs_f64(),
    };
    let _ = b.shutdown().await;
    server.abort();

    let seen = fake.summary();
    let total = seen.accepted + seen.refused();
    let bound = |chunks: usize| chunks as f64 * 60.0 / f64::from(real.rpm);
    let per_1000 = |n: u64| {
        if total == 0 {
            0.0
        } else {
            1000.0 * n as f64 / total as f64
        }
    };
    eprintln!(
        "provider, parallel {parallel}, limits {factor}× provider's: {} calls, {} accepted, 429s: {} requests, {} tokens, {} concurrent; volume {volume_secs:.1} s, all jobs {all_secs:.1} s, {failed} failed",
        total, seen.accepted, seen.by_requests, seen.by_tokens, seen.by_concurrent
    );
    Measured {
        budget_used: 100.0 * seen.accepted as f64
            / (f64::from(real.rpm) * seen.span.as_secs_f64() / 60.0),
        throttled_per_1000: per_1000(seen.refused()),
        concurrent_per_1000: per_1000(seen.by_concurrent),
        volume_ratio: volume_secs / bound(sizes.provider_chunks),
        all_ratio: all_secs / bound(all_chunks),
        volume_secs,
        all_chunks,
        failed: f64::from(failed),
        max_in_flight: f64::from(seen.max_in_flight),
        calls_mismatch: calls as f64 - seen.accepted as f64,
        tokens_mismatch: tokens as f64 - seen.tokens as f64,
    }
}

/// Jobs that ended: completed, failed or cancelled.
async fn ended(store: &Arc<dyn lotsawa_core::Store>) -> u64 {
    store
        .counts()
        .await
        .expect("counts")
        .iter()
        .filter(|(s, _)| {
            matches!(
                s,
                JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
            )
        })
        .map(|(_, n)| *n)
        .sum()
}

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// Why the fake provider refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Requests,
    Tokens,
    Concurrent,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Requests => "Rate limit reached for requests per minute",
            Refusal::Tokens => "Rate limit reached for tokens per minute",
            Refusal::Concurrent => "Too many concurrent requests",
        }
    }
}

/// One call the fake provider received.
struct Call {
    at: Instant,
    refused: Option<Refusal>,
    tokens: u64,
}

/// The fake provider's buckets and its record of calls.
struct Ledger {
    requests: f64,
    tokens: f64,
    filled: Instant,
    in_flight: u32,
    max_in_flight: u32,
    calls: Vec<Call>,
    last_answer: Option<Instant>,
}

/// What the fake provider saw, summed.
struct Seen {
    accepted: u64,
    by_requests: u64,
    by_tokens: u64,
    by_concurrent: u64,
    /// Prompt and completion tokens of the accepted calls.
    tokens: u64,
    max_in_flight: u32,
    /// From the first call to the last answer.
    span: Duration,
}

impl Seen {
    fn refused(&self) -> u64 {
        self.by_requests + self.by_tokens + self.by_concurrent
    }
}

/// An OpenAI-compatible provider that enforces its limits.
struct FakeProvider {
    limits: Limits,
    latency_ms: (u64, u64),
    ledger: Mutex<Ledger>,
    /// The latency generator's state (splitmix64: no dependency, and the
    /// same draws for the same seed).
    rng: AtomicU64,
}

impl FakeProvider {
    fn new(limits: Limits, latency_ms: (u64, u64), seed: u64) -> Self {
        Self {
            limits,
            latency_ms,
            ledger: Mutex::new(Ledger {
                requests: Self::request_capacity(limits),
                tokens: Self::token_capacity(limits),
                filled: Instant::now(),
                in_flight: 0,
                max_in_flight: 0,
                calls: Vec::new(),
                last_answer: None,
            }),
            rng: AtomicU64::new(seed),
        }
    }

    /// A bucket holds one second of its rate, as the gate's does.
    fn request_capacity(limits: Limits) -> f64 {
        f64::from(limits.rpm) / 60.0
    }

    fn token_capacity(limits: Limits) -> f64 {
        limits.tpm as f64 / 60.0
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A handler that panicked left the counts as they were: keep them.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve on a loopback port: its base URL and the server's task.
    async fn serve(self: Arc<Self>) -> (String, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(self);
        crate::fixture::serve_app(app).await
    }

    /// Take a call costing `tokens` if every limit allows it now; record
    /// it either way.
    fn admit(&self, tokens: u64) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut l = self.ledger();
        let elapsed = now.duration_since(l.filled).as_secs_f64();
        let (rc, tc) = (
            Self::request_capacity(self.limits),
            Self::token_capacity(self.limits),
        );
        l.requests = (l.requests + elapsed * rc).min(rc);
        l.tokens = (l.tokens + elapsed * tc).min(tc);
        l.filled = now;
        let refused = if l.in_flight >= self.limits.concurrent {
            Some(Refusal::Concurrent)
        } else if l.requests < 1.0 {
            Some(Refusal::Requests)
        } else if l.tokens < tokens as f64 {
            Some(Refusal::Tokens)
        } else {
            None
        };
        l.calls.push(Call {
            at: now,
            refused,
            tokens,
        });
        match refused {
            Some(why) => {
                // A refusal is answered at once.
                l.last_answer = Some(now);
                Err(why)
            }
            None => {
                l.requests -= 1.0;
                l.tokens -= tokens as f64;
                l.in_flight += 1;
                l.max_in_flight = l.max_in_flight.max(l.in_flight);
                Ok(())
            }
        }
    }

    /// An answer's latency, uniform in the configured range.
    fn latency(&self) -> Duration {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let (lo, hi) = self.latency_ms;
        let span_us = hi.saturating_sub(lo) * 1000;
        Duration::from_micros(lo * 1000 + z % (span_us + 1))
    }

    /// Everything seen so far.
    fn summary(&self) -> Seen {
        let l = self.ledger();
        let mut s = Seen {
            accepted: 0,
            by_requests: 0,
            by_tokens: 0,
            by_concurrent: 0,
            tokens: 0,
            max_in_flight: l.max_in_flight,
            span: match (l.calls.first(), l.last_answer) {
                (Some(first), Some(last)) => last.duration_since(first.at),
                _ => Duration::ZERO,
            },
        };
        for c in &l.calls {
            match c.refused {
                None => {
                    s.accepted += 1;
                    s.tokens += c.tokens;
                }
                Some(Refusal::Requests) => s.by_requests += 1,
                Some(Refusal::Tokens) => s.by_tokens += 1,
                Some(Refusal::Concurrent) => s.by_concurrent += 1,
            }
        }
        s
    }
}

/// An accepted call in flight: ends when dropped, answered or abandoned by
/// its client, so the concurrency count never leaks.
struct InFlight(Arc<FakeProvider>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut l = self.0.ledger();
        l.in_flight = l.in_flight.saturating_sub(1);
        l.last_answer = Some(Instant::now());
    }
}

/// `POST /v1/chat/completions`: a 429 beyond a limit, else an English
/// answer after the latency, with usage derived from the request (prompt:
/// body bytes ÷ 4; completion: the source's characters).
async fn complete(State(fake): State<Arc<FakeProvider>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "the body is not JSON", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
    let source = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let prompt_tokens = body.len() as u64 / 4;
    let completion_tokens = source.chars().count() as u64;
    if let Err(why) = fake.admit(prompt_tokens + completion_tokens) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
            Json(json!({"error": {"message": why.message(), "type": "requests", "code": "rate_limit_exceeded"}})),
        )
            .into_response();
    }
    let _call = InFlight(fake.clone());
    tokio::time::sleep(fake.latency()).await;
    // "Ka, kha, ga, 12.": English letters, about as long as the source, so
    // the quality checks ask for no second call.
    let number: String = source.chars().filter(char::is_ascii_digit).collect();
    let content = if number.is_empty() {
        "Ka, kha, ga.".to_owned()
    } else {
        format!("Ka, kha, ga, {number}.")
    };
    Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }))
    .into_response()
}
