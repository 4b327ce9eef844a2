//! [`LimitedProvider`]: an OpenAI-compatible chat-completions server that
//! enforces a provider's limits as providers do — requests per minute as a
//! token bucket, calls in flight — answering 429 with `Retry-After` beyond
//! them, and reporting each answer's token `usage`. It records every call
//! (when, accepted or refused, tokens) so tests can check what a client
//! did against the limits: the observed rate and concurrency, 429s, and
//! the tokens it reported.
//!
//! It translates a chunk `T` as [`crate::provider::fake_translation`] does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the provider allows.
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimits {
    /// Requests per minute (a bucket of `burst` seconds of rate).
    pub rpm: u32,
    /// Calls in flight at once.
    pub concurrent: u32,
    /// How many seconds of rate the request bucket holds.
    pub burst_secs: f64,
    /// Latency of an accepted call, uniform in this range (ms).
    pub latency_ms: (u64, u64),
    /// The `Retry-After` of a 429, seconds.
    pub retry_after_secs: u64,
}

/// One call as the provider saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// When it arrived, from the provider's start.
    pub at: Duration,
    /// The chunk text (the last user message).
    pub chunk: String,
    /// 200, or 429.
    pub status: u16,
    /// Tokens reported (accepted calls).
    pub prompt_tokens: u64,
    /// Tokens reported (accepted calls).
    pub completion_tokens: u64,
    /// Which client called: the first path segment of a base URL from
    /// [`LimitedProvider::base_url_for`], empty for [`LimitedProvider::base_url`].
    pub node: String,
    /// When it was answered or dropped, from the provider's start.
    pub ended: Duration,
}

/// Counts a call out of flight however its handler ends: answered, or
/// dropped with its connection (then recorded with status 0).
struct InFlight {
    provider: LimitedProvider,
    call: Option<Call>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self
            .provider
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.in_flight -= 1;
        if let Some(mut call) = self.call.take() {
            if let Some(i) = s.flying.iter().position(|n| *n == call.node) {
                s.flying.swap_remove(i);
            }
            call.ended = s.started.elapsed();
            s.calls.push(call);
        }
    }
}

struct Inner {
    /// The nodes of the calls in flight now, one entry per call.
    flying: Vec<String>,
    limits: ProviderLimits,
    started: Instant,
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
    most_in_flight: u32,
    calls: Vec<Call>,
    /// While above zero, the next calls answer 429 whatever the limits.
    forced_429: u32,
    seed: u64,
}

/// A running rate-limited provider.
#[derive(Clone)]
pub struct LimitedProvider {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

impl Inner {
    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.limits.rpm) / 60.0;
        let cap = (rate * self.limits.burst_secs).max(1.0);
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + rate * dt).min(cap);
        self.refilled = now;
    }

    /// A xorshift draw in `lo..=hi`.
    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.limits.latency_ms;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        Duration::from_millis(lo + self.seed % (hi.saturating_sub(lo) + 1))
    }
}

async fn complete(State(p): State<LimitedProvider>, Json(body): Json<Value>) -> Response {
    answer(p, String::new(), body).await
}

async fn complete_for(
    State(p): State<LimitedProvider>,
    axum::extract::Path(node): axum::extract::Path<String>,
    Json(body): Json<Value>,
) -> Response {
    answer(p, node, body).await
}

async fn answer(p: LimitedProvider, node: String, body: Value) -> Response {
    let chunk = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let now = Instant::now();
    let admitted = {
        let mut s = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.refill(now);
        let at = now.duration_since(s.started);
        let ok = s.forced_429 == 0 && s.tokens >= 1.0 && s.in_flight < s.limits.concurrent;
        s.forced_429 = s.forced_429.saturating_sub(1);
        if ok {
            s.tokens -= 1.0;
            s.in_flight += 1;
            s.most_in_flight = s.most_in_flight.max(s.in_flight);
            let latency = s.latency();
            Some((latency, at))
        } else {
            s.calls.push(Call {
                at,
                chunk: chunk.clone(),
                status: 429,
                prompt_tokens: 0,
                completion_tokens: 0,
                node: node.clone(),
                ended: at,
            });
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from(s.limits.retry_after_secs));
            drop(s);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                h,
                Json(json!({"error": {"message": "rate limit reached"}})),
            )
                .into_response();
        }
    };
    let Some((latency, at)) = admitted else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(mut s) = p.inner.lock() {
        s.flying.push(node.clone());
    }
    let mut flight = InFlight {
        provider: p.clone(),
        call: Some(Call {
            at,
            chunk: chunk.clone(),
            status: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            node,
            ended: at,
        }),
    };
    tokio::time::sleep(latency).await;
    let content = crate::provider::fake_translation(&chunk);
    let prompt_tokens = (body.to_string().len() / 4) as u64 + 1;
    let completion_tokens = content.chars().count() as u64;
    if let Some(call) = flight.call.as_mut() {
        call.status = 200;
        call.prompt_tokens = prompt_tokens;
        call.completion_tokens = completion_tokens;
    }
    drop(flight);
    Json(json!({
        "id": "chatcmpl-limited",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
    }))
    .into_response()
}

impl LimitedProvider {
    /// Start it on a free loopback port.
    pub async fn start(limits: ProviderLimits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("address");
        let now = Instant::now();
        let p = LimitedProvider {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                started: now,
                tokens: (f64::from(limits.rpm) / 60.0 * limits.burst_secs).max(1.0),
                refilled: now,
                flying: Vec::new(),
                in_flight: 0,
                most_in_flight: 0,
                calls: Vec::new(),
                forced_429: 0,
                seed: 0x9E37_79B9_7F4A_7C15,
            })),
            addr,
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route(
                "/{node}/v1/chat/completions",
                axum::routing::post(complete_for),
            )
            .with_state(p.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        p
    }

    /// The value for OPENAI_BASE_URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The value for OPENAI_BASE_URL of the client named `node` (its
    /// calls are recorded with its name).
    pub fn base_url_for(&self, node: &str) -> String {
        format!("http://{}/{node}/v1", self.addr)
    }

    /// Time since the provider started (the clock of [`Call::at`]).
    pub fn elapsed(&self) -> Duration {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started
            .elapsed()
    }

    /// Answer the next `n` calls with 429, whatever the limits.
    pub fn refuse_next(&self, n: u32) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forced_429 = n;
    }

    /// Every call so far, in the order they ended.
    pub fn calls(&self) -> Vec<Call> {
        let mut calls = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .clone();
        calls.sort_by_key(|c| c.at);
        calls
    }

    /// The nodes (see [`LimitedProvider::base_url_for`]) of the calls in
    /// flight now.
    pub fn calls_in_flight(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flying
            .clone()
    }

    /// The most calls in flight at once.
    pub fn most_in_flight(&self) -> u32 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .most_in_flight
    }

    /// The most accepted calls that arrived within any `window`.
    pub fn most_accepted_within(&self, window: Duration) -> usize {
        let at: Vec<Duration> = self
            .calls()
            .into_iter()
            .filter(|c| c.status == 200)
            .map(|c| c.at)
            .collect();
        let mut most = 0;
        let mut start = 0;
        for end in 0..at.len() {
            while at[end] - at[start] >= window {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// Accepted calls per chunk text.
    pub fn accepted_by_chunk(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for c in self.calls().into_iter().filter(|c| c.status == 200) {
            *out.entry(c.chunk).or_insert(0) += 1;
        }
        out
    }

    /// (calls answered 429, calls in all).
    pub fn refused(&self) -> (usize, usize) {
        let calls = self.calls();
        (
            calls.iter().filter(|c| c.status == 429).count(),
            calls.len(),
        )
    }

    /// Prompt and completion tokens reported in all.
    pub fn tokens_reported(&self) -> (u64, u64) {
        self.calls().iter().fold((0, 0), |(p, c), x| {
            (p + x.prompt_tokens, c + x.completion_tokens)
        })
    }
}
