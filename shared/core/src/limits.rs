//! Provider limits shared by every job: requests per minute, tokens per
//! minute and calls in flight per engine (and model), from `LOTSAWA_LIMITS`;
//! the limiter's state as a pure value (token buckets, leases, the pause a
//! 429 asks for, the additive-increase/multiplicative-decrease rate factor)
//! that each form keeps its own way (in process, or one item of the job
//! table the workers share); and the [`ProviderGate`] port engines are
//! called through.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::engine::TranslateRequest;

/// The limits of one engine (or one model of it). A missing figure is no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitSpec {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt and completion) per minute.
    pub tpm: Option<u64>,
    /// Calls in flight at once.
    pub concurrent: Option<u32>,
}

/// One `ENGINE[:MODEL] key=value …` entry of a table setting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry<T> {
    pub(crate) engine: String,
    pub(crate) model: Option<String>,
    pub(crate) value: T,
}

/// Parse `ENGINE[:MODEL] k=v k=v; …`, handing each `(key, value)` to `set`.
pub(crate) fn parse_table<T: Default>(
    text: &str,
    mut set: impl FnMut(&mut T, &str, &str) -> Result<(), String>,
) -> Result<Vec<Entry<T>>, String> {
    let mut out: Vec<Entry<T>> = Vec::new();
    for raw in text.split(';') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let mut words = raw.split_whitespace();
        let Some(target) = words.next() else { continue };
        if target.contains('=') {
            return Err(format!(
                "'{raw}': an entry starts with ENGINE or ENGINE:MODEL"
            ));
        }
        let (engine, model) = match target.split_once(':') {
            Some((e, m)) if !e.is_empty() && !m.is_empty() => (e, Some(m.to_owned())),
            Some(_) => return Err(format!("'{target}': expected ENGINE:MODEL")),
            None => (target, None),
        };
        let mut value = T::default();
        let mut any = false;
        for word in words {
            let Some((k, v)) = word.split_once('=') else {
                return Err(format!("'{word}' in '{raw}': expected key=value"));
            };
            set(&mut value, k, v).map_err(|e| format!("'{word}' in '{raw}': {e}"))?;
            any = true;
        }
        if !any {
            return Err(format!("'{raw}': no figure given"));
        }
        if out.iter().any(|e| e.engine == engine && e.model == model) {
            return Err(format!("'{target}' is given twice"));
        }
        out.push(Entry {
            engine: engine.to_owned(),
            model,
            value,
        });
    }
    Ok(out)
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("expected a whole number above 0".to_owned()),
    }
}

/// The most specific entry for `engine` and `model`: `ENGINE:MODEL`, else
/// `ENGINE`.
pub(crate) fn lookup<'a, T>(
    entries: &'a [Entry<T>],
    engine: &str,
    model: Option<&str>,
) -> Option<&'a Entry<T>> {
    entries
        .iter()
        .find(|e| e.engine == engine && e.model.is_some() && e.model.as_deref() == model)
        .or_else(|| {
            entries
                .iter()
                .find(|e| e.engine == engine && e.model.is_none())
        })
}

/// The provider limits of a server (`LOTSAWA_LIMITS`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderLimits {
    entries: Vec<Entry<LimitSpec>>,
}

impl ProviderLimits {
    /// Parse `ENGINE[:MODEL] rpm=N tpm=N concurrent=N; …`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries = parse_table(text, |spec: &mut LimitSpec, k, v| {
            match k {
                "rpm" => spec.rpm = Some(positive(v)?),
                "tpm" => spec.tpm = Some(positive(v)?),
                "concurrent" => spec.concurrent = Some(positive(v)?),
                other => {
                    return Err(format!("unknown figure '{other}' (rpm, tpm, concurrent)"));
                }
            }
            Ok(())
        })?;
        Ok(Self { entries })
    }

    /// No limits at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The limiter a call of `engine` with `model` goes through: its key
    /// (`ENGINE:MODEL` or `ENGINE`, shared by every job) and its limits.
    pub fn for_call(&self, engine: &str, model: Option<&str>) -> Option<(String, LimitSpec)> {
        lookup(&self.entries, engine, model).map(|e| {
            let key = match &e.model {
                Some(m) => format!("{}:{m}", e.engine),
                None => e.engine.clone(),
            };
            (key, e.value)
        })
    }
}

/// A rough count of the tokens a call will spend, taken from the limiter
/// before the call and corrected from the answer's `usage` after it:
/// Tibetan script costs about one token per two UTF-8 bytes in current
/// tokenizers, the English answer about as many tokens as the source has
/// characters, and the instructions about 200.
pub fn estimate_tokens(req: &TranslateRequest) -> u64 {
    let context: usize = req
        .context
        .iter()
        .map(|t| t.source.len() / 2 + t.translation.len() / 4)
        .sum();
    let glossary: usize = req
        .glossary
        .iter()
        .map(|g| (g.bo.len() + g.en.len()) / 3 + 8)
        .sum();
    let prompt = 200 + req.text.len() / 2 + context + glossary;
    let completion = req.text.chars().count();
    (prompt + completion) as u64
}

/// A call's place in the limiter: taken on admission, given back when the
/// call ends (or when it expires, should the caller die with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Unique among the limiter's leases.
    pub id: u64,
    /// When the call was admitted (ms since the epoch).
    pub admitted_ms: i64,
    /// When the limiter forgets it unless given back.
    pub expires_ms: i64,
    /// Tokens it was charged before the call.
    pub tokens: u64,
}

/// Why a call must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The provider asked for a pause (a 429's Retry-After) that has not ended.
    Paused(Duration),
    /// No request or token share is free yet; one is in this long.
    Rate(Duration),
    /// Every concurrent slot is taken; try again after about this long
    /// (or as soon as a call ends).
    Busy(Duration),
}

impl Wait {
    /// How long to wait before asking again.
    pub fn duration(self) -> Duration {
        match self {
            Wait::Paused(d) | Wait::Rate(d) | Wait::Busy(d) => d,
        }
    }
}

/// How a call ended, as the limiter learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Answered; `tokens` is what the provider counted, when it said.
    Answered {
        /// Prompt and completion tokens the answer reported.
        tokens: Option<u64>,
    },
    /// Refused with a 429 (or 503 with Retry-After).
    Throttled {
        /// The pause it asked for.
        retry_after: Option<Duration>,
    },
    /// Failed otherwise (timeout, 5xx, 4xx): the share stays spent.
    Failed,
}

/// The narrowest the AIMD factor goes: a twentieth of the configured rate.
pub const MIN_FACTOR: f64 = 0.05;
/// What one answered call adds back to the factor.
pub const INCREASE: f64 = 0.01;
/// The pause after a 429 that names none.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause taken from a provider's Retry-After.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The pause a rate limit asks for: its Retry-After, or [`DEFAULT_PAUSE`]
/// when it names none (or 0: a 429 that asks for no pause would bring the
/// next one at once).
pub fn throttle_wait(retry_after: Option<Duration>) -> Duration {
    retry_after
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_PAUSE)
}

/// How long a burst may be: a bucket holds at most this much of its rate.
pub const BURST: Duration = Duration::from_secs(1);
/// How soon a call waiting for a concurrent slot asks again when no
/// release wakes it first.
pub const BUSY_RECHECK: Duration = Duration::from_millis(250);

/// One limiter: token buckets for requests and tokens, leases of calls in
/// flight, the pause a 429 asked for, and the AIMD factor on the configured
/// rates. Pure: every change takes `now` (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterState {
    /// Request credits.
    pub requests: f64,
    /// Token credits (negative: calls took more than was free).
    pub tokens: f64,
    /// When the buckets were last filled.
    pub at_ms: i64,
    /// No call is admitted before this.
    pub paused_until_ms: i64,
    /// The share of the configured rates in use, in [`MIN_FACTOR`]..=1.
    pub factor: f64,
    /// When the factor last went down: a 429 for a call admitted earlier
    /// does not lower it again (one decrease per congestion event).
    pub decreased_at_ms: i64,
    /// Calls in flight.
    pub leases: Vec<Lease>,
    /// The next lease id.
    pub next_id: u64,
}

impl LimiterState {
    /// A fresh limiter: full buckets, the configured rates.
    pub fn new(spec: &LimitSpec, now_ms: i64) -> Self {
        let mut s = Self {
            requests: 0.0,
            tokens: 0.0,
            at_ms: now_ms,
            paused_until_ms: 0,
            factor: 1.0,
            decreased_at_ms: 0,
            leases: Vec::new(),
            next_id: 1,
        };
        s.requests = s.request_capacity(spec);
        s.tokens = s.token_capacity(spec);
        s
    }

    /// Requests per millisecond at the current factor.
    fn request_rate(&self, spec: &LimitSpec) -> Option<f64> {
        spec.rpm.map(|r| f64::from(r) * self.factor / 60_000.0)
    }

    fn token_rate(&self, spec: &LimitSpec) -> Option<f64> {
        spec.tpm.map(|t| t as f64 * self.factor / 60_000.0)
    }

    fn request_capacity(&self, spec: &LimitSpec) -> f64 {
        self.request_rate(spec)
            .map_or(0.0, |r| (r * BURST.as_millis() as f64).max(1.0))
    }

    fn token_capacity(&self, spec: &LimitSpec) -> f64 {
        self.token_rate(spec)
            .map_or(0.0, |r| (r * BURST.as_millis() as f64).max(1.0))
    }

    fn refill(&mut self, spec: &LimitSpec, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        if let Some(r) = self.request_rate(spec) {
            self.requests = (self.requests + r * elapsed).min(self.request_capacity(spec));
        }
        if let Some(r) = self.token_rate(spec) {
            self.tokens = (self.tokens + r * elapsed).min(self.token_capacity(spec));
        }
        self.at_ms = self.at_ms.max(now_ms);
        self.leases.retain(|l| l.expires_ms > now_ms);
    }

    /// Admit a call estimated at `tokens`, held at most `lease` (then
    /// forgotten): its lease, or how long to wait.
    pub fn admit(
        &mut self,
        spec: &LimitSpec,
        now_ms: i64,
        tokens: u64,
        lease: Duration,
    ) -> Result<Lease, Wait> {
        self.refill(spec, now_ms);
        if now_ms < self.paused_until_ms {
            return Err(Wait::Paused(ms(self.paused_until_ms - now_ms)));
        }
        // The factor narrows calls in flight too: a concurrency limit set
        // too high converges like a rate.
        if let Some(c) = spec.concurrent
            && self.leases.len() >= (f64::from(c) * self.factor).floor().max(1.0) as usize
        {
            let first_expiry = self
                .leases
                .iter()
                .map(|l| l.expires_ms)
                .min()
                .unwrap_or(now_ms);
            return Err(Wait::Busy(
                BUSY_RECHECK.min(ms(first_expiry - now_ms).max(Duration::from_millis(1))),
            ));
        }
        if let Some(r) = self.request_rate(spec)
            && self.requests < 1.0
        {
            return Err(Wait::Rate(ms_f((1.0 - self.requests) / r)));
        }
        if let Some(r) = self.token_rate(spec) {
            let need = (tokens as f64).min(self.token_capacity(spec));
            if self.tokens < need {
                return Err(Wait::Rate(ms_f((need - self.tokens) / r)));
            }
        }
        if spec.rpm.is_some() {
            self.requests -= 1.0;
        }
        if spec.tpm.is_some() {
            self.tokens -= tokens as f64;
        }
        let l = Lease {
            id: self.next_id,
            admitted_ms: now_ms,
            expires_ms: now_ms.saturating_add(lease.as_millis() as i64),
            tokens,
        };
        self.next_id += 1;
        // Only a concurrency limit needs the calls in flight (the shared
        // item stays small at any rate).
        if spec.concurrent.is_some() {
            self.leases.push(l.clone());
        }
        Ok(l)
    }

    /// Give `lease` back with how its call ended.
    pub fn settle(&mut self, spec: &LimitSpec, now_ms: i64, lease: &Lease, outcome: Settle) {
        self.refill(spec, now_ms);
        self.leases.retain(|l| l.id != lease.id);
        match outcome {
            Settle::Answered { tokens } => {
                if let (Some(_), Some(used)) = (spec.tpm, tokens) {
                    self.tokens += lease.tokens as f64 - used as f64;
                    self.tokens = self.tokens.min(self.token_capacity(spec));
                }
                self.factor = (self.factor + INCREASE).min(1.0);
            }
            Settle::Throttled { retry_after } => {
                let pause = throttle_wait(retry_after).min(MAX_PAUSE);
                self.paused_until_ms = self
                    .paused_until_ms
                    .max(now_ms.saturating_add(pause.as_millis() as i64));
                if lease.admitted_ms >= self.decreased_at_ms {
                    self.factor = (self.factor * 0.5).max(MIN_FACTOR);
                    self.decreased_at_ms = now_ms;
                    // What the buckets held was measured at the old rate.
                    self.requests = self.requests.min(0.0);
                    self.tokens = self.tokens.min(0.0);
                }
            }
            Settle::Failed => {}
        }
    }

    /// Forget `lease` without learning anything (its caller gave up).
    pub fn release(&mut self, lease: &Lease) {
        self.leases.retain(|l| l.id != lease.id);
    }
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(n.max(0) as u64)
}

fn ms_f(n: f64) -> Duration {
    Duration::from_secs_f64((n.max(0.0) / 1000.0).min(3600.0)).max(Duration::from_millis(1))
}

/// Where provider calls take their share of the limits: in process
/// (locally), or one item of the job table every worker updates (cloud).
#[async_trait]
pub trait ProviderGate: Send + Sync {
    /// Admit a call under `key`'s limits, estimated at `tokens`. A gate
    /// that waits itself returns only leases; one that cannot wait
    /// (a Lambda) returns how long the caller should wait.
    async fn admit(&self, key: &str, spec: &LimitSpec, tokens: u64) -> Result<Lease, Wait>;
    /// The call under `lease` ended so.
    async fn settle(&self, key: &str, spec: &LimitSpec, lease: &Lease, outcome: Settle);
    /// The caller dropped the call under `lease` (a cancel): give its slot
    /// back without awaiting anything. Gates whose leases expire on their
    /// own may do nothing.
    fn abandon(&self, _key: &str, _lease: &Lease) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn parses_the_documented_example() {
        let l = ProviderLimits::parse(
            "openai:gpt-4o-mini rpm=500 tpm=200000 concurrent=16; bedrock rpm=100",
        )
        .expect("parse");
        assert_eq!(
            l.for_call("openai", Some("gpt-4o-mini")),
            Some((
                "openai:gpt-4o-mini".to_owned(),
                LimitSpec {
                    rpm: Some(500),
                    tpm: Some(200_000),
                    concurrent: Some(16)
                }
            ))
        );
        assert_eq!(l.for_call("openai", Some("gpt-4o")), None);
        let (key, spec) = l.for_call("bedrock", Some("any")).expect("engine-wide");
        assert_eq!(
            (key.as_str(), spec.rpm, spec.tpm),
            ("bedrock", Some(100), None)
        );
        assert!(ProviderLimits::parse("  ;  ").expect("empty").is_empty());
    }

    #[test]
    fn a_model_entry_wins_over_its_engine() {
        let l = ProviderLimits::parse("openai rpm=10; openai:big rpm=2").expect("parse");
        assert_eq!(
            l.for_call("openai", Some("big")).map(|s| s.1.rpm),
            Some(Some(2))
        );
        assert_eq!(
            l.for_call("openai", Some("small")).map(|s| s.0),
            Some("openai".into())
        );
        assert_eq!(l.for_call("openai", None).map(|s| s.1.rpm), Some(Some(10)));
    }

    #[rstest]
    #[case("openai rpm=0", "above 0")]
    #[case("openai rpm=-3", "above 0")]
    #[case("openai rpm=fast", "above 0")]
    #[case("openai rps=3", "unknown figure 'rps'")]
    #[case("openai rpm 3", "expected key=value")]
    #[case("openai", "no figure")]
    #[case("rpm=3", "starts with ENGINE")]
    #[case("openai: rpm=3", "ENGINE:MODEL")]
    #[case("openai rpm=3; openai tpm=9", "twice")]
    fn bad_tables_are_refused_with_the_word_at_fault(#[case] text: &str, #[case] want: &str) {
        let err = ProviderLimits::parse(text).expect_err(text);
        assert!(err.contains(want), "{text}: {err}");
    }

    const SEC: i64 = 1000;

    fn spec(rpm: Option<u32>, tpm: Option<u64>, concurrent: Option<u32>) -> LimitSpec {
        LimitSpec {
            rpm,
            tpm,
            concurrent,
        }
    }

    /// Calls admitted in `secs` seconds when callers ask as often as they
    /// may (every 10 ms), each settling at once.
    fn admitted(spec: &LimitSpec, secs: i64, tokens: u64) -> u32 {
        let mut s = LimiterState::new(spec, 0);
        let mut n = 0;
        for t in (0..secs * SEC).step_by(10) {
            if let Ok(l) = s.admit(spec, t, tokens, Duration::from_secs(60)) {
                s.settle(
                    spec,
                    t,
                    &l,
                    Settle::Answered {
                        tokens: Some(tokens),
                    },
                );
                n += 1;
            }
        }
        n
    }

    #[test]
    fn requests_per_minute_hold_within_one_burst() {
        let s = spec(Some(600), None, None);
        let n = admitted(&s, 60, 1);
        // 600 a minute plus the first second's bucket.
        assert!((600..=611).contains(&n), "{n}");
    }

    #[test]
    fn tokens_per_minute_hold_within_one_call() {
        let s = spec(None, Some(60_000), None);
        let n = admitted(&s, 60, 1000);
        assert!((59..=62).contains(&n), "{n}");
    }

    #[test]
    fn a_call_larger_than_the_bucket_still_runs() {
        let s = spec(None, Some(600), None);
        let mut st = LimiterState::new(&s, 0);
        assert!(st.admit(&s, 0, 50_000, Duration::from_secs(60)).is_ok());
        // It went into debt: the next call waits for it to be paid.
        match st.admit(&s, 1, 10, Duration::from_secs(60)) {
            Err(Wait::Rate(d)) => assert!(d > Duration::from_secs(60), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_corrects_the_estimate() {
        let s = spec(None, Some(6_000), None);
        let mut st = LimiterState::new(&s, 0);
        let l = st
            .admit(&s, 0, 100, Duration::from_secs(60))
            .expect("admit");
        st.settle(&s, 0, &l, Settle::Answered { tokens: Some(40) });
        assert!((st.tokens - 60.0).abs() < 1e-9, "{}", st.tokens);
    }

    #[test]
    fn concurrency_counts_leases_and_forgets_expired_ones() {
        let s = spec(None, None, Some(2));
        let mut st = LimiterState::new(&s, 0);
        let a = st.admit(&s, 0, 1, Duration::from_secs(10)).expect("a");
        let _b = st.admit(&s, 0, 1, Duration::from_secs(10)).expect("b");
        assert!(matches!(
            st.admit(&s, 0, 1, Duration::from_secs(10)),
            Err(Wait::Busy(_))
        ));
        st.release(&a);
        assert!(st.admit(&s, 0, 1, Duration::from_secs(10)).is_ok());
        // A holder that died: its leases lapse.
        assert!(st.admit(&s, 11 * SEC, 1, Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_429_pauses_and_halves_once_per_congestion() {
        let s = spec(Some(600), None, None);
        let mut st = LimiterState::new(&s, 0);
        let a = st.admit(&s, 0, 1, Duration::from_secs(60)).expect("a");
        let b = st.admit(&s, 0, 1, Duration::from_secs(60)).expect("b");
        st.settle(
            &s,
            100,
            &a,
            Settle::Throttled {
                retry_after: Some(Duration::from_secs(2)),
            },
        );
        assert_eq!(st.factor, 0.5);
        assert!(
            matches!(st.admit(&s, 200, 1, Duration::from_secs(60)), Err(Wait::Paused(d)) if d == Duration::from_millis(1900))
        );
        // b was sent before the decrease: no second halving.
        st.settle(&s, 150, &b, Settle::Throttled { retry_after: None });
        assert_eq!(st.factor, 0.5);
        // After the pause, calls run at half the rate and answered calls
        // raise it again.
        let c = st
            .admit(&s, 2200, 1, Duration::from_secs(60))
            .expect("after the pause");
        st.settle(&s, 2300, &c, Settle::Answered { tokens: None });
        assert!((st.factor - 0.51).abs() < 1e-9);
    }

    #[test]
    fn a_429_narrows_the_calls_in_flight_too() {
        let s = spec(None, None, Some(4));
        let mut st = LimiterState::new(&s, 0);
        let lease = |st: &mut LimiterState| st.admit(&s, 10, 1, Duration::from_secs(60));
        let a = lease(&mut st).expect("a");
        st.settle(
            &s,
            5,
            &a,
            Settle::Throttled {
                retry_after: Some(Duration::from_millis(1)),
            },
        );
        // Half the factor: two in flight at most.
        let _b = lease(&mut st).expect("b");
        let _c = lease(&mut st).expect("c");
        assert!(matches!(lease(&mut st), Err(Wait::Busy(_))));
    }

    #[test]
    fn a_limit_set_too_high_converges() {
        // The provider allows 300 a minute; the limiter is told 600.
        let s = spec(Some(600), None, None);
        let mut st = LimiterState::new(&s, 0);
        let (mut window, mut ok, mut throttled) = (Vec::<i64>::new(), 0u32, 0u32);
        for t in (0..600 * SEC).step_by(10) {
            if let Ok(l) = st.admit(&s, t, 1, Duration::from_secs(60)) {
                window.retain(|&x| x > t - 60 * SEC);
                if window.len() >= 300 {
                    st.settle(
                        &s,
                        t,
                        &l,
                        Settle::Throttled {
                            retry_after: Some(Duration::from_secs(1)),
                        },
                    );
                    throttled += 1;
                } else {
                    window.push(t);
                    st.settle(&s, t, &l, Settle::Answered { tokens: None });
                    ok += 1;
                }
            }
        }
        let share = f64::from(throttled) / f64::from(ok + throttled);
        assert!(share < 0.05, "{throttled} of {}", ok + throttled);
        // Most of the provider's 3,000 calls in ten minutes were used.
        assert!(ok > 2_100, "{ok}");
    }

    #[test]
    fn the_estimate_grows_with_the_text() {
        let short = TranslateRequest {
            text: "ཀ་".repeat(10),
            ..Default::default()
        };
        let long = TranslateRequest {
            text: "ཀ་".repeat(1000),
            ..Default::default()
        };
        assert!(estimate_tokens(&long) > estimate_tokens(&short) * 10);
    }
}
