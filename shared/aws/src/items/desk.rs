//! The translator's desk's items: tenants' glossaries
//! (`TENANT#<tenant>`/`GLOSSARY#<id>`), their terms as lines.

use chrono::{DateTime, Utc};
use lotsawa_core::Tenant;
use lotsawa_core::glossaries::GlossaryRecord;
use lotsawa_core::job::GlossaryId;
use serde::{Deserialize, Serialize};

use super::kinds::{Stamp, from_item, glossary_from_lines, glossary_to_lines, to_item};
use super::*;

/// The sort key of a glossary item.
pub fn glossary_sk(id: GlossaryId) -> String {
    format!("GLOSSARY#{id}")
}

/// The sort-key prefix of a tenant's glossaries.
pub const GLOSSARY_PREFIX: &str = "GLOSSARY#";

/// The attributes a glossary list reads (not the terms).
pub const GLOSSARY_SUMMARY: &str = "pk, sk, id, tenant, #name, terms, createdAt, updatedAt";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GlossaryRow {
    #[serde(default)]
    pk: String,
    #[serde(default)]
    sk: String,
    id: GlossaryId,
    tenant: Tenant,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entries: Option<String>,
    terms: u32,
    created_at: Stamp,
    updated_at: Stamp,
}

/// The item of a glossary.
pub fn glossary_item(g: &GlossaryRecord) -> Result<Item, Corrupt> {
    let row = GlossaryRow {
        pk: tenant_counts_pk(&g.tenant),
        sk: glossary_sk(g.id),
        id: g.id,
        tenant: g.tenant.clone(),
        name: g.name.clone(),
        entries: glossary_to_lines(&g.entries)?,
        terms: g.entries.len() as u32,
        created_at: Stamp(g.created_at),
        updated_at: Stamp(g.updated_at),
    };
    to_item(&row, "glossary item")
}

/// A glossary read back (terms empty when the item was read without them).
pub fn glossary_from_item(item: &Item) -> Result<GlossaryRecord, Corrupt> {
    let row: GlossaryRow = from_item(item, "glossary item")?;
    let entries = match row.entries.as_deref() {
        Some(lines) => glossary_from_lines(lines)?,
        None => Vec::new(),
    };
    Ok(GlossaryRecord {
        id: row.id,
        tenant: row.tenant,
        name: row.name,
        entries,
        terms: row.terms,
        created_at: row.created_at.0,
        updated_at: row.updated_at.0,
    })
}

/// When a glossary item was written (for tests of the mapping).
pub fn glossary_updated(item: &Item) -> Option<DateTime<Utc>> {
    glossary_from_item(item).ok().map(|g| g.updated_at)
}
