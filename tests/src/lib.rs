//! The black-box API suite: tests that talk to a running Lotsawa over HTTP
//! only, so they run unchanged against the local binary and the emulated
//! cloud, plus [`FakeProvider`], an OpenAI-compatible HTTP server that
//! translates deterministically and injects latency and failures.

pub mod batches;
pub mod documents;
pub mod harness;
pub mod limited;
pub mod pdfgen;
pub mod provider;
pub mod suite;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

pub use provider::FakeProvider;

/// A client of one deployment.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// Base URL of the SSE endpoint (the same as `base` locally).
    pub stream_base: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// A parsed SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:` field.
    pub id: String,
    /// `event:` field (`message` when absent).
    pub event: String,
    /// `data:` field.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
    /// The JSON `type` of the data.
    pub fn kind(&self) -> String {
        self.json()
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }
}

/// The indices of the `chunk` events among `events`, in the order they came.
pub fn chunk_indices(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(SseEvent::json)
        .filter(|d| d["type"] == "chunk")
        .filter_map(|d| d["index"].as_u64())
        .collect()
}

/// A response header as text ("" when absent or not text).
pub fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Whether an answer is the local Lambda emulator's own failure
/// (cargo-lambda answers with an `httpstatuses.com` problem type); the
/// product's problems are `about:blank` or its own types.
fn emulator_fault(status: u16, body: &Value) -> bool {
    status == 500
        && body
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("https://httpstatuses.com/"))
}

impl Api {
    /// A client for `base` (and `stream_base` for SSE).
    pub fn new(base: &str, stream_base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            stream_base: stream_base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// The same client sending `Authorization: Bearer <key>` on every request.
    pub fn with_key(mut self, key: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .expect("a key is header-safe");
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
        self.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("http client");
        self
    }

    /// `POST /api/jobs` with a JSON body; returns (status, body).
    pub async fn post_job(&self, body: &Value) -> Result<(u16, Value, Option<String>)> {
        let res = self
            .http
            .post(format!("{}/api/jobs", self.base))
            .json(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let location = Some(header(&res, "location")).filter(|l| !l.is_empty());
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body, location))
    }

    /// Submit text with a config; returns the job id.
    pub async fn submit(&self, text: &str, config: Value) -> Result<String> {
        let (status, body, _) = self
            .post_job(&json!({"sourceText": text, "config": config}))
            .await?;
        if status != 202 {
            bail!("submit answered {status}: {body}");
        }
        body.get("jobId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no jobId in {body}"))
    }

    /// Any request; returns (status, content-type, body as JSON or string).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(u16, String, Value)> {
        let mut tries = 0;
        loop {
            tries += 1;
            let res = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .send()
                .await?;
            let status = res.status().as_u16();
            let ct = header(&res, "content-type");
            let text = res.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            // A GET is safe to repeat when the local Lambda emulator itself
            // (not the function) failed the invocation.
            if method == reqwest::Method::GET && emulator_fault(status, &body) && tries < 3 {
                eprintln!("emulator failed GET {path} ({body}); repeating it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            return Ok((status, ct, body));
        }
    }

    /// `POST` a JSON body to `path`; returns (status, body, Location).
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value, String)> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let location = header(&res, "location");
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body, location))
    }

    /// `GET /api/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Value> {
        let (status, _, body) = self
            .request(reqwest::Method::GET, &format!("/api/jobs/{id}"))
            .await?;
        if status != 200 {
            bail!("GET job {id} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Poll a job until `done` holds for it, or fail after `timeout`.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await?;
            if done(&job) {
                return Ok(job);
            }
            if Instant::now() > deadline {
                bail!("job {id} did not reach the expected state in {timeout:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the job's status is `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Value> {
        self.wait_for(id, timeout, |j| j["status"] == status).await
    }

    /// Read a job's SSE stream until the server closes it (or `timeout`).
    pub async fn stream(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<SseEvent>> {
        self.stream_until(id, last_event_id, timeout, |_| false)
            .await
    }

    /// Read a job's SSE stream until the server closes it, `stop` holds for
    /// an event, or `timeout`.
    pub async fn stream_until(
        &self,
        id: &str,
        last_event_id: Option<&str>,
        timeout: Duration,
        stop: impl Fn(&SseEvent) -> bool,
    ) -> Result<Vec<SseEvent>> {
        self.stream_path_until(
            &format!("/api/jobs/{id}/stream"),
            last_event_id,
            timeout,
            stop,
        )
        .await
    }

    /// Read the SSE stream at `path` (on the stream endpoint) until the
    /// server closes it, `stop` holds for an event, or `timeout`.
    pub async fn stream_path_until(
        &self,
        path: &str,
        last_event_id: Option<&str>,
        timeout: Duration,
        stop: impl Fn(&SseEvent) -> bool,
    ) -> Result<Vec<SseEvent>> {
        let id = path;
        // Like an EventSource, open the stream again when the response does
        // not start (a cold function instance can take a while).
        let mut tries = 0;
        let res = loop {
            tries += 1;
            let mut req = self
                .http
                .get(format!("{}{path}", self.stream_base))
                .timeout(timeout);
            if let Some(l) = last_event_id {
                req = req.header("last-event-id", l);
            }
            match tokio::time::timeout(Duration::from_secs(20), req.send()).await {
                Ok(r) => {
                    let r = r?;
                    let status = r.status();
                    if status.is_success() {
                        break r;
                    }
                    let text = r.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if emulator_fault(status.as_u16(), &body) && tries < 3 {
                        eprintln!("emulator failed the stream of {id} ({body}); opening it again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    bail!("stream answered {status}: {body}");
                }
                Err(_) if tries < 3 => continue,
                Err(_) => bail!("the stream of {id} did not start in 3 tries of 20 s"),
            }
        };
        let ct = header(&res, "content-type");
        if !ct.starts_with("text/event-stream") {
            bail!("stream content type is {ct}");
        }
        let mut events = res.bytes_stream().eventsource();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            match next {
                Err(_) => bail!("stream of {id} did not end within {timeout:?}; got {out:?}"),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(anyhow!("stream error: {e}")).context(format!("{out:?}"));
                }
                Ok(Some(Ok(ev))) => {
                    let e = SseEvent {
                        id: ev.id,
                        event: ev.event,
                        data: ev.data,
                    };
                    let halt = stop(&e);
                    out.push(e);
                    if halt {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}
