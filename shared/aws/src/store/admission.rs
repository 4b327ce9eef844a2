//! The admission facet: idempotency records, per-tenant rate tokens, and
//! counts of jobs and slots.

use super::*;

#[async_trait]
impl AdmissionStore for DynamoStore {
    /// `IDEM#<tenant>#<sha256 of the key>`: a conditional put (none there,
    /// or one older than the window), else the one there. Expires by TTL
    /// two days after it is made.
    async fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotencyRecord, StoreError> {
        let item = crate::items::idempotency_item(record)?;
        let put = self
            .clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR createdAt < :cutoff")
            .expression_attribute_values(":cutoff", s(ts(expired_before)))
            .send()
            .await
            .map_err(ddb("DynamoDB PutItem"));
        match put {
            Ok(_) => return Ok(record.clone()),
            Err(StoreError::ConditionFailed(_)) => {}
            Err(e) => return Err(e),
        }
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(
                crate::items::idempotency_pk(&record.tenant, &record.key),
                "IDEM",
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out
            .item
            .ok_or_else(|| StoreError::Corrupt("idempotency record vanished".into()))?;
        Ok(crate::items::idempotency_from_item(record, &item)?)
    }

    /// `RATE#<tenant>`: read, refill, and write back on the condition that
    /// nobody wrote it meanwhile (optimistic; tried again on a race).
    async fn take_token(
        &self,
        tenant: &lotsawa_core::Tenant,
        limit: lotsawa_core::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let key = Self::key(crate::items::rate_pk(tenant), "RATE");
        for _ in 0..8 {
            let out = self
                .clients
                .ddb
                .get_item()
                .table_name(&self.config.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(ddb("DynamoDB GetItem"))?;
            let prev = out.item.as_ref().map(crate::items::rate_from_item);
            let prev = prev.unwrap_or_default();
            let (left, wait) = lotsawa_core::rate::take(limit, prev.tokens, prev.at, now);
            // Unique per write, so the condition tells any other writer apart.
            let writer = uuid::Uuid::new_v4().to_string();
            let item = crate::items::rate_item(tenant, left, now, &writer)?;
            let mut put = self
                .clients
                .ddb
                .put_item()
                .table_name(&self.config.table)
                .set_item(Some(item));
            put = match prev.writer {
                Some(w) => put
                    .condition_expression("writer = :w")
                    .expression_attribute_values(":w", s(w)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match put.send().await.map_err(ddb("DynamoDB PutItem")) {
                Ok(_) => return Ok(wait),
                Err(StoreError::ConditionFailed(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Throttled(
            "the tenant's rate bucket kept changing".into(),
        ))
    }

    /// The status counters, kept in the transactions that create jobs and
    /// change their status, summed over their shards.
    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let mut keys: Vec<Item> = (0..LIST_SHARDS)
            .map(|i| Self::key(counts_pk(i), "COUNTS"))
            .collect();
        let items = self.batch_get(&mut keys, true).await?;
        Ok(JobStatus::ALL
            .iter()
            .map(|st| {
                let total: i64 = items
                    .iter()
                    .filter_map(|i| i.get(st.as_str())?.as_n().ok()?.parse::<i64>().ok())
                    .sum();
                (*st, total.max(0) as u64)
            })
            .collect())
    }

    /// The tenant's counter item, kept in the same transactions as the
    /// status counters; read consistently (one read unit).
    async fn pending_count(&self, tenant: &lotsawa_core::Tenant) -> Result<u64, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(tenant_counts_pk(tenant), "COUNTS")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let n = out
            .item
            .as_ref()
            .and_then(|i| i.get("pending")?.as_n().ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }

    async fn slots_in_use(&self) -> Result<u32, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out
            .item
            .and_then(|i| {
                i.get("count")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0))
    }
}
