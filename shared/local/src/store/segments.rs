//! The segment memory facet: segments in their table, found exactly by
//! their id, and by similarity through a per-tenant in-process
//! [`FuzzyIndex`] built from the table at the tenant's first lookup (one
//! server owns the file, so its writes keep the index current).

use std::collections::HashMap;

use lotsawa_core::fuzzy::{Entry, FuzzyIndex};
use lotsawa_core::segments::{Example, Segment, best_examples, segment_id};
use lotsawa_core::store::SegmentStore;

use super::*;

/// Candidates a lookup ranks beyond the `k` asked for: the index's own
/// order is by shared keys, the final one by similarity.
const LOOKUP_EXTRA: usize = 8;

/// Each tenant's fuzzy index, once built.
#[derive(Default)]
pub(super) struct FuzzyIndexes {
    tenants: tokio::sync::Mutex<HashMap<String, Arc<std::sync::RwLock<FuzzyIndex>>>>,
}

impl std::fmt::Debug for FuzzyIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzyIndexes").finish_non_exhaustive()
    }
}

fn id_sql(id: u64) -> i64 {
    // Segment ids fit an i64 (see `segment_id`).
    i64::try_from(id).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// `tenant`'s index, built from its segments when first asked for.
    async fn index_of(
        &self,
        tenant: &Tenant,
    ) -> Result<Arc<std::sync::RwLock<FuzzyIndex>>, SqliteError> {
        let mut tenants = self.fuzzy.tenants.lock().await;
        if let Some(i) = tenants.get(tenant.as_str()) {
            return Ok(i.clone());
        }
        let name = tenant.as_str().to_owned();
        let index = self
            .read(move |conn| {
                let mut stmt =
                    conn.prepare("SELECT id, source, human FROM segments WHERE tenant = ?1")?;
                let rows = stmt.query_map([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })?;
                let mut index = FuzzyIndex::new();
                for row in rows {
                    let (id, source, human) = row?;
                    index.insert(Entry {
                        id: id.max(0) as u64,
                        source,
                        human,
                    });
                }
                Ok(index)
            })
            .await?;
        let index = Arc::new(std::sync::RwLock::new(index));
        tenants.insert(tenant.as_str().to_owned(), index.clone());
        Ok(index)
    }

    /// Add a written segment to its tenant's index, when built.
    async fn indexed(&self, tenant: &Tenant, entry: Entry) {
        let tenants = self.fuzzy.tenants.lock().await;
        if let Some(i) = tenants.get(tenant.as_str()) {
            i.write().unwrap_or_else(|p| p.into_inner()).insert(entry);
        }
    }
}

#[async_trait]
impl SegmentStore for SqliteStore {
    async fn segment_put(
        &self,
        tenant: &Tenant,
        source: &str,
        target: &str,
        human: bool,
    ) -> PortResult<()> {
        let id = segment_id(tenant, source, human);
        let (name, src, tgt) = (
            tenant.as_str().to_owned(),
            source.to_owned(),
            target.to_owned(),
        );
        let written = self
            .write(move |conn| {
                // A person's newer translation replaces the older one; an
                // engine's first answer stays.
                let sql = if human {
                    "INSERT INTO segments (tenant, id, source, target, human, created_at)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5)
                     ON CONFLICT (tenant, id) DO UPDATE SET target = excluded.target,
                        created_at = excluded.created_at"
                } else {
                    "INSERT OR IGNORE INTO segments (tenant, id, source, target, human, created_at)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)"
                };
                Ok(exec(
                    conn,
                    sql,
                    params![name, id_sql(id), src, tgt, ts(Utc::now())],
                )? == 1)
            })
            .await?;
        if written {
            self.indexed(
                tenant,
                Entry {
                    id,
                    source: source.to_owned(),
                    human,
                },
            )
            .await;
        }
        Ok(())
    }

    async fn human_segment(&self, tenant: &Tenant, source: &str) -> PortResult<Option<String>> {
        let id = segment_id(tenant, source, true);
        let name = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT target FROM segments WHERE tenant = ?1 AND id = ?2",
                        params![name, id_sql(id)],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?)
    }

    async fn similar_segments(
        &self,
        tenant: &Tenant,
        source: &str,
        k: usize,
        min: f64,
    ) -> PortResult<Vec<Example>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let index = self.index_of(tenant).await?;
        let query = source.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            index
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .lookup(&query, k + LOOKUP_EXTRA, min)
        })
        .await
        .map_err(|e| SqliteError::Join(e.to_string()))?;
        if matches.is_empty() {
            return Ok(Vec::new());
        }
        let name = tenant.as_str().to_owned();
        let ids: Vec<i64> = matches.iter().map(|m| id_sql(m.id)).collect();
        let found = self
            .read(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                let mut stmt = conn.prepare_cached(
                    "SELECT id, source, target, human, created_at FROM segments WHERE tenant = ?1 AND id = ?2",
                )?;
                for id in ids {
                    let row = stmt
                        .query_row(params![name, id], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, bool>(3)?,
                                r.get::<_, String>(4)?,
                            ))
                        })
                        .optional()?;
                    if let Some((id, source, target, human, at)) = row {
                        out.push(Segment {
                            id: id.max(0) as u64,
                            source,
                            target,
                            human,
                            at: parse_ts(Some(at))?.unwrap_or_default(),
                        });
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(best_examples(source, found, k, min))
    }
}
