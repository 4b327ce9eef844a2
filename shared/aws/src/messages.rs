//! What the cloud sends besides its table writes: job-queue messages (one
//! definition, written and read here), lifecycle events to EventBridge, and
//! delayed webhook deliveries on SQS.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use lotsawa_core::JobId;
use serde::Deserialize;

use crate::config::CloudConfig;
use crate::error::{CloudError, aws};

/// A job-queue message, and the input of a run's execution: written and
/// read by this one definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The job.
    pub job_id: JobId,
    /// The run (the job's `run` once started).
    pub run: u32,
    /// Which execution of the run (0 first).
    #[serde(default)]
    pub segment: u32,
}

impl JobMessage {
    /// The message for segment `segment` of run `run` of job `id`.
    pub fn new(job_id: JobId, run: u32, segment: u32) -> Self {
        Self {
            job_id,
            run,
            segment,
        }
    }

    /// Its JSON.
    pub fn to_json(&self) -> String {
        serde_json::json!(self).to_string()
    }
}

/// The senders: SQS and EventBridge clients with the queues and bus of the
/// deployment.
#[derive(Debug, Clone)]
pub struct Messages {
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    config: CloudConfig,
}

impl Messages {
    /// Senders over these clients.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        events: aws_sdk_eventbridge::Client,
        config: CloudConfig,
    ) -> Self {
        Self {
            sqs,
            events,
            config,
        }
    }

    /// Queue a job run for the dispatcher. Each call is a message of its
    /// own: a job cancelled while pending and retried asks for the same run
    /// again within the queue's five-minute deduplication window, and a
    /// deduplication id of job and run would drop that message. A repeated
    /// message is harmless: the dispatcher claims a run once and names its
    /// execution after it.
    pub async fn enqueue(&self, id: JobId, run: u32, segment: u32) -> Result<(), CloudError> {
        let dedup = format!("{id}-{run}-{segment}-{}", uuid::Uuid::new_v4().simple());
        let body = JobMessage::new(id, run, segment).to_json();
        self.sqs
            .send_message()
            .queue_url(&self.config.job_queue_url)
            .message_body(body)
            // A group per job: a message that keeps failing holds up its
            // own job only, never every other wake-up behind it.
            .message_group_id(format!("job-{id}"))
            .message_deduplication_id(dedup)
            .send()
            .await
            .map_err(aws("sqs"))?;
        Ok(())
    }

    /// Send a chunk's re-translation to the worker, after `delay` (at
    /// most 15 minutes: SQS's bound).
    pub async fn retranslate(
        &self,
        request: &lotsawa_core::retranslate::Retranslation,
        delay: std::time::Duration,
    ) -> Result<(), CloudError> {
        let Some(url) = &self.config.worker_queue_url else {
            return Err(CloudError::Service(lotsawa_core::ServiceError::Unavailable(
                "this deployment has no worker queue (LOTSAWA_WORKER_QUEUE_URL) for re-translations"
                    .into(),
            )));
        };
        let body = serde_json::to_string(&crate::worker::RetranslateMessage::new(request.clone()))
            .map_err(|e| CloudError::Build(format!("a re-translation message: {e}")))?;
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map_err(aws("sqs"))?;
        Ok(())
    }

    /// Send a lifecycle event to the bus (`Source` `lotsawa`, `DetailType`
    /// its name), when one is configured. Best effort: a failure is logged
    /// and never fails the change that made the event.
    pub async fn publish(&self, detail_type: &str, detail: &serde_json::Value) {
        let Some(bus) = &self.config.event_bus else {
            return;
        };
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(lotsawa_core::webhook::EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        match self.events.put_events().entries(entry).send().await {
            Ok(out) if out.failed_entry_count() == 0 => {}
            Ok(out) => tracing::warn!(
                event = detail_type,
                error = ?out.entries().first().and_then(|e| e.error_message()),
                "EventBridge refused a lifecycle event"
            ),
            Err(e) => tracing::warn!(
                event = detail_type,
                error = %DisplayErrorContext(&e),
                "sending a lifecycle event failed"
            ),
        }
    }

    /// Have the webhook function try the job's pending callback after
    /// `delay` (at most SQS's 15 minutes; a later one is found by the
    /// sweep). Best effort: the sweep finds a delivery whose message was
    /// lost.
    pub async fn schedule_callback(&self, id: JobId, delay: std::time::Duration) {
        let Some(w) = &self.config.webhooks else {
            return;
        };
        let body = serde_json::json!({ "jobId": id.to_string() }).to_string();
        let delay = delay.as_secs().min(900) as i32;
        if let Err(e) = self
            .sqs
            .send_message()
            .queue_url(&w.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
        {
            tracing::warn!(job_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                "queueing a callback delivery failed; the sweep will find it");
        }
    }
}
