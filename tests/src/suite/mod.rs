//! The API suite. Each function takes a deployment ([`Api`]) and the fake
//! provider its `openai` engine talks to, and fails with a message when the
//! deployment does not behave as the API promises.
//!
//! This module holds what every case shares (the text and tag helpers, the
//! [`Ctx`] a case gets) and [`CASES`], the list and order the harness runs;
//! the cases themselves live in one module per concern and are re-exported
//! here, so callers keep naming them `suite::<case>`.

mod desk;
mod intake;
mod lifecycle;
mod reads;
mod reuse;
mod submit;
mod throughput;
mod translation;

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

pub use desk::corrections_and_exchange;
pub use intake::{bad_input, idempotency_and_job_limits};
pub use lifecycle::{cancel_and_retry, retries_and_failures};
pub use reads::{health_metrics_openapi, list_and_paginate};
pub use reuse::memory_glossaries_and_retranslation;
pub use submit::submit_stream_complete;
pub use throughput::parallel_chunks_priority_and_usage;
pub use translation::{glossary_context_quality, translation_memory, transliteration_and_offline};

/// Generous bound for a job of a few chunks to finish.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A text of `n` lines that the segmenter cuts into exactly one chunk per
/// line at the returned chunk size; also returns the chunks.
pub fn numbered_text(tag: &str, n: usize) -> (String, Vec<String>, u32) {
    let chunks: Vec<String> = (0..n)
        .map(|i| format!("{tag}{i:03} བྱང་ཆུབ་སེམས་དཔའ།\n"))
        .collect();
    let size = chunks.iter().map(|c| c.chars().count()).max().unwrap_or(1) as u32;
    (chunks.concat(), chunks, size)
}

/// What the fake provider's translations of `chunks` assemble to.
pub fn expected_translation(chunks: &[String]) -> String {
    chunks
        .iter()
        .map(|c| format!("{}\n", fake_translation(c)))
        .collect()
}

pub(crate) fn unique_tag(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-", n % 1_000_000_007)
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

/// Which deployment the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `lotsawa serve` binary.
    Local,
    /// The emulated cloud.
    Cloud,
}

/// What every case gets: the deployment, the fake provider behind it, and
/// which deployment it is.
pub struct Ctx {
    /// The API.
    pub api: Api,
    /// The provider the `openai` engine talks to.
    pub provider: FakeProvider,
    /// Local or cloud.
    pub target: Target,
    /// The deployment's concurrency limit.
    pub concurrency: usize,
}

/// A case's future.
pub type CaseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// One case of the suite.
pub type Case = for<'a> fn(&'a Ctx) -> CaseFuture<'a>;

fn case_health(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(health_metrics_openapi(&c.api))
}
fn case_bad_input(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(bad_input(&c.api))
}
fn case_submit(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(submit_stream_complete(&c.api, &c.provider))
}
fn case_retries(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(retries_and_failures(&c.api, &c.provider))
}
fn case_list(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(list_and_paginate(&c.api, &c.provider))
}
fn case_cancel(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(cancel_and_retry(&c.api, &c.provider, c.concurrency))
}
fn case_transliteration(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(transliteration_and_offline(&c.api))
}
fn case_memory(c: &Ctx) -> CaseFuture<'_> {
    // The cloud's memory-hit counter is checked with its other counters.
    Box::pin(translation_memory(
        &c.api,
        &c.provider,
        c.target == Target::Local,
    ))
}
fn case_glossary(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(glossary_context_quality(&c.api, &c.provider))
}

fn case_throughput(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(parallel_chunks_priority_and_usage(&c.api, &c.provider))
}

fn case_desk(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(corrections_and_exchange(&c.api, &c.provider))
}

fn case_reuse(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(memory_glossaries_and_retranslation(&c.api, &c.provider))
}

fn case_limits(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(idempotency_and_job_limits(&c.api))
}
fn case_pdf_jobs(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::documents::pdf_jobs(&c.api))
}
fn case_batch_bad_input(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_bad_input(&c.api))
}
fn case_batch_progress(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_progress_and_fairness(
        &c.api,
        &c.provider,
        c.concurrency,
    ))
}
fn case_batch_cancel(c: &Ctx) -> CaseFuture<'_> {
    Box::pin(crate::batches::batch_cancel_retry_and_list(
        &c.api,
        &c.provider,
        c.concurrency,
    ))
}

/// The suite, in the order it runs against every deployment (one test per
/// case: a failure does not hide the cases after it).
pub const CASES: &[(&str, Case)] = &[
    ("api::health_metrics_openapi", case_health),
    ("api::bad_input", case_bad_input),
    ("api::submit_stream_complete", case_submit),
    ("api::retries_and_failures", case_retries),
    ("api::list_and_paginate", case_list),
    ("api::cancel_and_retry", case_cancel),
    ("api::transliteration_and_offline", case_transliteration),
    ("api::translation_memory", case_memory),
    ("api::glossary_context_quality", case_glossary),
    ("api::idempotency_and_job_limits", case_limits),
    ("api::batch_bad_input", case_batch_bad_input),
    ("api::batch_progress_and_fairness", case_batch_progress),
    ("api::batch_cancel_retry_and_list", case_batch_cancel),
    ("api::pdf_jobs", case_pdf_jobs),
    ("api::parallel_chunks_priority_and_usage", case_throughput),
    ("api::corrections_and_exchange", case_desk),
    ("api::memory_glossaries_and_retranslation", case_reuse),
    ("api::metrics_after_work", case_health),
];
