//! Engines called through the provider limits: [`Limited`] wraps an engine
//! so every call (translation, quality retry, review) first takes its share
//! from a [`ProviderGate`] and tells the gate how it ended; [`LocalGate`] is
//! the in-process gate of the local server, where callers wait their turn
//! in arrival order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lotsawa_core::engine::{ReviewRequest, Reviewed, Throttle};
use lotsawa_core::limits::{
    LimitSpec, LimiterState, ProviderGate, ProviderLimits, Settle, Wait, estimate_tokens,
};
use lotsawa_core::{Engine, EngineError, EngineKind, EngineOutput, TranslateRequest};

/// The longest limiter wait taken inside a call.
const SHORT_WAIT: Duration = Duration::from_secs(2);
/// The most waited inside one call before handing the wait back.
const MOST_WAITED: Duration = Duration::from_secs(5);

/// An engine whose calls go through the provider limits.
pub struct Limited {
    inner: Arc<dyn Engine>,
    limits: Arc<ProviderLimits>,
    gate: Arc<dyn ProviderGate>,
}

impl Limited {
    /// `inner` under `limits`, shared through `gate`.
    pub fn new(
        inner: Arc<dyn Engine>,
        limits: Arc<ProviderLimits>,
        gate: Arc<dyn ProviderGate>,
    ) -> Self {
        Self {
            inner,
            limits,
            gate,
        }
    }

    /// Run `call` under the limits of `model` (the engine's default when
    /// `None`), estimated at `tokens`.
    async fn limited<T, F>(
        &self,
        model: Option<&str>,
        tokens: u64,
        call: F,
        used: impl Fn(&T) -> Option<u64>,
    ) -> Result<T, EngineError>
    where
        F: std::future::Future<Output = Result<T, EngineError>>,
    {
        let model = model.or(self.inner.default_model());
        let Some((key, spec)) = self.limits.for_call(self.inner.name(), model) else {
            return call.await;
        };
        // A gate that cannot wait (the cloud's) answers how long: a short
        // wait is taken here, so the second call of an attempt (a quality
        // retry, the reviewer) is not lost to it; a long one goes back to
        // the state machine.
        let mut waited = Duration::ZERO;
        let lease = loop {
            match self.gate.admit(&key, &spec, tokens).await {
                Ok(lease) => break lease,
                Err(wait) if wait.duration() <= SHORT_WAIT && waited < MOST_WAITED => {
                    tokio::time::sleep(wait.duration()).await;
                    waited += wait.duration();
                }
                Err(wait) => return Err(EngineError::limiter_wait(wait.duration())),
            }
        };
        // A dropped call (a cancel) gives its slot back at once.
        let mut guard = Abandon {
            gate: &*self.gate,
            key: &key,
            lease: Some(&lease),
        };
        let result = call.await;
        guard.lease = None;
        let outcome = match &result {
            Ok(out) => Settle::Answered { tokens: used(out) },
            Err(e) if e.throttle == Some(Throttle::Provider) => Settle::Throttled {
                retry_after: e.retry_after,
            },
            Err(_) => Settle::Failed,
        };
        self.gate.settle(&key, &spec, &lease, outcome).await;
        result
    }
}

struct Abandon<'a> {
    gate: &'a dyn ProviderGate,
    key: &'a str,
    lease: Option<&'a lotsawa_core::limits::Lease>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease {
            self.gate.abandon(self.key, lease);
        }
    }
}

#[async_trait]
impl Engine for Limited {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        self.limited(
            req.model.as_deref(),
            estimate_tokens(req),
            self.inner.translate(req),
            |o: &EngineOutput| o.usage.map(|u| u.tokens()),
        )
        .await
    }
    async fn review(&self, req: &ReviewRequest) -> Result<Reviewed, EngineError> {
        let tokens = 300 + (req.source.len() / 2 + req.translation.len() / 4) as u64;
        self.limited(
            req.model.as_deref(),
            tokens,
            self.inner.review(req),
            |r: &Reviewed| r.usage.map(|u| u.tokens()),
        )
        .await
    }
}

/// How long a local lease lives if its call never ends (longer than any
/// provider timeout).
const LOCAL_LEASE: Duration = Duration::from_secs(3600);

/// The local server's gate: one limiter per key in process memory. Callers
/// wait in arrival order (a fair lock per key), and the first in line
/// waits exactly as long as the limiter says, or until a call ends when
/// every concurrent slot is taken.
#[derive(Default)]
pub struct LocalGate {
    states: Mutex<HashMap<String, LimiterState>>,
    lines: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    released: tokio::sync::Notify,
}

impl std::fmt::Debug for LocalGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGate").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl LocalGate {
    /// A gate with no calls yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn line(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.entry(key.to_owned()).or_default().clone()
    }

    fn try_admit(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u64,
    ) -> Result<lotsawa_core::limits::Lease, Wait> {
        let now = now_ms();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states
            .entry(key.to_owned())
            .or_insert_with(|| LimiterState::new(spec, now));
        state.admit(spec, now, tokens, LOCAL_LEASE)
    }

    /// The limiter's state under `key` (for tests and `/metrics`).
    pub fn state(&self, key: &str) -> Option<LimiterState> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(key).cloned()
    }
}

#[async_trait]
impl ProviderGate for LocalGate {
    async fn admit(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u64,
    ) -> Result<lotsawa_core::limits::Lease, Wait> {
        let line = self.line(key);
        let _first = line.lock().await;
        loop {
            let released = self.released.notified();
            match self.try_admit(key, spec, tokens) {
                Ok(lease) => return Ok(lease),
                Err(Wait::Busy(d)) => {
                    tokio::select! {
                        _ = released => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                Err(w) => tokio::time::sleep(w.duration()).await,
            }
        }
    }

    async fn settle(
        &self,
        key: &str,
        spec: &LimitSpec,
        lease: &lotsawa_core::limits::Lease,
        outcome: Settle,
    ) {
        {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = states.get_mut(key) {
                state.settle(spec, now_ms(), lease, outcome);
            }
        }
        self.released.notify_waiters();
    }

    fn abandon(&self, key: &str, lease: &lotsawa_core::limits::Lease) {
        {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = states.get_mut(key) {
                state.release(lease);
            }
        }
        self.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Counts calls in flight and answers after a pause.
    struct Slow {
        in_flight: AtomicU32,
        most: AtomicU32,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Engine for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn default_model(&self) -> Option<&str> {
            Some("m")
        }
        async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(EngineOutput::text(req.text.clone()))
        }
    }

    #[tokio::test]
    async fn calls_in_flight_never_pass_the_limit() {
        let slow = Arc::new(Slow {
            in_flight: AtomicU32::new(0),
            most: AtomicU32::new(0),
            calls: AtomicU32::new(0),
        });
        let limits = Arc::new(ProviderLimits::parse("slow:m concurrent=3").expect("limits"));
        let engine = Arc::new(Limited::new(
            slow.clone(),
            limits,
            Arc::new(LocalGate::new()),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let e = engine.clone();
            tasks.spawn(async move { e.translate(&TranslateRequest::default()).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.expect("join").is_ok());
        }
        assert_eq!(slow.calls.load(Ordering::SeqCst), 20);
        assert_eq!(slow.most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_slot_back() {
        let slow = Arc::new(Slow {
            in_flight: AtomicU32::new(0),
            most: AtomicU32::new(0),
            calls: AtomicU32::new(0),
        });
        let limits = Arc::new(ProviderLimits::parse("slow concurrent=1").expect("limits"));
        let gate = Arc::new(LocalGate::new());
        let engine = Limited::new(slow, limits, gate.clone());
        let req = TranslateRequest::default();
        let dropped = tokio::time::timeout(Duration::from_millis(5), engine.translate(&req)).await;
        assert!(dropped.is_err(), "the call was cut short");
        assert_eq!(gate.state("slow").map(|s| s.leases.len()), Some(0));
        assert!(engine.translate(&req).await.is_ok());
    }

    #[tokio::test]
    async fn an_engine_without_limits_is_called_directly() {
        let limits = Arc::new(ProviderLimits::parse("other rpm=1").expect("limits"));
        let gate = Arc::new(LocalGate::new());
        let engine = Limited::new(Arc::new(crate::EchoEngine), limits, gate.clone());
        for _ in 0..5 {
            assert!(engine.translate(&TranslateRequest::default()).await.is_ok());
        }
        assert!(gate.state("echo").is_none());
    }
}
