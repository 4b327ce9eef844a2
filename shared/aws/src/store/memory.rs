//! The translation memory facet.

use super::*;

#[async_trait]
impl MemoryStore for DynamoStore {
    async fn memory_get(&self, key: &str) -> Result<Option<(String, Option<f64>)>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(crate::items::memory_pk(key), "MEM")))
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.as_ref().and_then(crate::items::memory_from_item))
    }

    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> Result<(), StoreError> {
        if translation.len() > INLINE_LIMIT {
            // Too large for an item; the memory is a cache, not a record.
            return Ok(());
        }
        let item = crate::items::memory_item(
            key,
            translation,
            confidence,
            Utc::now().timestamp() + i64::from(self.config.memory_ttl_days) * 86_400,
        )?;
        let r = self
            .clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"));
        match r {
            Ok(_) | Err(StoreError::ConditionFailed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
