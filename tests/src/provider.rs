//! [`FakeProvider`]: an OpenAI-compatible chat-completions server for tests.
//!
//! It translates a chunk `T` as `EN<ewts(T)>` (plus the English of every
//! glossary term given in the system message), counts calls per chunk
//! text, and reports each answer's `usage` (a quarter of the request's
//! bytes in, the answer's characters out), kept per chunk text. A reviewer call (system message starting "You review") answers a
//! confidence of 0.95, or 0.3 for chunks marked `LOWCONF`.
//! Markers in the chunk text choose a behaviour:
//! - `TIBETAN_ONCE`: the first answer is the Tibetan text itself, then a good one;
//! - `TIBETAN_ALWAYS`: every answer is the Tibetan text itself;
//! - `IGNORE_GLOSSARY`: glossary terms are left out of the answer;
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

/// The deterministic translation of `chunk` (trimmed, as engines trim),
/// without glossary terms.
pub fn fake_translation(chunk: &str) -> String {
    format!("EN<{}>", lotsawa_core::ewts::to_ewts(chunk.trim()))
}

/// Glossary terms (the `en` of each JSON line of the `<glossary>` block)
/// of a system message.
fn glossary_terms(system: &str) -> Vec<String> {
    system
        .lines()
        .skip_while(|l| *l != "<glossary>")
        .take_while(|l| *l != "</glossary>")
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["en"].as_str().map(str::to_owned))
        .collect()
}

#[derive(Clone, Default)]
struct State {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    requests: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    delay_ms: Arc<AtomicU64>,
    /// While set, every translation call gets this status and Retry-After.
    outage: Arc<Mutex<Option<(u16, String)>>>,
    /// Tokens reported per last-message text: (prompt, completion).
    tokens: Arc<Mutex<HashMap<String, (u64, u64)>>>,
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
        let system = body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        // Every answer reports its tokens, as providers do: a quarter of
        // the request's bytes in, the answer's characters out.
        let prompt_tokens = (request.body.len() / 4) as u64 + 1;
        let answer = |content: String| {
            let completion_tokens = content.chars().count() as u64;
            if let Ok(mut t) = self.tokens.lock() {
                let e = t.entry(text.clone()).or_insert((0, 0));
                e.0 += prompt_tokens;
                e.1 += completion_tokens;
            }
            ResponseTemplate::new(200)
                .set_body_json(json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant",
                        "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens}
                }))
                .set_delay(delay)
        };
        if system.starts_with("You review") {
            let low = text.contains("LOWCONF");
            return answer(format!(
                "{{\"confidence\": {}, \"issues\": []}}",
                if low { 0.3 } else { 0.95 }
            ));
        }
        if let Ok(mut r) = self.requests.lock() {
            r.entry(text.clone()).or_default().push(body.clone());
        }
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            let n = calls.entry(text.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let outage = self.outage.lock().ok().and_then(|o| o.clone());
        let failure = |status: u16, retry_after: Option<&str>| {
            let mut t = ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": format!("injected {status}")}}))
                .set_delay(delay);
            if let Some(r) = retry_after {
                t = t.insert_header("retry-after", r);
            }
            t
        };
        if let Some((status, retry_after)) = &outage {
            return failure(*status, Some(retry_after));
        }
        if text.contains("ALWAYS503") || (text.contains("FAIL503x2") && n <= 2) {
            return failure(503, Some("0"));
        }
        if text.contains("RATE429") && n <= 1 {
            return failure(429, Some("1"));
        }
        if text.contains("FAIL400") {
            return failure(400, None);
        }
        if text.contains("TIBETAN_ALWAYS") || (text.contains("TIBETAN_ONCE") && n <= 1) {
            return answer(text.clone());
        }
        let mut content = fake_translation(&text);
        if !text.contains("IGNORE_GLOSSARY") {
            for en in glossary_terms(&system) {
                content.push(' ');
                content.push_str(&en);
            }
        }
        answer(content)
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

    /// Answer every translation call with `status` and `Retry-After:
    /// retry_after` until [`FakeProvider::end_outage`].
    pub fn start_outage(&self, status: u16, retry_after: &str) {
        if let Ok(mut o) = self.state.outage.lock() {
            *o = Some((status, retry_after.to_owned()));
        }
    }

    /// Answer normally again.
    pub fn end_outage(&self) {
        if let Ok(mut o) = self.state.outage.lock() {
            *o = None;
        }
    }

    /// Calls received for the chunk whose text is `chunk`.
    pub fn calls_for(&self, chunk: &str) -> u32 {
        self.state
            .calls
            .lock()
            .map(|c| c.get(chunk).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The request bodies received for the chunk `chunk`, oldest first.
    pub fn requests_for(&self, chunk: &str) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .map(|r| r.get(chunk).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every chunk text seen, with its call count.
    pub fn all_calls(&self) -> HashMap<String, u32> {
        self.state
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// The tokens answers for the chunk `chunk` reported: (prompt,
    /// completion).
    pub fn tokens_for(&self, chunk: &str) -> (u64, u64) {
        self.state
            .tokens
            .lock()
            .map(|t| t.get(chunk).copied().unwrap_or((0, 0)))
            .unwrap_or((0, 0))
    }

    /// Total calls.
    pub fn total_calls(&self) -> u32 {
        self.all_calls().values().sum()
    }
}
