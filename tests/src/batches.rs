//! The batch cases of the API suite: the same on every deployment.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use crate::suite::{JOB_TIMEOUT, expected_translation, numbered_text, unique_tag};
use crate::{Api, FakeProvider};

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn problem_mentions(status: u16, body: &Value, want: u16, words: &str) -> bool {
    status == want && body["detail"].as_str().is_some_and(|d| d.contains(words))
}

/// Bad batches are refused whole, naming the item, and store nothing.
pub async fn batch_bad_input(api: &Api) -> Result<()> {
    let (_, _, before) = api.request(Method::GET, "/api/batches?limit=100").await?;
    let (_, _, jobs_before) = api.request(Method::GET, "/api/jobs?limit=100").await?;
    let cases = [
        (json!({"items": []}), "at least one item"),
        (
            json!({"items": [{"sourceText": "ཀ།", "name": "a"}, {"sourceText": "ཁ།", "name": "a"}]}),
            "items[1].name 'a'",
        ),
        (
            json!({"items": [{"sourceText": "ཀ།", "name": "a"}, {"sourceText": "  ", "name": "b"}]}),
            "items[1]",
        ),
        (
            json!({"items": [{"sourceText": "ཀ།", "name": ""}]}),
            "items[0].name",
        ),
        (
            json!({"items": [{"sourceText": "ཀ།", "name": "a", "config": {"chunkSize": 0}}]}),
            "items[0]: chunkSize",
        ),
        (
            json!({"items": [{"sourceText": "ཀ།", "name": "a"}], "config": {"engine": "nope"}}),
            "items[0]",
        ),
    ];
    for (body, words) in cases {
        let (status, got, _) = api.post_json("/api/batches", &body).await?;
        ensure!(
            problem_mentions(status, &got, 400, words),
            "{body} -> {status} {got} (wanted 400 naming '{words}')"
        );
    }
    let (status, got, _) = api.post_json("/api/batches", &json!({"item": []})).await?;
    ensure!(
        status == 400 || status == 422,
        "unknown field: {status} {got}"
    );
    let (_, _, after) = api.request(Method::GET, "/api/batches?limit=100").await?;
    let (_, _, jobs_after) = api.request(Method::GET, "/api/jobs?limit=100").await?;
    ensure!(
        before["batches"].as_array().map(Vec::len) == after["batches"].as_array().map(Vec::len)
            && jobs_before["jobs"].as_array().map(Vec::len)
                == jobs_after["jobs"].as_array().map(Vec::len),
        "a refused batch stored something"
    );
    let unknown = "0b6f3c1e-8d2a-4f5b-9c7d-1e2f3a4b5c6d";
    for (method, path, want) in [
        (Method::GET, format!("/api/batches/{unknown}"), 404),
        (Method::DELETE, format!("/api/batches/{unknown}"), 404),
        (Method::POST, format!("/api/batches/{unknown}/retry"), 404),
        (Method::GET, "/api/batches/not-a-uuid".to_owned(), 400),
        (Method::GET, "/api/batches?limit=0".to_owned(), 400),
        (Method::GET, "/api/batches?cursor=forged".to_owned(), 400),
    ] {
        let (status, ct, body) = api.request(method.clone(), &path).await?;
        ensure!(
            status == want && ct.starts_with("application/problem+json"),
            "{method} {path}: {status} {ct} {body}"
        );
    }
    Ok(())
}

/// A batch runs to completion with aggregate progress over SSE (one item
/// event per item, then the terminal event and close), and a job submitted
/// after it starts after at most one turn of it, not after all of it.
pub async fn batch_progress_and_fairness(
    api: &Api,
    provider: &FakeProvider,
    concurrency: usize,
) -> Result<()> {
    provider.set_delay_ms(150);
    let tag = unique_tag("batch");
    let n = 2 * concurrency + 3;
    let mut items = Vec::new();
    let mut texts = Vec::new();
    for i in 0..n {
        let (text, chunks, size) = numbered_text(&format!("{tag}i{i}-"), 2);
        items.push(json!({"sourceText": text, "name": format!("text-{i}.txt"), "config": {"chunkSize": size}}));
        texts.push(chunks);
    }
    let (status, body, location) = api
        .post_json(
            "/api/batches",
            &json!({"items": items, "config": {"engine": "openai"}}),
        )
        .await?;
    ensure!(status == 202, "submit: {status} {body}");
    let batch = body["batchId"].as_str().unwrap_or_default().to_owned();
    let jobs = ids(&body["jobIds"]);
    ensure!(jobs.len() == n, "one job per item: {body}");
    ensure!(
        location == format!("/api/batches/{batch}"),
        "Location {location}"
    );
    // A single job right after the batch.
    let (single_text, single_chunks, size) = numbered_text(&format!("{tag}single-"), 1);
    let single = api
        .submit(&single_text, json!({"engine": "openai", "chunkSize": size}))
        .await?;

    let (status, _, view) = api
        .request(Method::GET, &format!("/api/batches/{batch}"))
        .await?;
    ensure!(status == 200, "GET batch: {status} {view}");
    ensure!(view["id"] == batch.as_str() && view["total"] == n, "{view}");
    let listed: Vec<String> = view["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["jobId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ensure!(listed == jobs, "items in submission order: {view}");
    ensure!(
        view["items"][1]["name"] == "text-1.txt",
        "items keep their names: {view}"
    );
    let c = &view["counts"];
    let counted: u64 = ["pending", "processing", "completed", "failed", "cancelled"]
        .iter()
        .filter_map(|k| c[*k].as_u64())
        .sum();
    ensure!(counted == n as u64, "counts cover every item: {view}");
    ensure!(
        ["pending", "processing"].contains(&view["status"].as_str().unwrap_or_default()),
        "{view}"
    );

    let events = api
        .stream_path_until(
            &format!("/api/batches/{batch}/stream"),
            None,
            JOB_TIMEOUT * 2,
            |_| false,
        )
        .await?;
    let data: Vec<Value> = events
        .iter()
        .filter(|e| e.event != "close")
        .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::Null))
        .collect();
    ensure!(
        data.first().is_some_and(|d| d["type"] == "connected"),
        "{data:?}"
    );
    ensure!(
        data.iter().any(|d| d["type"] == "progress"),
        "no progress event: {data:?}"
    );
    let item_ids: HashSet<String> = data
        .iter()
        .filter(|d| d["type"] == "item")
        .filter_map(|d| d["jobId"].as_str().map(str::to_owned))
        .collect();
    ensure!(item_ids.len() == n, "one item event per item: {data:?}");
    let last = data.last().cloned().unwrap_or(Value::Null);
    let failed: Vec<&Value> = data
        .iter()
        .filter(|d| d["type"] == "item" && d["status"] != "completed")
        .collect();
    ensure!(
        last["type"] == "completed" && last["progress"] == 100,
        "ends with the batch's terminal event: {last}; items that did not complete: {failed:?}"
    );
    ensure!(
        events
            .last()
            .is_some_and(|e| e.event == "close" && e.data == "Batch completed"),
        "then close: {events:?}"
    );

    let (_, _, done) = api
        .request(Method::GET, &format!("/api/batches/{batch}"))
        .await?;
    ensure!(
        done["status"] == "completed"
            && done["progress"] == 100
            && done["counts"]["completed"] == n
            && done["completedAt"].is_string()
            && done["estimatedTimeRemaining"] == 0,
        "{done}"
    );
    for (i, id) in jobs.iter().enumerate() {
        let job = api.job(id).await?;
        ensure!(
            job["result"]["translation"] == expected_translation(&texts[i]).as_str(),
            "item {i}: {job}"
        );
    }

    // Fairness: the single job did not wait for the whole batch.
    let single_job = api.wait_status(&single, "completed", JOB_TIMEOUT).await?;
    ensure!(
        single_job["result"]["translation"] == expected_translation(&single_chunks).as_str(),
        "{single_job}"
    );
    let started = |j: &Value| j["startedAt"].as_str().unwrap_or_default().to_owned();
    let single_at = started(&single_job);
    let mut before = 0;
    for id in &jobs {
        if started(&api.job(id).await?) < single_at {
            before += 1;
        }
    }
    ensure!(
        before <= concurrency + 1 && before < n,
        "{before} of {n} batch items started before a job submitted after the batch \
         (at most {} may: those holding the slots and one of its turn)",
        concurrency + 1
    );
    Ok(())
}

/// `DELETE` cancels every unfinished item; `retry` queues the failed and
/// cancelled ones again; batches list newest first with a cursor.
pub async fn batch_cancel_retry_and_list(
    api: &Api,
    provider: &FakeProvider,
    concurrency: usize,
) -> Result<()> {
    provider.set_delay_ms(400);
    let tag = unique_tag("bcancel");
    let items: Vec<Value> = (0..concurrency + 2)
        .map(|i| {
            let (text, _, size) = numbered_text(&format!("{tag}i{i}-"), 4);
            json!({"sourceText": text, "name": format!("part {i}"), "config": {"engine": "openai", "chunkSize": size}})
        })
        .collect();
    let (status, body, _) = api
        .post_json("/api/batches", &json!({"items": items}))
        .await?;
    ensure!(status == 202, "{status} {body}");
    let batch = body["batchId"].as_str().unwrap_or_default().to_owned();
    let jobs = ids(&body["jobIds"]);
    api.wait_for(&jobs[0], JOB_TIMEOUT, |j| j["status"] == "processing")
        .await?;
    let (status, _, cancelled) = api
        .request(Method::DELETE, &format!("/api/batches/{batch}"))
        .await?;
    ensure!(status == 200, "cancel: {status} {cancelled}");
    ensure!(
        cancelled["status"] == "cancelled" && cancelled["counts"]["cancelled"] == jobs.len(),
        "every item cancelled: {cancelled}"
    );
    for id in &jobs {
        ensure!(api.job(id).await?["status"] == "cancelled", "{id}");
    }
    let (status, _, again) = api
        .request(Method::DELETE, &format!("/api/batches/{batch}"))
        .await?;
    ensure!(
        status == 200 && again["status"] == "cancelled",
        "a second cancel changes nothing: {status} {again}"
    );

    provider.set_delay_ms(10);
    let (status, _, retried) = api
        .request(Method::POST, &format!("/api/batches/{batch}/retry"))
        .await?;
    ensure!(status == 200, "retry: {status} {retried}");
    ensure!(
        retried["counts"]["cancelled"] == 0,
        "every cancelled item queued again: {retried}"
    );
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let (_, _, v) = api
            .request(Method::GET, &format!("/api/batches/{batch}"))
            .await?;
        if v["status"] == "completed" {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the retried batch did not complete: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second batch: the list is newest first, one per page.
    let (status, body, _) = api
        .post_json(
            "/api/batches",
            &json!({"items": [{"sourceText": format!("{tag} ཀ་ཁ།"), "name": "one", "config": {"engine": "offline"}}]}),
        )
        .await?;
    ensure!(status == 202, "{status} {body}");
    let newer = body["batchId"].as_str().unwrap_or_default().to_owned();
    let (status, _, page) = api.request(Method::GET, "/api/batches?limit=1").await?;
    ensure!(status == 200, "{status} {page}");
    ensure!(
        page["batches"][0]["id"] == newer.as_str() && page["batches"][0].get("items").is_none(),
        "newest first, without items: {page}"
    );
    let cursor = page["nextCursor"].as_str().unwrap_or_default().to_owned();
    ensure!(!cursor.is_empty(), "a next page: {page}");
    let (status, _, page2) = api
        .request(
            Method::GET,
            &format!("/api/batches?limit=1&cursor={cursor}"),
        )
        .await?;
    ensure!(
        status == 200 && page2["batches"][0]["id"] == batch.as_str(),
        "then the older batch: {status} {page2}"
    );
    // A job list cursor is not a batch list cursor.
    let (_, _, jobs_page) = api.request(Method::GET, "/api/jobs?limit=1").await?;
    if let Some(job_cursor) = jobs_page["nextCursor"].as_str() {
        let (status, _, _) = api
            .request(Method::GET, &format!("/api/batches?cursor={job_cursor}"))
            .await?;
        ensure!(status == 400, "a job cursor on the batch list: {status}");
    }
    Ok(())
}
