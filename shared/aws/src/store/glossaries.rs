//! The glossary facet: tenants' glossaries, one item each in the tenant's
//! partition.

use lotsawa_core::glossaries::GlossaryRecord;
use lotsawa_core::job::GlossaryId;
use lotsawa_core::store::GlossaryStore;

use super::*;
use crate::items::{
    GLOSSARY_PREFIX, GLOSSARY_SUMMARY, glossary_from_item, glossary_item, glossary_sk,
};

#[async_trait]
impl GlossaryStore for DynamoStore {
    async fn glossary_put(&self, g: &GlossaryRecord) -> Result<(), StoreError> {
        let item = glossary_item(g)?;
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            // Another tenant's glossary is never replaced.
            .condition_expression("attribute_not_exists(pk) OR tenant = :t")
            .expression_attribute_values(":t", s(g.tenant.as_str()))
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn glossary_get(
        &self,
        tenant: &lotsawa_core::Tenant,
        id: GlossaryId,
    ) -> Result<Option<GlossaryRecord>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(
                crate::items::tenant_counts_pk(tenant),
                &glossary_sk(id),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.map(|i| glossary_from_item(&i)).transpose()?)
    }

    async fn glossary_list(
        &self,
        tenant: &lotsawa_core::Tenant,
    ) -> Result<Vec<GlossaryRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(crate::items::tenant_counts_pk(tenant)))
                .expression_attribute_values(":prefix", s(GLOSSARY_PREFIX))
                .projection_expression(GLOSSARY_SUMMARY)
                .expression_attribute_names("#name", "name")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            for item in page.items() {
                out.push(glossary_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        out.sort_by_key(|a| (a.created_at, a.id));
        Ok(out)
    }

    async fn glossary_delete(
        &self,
        tenant: &lotsawa_core::Tenant,
        id: GlossaryId,
    ) -> Result<bool, StoreError> {
        let out = self
            .clients
            .ddb
            .delete_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(
                crate::items::tenant_counts_pk(tenant),
                &glossary_sk(id),
            )))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(ddb("DynamoDB DeleteItem"))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
