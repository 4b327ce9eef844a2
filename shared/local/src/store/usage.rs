//! The usage facet: provider usage per tenant, day, engine and model
//! (written by each committed chunk, see `checkpoint_in`), and tenants'
//! monthly token budgets.

use lotsawa_core::store::{UsageRow, UsageStore};
use lotsawa_core::usage::Usage;

use super::*;

#[async_trait]
impl UsageStore for SqliteStore {
    async fn usage(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> PortResult<Vec<UsageRow>> {
        let tenant = tenant.as_str().to_owned();
        let (from, to) = (from.to_string(), to.to_string());
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT day, engine, model, calls, prompt_tokens, completion_tokens
                     FROM usage WHERE tenant = ?1 AND day >= ?2 AND day <= ?3
                     ORDER BY day, engine, model",
                )?;
                let rows = stmt.query_map(params![tenant, from, to], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        [
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                        ],
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (day, engine, model, [calls, prompt, completion]) = row?;
                    let day = day
                        .parse()
                        .map_err(|_| SqliteError::Corrupt(format!("usage day '{day}'")))?;
                    out.push(UsageRow {
                        day,
                        engine,
                        model,
                        usage: Usage {
                            calls: calls.max(0) as u64,
                            prompt_tokens: prompt.max(0) as u64,
                            completion_tokens: completion.max(0) as u64,
                        },
                    });
                }
                Ok(out)
            })
            .await?)
    }

    async fn budget(&self, tenant: &Tenant) -> PortResult<Option<u64>> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT monthly_tokens FROM budgets WHERE tenant = ?1")?
                    .query_row([tenant], |r| r.get::<_, i64>(0))
                    .optional()?
                    .map(|n| n.max(0) as u64))
            })
            .await?)
    }

    async fn add_usage(&self, usage: &lotsawa_core::store::ChunkUsage) -> PortResult<()> {
        if usage.usage.is_zero() {
            return Ok(());
        }
        let u = usage.clone();
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO usage (tenant, day, engine, model, calls, prompt_tokens, completion_tokens)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, day, engine, model) DO UPDATE SET
                        calls = calls + excluded.calls,
                        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                        completion_tokens = completion_tokens + excluded.completion_tokens",
                    params![
                        u.tenant.as_str(),
                        Utc::now().format("%Y-%m-%d").to_string(),
                        u.engine,
                        u.model.as_deref().unwrap_or(""),
                        u.usage.calls as i64,
                        u.usage.prompt_tokens as i64,
                        u.usage.completion_tokens as i64
                    ],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn set_budget(&self, tenant: &Tenant, tokens: Option<u64>) -> PortResult<()> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .write(move |conn| {
                match tokens {
                    Some(n) => exec(
                        conn,
                        "INSERT INTO budgets (tenant, monthly_tokens) VALUES (?1, ?2)
                         ON CONFLICT (tenant) DO UPDATE SET monthly_tokens = excluded.monthly_tokens",
                        params![tenant, i64::try_from(n).unwrap_or(i64::MAX)],
                    )?,
                    None => exec(conn, "DELETE FROM budgets WHERE tenant = ?1", [tenant])?,
                };
                Ok(())
            })
            .await?)
    }
}
