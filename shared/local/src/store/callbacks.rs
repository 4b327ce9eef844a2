//! The callback facet: webhook deliveries due, and their state.

use super::*;

#[async_trait]
impl CallbackStore for SqliteStore {
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> PortResult<Vec<Job>> {
        let now = ts(now);
        Ok(self
            .read(move |conn| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_callback_due \
                     WHERE callback_due IS NOT NULL AND callback_due <= ?1 \
                     ORDER BY callback_due LIMIT ?2"
                );
                let rows: Vec<(i64, RawJob)> = conn
                    .prepare_cached(&sql)?
                    .query_map(params![now, limit], job_from_row)?
                    .collect::<Result<_, _>>()?;
                rows.into_iter().map(|(_, r)| r.into_job()).collect()
            })
            .await?)
    }

    async fn callback_update(
        &self,
        id: JobId,
        before: &lotsawa_core::Callback,
        after: &lotsawa_core::Callback,
    ) -> PortResult<bool> {
        let before =
            serde_json::to_string(before).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        let after = after.clone();
        Ok(self
            .write(move |conn| {
                let mut sets = Vec::new();
                let mut args: Vec<rusqlite::types::Value> = Vec::new();
                set_callback(&mut sets, &mut args, &Field::Set(after))?;
                args.push(id.to_string().into());
                let n_id = args.len();
                args.push(before.into());
                let n_before = args.len();
                let sql = format!(
                    "UPDATE jobs SET {} WHERE id = ?{n_id} AND callback = ?{n_before}",
                    sets.join(", ")
                );
                Ok(exec(conn, &sql, rusqlite::params_from_iter(args))? == 1)
            })
            .await?)
    }
}
