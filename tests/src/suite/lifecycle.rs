//! A job's life after submission: cancelling it pending or mid-run,
//! retrying it, the 409s for moves its state does not allow, and how
//! provider failures end it (transient ones retried, permanent ones failing
//! it at once with a stable error code). These cases drive the fake
//! provider's delays and injected failures to reach each state.

use std::time::Duration;

use anyhow::{Result, ensure};
use reqwest::Method;
use serde_json::json;

use super::{JOB_TIMEOUT, expected_translation, is_rfc3339_utc, numbered_text, unique_tag};
use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

/// Cancel of a pending job, of a processing job, retry, and the 409s.
pub async fn cancel_and_retry(
    api: &Api,
    provider: &FakeProvider,
    concurrency: usize,
) -> Result<()> {
    provider.set_delay_ms(400);
    let tag = unique_tag("cancel");
    // Fill every slot with slow jobs so the next one stays pending.
    let mut blockers = Vec::new();
    for i in 0..concurrency {
        let (text, _, size) = numbered_text(&format!("{tag}b{i}-"), 4);
        blockers.push(
            api.submit(&text, json!({"engine": "openai", "chunkSize": size}))
                .await?,
        );
    }
    let (text, chunks, size) = numbered_text(&format!("{tag}p-"), 2);
    let pending = api
        .submit(&text, json!({"engine": "openai", "chunkSize": size}))
        .await?;
    let job = api.job(&pending).await?;
    ensure!(job["status"] == "pending", "expected pending: {job}");
    let (status, _, body) = api
        .request(Method::DELETE, &format!("/api/jobs/{pending}"))
        .await?;
    ensure!(status == 200, "cancel pending: {status} {body}");
    ensure!(
        body["message"] == "Job cancelled successfully" && body["jobId"] == pending.as_str(),
        "{body}"
    );
    let job = api.job(&pending).await?;
    ensure!(
        job["status"] == "cancelled" && is_rfc3339_utc(&job["cancelledAt"]),
        "{job}"
    );
    let (status, ct, _) = api
        .request(Method::DELETE, &format!("/api/jobs/{pending}"))
        .await?;
    ensure!(
        status == 409 && ct.starts_with("application/problem+json"),
        "second cancel: {status}"
    );

    // Cancel a processing job: it stops before its next chunk.
    let victim = blockers[0].clone();
    api.wait_for(&victim, JOB_TIMEOUT, |j| j["status"] == "processing")
        .await?;
    let (status, _, body) = api
        .request(Method::DELETE, &format!("/api/jobs/{victim}"))
        .await?;
    ensure!(status == 200, "cancel processing: {status} {body}");
    let at_cancel = api.job(&victim).await?;
    ensure!(at_cancel["status"] == "cancelled", "{at_cancel}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = api.job(&victim).await?;
    ensure!(later["status"] == "cancelled", "{later}");
    ensure!(
        later["chunksCompleted"] == at_cancel["chunksCompleted"],
        "a cancelled job went on: {at_cancel} -> {later}"
    );

    // The cancelled pending job never started; the others finish.
    for b in &blockers[1..] {
        api.wait_status(b, "completed", JOB_TIMEOUT).await?;
    }
    ensure!(
        chunks.iter().all(|c| provider.calls_for(c) == 0),
        "a cancelled pending job was translated"
    );
    ensure!(
        api.job(&pending).await?["startedAt"].is_null(),
        "cancelled pending job has a startedAt"
    );

    // Retry both; they complete; the victim re-runs only unfinished chunks.
    provider.set_delay_ms(20);
    for id in [&pending, &victim] {
        let (status, _, body) = api
            .request(Method::POST, &format!("/api/jobs/{id}/retry"))
            .await?;
        ensure!(status == 200, "retry: {status} {body}");
        ensure!(
            body["message"] == "Job retry initiated" && body["jobId"] == id.as_str(),
            "{body}"
        );
    }
    let done = api.wait_status(&pending, "completed", JOB_TIMEOUT).await?;
    ensure!(
        done["result"]["translation"] == expected_translation(&chunks).as_str(),
        "{done}"
    );
    let v = api.wait_status(&victim, "completed", JOB_TIMEOUT).await?;
    ensure!(v["attempts"] == 2 && v["cancelledAt"].is_null(), "{v}");
    let (status, _, _) = api
        .request(Method::POST, &format!("/api/jobs/{victim}/retry"))
        .await?;
    ensure!(status == 409, "retry of a completed job: {status}");
    let (status, _, _) = api
        .request(Method::DELETE, &format!("/api/jobs/{victim}"))
        .await?;
    ensure!(status == 409, "cancel of a completed job: {status}");
    Ok(())
}

/// Transient failures are retried; permanent ones fail the job at once.
pub async fn retries_and_failures(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let tag = unique_tag("retry");
    let flaky = format!("{tag} FAIL503x2 ཀ་ཁ།");
    let id = api.submit(&flaky, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&flaky) == 3,
        "503 twice then success: {} calls",
        provider.calls_for(&flaky)
    );
    ensure!(
        job["result"]["translation"] == fake_translation(&flaky).as_str(),
        "{job}"
    );

    let bad = format!("{tag} FAIL400 ཀ་ཁ།");
    let id = api.submit(&bad, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&bad) == 1,
        "400 is permanent: {} calls",
        provider.calls_for(&bad)
    );
    ensure!(
        job["error"].as_str().is_some_and(|e| e.contains("400")
            && e.starts_with("provider_rejected: ")
            && !e.contains("injected")),
        "a stable code and no provider text: {job}"
    );
    ensure!(is_rfc3339_utc(&job["completedAt"]), "{job}");
    let events = api.stream(&id, None, Duration::from_secs(10)).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.kind() == "failed" && e.json()["error"].is_string()),
        "{events:?}"
    );
    ensure!(
        events
            .last()
            .is_some_and(|e| e.event == "close" && e.data == "Job failed"),
        "{events:?}"
    );

    let down = format!("{tag} ALWAYS503 ཀ་ཁ།");
    let id = api.submit(&down, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&down) == 3,
        "3 attempts in all: {}",
        provider.calls_for(&down)
    );
    ensure!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("3 attempts") && e.starts_with("provider_unavailable: ")),
        "{job}"
    );
    Ok(())
}
