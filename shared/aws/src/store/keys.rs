//! The API key facet: keys stored by their hash.

use super::*;

#[async_trait]
impl KeyStore for DynamoStore {
    async fn key_put(&self, record: &ApiKeyRecord, hash: &str) -> Result<(), StoreError> {
        self.clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(new_key_item(record, hash)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn key_find(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(key_pk(hash), "KEY")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.map(|i| key_from_item(&i)).transpose()?)
    }

    async fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s("KEYS"));
        let keys: Vec<Item> = self
            .query_all(query)
            .await?
            .into_iter()
            .filter_map(|i| {
                Some(Self::key(
                    i.get("pk")?.as_s().ok()?.clone(),
                    i.get("sk")?.as_s().ok()?,
                ))
            })
            .collect();
        let mut out = Vec::new();
        for part in keys.chunks(100) {
            for item in self.batch_get(&mut part.to_vec(), true).await? {
                out.push(key_from_item(&item)?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s("KEYS"));
        let suffix = format!("#{id}");
        let Some(pk) = self.query_all(query).await?.into_iter().find_map(|i| {
            i.get("gsi2sk")?
                .as_s()
                .ok()?
                .ends_with(&suffix)
                .then(|| i.get("pk")?.as_s().ok().cloned())?
        }) else {
            return Ok(false);
        };
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(pk, "KEY")))
            .update_expression("SET revokedAt = if_not_exists(revokedAt, :at)")
            .expression_attribute_values(":at", s(ts(at)))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(true)
    }
}
