//! [`FakeProvider`]: an OpenAI-compatible chat-completions server for tests.
//!
//! It translates a chunk `T` as `EN<T>` and counts calls per chunk text.
//! Markers in the chunk text choose a behaviour:
//! - `FAIL503x2`: the first two calls answer 503 with `Retry-After: 0`, then success;
//! - `ALWAYS503`: every call answers 503;
//! - `FAIL400`: every call answers 400;
//! - `RATE429`: the first call answers 429 with `Retry-After: 1`, then success.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The deterministic translation of `chunk` (trimmed, as engines trim).
pub fn fake_translation(chunk: &str) -> String {
    format!("EN<{}>", chunk.trim())
}

#[derive(Clone, Default)]
struct State {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    delay_ms: Arc<AtomicU64>,
}

impl Respond for State {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let text = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            let n = calls.entry(text.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        let failure = |status: u16, retry_after: Option<&str>| {
            let mut t = ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": format!("injected {status}")}}))
                .set_delay(delay);
            if let Some(r) = retry_after {
                t = t.insert_header("retry-after", r);
            }
            t
        };
        if text.contains("ALWAYS503") || (text.contains("FAIL503x2") && n <= 2) {
            return failure(503, Some("0"));
        }
        if text.contains("RATE429") && n <= 1 {
            return failure(429, Some("1"));
        }
        if text.contains("FAIL400") {
            return failure(400, None);
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant",
                    "content": fake_translation(&text)}, "finish_reason": "stop"}]
            }))
            .set_delay(delay)
    }
}

/// A running fake provider.
pub struct FakeProvider {
    server: MockServer,
    state: State,
}

impl FakeProvider {
    /// Start it on a free loopback port.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = State::default();
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(state.clone())
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// The value for OPENAI_BASE_URL.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    /// Delay every answer by `ms` milliseconds from now on.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Calls received for the chunk whose text is `chunk`.
    pub fn calls_for(&self, chunk: &str) -> u32 {
        self.state
            .calls
            .lock()
            .map(|c| c.get(chunk).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every chunk text seen, with its call count.
    pub fn all_calls(&self) -> HashMap<String, u32> {
        self.state
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Total calls.
    pub fn total_calls(&self) -> u32 {
        self.all_calls().values().sum()
    }
}
