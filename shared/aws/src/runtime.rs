//! Start-up shared by the function binaries: JSON logs, configuration,
//! clients, engines, the job service and the Router, built once per
//! instance. Event → command mapping for the queue-fed functions lives here
//! too, so it is tested with JSON fixtures.

use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use lotsawa_core::{CallbackStore, JobService, JobStore};
use lotsawa_engines::{EngineSet, EngineSettings};

use crate::config::CloudConfig;
use crate::dispatch::{
    Dispatched, ExecutionChange, REAP_MIN_AGE, dispatch, reap, settle_execution,
};
use crate::ingest::{Upload, decode_key, ingest};
use crate::messages::JobMessage;
use crate::store::{Clients, DynamoStore};
use crate::worker::{Task, Worker};

/// JSON logs for CloudWatch (LOTSAWA_LOG sets the filter), and traces over
/// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the same spans as the
/// local server's; [`lotsawa_telemetry::flush`] after each invocation).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("LOTSAWA_LOG").unwrap_or_else(|_| "info".into());
    let telemetry = match lotsawa_telemetry::init(&lotsawa_core::settings::ProcessEnv) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("traces off: {e}");
            None
        }
    };
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()))
        .with(telemetry.as_ref().map(lotsawa_telemetry::Telemetry::layer))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .without_time(),
        )
        .try_init();
}

/// Export the spans buffered so far: at the end of each invocation, before
/// Lambda freezes the function. With traces off it returns at once, without
/// a trip through the blocking pool on every request.
pub async fn flush_traces() {
    if lotsawa_telemetry::enabled() {
        let _ = tokio::task::spawn_blocking(lotsawa_telemetry::flush).await;
    }
}

/// Run a function's runtime loop. On AWS an ended loop ends the process
/// (Lambda starts a new one). Under the local Lambda emulator
/// (`LOTSAWA_EMULATOR`), whose Runtime API connection breaks now and then
/// (`IncompleteMessage`) and which never replaces an exited instance, the
/// loop polls for the next invocation again instead.
pub async fn keep_running<F, Fut, E>(emulator: bool, mut run: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if !emulator {
        return run().await;
    }
    let backoff = lotsawa_core::retry::Backoff::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(2),
    );
    let mut round = 0;
    loop {
        match run().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the runtime loop ended; polling for the next invocation again (emulator)");
                tokio::time::sleep(backoff.ceiling(round)).await;
                round += 1;
            }
        }
    }
}

/// What the webhook function delivers with.
#[derive(Clone)]
pub struct Delivery {
    settings: lotsawa_delivery::WebhookSettings,
    callbacks: lotsawa_core::webhook::Callbacks,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Everything a function needs, built once.
#[derive(Clone)]
pub struct App {
    /// Settings.
    pub config: CloudConfig,
    /// Store.
    pub store: DynamoStore,
    /// Engines.
    pub engines: EngineSet,
    /// The job service.
    pub service: Arc<lotsawa_core::Service>,
    /// Tenants' budgets as the worker last read them (kept while the
    /// function stays warm).
    pub budgets: Arc<lotsawa_core::usage::BudgetCache>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Longest SSE response the `api` function serves (API Gateway HTTP APIs
/// end a response at 30 s).
pub const API_STREAM_MAX: std::time::Duration = std::time::Duration::from_secs(25);

/// A start-up failure (the message names the variable).
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// The API key in a Secrets Manager secret: its string, or the `apiKey`
/// field when the string is a JSON object. The key itself is never logged.
pub async fn openai_key_from_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: String,
) -> Result<String, StartError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "OPENAI_API_KEY_SECRET_ARN: reading the secret failed: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let raw = out.secret_string().unwrap_or_default();
    key_of_secret(raw).ok_or_else(|| {
        "OPENAI_API_KEY_SECRET_ARN: the secret holds no key (a string, or JSON with \"apiKey\")"
            .into()
    })
}

/// The key in a secret's string.
pub fn key_of_secret(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let key = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(m)) => m.get("apiKey")?.as_str()?.trim().to_owned(),
        _ => raw.to_owned(),
    };
    (!key.is_empty()).then_some(key)
}

impl App {
    /// Read the configuration and build clients and engines.
    pub async fn from_env() -> Result<Self, StartError> {
        let config = CloudConfig::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let secret_key = match &config.openai_key_secret {
            Some(arn) => Some(
                openai_key_from_secret(&aws_sdk_secretsmanager::Client::new(&sdk), arn.clone())
                    .await?,
            ),
            None => None,
        };
        let get = |k: &str| match (k, &secret_key) {
            ("OPENAI_API_KEY", Some(key)) => Some(key.clone()),
            _ => std::env::var(k).ok(),
        };
        let settings = EngineSettings::from_source(&get, None)?;
        let clients = Clients::from_sdk(&sdk);
        let store = DynamoStore::new(clients, config.clone());
        // Provider limits are shared by every worker through the table; a
        // lease outlives any provider call.
        let gate = crate::gate::TableGate::new(store.clone(), settings.timeout * 2);
        let (engines, _) = EngineSet::build_with_gate(&settings, Arc::new(gate)).await?;
        // The worker's IAM policy covers only the template's Bedrock models.
        let bedrock_models = match engines.get("bedrock") {
            Some(_) if !config.bedrock_models.is_empty() => {
                vec![("bedrock".to_owned(), config.bedrock_models.clone())]
            }
            Some(e) => vec![(
                "bedrock".to_owned(),
                e.default_model().map(str::to_owned).into_iter().collect(),
            )],
            None => Vec::new(),
        };
        let service = Arc::new(
            crate::service::cloud_service(
                store.clone(),
                engines.names(),
                engines.default_name().to_owned(),
                bedrock_models,
            )
            .with_prices(settings.prices.clone()),
        );
        Ok(Self {
            config,
            store,
            engines,
            service,
            budgets: Arc::default(),
        })
    }

    /// The one Router over the cloud service, for the `api` function behind
    /// API Gateway, which ends a response after 30 s: a stream opened there
    /// ends within [`API_STREAM_MAX`] with a `reconnect` event (clients are
    /// meant to use the stream function's URL).
    pub fn router(&self) -> lotsawa_http::Router {
        let router = lotsawa_http::router(
            self.service.clone() as Arc<dyn JobService>,
            lotsawa_http::ApiConfig {
                body_limit: self.config.body_limit,
                stream_max: self.config.stream_max.min(API_STREAM_MAX),
                shutdown: Default::default(),
                require_auth: self.config.require_auth,
                // Behind API Gateway and Function URLs: their host names.
                allowed_hosts: None,
                // The dashboard opens its streams on the stream function.
                stream_url: self.config.stream_url.clone(),
                pdf_limit: self.config.pdf_limit,
                ..lotsawa_http::ApiConfig::default()
            },
        );
        // Each request's spans leave before Lambda freezes the function.
        router.layer(axum::middleware::map_response(
            |response: axum::response::Response| async move {
                flush_traces().await;
                response
            },
        ))
    }

    /// The stream function's Router: the SSE route (and health) only.
    pub fn stream_router(&self) -> lotsawa_http::Router {
        lotsawa_http::stream_router(
            self.service.clone() as Arc<dyn JobService>,
            lotsawa_http::ApiConfig {
                body_limit: self.config.body_limit,
                stream_max: self.config.stream_max,
                shutdown: Default::default(),
                require_auth: self.config.require_auth,
                // Behind API Gateway and Function URLs: their host names.
                allowed_hosts: None,
                ..lotsawa_http::ApiConfig::default()
            },
        )
    }

    /// An HTTP API authorizer request → its simple answer.
    pub async fn on_authorize(
        &self,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, StartError> {
        let req = serde_json::from_value(event)?;
        let answer = crate::authorizer::authorize(&*self.service, &req).await?;
        Ok(serde_json::to_value(answer)?)
    }

    /// Job-queue batch → dispatches. A message that finds no free slot is
    /// done with: its job stays pending in the table, the run that frees a
    /// slot sends a wake-up ([`crate::dispatch::kick`]), and the scheduled
    /// sweep starts any job whose wake-up was lost. A message whose dispatch failed is returned as a failure, and so
    /// is every later message of the same job (its message group), so that
    /// SQS delivers them again in order; other jobs' messages go on.
    pub async fn on_job_messages(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut blocked = std::collections::HashSet::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let msg: Result<JobMessage, _> =
                serde_json::from_str(record.body.as_deref().unwrap_or(""));
            let Ok(msg) = msg else {
                tracing::error!(message_id = %id, "dropping a malformed job message");
                continue;
            };
            // FIFO within a job: once one of its messages failed, the ones
            // behind it wait too.
            if blocked.contains(&msg.job_id) {
                response.batch_item_failures.push(failure(id));
                continue;
            }
            match dispatch(&self.store, &msg).await {
                Ok(Dispatched::Started(arn)) => {
                    tracing::info!(job_id = %msg.job_id, %arn, "execution started")
                }
                Ok(Dispatched::Dropped(why)) => {
                    tracing::info!(job_id = %msg.job_id, why, "message dropped")
                }
                Ok(Dispatched::Waiting) => {
                    tracing::info!(job_id = %msg.job_id, "no slot free; the job waits for one to be released")
                }
                Err(e) => {
                    tracing::error!(job_id = %msg.job_id, error = %e, "dispatch failed");
                    blocked.insert(msg.job_id);
                    response.batch_item_failures.push(failure(id));
                }
            }
        }
        flush_traces().await;
        response
    }

    /// An execution status change (EventBridge) → settle that run; the
    /// scheduled sweep (any other event) → settle runs whose event was lost.
    pub async fn on_execution_event(&self, event: serde_json::Value) -> Result<u32, StartError> {
        if event
            .get("detail")
            .is_some_and(|d| d.get("executionArn").is_some())
        {
            let event: EventBridgeEvent<ExecutionChange> = serde_json::from_value(event)?;
            return Ok(u32::from(
                settle_execution(&self.store, &event.detail).await?,
            ));
        }
        let reaped = reap(&self.store, REAP_MIN_AGE).await?;
        self.requeue_overdue_callbacks().await;
        Ok(reaped)
    }

    /// Callback deliveries overdue by a minute (their queue message was
    /// lost, or their wait was longer than SQS's 15 minutes) go back to the
    /// webhook queue.
    async fn requeue_overdue_callbacks(&self) {
        if self.config.webhooks.is_none() {
            return;
        }
        let overdue = Utc::now() - chrono::Duration::seconds(60);
        match self.store.callbacks_due(overdue, 100).await {
            Ok(jobs) => {
                for job in jobs {
                    self.store
                        .messages
                        .schedule_callback(job.id, std::time::Duration::ZERO)
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading overdue callbacks failed"),
        }
    }

    /// The webhook function's delivery settings: the signing secret read
    /// from Secrets Manager once per instance.
    pub async fn webhook_delivery(&self) -> Result<Delivery, StartError> {
        let w = self
            .config
            .webhooks
            .clone()
            .ok_or("LOTSAWA_WEBHOOK_QUEUE_URL and LOTSAWA_WEBHOOK_SECRET_ARN must be set")?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let out = aws_sdk_secretsmanager::Client::new(&sdk)
            .get_secret_value()
            .secret_id(&w.secret_arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "LOTSAWA_WEBHOOK_SECRET_ARN: reading the secret failed: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?;
        let secret = out.secret_string().unwrap_or_default().trim().to_owned();
        if secret.len() < 16 {
            return Err(
                "LOTSAWA_WEBHOOK_SECRET_ARN: the secret must hold at least 16 characters".into(),
            );
        }
        Ok(Delivery {
            callbacks: lotsawa_core::webhook::Callbacks::new(
                w.policy.clone(),
                Arc::new(lotsawa_delivery::DnsResolver),
            ),
            settings: lotsawa_delivery::WebhookSettings {
                secret: secret.into_bytes(),
                retry_base: w.retry_base,
                max_attempts: w.max_attempts,
                policy: w.policy,
            },
        })
    }

    /// Webhook-queue batch → one delivery attempt per message; a retry is
    /// queued again with its wait as the message delay.
    pub async fn on_webhooks(&self, delivery: &Delivery, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let message_id = record.message_id.clone().unwrap_or_default();
            let id =
                serde_json::from_str::<serde_json::Value>(record.body.as_deref().unwrap_or(""))
                    .ok()
                    .and_then(|v| {
                        v.get("jobId")?
                            .as_str()?
                            .parse::<lotsawa_core::JobId>()
                            .ok()
                    });
            let Some(id) = id else {
                tracing::error!(%message_id, "dropping a malformed webhook message");
                continue;
            };
            let job = match self.store.get(id).await {
                Ok(j) => j,
                Err(lotsawa_core::StoreError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "reading a job for its callback failed");
                    response.batch_item_failures.push(failure(message_id));
                    continue;
                }
            };
            let Some(pending) = job
                .callback
                .clone()
                .filter(|c| c.status == lotsawa_core::CallbackStatus::Pending)
            else {
                continue;
            };
            let now = Utc::now();
            if let Some(due) = pending.next_attempt_at
                && due > now + chrono::Duration::milliseconds(500)
            {
                // Early (a long wait is queued in 15-minute steps).
                self.store
                    .messages
                    .schedule_callback(id, (due - now).to_std().unwrap_or_default())
                    .await;
                continue;
            }
            let after = lotsawa_delivery::deliver(
                &self.store,
                &delivery.settings,
                &delivery.callbacks,
                job,
            )
            .await;
            if let Some(after) = after
                && after.status == lotsawa_core::CallbackStatus::Pending
                && let Some(due) = after.next_attempt_at
            {
                self.store
                    .messages
                    .schedule_callback(id, (due - Utc::now()).to_std().unwrap_or_default())
                    .await;
            }
        }
        flush_traces().await;
        response
    }

    /// Worker-queue batch → tasks answered.
    pub async fn on_tasks(&self, event: SqsEvent) -> SqsBatchResponse {
        let worker = Worker {
            store: self.store.clone(),
            engines: self.engines.clone(),
            budgets: self.budgets.clone(),
        };
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or("");
            if let Some(request) = crate::worker::RetranslateMessage::parse(body) {
                let (job, chunk) = (request.job_id, request.index);
                match worker.retranslate(request).await {
                    Ok(outcome) => {
                        tracing::info!(job_id = %job, chunk, outcome, "re-translation step")
                    }
                    // The message comes back after its visibility timeout.
                    Err(e) => {
                        tracing::error!(job_id = %job, chunk, error = %e, "re-translation step failed");
                        response.batch_item_failures.push(failure(id));
                    }
                }
                continue;
            }
            let task = match Task::parse(body) {
                Ok(t) => t,
                Err(bad) => {
                    tracing::error!(message_id = %id, why = %bad.why, "answering a malformed task with a failure");
                    worker.reject(&bad).await;
                    continue;
                }
            };
            // Every task is answered (a failed step as transient), so the
            // message is done with either way.
            worker.handle(&task).await;
        }
        flush_traces().await;
        response
    }

    /// S3 notifications (through SQS) → jobs.
    pub async fn on_uploads(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or("");
            let event: S3Event = match serde_json::from_str(body) {
                Ok(e) => e,
                Err(e) => {
                    // S3 sends an s3:TestEvent first; it has no Records.
                    if !is_test_event(body) {
                        tracing::error!(message_id = %id, error = %e, "dropping a malformed S3 notification");
                    }
                    continue;
                }
            };
            for r in event.records {
                let object = &r.s3.object;
                let upload = Upload {
                    bucket: r.s3.bucket.name.clone().unwrap_or_default(),
                    key: decode_key(object.key.as_deref().unwrap_or("")),
                    version: object
                        .version_id
                        .clone()
                        .or_else(|| object.sequencer.clone())
                        .or_else(|| object.e_tag.clone())
                        .unwrap_or_default(),
                    size: object.size,
                };
                match ingest(&self.store, &self.service, &upload).await {
                    Ok(outcome) => tracing::info!(key = %upload.key, ?outcome, "ingested"),
                    Err(e) => {
                        tracing::error!(key = %upload.key, error = %e, "ingest failed");
                        response.batch_item_failures.push(failure(id.clone()));
                    }
                }
            }
        }
        flush_traces().await;
        response
    }
}

/// True for the `s3:TestEvent` S3 sends when a notification is set up.
fn is_test_event(body: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct TestEvent {
        #[serde(rename = "Event")]
        event: String,
    }
    serde_json::from_str::<TestEvent>(body).is_ok_and(|t| t.event == "s3:TestEvent")
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An S3 → SQS notification body as AWS sends it.
    const UPLOAD: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3",
        "awsRegion":"us-east-1","eventTime":"2026-12-01T00:00:00.000Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},"requestParameters":{"sourceIPAddress":"10.0.0.1"},
        "responseElements":{"x-amz-request-id":"r","x-amz-id-2":"i"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"ingest","bucket":{"name":"lotsawa-texts",
        "arn":"arn:aws:s3:::lotsawa-texts"},"object":{"key":"incoming/my+text%20%E0%BD%80.txt","size":12}}}]}"#;

    #[test]
    fn a_secret_holds_the_key_as_text_or_as_json() {
        assert_eq!(key_of_secret(" sk-abc \n").as_deref(), Some("sk-abc"));
        assert_eq!(
            key_of_secret(r#"{"apiKey": "sk-json"}"#).as_deref(),
            Some("sk-json")
        );
        assert_eq!(key_of_secret(r#"{"other": "x"}"#), None);
        assert_eq!(key_of_secret("  "), None);
    }

    #[test]
    fn upload_notifications_parse_with_the_event_types() {
        let event: S3Event = serde_json::from_str(UPLOAD).expect("an S3 event");
        let r = &event.records[0];
        assert_eq!(r.s3.bucket.name.as_deref(), Some("lotsawa-texts"));
        assert_eq!(
            decode_key(r.s3.object.key.as_deref().unwrap_or("")),
            "incoming/my text ཀ.txt"
        );
        assert!(!is_test_event(UPLOAD));
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"lotsawa-texts"}"#;
        assert!(is_test_event(test));
        assert!(serde_json::from_str::<S3Event>(test).is_err());
    }
}
