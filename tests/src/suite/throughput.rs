//! Provider throughput on any deployment: a job with parallel chunks and a
//! priority is streamed in chunk order, shows both settings, is found by
//! its priority, and its `result.usage` is exactly the tokens the provider
//! reported for its chunks, as is the usage report's share of it.

use anyhow::{Result, ensure};
use serde_json::json;

use super::{JOB_TIMEOUT, expected_translation, numbered_text, unique_tag};
use crate::{Api, FakeProvider, chunk_indices};

/// Parallel chunks in order, priority, and usage equal to the provider's.
pub async fn parallel_chunks_priority_and_usage(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(30);
    let (text, chunks, size) = numbered_text(&unique_tag("usage"), 6);
    let id = api
        .submit(
            &text,
            json!({"engine": "openai", "chunkSize": size, "parallelChunks": 3, "priority": 2}),
        )
        .await?;
    let events = api.stream(&id, None, JOB_TIMEOUT).await?;
    let indices = chunk_indices(&events);
    ensure!(
        indices == (0..6).collect::<Vec<u64>>(),
        "chunk events in order: {indices:?}"
    );
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["result"]["translation"] == expected_translation(&chunks).as_str(),
        "{job}"
    );
    ensure!(job["parallelChunks"] == 3 && job["priority"] == 2, "{job}");
    let (prompt, completion) = chunks
        .iter()
        .map(|c| provider.tokens_for(c))
        .fold((0, 0), |(p, c), (p1, c1)| (p + p1, c + c1));
    let calls: u32 = chunks.iter().map(|c| provider.calls_for(c)).sum();
    let usage = &job["result"]["usage"];
    ensure!(
        usage["promptTokens"] == prompt
            && usage["completionTokens"] == completion
            && usage["calls"] == calls,
        "usage {usage} against the provider's {prompt} + {completion} in {calls} calls"
    );
    ensure!(
        prompt > 0 && completion > 0,
        "the provider reported no tokens"
    );
    let (status, _, page) = api
        .request(reqwest::Method::GET, "/api/jobs?priority=2&limit=100")
        .await?;
    ensure!(status == 200, "{page}");
    ensure!(
        page["jobs"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["id"] == id.as_str())
                && jobs.iter().all(|j| j["priority"] == 2)),
        "{page}"
    );
    let (status, _, report) = api
        .request(reqwest::Method::GET, "/api/usage?groupBy=model")
        .await?;
    ensure!(status == 200, "{report}");
    let line = report["lines"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|l| l["engine"] == "openai" && l["model"] == "fake-model")
        })
        .cloned()
        .unwrap_or_default();
    ensure!(
        line["promptTokens"].as_u64() >= Some(prompt)
            && line["completionTokens"].as_u64() >= Some(completion),
        "the report holds the job's tokens: {report}"
    );
    let (status, _, bad) = api
        .request(reqwest::Method::GET, "/api/jobs?priority=11")
        .await?;
    ensure!(status == 400, "priority 11: {status} {bad}");
    Ok(())
}
