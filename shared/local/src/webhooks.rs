//! Webhook delivery of the embedded backend: a loop, apart from the job
//! runners, takes due deliveries from the store and makes one attempt at
//! each ([`lotsawa_delivery::deliver`]). Pending deliveries are in the
//! store, so a restart resumes them.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lotsawa_core::webhook::Callbacks;
pub use lotsawa_delivery::{DnsResolver, WebhookSettings};
use tokio_util::sync::CancellationToken;

/// Deliveries made at once.
const AT_ONCE: u32 = 16;
/// Between two looks for due deliveries.
const POLL: Duration = Duration::from_millis(200);

/// Deliver due callbacks until `draining`.
pub(crate) async fn deliver_loop(
    store: crate::NodeStore,
    settings: Arc<WebhookSettings>,
    callbacks: Callbacks,
    draining: CancellationToken,
) {
    loop {
        match store.take_callbacks(Utc::now(), AT_ONCE).await {
            Ok(jobs) => {
                let sends = jobs
                    .into_iter()
                    .map(|job| lotsawa_delivery::deliver(&*store, &settings, &callbacks, job));
                futures::future::join_all(sends).await;
            }
            Err(e) => tracing::warn!(error = %e, "reading due callbacks failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = draining.cancelled() => return,
        }
    }
}
