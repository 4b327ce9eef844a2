//! The glossary facet: tenants' glossaries, their terms as JSON.

use lotsawa_core::glossaries::GlossaryRecord;
use lotsawa_core::job::GlossaryId;
use lotsawa_core::store::GlossaryStore;

use super::*;

fn record_from_row(r: &Row<'_>, with_entries: bool) -> rusqlite::Result<RawGlossary> {
    Ok(RawGlossary {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        entries: if with_entries { r.get(3)? } else { None },
        terms: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

struct RawGlossary {
    id: String,
    tenant: String,
    name: String,
    entries: Option<String>,
    terms: u32,
    created_at: String,
    updated_at: String,
}

impl RawGlossary {
    fn into_record(self) -> Result<GlossaryRecord, SqliteError> {
        let corrupt = |e: String| SqliteError::Corrupt(format!("glossary: {e}"));
        Ok(GlossaryRecord {
            id: self
                .id
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))?,
            tenant: Tenant::parse(&self.tenant).map_err(|e| corrupt(e.0))?,
            name: self.name,
            entries: match self.entries {
                Some(e) => serde_json::from_str(&e).map_err(|e| corrupt(e.to_string()))?,
                None => Vec::new(),
            },
            terms: self.terms,
            created_at: parse_ts(Some(self.created_at))?.unwrap_or_default(),
            updated_at: parse_ts(Some(self.updated_at))?.unwrap_or_default(),
        })
    }
}

#[async_trait]
impl GlossaryStore for SqliteStore {
    async fn glossary_put(&self, g: &GlossaryRecord) -> PortResult<()> {
        let entries = serde_json::to_string(&g.entries)
            .map_err(|e| SqliteError::Corrupt(format!("glossary entries: {e}")))?;
        let g = g.clone();
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO glossaries (id, tenant, name, entries, terms, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                        entries = excluded.entries, terms = excluded.terms,
                        updated_at = excluded.updated_at
                     WHERE tenant = excluded.tenant",
                    params![
                        g.id.to_string(),
                        g.tenant.as_str(),
                        g.name,
                        entries,
                        g.entries.len() as i64,
                        ts(g.created_at),
                        ts(g.updated_at)
                    ],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn glossary_get(
        &self,
        tenant: &Tenant,
        id: GlossaryId,
    ) -> PortResult<Option<GlossaryRecord>> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                conn.query_row(
                    "SELECT id, tenant, name, entries, terms, created_at, updated_at
                     FROM glossaries WHERE id = ?1 AND tenant = ?2",
                    params![id.to_string(), tenant],
                    |r| record_from_row(r, true),
                )
                .optional()?
                .map(RawGlossary::into_record)
                .transpose()
            })
            .await?)
    }

    async fn glossary_list(&self, tenant: &Tenant) -> PortResult<Vec<GlossaryRecord>> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, tenant, name, NULL, terms, created_at, updated_at
                     FROM glossaries WHERE tenant = ?1 ORDER BY created_at, id",
                )?;
                let rows = stmt.query_map([tenant], |r| record_from_row(r, false))?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.into_record()?);
                }
                Ok(out)
            })
            .await?)
    }

    async fn glossary_delete(&self, tenant: &Tenant, id: GlossaryId) -> PortResult<bool> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .write(move |conn| {
                Ok(exec(
                    conn,
                    "DELETE FROM glossaries WHERE id = ?1 AND tenant = ?2",
                    params![id.to_string(), tenant],
                )? == 1)
            })
            .await?)
    }
}
