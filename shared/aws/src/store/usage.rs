//! The usage facet: provider usage per tenant, day, engine and model (one
//! item each, `pk = USAGE#<tenant>`, `sk = <day>#<engine>#<model>`, added to
//! in the chunk's commit), and tenants' monthly token budgets (`sk =
//! BUDGET` beside the tenant's counts).

use lotsawa_core::store::{ChunkUsage, UsageRow, UsageStore};
use lotsawa_core::usage::Usage;

use super::*;

fn usage_pk(tenant: &lotsawa_core::Tenant) -> String {
    format!("USAGE#{tenant}")
}

impl DynamoStore {
    /// Add one committed chunk's usage to its tenant's day.
    pub(super) async fn usage_add(
        &self,
        u: &ChunkUsage,
        day: chrono::NaiveDate,
    ) -> Result<(), StoreError> {
        let sk = format!("{day}#{}#{}", u.engine, u.model.as_deref().unwrap_or(""));
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(usage_pk(&u.tenant), &sk)))
            .update_expression("ADD calls :c, promptTokens :p, completionTokens :o")
            .expression_attribute_values(":c", n(u.usage.calls))
            .expression_attribute_values(":p", n(u.usage.prompt_tokens))
            .expression_attribute_values(":o", n(u.usage.completion_tokens))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(())
    }
}

fn number(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn usage(
        &self,
        tenant: &lotsawa_core::Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(usage_pk(tenant)))
                .expression_attribute_values(":from", s(from.to_string()))
                // Every key of the last day sorts before `<day>$`.
                .expression_attribute_values(":to", s(format!("{to}$")))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            for item in page.items() {
                let Some(sk) = item.get("sk").and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                let mut parts = sk.splitn(3, '#');
                let (Some(day), Some(engine), Some(model)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(day) = day.parse() else { continue };
                out.push(UsageRow {
                    day,
                    engine: engine.to_owned(),
                    model: model.to_owned(),
                    usage: Usage {
                        calls: number(item, "calls"),
                        prompt_tokens: number(item, "promptTokens"),
                        completion_tokens: number(item, "completionTokens"),
                    },
                });
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    async fn budget(&self, tenant: &lotsawa_core::Tenant) -> Result<Option<u64>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(
                crate::items::tenant_counts_pk(tenant),
                "BUDGET",
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.map(|i| number(&i, "monthlyTokens")))
    }

    async fn add_usage(&self, usage: &ChunkUsage) -> Result<(), StoreError> {
        if usage.usage.is_zero() {
            return Ok(());
        }
        self.usage_add(usage, Utc::now().date_naive()).await
    }

    async fn set_budget(
        &self,
        tenant: &lotsawa_core::Tenant,
        tokens: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = Self::key(crate::items::tenant_counts_pk(tenant), "BUDGET");
        match tokens {
            Some(t) => {
                let mut item = key;
                item.insert("monthlyTokens".into(), n(t));
                self.clients
                    .ddb
                    .put_item()
                    .table_name(&self.config.table)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map_err(ddb("DynamoDB PutItem"))?;
            }
            None => {
                self.clients
                    .ddb
                    .delete_item()
                    .table_name(&self.config.table)
                    .set_key(Some(key))
                    .send()
                    .await
                    .map_err(ddb("DynamoDB DeleteItem"))?;
            }
        }
        Ok(())
    }
}
