//! The batch facet: batches of jobs and their pages.

use super::*;

#[async_trait]
impl BatchStore for DynamoStore {
    async fn batch_put(&self, batch: &lotsawa_core::batch::Batch) -> Result<(), StoreError> {
        let item = crate::items::batch_item(batch)?;
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn batch_get(
        &self,
        id: lotsawa_core::BatchId,
    ) -> Result<lotsawa_core::batch::Batch, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(crate::items::batch_pk(id), "BATCH")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out.item.ok_or(StoreError::BatchNotFound(id))?;
        Ok(crate::items::batch_from_item(id, &item)?)
    }

    async fn batch_list(
        &self,
        tenant: &lotsawa_core::Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<lotsawa_core::batch::Batch>, Option<String>), StoreError> {
        let start = match after {
            Some(pos) => {
                let id: lotsawa_core::BatchId = pos
                    .rsplit_once('#')
                    .and_then(|(_, id)| id.parse().ok())
                    .ok_or_else(|| StoreError::InvalidCursor(pos.to_owned()))?;
                let mut key = Self::key(crate::items::batch_pk(id), "BATCH");
                key.insert("gsi2pk".into(), s(crate::items::batches_pk(tenant)));
                key.insert("gsi2sk".into(), s(pos));
                Some(key)
            }
            None => None,
        };
        let out = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s(crate::items::batches_pk(tenant)))
            .scan_index_forward(false)
            .limit(limit.max(1) as i32 + 1)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(ddb("DynamoDB Query"))?;
        let mut positions: Vec<String> = out
            .items()
            .iter()
            .filter_map(|i| i.get("gsi2sk").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let more = positions.len() > limit as usize;
        positions.truncate(limit as usize);
        let mut batches = Vec::with_capacity(positions.len());
        for pos in &positions {
            let id = pos
                .rsplit_once('#')
                .and_then(|(_, id)| id.parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("batch index key {pos}")))?;
            match BatchStore::batch_get(self, id).await {
                Ok(b) => batches.push(b),
                Err(StoreError::BatchNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let next = if more {
            positions.last().cloned()
        } else {
            None
        };
        Ok((batches, next))
    }
}
