//! The batch facet: batches of jobs and their pages.

use super::*;

#[async_trait]
impl BatchStore for SqliteStore {
    async fn batch_put(&self, batch: &lotsawa_core::batch::Batch) -> PortResult<()> {
        let b = batch.clone();
        let items =
            serde_json::to_string(&b.items).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO batches (id, tenant, created_at, items) VALUES (?1, ?2, ?3, ?4)",
                    params![b.id.to_string(), b.tenant.as_str(), ts(b.created_at), items],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn batch_get(&self, id: lotsawa_core::BatchId) -> PortResult<lotsawa_core::batch::Batch> {
        Ok(self
            .read(move |conn| {
                query_row(
                    conn,
                    "SELECT seq, id, tenant, created_at, items FROM batches WHERE id = ?1",
                    [id.to_string()],
                    batch_from_row,
                )
                .optional()?
                .ok_or(SqliteError::BatchNotFound(id))?
                .into_batch()
            })
            .await?)
    }

    async fn batch_list(
        &self,
        tenant: &Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> PortResult<(Vec<lotsawa_core::batch::Batch>, Option<String>)> {
        let before: i64 = match after {
            Some(p) => p
                .parse()
                .map_err(|_| lotsawa_core::StoreError::InvalidCursor(p.to_owned()))?,
            None => i64::MAX,
        };
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, id, tenant, created_at, items FROM batches \
                     WHERE tenant = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![tenant, before, i64::from(limit) + 1],
                    batch_from_row,
                )?;
                let mut raws = Vec::new();
                for r in rows {
                    raws.push(r?);
                }
                let more = raws.len() > limit as usize;
                raws.truncate(limit as usize);
                let next = if more {
                    raws.last().map(|r| r.seq.to_string())
                } else {
                    None
                };
                let mut out = Vec::with_capacity(raws.len());
                for r in raws {
                    out.push(r.into_batch()?);
                }
                Ok((out, next))
            })
            .await?)
    }
}
