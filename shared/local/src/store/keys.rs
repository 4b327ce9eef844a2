//! The API key facet: keys stored by their hash.

use super::*;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key_put(&self, record: &ApiKeyRecord, hash: &str) -> PortResult<()> {
        let (r, hash) = (record.clone(), hash.to_owned());
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO api_keys (id, hash, tenant, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        r.id,
                        hash,
                        r.tenant.as_str(),
                        ts(r.created_at),
                        r.revoked_at.map(ts)
                    ],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn key_find(&self, hash: &str) -> PortResult<Option<ApiKeyRecord>> {
        let hash = hash.to_owned();
        Ok(self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, tenant, created_at, revoked_at FROM api_keys WHERE hash = ?1",
                )?
                .query_row([hash], key_from_row)
                .optional()?
                .map(RawKey::into_record)
                .transpose()
            })
            .await?)
    }

    async fn keys(&self) -> PortResult<Vec<ApiKeyRecord>> {
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                "SELECT id, tenant, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
            )?;
                let rows = stmt.query_map([], key_from_row)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.into_record()?);
                }
                Ok(out)
            })
            .await?)
    }

    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> PortResult<bool> {
        let id = id.to_owned();
        Ok(self
            .write(move |conn| {
                let n = exec(
                    conn,
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, ts(at)],
                )?;
                Ok(n > 0)
            })
            .await?)
    }
}
