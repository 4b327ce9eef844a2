//! The provider limits (`LOTSAWA_LIMITS`) shared by every server on the
//! database: one limiter state per key in `provider_limits`, read and
//! written under its row lock, on the database's clock (servers' clocks may
//! differ). Within a server, callers wait in arrival order (one line per
//! key), and only the first in line asks the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lotsawa_core::StoreError;
use lotsawa_core::limits::{Lease, LimitSpec, LimiterState, ProviderGate, Settle, Wait};

use crate::{PgStore, pg};

/// How often the first in line asks again while every concurrent slot is
/// taken (a slot freed on another server is not announced).
const BUSY_POLL: Duration = Duration::from_millis(50);

/// The gate of the servers sharing one database.
pub struct PgGate {
    store: PgStore,
    /// How long a lease lives if its call never ends (a server that died
    /// mid-call): longer than any provider call.
    lapse: Duration,
    lines: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    released: tokio::sync::Notify,
}

impl std::fmt::Debug for PgGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGate")
            .field("lapse", &self.lapse)
            .finish()
    }
}

/// One change of `key`'s limiter under its row lock: `change` gets the
/// state (new when there is none and `spec` is given) and the database's
/// time in ms; `None` when there is no state to change.
async fn step<T>(
    store: &PgStore,
    key: &str,
    spec: Option<&LimitSpec>,
    change: impl FnOnce(&mut LimiterState, i64) -> T,
) -> Result<Option<T>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg("provider limits"))?;
    tx.execute(
        "INSERT INTO provider_limits (key, state) VALUES ($1, '') ON CONFLICT DO NOTHING",
        &[&key],
    )
    .await
    .map_err(pg("provider limits"))?;
    let row = tx
        .query_one(
            "SELECT state, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT \
             FROM provider_limits WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(pg("provider limits"))?;
    let (text, now): (String, i64) = (row.get(0), row.get(1));
    let state = serde_json::from_str::<LimiterState>(&text)
        .ok()
        .or_else(|| spec.map(|s| LimiterState::new(s, now)));
    let Some(mut state) = state else {
        return Ok(None);
    };
    let out = change(&mut state, now);
    let text = serde_json::to_string(&state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "UPDATE provider_limits SET state = $2 WHERE key = $1",
        &[&key, &text],
    )
    .await
    .map_err(pg("provider limits"))?;
    tx.commit().await.map_err(pg("provider limits"))?;
    Ok(Some(out))
}

impl PgGate {
    /// A gate on `store`'s database; a lease lapses after `lapse`.
    pub fn new(store: PgStore, lapse: Duration) -> Self {
        Self {
            store,
            lapse,
            lines: Mutex::default(),
            released: tokio::sync::Notify::new(),
        }
    }

    fn line(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.entry(key.to_owned()).or_default().clone()
    }
}

#[async_trait]
impl ProviderGate for PgGate {
    async fn admit(&self, key: &str, spec: &LimitSpec, tokens: u64) -> Result<Lease, Wait> {
        let line = self.line(key);
        let _first = line.lock().await;
        loop {
            let released = self.released.notified();
            let lapse = self.lapse;
            match step(&self.store, key, Some(spec), |s, now| {
                s.admit(spec, now, tokens, lapse)
            })
            .await
            {
                Ok(Some(Ok(lease))) => return Ok(lease),
                Ok(Some(Err(Wait::Busy(d)))) => {
                    tokio::select! {
                        _ = released => {}
                        _ = tokio::time::sleep(d.min(BUSY_POLL)) => {}
                    }
                }
                Ok(Some(Err(w))) => tokio::time::sleep(w.duration()).await,
                // A database that cannot be reached admits nothing: the
                // caller waits and asks again.
                Ok(None) | Err(_) => return Err(Wait::Busy(Duration::from_secs(1))),
            }
        }
    }

    async fn settle(&self, key: &str, spec: &LimitSpec, lease: &Lease, outcome: Settle) {
        if let Err(e) = step(&self.store, key, Some(spec), |s, now| {
            s.settle(spec, now, lease, outcome)
        })
        .await
        {
            tracing::warn!(key, error = %e, "settling a provider lease failed; it lapses on its own");
        }
        self.released.notify_waiters();
    }

    fn abandon(&self, key: &str, lease: &Lease) {
        let (store, key, lease) = (self.store.clone(), key.to_owned(), lease.clone());
        tokio::spawn(async move {
            let _ = step(&store, &key, None, |s, _| s.release(&lease)).await;
        });
        self.released.notify_waiters();
    }
}
