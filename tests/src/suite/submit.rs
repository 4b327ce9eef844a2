//! The happy path end to end: a job submitted over HTTP, followed on its
//! SSE stream to completion, read back, then its stream opened again once
//! finished and resumed from an event id. The one case that checks every
//! field of the job resource and every kind of stream event in one flow,
//! so a deployment that gets any of them wrong fails here first.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use super::{JOB_TIMEOUT, expected_translation, is_rfc3339_utc, numbered_text, unique_tag};
use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

/// Submit, stream to completion, read the result.
pub async fn submit_stream_complete(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(50);
    let (text, chunks, size) = numbered_text(&unique_tag("flow"), 3);
    let (status, body, location) = api
        .post_job(&json!({"sourceText": text, "type": "translation",
            "config": {"engine": "openai", "chunkSize": size}}))
        .await?;
    ensure!(status == 202, "submit: {status} {body}");
    ensure!(body["status"] == "pending", "{body}");
    ensure!(body["message"] == "Job enqueued successfully", "{body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    ensure!(
        location.as_deref() == Some(&format!("/api/jobs/{id}")),
        "Location header: {location:?}"
    );

    let events = api.stream(&id, None, JOB_TIMEOUT).await?;
    ensure!(
        events.iter().all(|e| !e.id.is_empty()),
        "every event has an id: {events:?}"
    );
    let first = events.first().map(|e| e.json()).unwrap_or(Value::Null);
    ensure!(
        first["type"] == "connected" && first["jobId"] == id.as_str(),
        "first: {first}"
    );
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.kind() == "progress")
        .map(|e| e.json())
        .collect();
    ensure!(!progress.is_empty(), "no progress events: {events:?}");
    for p in &progress {
        for field in [
            "id",
            "status",
            "progress",
            "estimatedTimeRemaining",
            "chunksCompleted",
            "chunksTotal",
            "throughput",
        ] {
            ensure!(p.get(field).is_some(), "progress event lacks {field}: {p}");
        }
        ensure!(p["chunksTotal"] == 3, "{p}");
    }
    let chunk_events: Vec<Value> = events
        .iter()
        .filter(|e| e.kind() == "chunk")
        .map(|e| e.json())
        .collect();
    ensure!(chunk_events.len() == 3, "chunk events: {chunk_events:?}");
    for (i, c) in chunk_events.iter().enumerate() {
        ensure!(c["index"] == i, "{c}");
        ensure!(
            c["translation"] == fake_translation(&chunks[i]).as_str(),
            "{c}"
        );
    }
    let n = events.len();
    ensure!(n >= 3, "{events:?}");
    let terminal = events[n - 2].json();
    ensure!(terminal["type"] == "completed", "terminal: {terminal}");
    ensure!(
        terminal["result"]["translation"] == expected_translation(&chunks).as_str(),
        "terminal result: {terminal}"
    );
    ensure!(
        events[n - 1].event == "close" && events[n - 1].data == "Job completed",
        "close: {:?}",
        events[n - 1]
    );

    let job = api.job(&id).await?;
    ensure!(
        job["id"] == id.as_str() && job["type"] == "translation",
        "{job}"
    );
    ensure!(
        job["status"] == "completed" && job["progress"] == 100,
        "{job}"
    );
    ensure!(
        job["chunksCompleted"] == 3 && job["chunksTotal"] == 3,
        "{job}"
    );
    ensure!(job["attempts"] == 1, "{job}");
    ensure!(job["run"] == 1, "the run number under its name: {job}");
    ensure!(
        job["error"].is_null() && job["cancelledAt"].is_null(),
        "{job}"
    );
    for t in ["createdAt", "startedAt", "completedAt"] {
        ensure!(is_rfc3339_utc(&job[t]), "{t} is not RFC 3339 UTC: {job}");
    }
    ensure!(job["estimatedTimeRemaining"] == 0, "{job}");
    let result = &job["result"];
    ensure!(
        result["translation"] == expected_translation(&chunks).as_str(),
        "{job}"
    );
    ensure!(result["engine"] == "openai", "{job}");
    ensure!(
        result["confidence"]
            .as_f64()
            .is_some_and(|c| (0.0..=1.0).contains(&c))
            && result["processingTime"].is_u64(),
        "{job}"
    );
    for c in &chunks {
        ensure!(
            provider.calls_for(c) == 1,
            "chunk {c:?} called {} times",
            provider.calls_for(c)
        );
    }

    // A finished job's stream: connected, its terminal event, close.
    let again = api.stream(&id, None, Duration::from_secs(10)).await?;
    let kinds: Vec<String> = again
        .iter()
        .map(|e| {
            if e.event == "close" {
                "close".into()
            } else {
                e.kind()
            }
        })
        .collect();
    ensure!(
        kinds == ["connected", "completed", "close"],
        "finished stream: {kinds:?}"
    );

    // Reconnecting after chunk event 1 replays chunks 1 and 2 only.
    let resumed = api.stream(&id, Some("1"), Duration::from_secs(10)).await?;
    let idx: Vec<Value> = resumed
        .iter()
        .filter(|e| e.kind() == "chunk")
        .map(|e| e.json()["index"].clone())
        .collect();
    ensure!(
        idx == [json!(1), json!(2)],
        "resumed chunks: {idx:?} in {resumed:?}"
    );
    ensure!(
        resumed.last().is_some_and(|e| e.event == "close"),
        "{resumed:?}"
    );
    Ok(())
}
