//! The admission facet: idempotency records, per-tenant rate tokens, and
//! counts of jobs.

use super::*;

#[async_trait]
impl AdmissionStore for SqliteStore {
    async fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> PortResult<IdempotencyRecord> {
        let r = record.clone();
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO idempotency (tenant, key, fingerprint, job_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, key) DO UPDATE SET
                        fingerprint = excluded.fingerprint, job_id = excluded.job_id,
                        created_at = excluded.created_at
                     WHERE idempotency.created_at < ?6",
                    params![
                        r.tenant.as_str(),
                        r.key,
                        r.fingerprint,
                        r.job_id.to_string(),
                        ts(r.created_at),
                        ts(expired_before)
                    ],
                )?;
                let (fingerprint, job_id, created_at): (String, String, String) = query_row(
                    conn,
                    "SELECT fingerprint, job_id, created_at FROM idempotency
                         WHERE tenant = ?1 AND key = ?2",
                    params![r.tenant.as_str(), r.key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                Ok(IdempotencyRecord {
                    tenant: r.tenant,
                    key: r.key,
                    fingerprint,
                    job_id: job_id
                        .parse()
                        .map_err(|e: lotsawa_core::ValidationError| SqliteError::Corrupt(e.0))?,
                    created_at: parse_ts(Some(created_at))?.unwrap_or_default(),
                })
            })
            .await?)
    }

    /// Read, refill and write the bucket on the writer: one at a time.
    async fn take_token(
        &self,
        tenant: &Tenant,
        limit: lotsawa_core::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> PortResult<Option<std::time::Duration>> {
        let tenant = tenant.clone();
        Ok(self
            .write(move |conn| {
                let row: Option<(f64, String)> = conn
                    .query_row(
                        "SELECT tokens, at FROM rate_buckets WHERE tenant = ?1",
                        [tenant.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let (tokens, at) = match row {
                    Some((t, at)) => (Some(t), parse_ts(Some(at))?),
                    None => (None, None),
                };
                let (left, wait) = lotsawa_core::rate::take(limit, tokens, at, now);
                exec(
                    conn,
                    "INSERT INTO rate_buckets (tenant, tokens, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
                    params![tenant.as_str(), left, ts(now)],
                )?;
                Ok(wait)
            })
            .await?)
    }

    async fn counts(&self) -> PortResult<Vec<(JobStatus, u64)>> {
        Ok(self
            .read(move |conn| {
                let mut out = Vec::new();
                let mut stmt =
                    conn.prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = ?1")?;
                for s in JobStatus::ALL {
                    let n: i64 = stmt.query_row([s.as_str()], |r| r.get(0))?;
                    out.push((*s, n.max(0) as u64));
                }
                Ok(out)
            })
            .await?)
    }

    async fn pending_count(&self, tenant: &lotsawa_core::Tenant) -> PortResult<u64> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                let n: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM jobs WHERE tenant = ?1 AND status = 'pending'",
                    )?
                    .query_row([tenant], |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await?)
    }

    async fn slots_in_use(&self) -> PortResult<u32> {
        Ok(self
            .read(move |conn| {
                let n: i64 = query_row(conn, RUNNING_SQL, [], |r| r.get(0))?;
                Ok(n.max(0) as u32)
            })
            .await?)
    }
}
