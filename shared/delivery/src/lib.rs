//! Webhook delivery, the same in every form: one signed attempt at a job's
//! pending callback, and its outcome written back to the store.
//!
//! A job with `config.callbackUrl` gets, in the same commit as the
//! transition that ends it, a pending delivery of its event (see
//! [`lotsawa_core::webhook`]). [`deliver`] checks the URL again (DNS can
//! change), connects to the addresses it checked, POSTs the event signed
//! with `Lotsawa-Signature`, and records the outcome: delivered on a 2xx,
//! else due again after `retry_base × 2^(attempts-1)` until
//! `max_attempts`, then failed. Who calls it, and when, is the form's: a
//! loop beside the runners locally, a queue-fed function in the cloud.

use std::time::Duration;

use chrono::Utc;
use lotsawa_core::webhook::{Callbacks, SIGNATURE_HEADER, signature};
use lotsawa_core::{Callback, CallbackStatus, CallbackStore, Job};

/// How deliveries are made.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The signing secret (`LOTSAWA_WEBHOOK_SECRET`).
    pub secret: Vec<u8>,
    /// Wait before the first retry; doubled for each next one
    /// (`LOTSAWA_WEBHOOK_RETRY_BASE_MS`, default 1000).
    pub retry_base: Duration,
    /// Attempts in all (`LOTSAWA_WEBHOOK_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Who may receive them (`LOTSAWA_WEBHOOK_ALLOW`; loopback allowed).
    pub policy: lotsawa_core::webhook::CallbackPolicy,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("WebhookSettings")
            .field("retry_base", &self.retry_base)
            .field("max_attempts", &self.max_attempts)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Names resolved by the system resolver.
pub struct DnsResolver;

#[async_trait::async_trait]
impl lotsawa_core::webhook::Resolver for DnsResolver {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::IpAddr>, String> {
        tokio::net::lookup_host((host, port))
            .await
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|e| e.to_string())
    }
}

/// Deadline of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One attempt at one job's callback; its outcome is stored, and returned
/// when it was (`None`: nothing to deliver, or a newer event replaced it).
pub async fn deliver(
    store: &dyn CallbackStore,
    settings: &WebhookSettings,
    callbacks: &Callbacks,
    job: Job,
) -> Option<Callback> {
    let (Some(before), Some(url)) = (job.callback.clone(), job.config.callback_url.clone()) else {
        return None;
    };
    let attempts = before.attempts + 1;
    let outcome = attempt(settings, callbacks, &url, &before).await;
    let now = Utc::now();
    let after = match outcome {
        Ok(()) => Callback {
            status: CallbackStatus::Delivered,
            attempts,
            last_error: None,
            delivered_at: Some(now),
            next_attempt_at: None,
            ..before.clone()
        },
        Err(Failure { why, retry }) if retry && attempts < settings.max_attempts => {
            let wait = settings
                .retry_base
                .saturating_mul(1u32 << (attempts - 1).min(20));
            Callback {
                status: CallbackStatus::Pending,
                attempts,
                last_error: Some(why),
                next_attempt_at: Some(
                    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1)),
                ),
                ..before.clone()
            }
        }
        Err(Failure { why, .. }) => Callback {
            status: CallbackStatus::Failed,
            attempts,
            last_error: Some(why),
            next_attempt_at: None,
            ..before.clone()
        },
    };
    match after.status {
        CallbackStatus::Delivered => {
            tracing::info!(job_id = %job.id, attempts, "callback delivered");
        }
        _ => tracing::warn!(job_id = %job.id, attempts, status = after.status.as_str(),
            error = after.last_error.as_deref().unwrap_or(""), "callback not delivered"),
    }
    match store.callback_update(job.id, &before, &after).await {
        Ok(true) => Some(after),
        // A newer event (the job was retried and ended again) replaced it.
        Ok(false) => {
            tracing::info!(job_id = %job.id, "callback changed meanwhile");
            None
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "recording a callback failed");
            None
        }
    }
}

struct Failure {
    why: String,
    /// Worth another attempt (a refused address is not).
    retry: bool,
}

async fn attempt(
    settings: &WebhookSettings,
    callbacks: &Callbacks,
    url: &str,
    callback: &Callback,
) -> Result<(), Failure> {
    let checked = callbacks.check(url).await.map_err(|why| Failure {
        retry: why.contains("does not resolve"),
        why,
    })?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("lotsawa-webhook/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = checked.url.host_str()
        && !checked.addrs.is_empty()
    {
        // Connect to the addresses just checked, not to a fresh lookup.
        client = client.resolve_to_addrs(host, &checked.addrs);
    }
    let client = client.build().map_err(|e| Failure {
        why: format!("cannot build the HTTP client: {e}"),
        retry: true,
    })?;
    let body = callback.event.clone().into_bytes();
    let kind = serde_json::from_str::<serde_json::Value>(&callback.event)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let sig = signature(&settings.secret, Utc::now().timestamp(), &body);
    let res = client
        .post(checked.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sig)
        .header("Lotsawa-Event", kind)
        .body(body)
        .send()
        .await
        .map_err(|e| Failure {
            why: if e.is_timeout() {
                "the receiver did not answer in time".into()
            } else if e.is_connect() {
                "cannot connect to the receiver".into()
            } else {
                "the request to the receiver failed".into()
            },
            retry: true,
        })?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure {
            why: format!("the receiver answered HTTP {}", status.as_u16()),
            retry: true,
        })
    }
}
