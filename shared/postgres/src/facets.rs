//! The store's other facets: admission, keys, batches, callbacks,
//! translation memory, usage, review, glossaries and segment memory.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use lotsawa_core::batch::Batch;
use lotsawa_core::glossaries::GlossaryRecord;
use lotsawa_core::job::GlossaryId;
use lotsawa_core::rate::RateLimit;
use lotsawa_core::review::ChunkEdit;
use lotsawa_core::segments::{Example, Segment, best_examples, segment_id, sketch};
use lotsawa_core::store::{
    AdmissionStore, BatchStore, CallbackStore, ChunkUsage, Edited, Field, GlossaryStore,
    IdempotencyRecord, KeyStore, MemoryStore, ReviewStore, SegmentStore, UsageRow, UsageStore,
};
use lotsawa_core::usage::Usage;
use lotsawa_core::{ApiKeyRecord, BatchId, Callback, Job, JobId, JobStatus, StoreError, Tenant};

use crate::jobs::{JOB_CHANNEL, Param as SqlParam, callback_sets, in_tx, refs as sql_refs};
use crate::rows::*;
use crate::{PgStore, pg};

/// Segments a similarity lookup ranks by shared keys before scoring them.
const CANDIDATES: i64 = 48;

/// Add one attempt's usage to its tenant's day, inside `tx`.
pub(crate) async fn add_usage_in(tx: &Transaction<'_>, u: &ChunkUsage) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO usage (tenant, day, engine, model, calls, prompt_tokens, completion_tokens)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, day, engine, model) DO UPDATE SET
                calls = usage.calls + excluded.calls,
                prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,
                completion_tokens = usage.completion_tokens + excluded.completion_tokens",
        )
        .await
        .map_err(pg("add usage"))?;
    tx.execute(
        &stmt,
        &[
            &u.tenant.as_str(),
            &Utc::now().date_naive(),
            &u.engine,
            &u.model.as_deref().unwrap_or(""),
            &(u.usage.calls as i64),
            &(u.usage.prompt_tokens as i64),
            &(u.usage.completion_tokens as i64),
        ],
    )
    .await
    .map_err(pg("add usage"))?;
    Ok(())
}

fn parse_id<T: std::str::FromStr<Err = lotsawa_core::ValidationError>>(
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))
}

#[async_trait]
impl AdmissionStore for PgStore {
    async fn idempotency_put(
        &self,
        r: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotencyRecord, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO idempotency (tenant, key, fingerprint, job_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, key) DO UPDATE SET
                    fingerprint = excluded.fingerprint, job_id = excluded.job_id,
                    created_at = excluded.created_at
                 WHERE idempotency.created_at < $6",
                &[
                    &r.tenant.as_str(),
                    &r.key,
                    &r.fingerprint,
                    &r.job_id.to_string(),
                    &ms(r.created_at),
                    &ms(expired_before),
                ],
            )
            .await
            .map_err(pg("idempotency"))?;
        let row = client
            .query_one(
                "SELECT fingerprint, job_id, created_at FROM idempotency WHERE tenant = $1 AND key = $2",
                &[&r.tenant.as_str(), &r.key],
            )
            .await
            .map_err(pg("idempotency"))?;
        Ok(IdempotencyRecord {
            tenant: r.tenant.clone(),
            key: r.key.clone(),
            fingerprint: row.get(0),
            job_id: parse_id(&row.get::<_, String>(1))?,
            created_at: row.get(2),
        })
    }

    /// The bucket's row is locked for the read and the write: concurrent
    /// takes on any server never spend one token twice.
    async fn take_token(
        &self,
        tenant: &Tenant,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let now = ms(now);
        in_tx!(self, "rate bucket", |tx| {
            tx.execute(
                "INSERT INTO rate_buckets (tenant, tokens, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), &f64::from(limit.burst), &now],
            )
            .await
            .map_err(pg("rate bucket"))?;
            let row = tx
                .query_one(
                    "SELECT tokens, at FROM rate_buckets WHERE tenant = $1 FOR UPDATE",
                    &[&tenant.as_str()],
                )
                .await
                .map_err(pg("rate bucket"))?;
            let (tokens, at): (f64, DateTime<Utc>) = (row.get(0), row.get(1));
            let (left, wait) = lotsawa_core::rate::take(limit, Some(tokens), Some(at), now);
            tx.execute(
                "UPDATE rate_buckets SET tokens = $2, at = $3 WHERE tenant = $1",
                &[&tenant.as_str(), &left, &now],
            )
            .await
            .map_err(pg("rate bucket"))?;
            Ok(wait)
        })
    }

    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[])
            .await
            .map_err(pg("count jobs"))?;
        let found: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(JobStatus::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    found.get(s.as_str()).copied().unwrap_or(0).max(0) as u64,
                )
            })
            .collect())
    }

    async fn pending_count(&self, tenant: &Tenant) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND status = 'pending'",
                &[&tenant.as_str()],
            )
            .await
            .map_err(pg("count jobs"))?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn slots_in_use(&self) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM jobs WHERE status = 'processing'", &[])
            .await
            .map_err(pg("count slots"))?
            .get(0);
        Ok(n.max(0) as u32)
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn key_put(&self, r: &ApiKeyRecord, hash: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, hash, tenant, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &r.id,
                    &hash,
                    &r.tenant.as_str(),
                    &ms(r.created_at),
                    &r.revoked_at.map(ms),
                ],
            )
            .await
            .map_err(pg("store a key"))?;
        Ok(())
    }

    async fn key_find(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, tenant, created_at, revoked_at FROM api_keys WHERE hash = $1",
            )
            .await
            .map_err(pg("find a key"))?;
        client
            .query_opt(&stmt, &[&hash])
            .await
            .map_err(pg("find a key"))?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, tenant, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(pg("list keys"))?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &ms(at)],
            )
            .await
            .map_err(pg("revoke a key"))?;
        Ok(n > 0)
    }
}

#[async_trait]
impl BatchStore for PgStore {
    async fn batch_put(&self, b: &Batch) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO batches (id, tenant, created_at, items) VALUES ($1, $2, $3, $4)",
                &[
                    &b.id.to_string(),
                    &b.tenant.as_str(),
                    &ms(b.created_at),
                    &json(&b.items)?,
                ],
            )
            .await
            .map_err(pg("store a batch"))?;
        Ok(())
    }

    async fn batch_get(&self, id: BatchId) -> Result<Batch, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, id, tenant, created_at, items FROM batches WHERE id = $1",
                &[&id.to_string()],
            )
            .await
            .map_err(pg("read a batch"))?
            .ok_or(StoreError::BatchNotFound(id))?;
        Ok(batch_from_row(&row)?.1)
    }

    async fn batch_list(
        &self,
        tenant: &Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<Batch>, Option<String>), StoreError> {
        let before: i64 = match after {
            Some(p) => p
                .parse()
                .map_err(|_| StoreError::InvalidCursor(p.to_owned()))?,
            None => i64::MAX,
        };
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, id, tenant, created_at, items FROM batches
                 WHERE tenant = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                &[&tenant.as_str(), &before, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(pg("list batches"))?;
        let mut out = rows
            .iter()
            .map(batch_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        let next = if more {
            out.last().map(|(seq, _)| seq.to_string())
        } else {
            None
        };
        Ok((out.into_iter().map(|(_, b)| b).collect(), next))
    }
}

#[async_trait]
impl CallbackStore for PgStore {
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE callback_due IS NOT NULL AND callback_due <= $1 \
                 ORDER BY callback_due LIMIT $2"
            ))
            .await
            .map_err(pg("callbacks due"))?;
        client
            .query(&stmt, &[&ms(now), &i64::from(limit)])
            .await
            .map_err(pg("callbacks due"))?
            .iter()
            .map(|r| job_from_row(r).map(|(_, j)| j))
            .collect()
    }

    async fn callback_update(
        &self,
        id: JobId,
        before: &Callback,
        after: &Callback,
    ) -> Result<bool, StoreError> {
        let mut params: Vec<SqlParam> = Vec::new();
        let mut sets: Vec<String> = Vec::new();
        callback_sets(
            &Field::Set(after.clone()),
            &mut |column, value| match value {
                Some(v) => {
                    params.push(v);
                    sets.push(format!("{column} = ${}", params.len()));
                }
                None => sets.push(format!("{column} = NULL")),
            },
        )?;
        params.push(Box::new(id.to_string()));
        let n_id = params.len();
        params.push(Box::new(json(before)?));
        let n_before = params.len();
        let sql = format!(
            "UPDATE jobs SET {} WHERE id = ${n_id} AND callback = ${n_before}",
            sets.join(", ")
        );
        let client = self.client().await?;
        let n = client
            .execute(sql.as_str(), &sql_refs(&params))
            .await
            .map_err(pg("callback"))?;
        Ok(n == 1)
    }
}

#[async_trait]
impl MemoryStore for PgStore {
    async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT translation, confidence FROM memory WHERE key = $1")
            .await
            .map_err(pg("memory"))?;
        Ok(client
            .query_opt(&stmt, &[&key])
            .await
            .map_err(pg("memory"))?
            .map(|r| (r.get(0), r.get(1))))
    }

    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO memory (key, translation, confidence, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO NOTHING",
            )
            .await
            .map_err(pg("memory"))?;
        client
            .execute(&stmt, &[&key, &translation, &confidence, &ms(Utc::now())])
            .await
            .map_err(pg("memory"))?;
        Ok(())
    }
}

#[async_trait]
impl UsageStore for PgStore {
    async fn usage(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT day, engine, model, calls, prompt_tokens, completion_tokens
                 FROM usage WHERE tenant = $1 AND day >= $2 AND day <= $3
                 ORDER BY day, engine, model",
                &[&tenant.as_str(), &from, &to],
            )
            .await
            .map_err(pg("usage"))?;
        Ok(rows
            .iter()
            .map(|r| UsageRow {
                day: r.get(0),
                engine: r.get(1),
                model: r.get(2),
                usage: Usage {
                    calls: r.get::<_, i64>(3).max(0) as u64,
                    prompt_tokens: r.get::<_, i64>(4).max(0) as u64,
                    completion_tokens: r.get::<_, i64>(5).max(0) as u64,
                },
            })
            .collect())
    }

    async fn budget(&self, tenant: &Tenant) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT monthly_tokens FROM budgets WHERE tenant = $1",
                &[&tenant.as_str()],
            )
            .await
            .map_err(pg("budget"))?
            .map(|r| r.get::<_, i64>(0).max(0) as u64))
    }

    async fn set_budget(&self, tenant: &Tenant, tokens: Option<u64>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let name = tenant.as_str();
        match tokens {
            Some(n) => {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                client
                    .execute(
                        "INSERT INTO budgets (tenant, monthly_tokens) VALUES ($1, $2)
                         ON CONFLICT (tenant) DO UPDATE SET monthly_tokens = excluded.monthly_tokens",
                        &[&name, &n],
                    )
                    .await
            }
            None => {
                client
                    .execute("DELETE FROM budgets WHERE tenant = $1", &[&name])
                    .await
            }
        }
        .map_err(pg("budget"))?;
        Ok(())
    }

    async fn add_usage(&self, usage: &ChunkUsage) -> Result<(), StoreError> {
        if usage.usage.is_zero() {
            return Ok(());
        }
        in_tx!(self, "add usage", |tx| add_usage_in(&tx, usage).await?);
        Ok(())
    }
}

#[async_trait]
impl ReviewStore for PgStore {
    async fn edit_chunk(&self, id: JobId, edit: &ChunkEdit) -> Result<Edited, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("edit a chunk"))?;
        // The job's row first, as every other writer locks it (a purge
        // deletes it, then its chunks).
        let seq: i64 = tx
            .query_opt(
                "SELECT seq FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
                &[&id.to_string()],
            )
            .await
            .map_err(pg("edit a chunk"))?
            .ok_or(StoreError::NotFound(id))?
            .get(0);
        let n = tx
            .execute(
                "UPDATE chunks SET translation = $1, revisions = $2, revs = $3, current_rev = $4,
                    reviewed = $5, version = version + $6
                 WHERE job_seq = $7 AND idx = $8 AND status = 'completed' AND version = $9 AND revs = $10",
                &[
                    &edit.translation,
                    &lotsawa_core::review::encode(&edit.revisions),
                    &(edit.revisions.len() as i32),
                    &(edit.current as i32),
                    &edit.reviewed,
                    &i32::from(edit.bump),
                    &seq,
                    &(edit.index as i32),
                    &(edit.version as i32),
                    &(edit.revisions_before as i32),
                ],
            )
            .await
            .map_err(pg("edit a chunk"))?;
        if n != 1 {
            let completed: Option<bool> = tx
                .query_opt(
                    "SELECT status = 'completed' FROM chunks WHERE job_seq = $1 AND idx = $2",
                    &[&seq, &(edit.index as i32)],
                )
                .await
                .map_err(pg("edit a chunk"))?
                .map(|r| r.get(0));
            return Ok(match completed {
                Some(true) => Edited::Stale,
                _ => Edited::NotTranslated,
            });
        }
        tx.execute(
            "UPDATE jobs SET reviewed = GREATEST(reviewed + $1, 0), edits = edits + $2 WHERE seq = $3",
            &[
                &edit.reviewed_delta,
                &i32::from(edit.text_changed),
                &seq,
            ],
        )
        .await
        .map_err(pg("edit a chunk"))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&JOB_CHANNEL, &id.to_string()])
            .await
            .map_err(pg("notify"))?;
        tx.commit().await.map_err(pg("edit a chunk"))?;
        Ok(Edited::Done)
    }
}

fn glossary_from_row(
    r: &tokio_postgres::Row,
    with_entries: bool,
) -> Result<GlossaryRecord, StoreError> {
    let bad = |e: String| corrupt(format!("glossary: {e}"));
    Ok(GlossaryRecord {
        id: parse_id(&r.get::<_, String>(0))?,
        tenant: Tenant::parse(&r.get::<_, String>(1)).map_err(|e| bad(e.0))?,
        name: r.get(2),
        entries: if with_entries {
            serde_json::from_str(&r.get::<_, String>(3)).map_err(|e| bad(e.to_string()))?
        } else {
            Vec::new()
        },
        terms: r.get::<_, i32>(4).max(0) as u32,
        created_at: r.get(5),
        updated_at: r.get(6),
    })
}

#[async_trait]
impl GlossaryStore for PgStore {
    async fn glossary_put(&self, g: &GlossaryRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO glossaries (id, tenant, name, entries, terms, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                    entries = excluded.entries, terms = excluded.terms,
                    updated_at = excluded.updated_at
                 WHERE glossaries.tenant = excluded.tenant",
                &[
                    &g.id.to_string(),
                    &g.tenant.as_str(),
                    &g.name,
                    &json(&g.entries)?,
                    &(g.entries.len() as i32),
                    &ms(g.created_at),
                    &ms(g.updated_at),
                ],
            )
            .await
            .map_err(pg("store a glossary"))?;
        Ok(())
    }

    async fn glossary_get(
        &self,
        tenant: &Tenant,
        id: GlossaryId,
    ) -> Result<Option<GlossaryRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT id, tenant, name, entries, terms, created_at, updated_at
                 FROM glossaries WHERE id = $1 AND tenant = $2",
                &[&id.to_string(), &tenant.as_str()],
            )
            .await
            .map_err(pg("read a glossary"))?
            .map(|r| glossary_from_row(&r, true))
            .transpose()
    }

    async fn glossary_list(&self, tenant: &Tenant) -> Result<Vec<GlossaryRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT id, tenant, name, NULL::TEXT, terms, created_at, updated_at
                 FROM glossaries WHERE tenant = $1 ORDER BY created_at, id",
                &[&tenant.as_str()],
            )
            .await
            .map_err(pg("list glossaries"))?
            .iter()
            .map(|r| glossary_from_row(r, false))
            .collect()
    }

    async fn glossary_delete(&self, tenant: &Tenant, id: GlossaryId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM glossaries WHERE id = $1 AND tenant = $2",
                &[&id.to_string(), &tenant.as_str()],
            )
            .await
            .map_err(pg("delete a glossary"))?;
        Ok(n == 1)
    }
}

/// Segment ids and sketch keys fit an i64 (see `segment_id`); keys are
/// stored with their bits as they are.
fn signed(v: u64) -> i64 {
    v as i64
}

#[async_trait]
impl SegmentStore for PgStore {
    /// The segment and its sketch's keys ([`sketch`]) in one commit: the
    /// keys are the index every server's lookups go through.
    async fn segment_put(
        &self,
        tenant: &Tenant,
        source: &str,
        target: &str,
        human: bool,
    ) -> Result<(), StoreError> {
        let id = signed(segment_id(tenant, source, human));
        let keys: Vec<i64> = sketch(source).into_iter().map(signed).collect();
        in_tx!(self, "store a segment", |tx| {
            let sql = if human {
                "INSERT INTO segments (tenant, id, source, target, human, created_at)
                 VALUES ($1, $2, $3, $4, TRUE, $5)
                 ON CONFLICT (tenant, id) DO UPDATE SET target = excluded.target,
                    created_at = excluded.created_at"
            } else {
                "INSERT INTO segments (tenant, id, source, target, human, created_at)
                 VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT DO NOTHING"
            };
            let n = tx
                .execute(
                    sql,
                    &[&tenant.as_str(), &id, &source, &target, &ms(Utc::now())],
                )
                .await
                .map_err(pg("store a segment"))?;
            if n == 1 && !keys.is_empty() {
                tx.execute(
                    "INSERT INTO segment_keys (tenant, key, id)
                     SELECT $1, k, $2 FROM UNNEST($3::BIGINT[]) AS k ON CONFLICT DO NOTHING",
                    &[&tenant.as_str(), &id, &keys],
                )
                .await
                .map_err(pg("store a segment"))?;
            }
        });
        Ok(())
    }

    async fn human_segment(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let id = signed(segment_id(tenant, source, true));
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT target FROM segments WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id],
            )
            .await
            .map_err(pg("read a segment"))?
            .map(|r| r.get(0)))
    }

    /// The segments sharing most keys with the source's sketch, by the
    /// key table's primary index, then ranked by similarity.
    async fn similar_segments(
        &self,
        tenant: &Tenant,
        source: &str,
        k: usize,
        min: f64,
    ) -> Result<Vec<Example>, StoreError> {
        let keys: Vec<i64> = sketch(source).into_iter().map(signed).collect();
        if k == 0 || keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.id, s.source, s.target, s.human, s.created_at
                 FROM (SELECT id, COUNT(*) AS shared FROM segment_keys
                       WHERE tenant = $1 AND key = ANY($2) GROUP BY id
                       ORDER BY shared DESC, id LIMIT $3) AS c
                 JOIN segments s ON s.tenant = $1 AND s.id = c.id",
            )
            .await
            .map_err(pg("find segments"))?;
        let rows = client
            .query(&stmt, &[&tenant.as_str(), &keys, &CANDIDATES])
            .await
            .map_err(pg("find segments"))?;
        let found = rows
            .iter()
            .map(|r| Segment {
                id: r.get::<_, i64>(0) as u64,
                source: r.get(1),
                target: r.get(2),
                human: r.get(3),
                at: r.get(4),
            })
            .collect();
        Ok(best_examples(source, found, k, min))
    }
}
