//! The cloud configuration, read once from the environment of a function
//! through core's settings readers (one error type naming the variable).

use std::time::Duration;

pub use lotsawa_core::settings::ConfigError;
use lotsawa_core::settings::{ProcessEnv, Source, flag, list, number, required};

/// Settings shared by every function.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// DynamoDB table (LOTSAWA_TABLE).
    pub table: String,
    /// FIFO job queue URL (LOTSAWA_JOB_QUEUE_URL).
    pub job_queue_url: String,
    /// The worker's queue (LOTSAWA_WORKER_QUEUE_URL): re-translations of
    /// one chunk are sent there; none refuses them.
    pub worker_queue_url: Option<String>,
    /// State machine ARN (LOTSAWA_STATE_MACHINE_ARN).
    pub state_machine_arn: String,
    /// Bucket for large texts and ingest (LOTSAWA_BUCKET).
    pub bucket: String,
    /// Jobs processing at once, across the deployment (LOTSAWA_CONCURRENCY, default 3).
    pub concurrency: u32,
    /// Longest SSE response before the client is told to reconnect
    /// (LOTSAWA_STREAM_MAX_SECS, default 840: under Lambda's 15 minutes).
    pub stream_max: Duration,
    /// Days a finished job is kept before DynamoDB's TTL removes it
    /// (LOTSAWA_JOB_TTL_DAYS, default 30).
    pub job_ttl_days: u32,
    /// Days a translation memory entry is kept (`LOTSAWA_MEMORY_TTL_DAYS`).
    pub memory_ttl_days: u32,
    /// Request body limit (LOTSAWA_BODY_LIMIT, default 1 MiB).
    pub body_limit: usize,
    /// Largest PDF accepted (LOTSAWA_PDF_LIMIT, default 4 MiB: a Lambda
    /// request carries at most 6 MB, base64-encoded).
    pub pdf_limit: usize,
    /// Bedrock models jobs may name (`LOTSAWA_BEDROCK_MODELS`, comma
    /// separated; the template's allowlist, which the worker's policy
    /// covers). Empty: only the default model.
    pub bedrock_models: Vec<String>,
    /// Secrets Manager secret holding the OpenAI-compatible endpoint's API
    /// key (`OPENAI_API_KEY_SECRET_ARN`; set on the worker only), read once
    /// at start so the key is in no function's configuration.
    pub openai_key_secret: Option<String>,
    /// Most chunks one job may have (`LOTSAWA_MAX_CHUNKS`, default 2000).
    pub max_chunks: u32,
    /// Per-tenant job creation (`LOTSAWA_RATE_PER_MIN`, default 100 a
    /// minute; `LOTSAWA_RATE_BURST`, default the rate; 0 turns it off).
    pub rate: Option<lotsawa_core::rate::RateLimit>,
    /// Most jobs one tenant may have waiting (`LOTSAWA_MAX_PENDING`,
    /// default 1000; 0 turns it off).
    pub max_pending: Option<u32>,
    /// Most items one batch may have (`LOTSAWA_MAX_BATCH_ITEMS`, default
    /// 100, at most 1000): a batch's jobs are created within its request,
    /// which API Gateway ends at 30 s (a few AWS calls per item).
    pub max_batch_items: u32,
    /// Whose jobs uploads under `incoming/` make (`LOTSAWA_INGEST_TENANT`,
    /// default `default`): whoever may write to the bucket acts for it.
    pub ingest_tenant: lotsawa_core::Tenant,
    /// API keys required on every `/api` request (`LOTSAWA_REQUIRE_AUTH=1`):
    /// the same keys as locally, hashed in the table.
    pub require_auth: bool,
    /// Running under the local emulators (`LOTSAWA_EMULATOR=1`): turns on
    /// the accommodations only they need (runtime-loop restarts, a settle
    /// time before reaping, no Content-Length on streamed responses). Off on
    /// AWS.
    pub emulator: bool,
    /// The EventBridge bus lifecycle events go to (`LOTSAWA_EVENT_BUS`);
    /// none are sent without one.
    pub event_bus: Option<String>,
    /// Webhook delivery, when both `LOTSAWA_WEBHOOK_QUEUE_URL` and
    /// `LOTSAWA_WEBHOOK_SECRET_ARN` are set; without it callback URLs are
    /// refused.
    pub webhooks: Option<CloudWebhooks>,
    /// The stream function's URL (`STREAM_URL`), where the dashboard opens
    /// its SSE streams.
    pub stream_url: Option<String>,
    /// How long a chunk may wait on rate limits without spending attempts
    /// (`LOTSAWA_THROTTLE_BUDGET_MS`, default 600000).
    pub throttle_budget: Duration,
}

/// How the cloud delivers webhooks.
#[derive(Debug, Clone)]
pub struct CloudWebhooks {
    /// The queue a pending delivery waits in (`LOTSAWA_WEBHOOK_QUEUE_URL`).
    pub queue_url: String,
    /// The Secrets Manager secret holding the signing secret
    /// (`LOTSAWA_WEBHOOK_SECRET_ARN`).
    pub secret_arn: String,
    /// Wait before the first retry, doubled for each next one
    /// (`LOTSAWA_WEBHOOK_RETRY_BASE_MS`, default 1000).
    pub retry_base: Duration,
    /// Attempts in all (`LOTSAWA_WEBHOOK_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Who may receive them: public addresses, and what
    /// `LOTSAWA_WEBHOOK_ALLOW` lists (no loopback otherwise).
    pub policy: lotsawa_core::webhook::CallbackPolicy,
}

impl CloudConfig {
    /// Read from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// Read from any source of variables.
    pub fn from_source(get: &dyn Source) -> Result<Self, ConfigError> {
        let var = |name: &str| get.var(name);
        Ok(Self {
            throttle_budget: Duration::from_millis(number(
                get,
                "LOTSAWA_THROTTLE_BUDGET_MS",
                lotsawa_core::retry::DEFAULT_THROTTLE_BUDGET.as_millis() as u64,
                0,
                86_400_000,
            )?),
            table: required(get, "LOTSAWA_TABLE")?,
            job_queue_url: required(get, "LOTSAWA_JOB_QUEUE_URL")?,
            worker_queue_url: var("LOTSAWA_WORKER_QUEUE_URL")
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty()),
            state_machine_arn: required(get, "LOTSAWA_STATE_MACHINE_ARN")?,
            bucket: required(get, "LOTSAWA_BUCKET")?,
            concurrency: number(get, "LOTSAWA_CONCURRENCY", 3, 1, 1000)?,
            stream_max: Duration::from_secs(number(get, "LOTSAWA_STREAM_MAX_SECS", 840, 1, 890)?),
            job_ttl_days: number(get, "LOTSAWA_JOB_TTL_DAYS", 30, 1, 3650)?,
            memory_ttl_days: number(get, "LOTSAWA_MEMORY_TTL_DAYS", 90, 1, 3650)?,
            body_limit: number(
                get,
                "LOTSAWA_BODY_LIMIT",
                1024 * 1024,
                1024,
                6 * 1024 * 1024,
            )?,
            pdf_limit: number(
                get,
                "LOTSAWA_PDF_LIMIT",
                4 * 1024 * 1024,
                1024,
                6 * 1024 * 1024,
            )?,
            bedrock_models: list(get, "LOTSAWA_BEDROCK_MODELS"),
            openai_key_secret: var("OPENAI_API_KEY_SECRET_ARN")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            max_chunks: number(
                get,
                "LOTSAWA_MAX_CHUNKS",
                lotsawa_core::service::DEFAULT_MAX_CHUNKS,
                1,
                1_000_000,
            )?,
            rate: match number(get, "LOTSAWA_RATE_PER_MIN", 100u32, 0, 1_000_000)? {
                0 => None,
                per_minute => Some(lotsawa_core::rate::RateLimit {
                    per_minute,
                    burst: number(get, "LOTSAWA_RATE_BURST", per_minute, 1, 1_000_000)?,
                }),
            },
            max_pending: Some(number(get, "LOTSAWA_MAX_PENDING", 1000u32, 0, 10_000_000)?)
                .filter(|n| *n > 0),
            max_batch_items: number(get, "LOTSAWA_MAX_BATCH_ITEMS", 100u32, 1, 1000)?,
            ingest_tenant: match var("LOTSAWA_INGEST_TENANT") {
                Some(t) if !t.trim().is_empty() => lotsawa_core::Tenant::parse(t.trim())
                    .map_err(|e| ConfigError::new("LOTSAWA_INGEST_TENANT", e.0))?,
                _ => lotsawa_core::Tenant::default(),
            },
            require_auth: flag(get, "LOTSAWA_REQUIRE_AUTH")?,
            emulator: flag(get, "LOTSAWA_EMULATOR")?,
            event_bus: var("LOTSAWA_EVENT_BUS")
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty()),
            stream_url: var("STREAM_URL")
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty()),
            webhooks: match (
                var("LOTSAWA_WEBHOOK_QUEUE_URL").filter(|v| !v.trim().is_empty()),
                var("LOTSAWA_WEBHOOK_SECRET_ARN").filter(|v| !v.trim().is_empty()),
            ) {
                (Some(queue_url), Some(secret_arn)) => Some(CloudWebhooks {
                    queue_url: queue_url.trim().to_owned(),
                    secret_arn: secret_arn.trim().to_owned(),
                    retry_base: Duration::from_millis(number(
                        get,
                        "LOTSAWA_WEBHOOK_RETRY_BASE_MS",
                        1000u64,
                        1,
                        3_600_000,
                    )?),
                    max_attempts: number(get, "LOTSAWA_WEBHOOK_ATTEMPTS", 5u32, 1, 20)?,
                    policy: lotsawa_core::webhook::CallbackPolicy::with_allow_list(
                        false,
                        &var("LOTSAWA_WEBHOOK_ALLOW").unwrap_or_default(),
                    )
                    .map_err(|message| ConfigError::new("LOTSAWA_WEBHOOK_ALLOW", message))?,
                }),
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn required_values_are_named() {
        let err = CloudConfig::from_source(&env(&[])).expect_err("missing");
        assert_eq!(err.name, "LOTSAWA_TABLE");
        let all = [
            ("LOTSAWA_TABLE", "t"),
            ("LOTSAWA_JOB_QUEUE_URL", "q"),
            ("LOTSAWA_STATE_MACHINE_ARN", "arn"),
            ("LOTSAWA_BUCKET", "b"),
            ("LOTSAWA_CONCURRENCY", "zero"),
        ];
        let err = CloudConfig::from_source(&env(&all)).expect_err("bad");
        assert_eq!(err.name, "LOTSAWA_CONCURRENCY");
        let c = CloudConfig::from_source(&env(&all[..4])).expect("ok");
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.stream_max, Duration::from_secs(840));
        assert!(!c.emulator, "emulator accommodations are off by default");
        assert!(c.bedrock_models.is_empty());
        let mut listed = all[..4].to_vec();
        listed.push(("LOTSAWA_BEDROCK_MODELS", " a.model-v1 , us.a.model-v1,, "));
        let c = CloudConfig::from_source(&env(&listed)).expect("ok");
        assert_eq!(c.bedrock_models, ["a.model-v1", "us.a.model-v1"]);
        let mut with = all[..4].to_vec();
        with.push(("LOTSAWA_EMULATOR", "maybe"));
        let err = CloudConfig::from_source(&env(&with)).expect_err("bad");
        assert_eq!(err.name, "LOTSAWA_EMULATOR");
        assert_eq!(c.max_batch_items, 100, "a batch fits API Gateway's 30 s");
        let mut big = all[..4].to_vec();
        big.push(("LOTSAWA_MAX_BATCH_ITEMS", "1001"));
        let err = CloudConfig::from_source(&env(&big)).expect_err("bad");
        assert_eq!(err.name, "LOTSAWA_MAX_BATCH_ITEMS");
    }
}
