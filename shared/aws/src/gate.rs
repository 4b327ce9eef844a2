//! [`TableGate`]: the provider limits every worker shares, kept in one item
//! of the job table per limiter (`pk = LIMIT#<engine[:model]>`, `sk =
//! STATE`): the limiter's state as JSON and a version, read consistently and
//! written back with a compare-and-set on the version, so concurrent
//! workers never spend one share twice. A worker never waits here: a call
//! with no share free is answered with how long to wait, and the state
//! machine waits (no Lambda held). A lease a crashed worker never gave back
//! lapses after the lease time.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use lotsawa_core::limits::{Lease, LimitSpec, LimiterState, ProviderGate, Settle, Wait};

use crate::store::DynamoStore;

/// Writes tried before a conflicted admission is answered "wait" (each
/// conflict means another worker's write went through).
const TRIES: u32 = 12;

/// The wait after the `n`th conflict: full jitter up to 10 ms × 2^n,
/// capped at 200 ms, so contenders spread out.
async fn after_conflict(n: u32) {
    let backoff =
        lotsawa_core::retry::Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    tokio::time::sleep(backoff.full_jitter(n, rand::random())).await;
}

/// The shared limiter of the cloud workers.
#[derive(Clone)]
pub struct TableGate {
    store: DynamoStore,
    lease: Duration,
}

impl std::fmt::Debug for TableGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableGate")
            .field("lease", &self.lease)
            .finish()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl TableGate {
    /// A gate over `store`'s table; a lease lapses after `lease` (longer
    /// than any provider call).
    pub fn new(store: DynamoStore, lease: Duration) -> Self {
        Self { store, lease }
    }

    fn key(key: &str) -> std::collections::HashMap<String, AttributeValue> {
        std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(format!("LIMIT#{key}"))),
            ("sk".to_owned(), AttributeValue::S("STATE".to_owned())),
        ])
    }

    /// The limiter's state and version (0: none yet).
    async fn read(&self, key: &str, spec: &LimitSpec) -> Option<(LimiterState, u64)> {
        let out = self
            .store
            .clients
            .ddb
            .get_item()
            .table_name(&self.store.config.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(key, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "reading a provider limiter failed");
            })
            .ok()?;
        let Some(item) = out.item else {
            return Some((LimiterState::new(spec, now_ms()), 0));
        };
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let state = item
            .get("state")
            .and_then(|v| v.as_s().ok())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_else(|| LimiterState::new(spec, now_ms()));
        Some((state, version))
    }

    /// Write `state` if the item is still at `version`.
    async fn write(&self, key: &str, state: &LimiterState, version: u64) -> bool {
        let Ok(json) = serde_json::to_string(state) else {
            return false;
        };
        let mut item = Self::key(key);
        item.insert("state".into(), AttributeValue::S(json));
        item.insert(
            "version".into(),
            AttributeValue::N((version + 1).to_string()),
        );
        let put = self
            .store
            .clients
            .ddb
            .put_item()
            .table_name(&self.store.config.table)
            .set_item(Some(item));
        let put = if version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
        };
        match put.send().await {
            Ok(_) => true,
            Err(e) => {
                let conflict = e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception());
                if !conflict {
                    tracing::warn!(key, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "writing a provider limiter failed");
                }
                false
            }
        }
    }
}

#[async_trait]
impl ProviderGate for TableGate {
    async fn admit(&self, key: &str, spec: &LimitSpec, tokens: u64) -> Result<Lease, Wait> {
        for n in 0..TRIES {
            // A table that cannot be read admits nothing: the state machine
            // asks again shortly rather than overrunning the provider.
            let Some((mut state, version)) = self.read(key, spec).await else {
                return Err(Wait::Busy(Duration::from_secs(1)));
            };
            let lease = state.admit(spec, now_ms(), tokens, self.lease)?;
            if self.write(key, &state, version).await {
                return Ok(lease);
            }
            after_conflict(n).await;
        }
        Err(Wait::Busy(Duration::from_secs(1)))
    }

    async fn settle(&self, key: &str, spec: &LimitSpec, lease: &Lease, outcome: Settle) {
        for n in 0..TRIES {
            let Some((mut state, version)) = self.read(key, spec).await else {
                return;
            };
            state.settle(spec, now_ms(), lease, outcome);
            if self.write(key, &state, version).await {
                return;
            }
            after_conflict(n).await;
        }
        tracing::warn!(
            key,
            "a provider limiter stayed contended; the lease lapses on its own"
        );
    }
}
