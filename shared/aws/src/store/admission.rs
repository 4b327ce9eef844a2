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
        let pk = format!(
            "IDEM#{}#{}",
            record.tenant,
            lotsawa_core::auth::key_hash(&record.key)
        );
        let mut item = Self::key(pk.clone(), "IDEM");
        item.insert("fingerprint".into(), s(record.fingerprint.clone()));
        item.insert("jobId".into(), s(record.job_id.to_string()));
        item.insert("createdAt".into(), s(ts(record.created_at)));
        item.insert(
            "expiresAt".into(),
            n(record.created_at.timestamp() + 2 * 86_400),
        );
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
            .set_key(Some(Self::key(pk, "IDEM")))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out
            .item
            .ok_or_else(|| StoreError::Corrupt("idempotency record vanished".into()))?;
        let get = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("idempotency record: no {k}")))
        };
        Ok(IdempotencyRecord {
            tenant: record.tenant.clone(),
            key: record.key.clone(),
            fingerprint: get("fingerprint")?,
            job_id: get("jobId")?
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| StoreError::Corrupt(e.0))?,
            created_at: DateTime::parse_from_rfc3339(&get("createdAt")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .with_timezone(&Utc),
        })
    }

    /// `RATE#<tenant>`: read, refill, and write back on the condition that
    /// nobody wrote it meanwhile (optimistic; tried again on a race).
    async fn take_token(
        &self,
        tenant: &lotsawa_core::Tenant,
        limit: lotsawa_core::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let key = Self::key(format!("RATE#{tenant}"), "RATE");
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
            let prev_at = out
                .item
                .as_ref()
                .and_then(|i| i.get("at"))
                .and_then(|v| v.as_s().ok())
                .cloned();
            let tokens = out
                .item
                .as_ref()
                .and_then(|i| i.get("tokens"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<f64>().ok());
            let at = prev_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let (left, wait) = lotsawa_core::rate::take(limit, tokens, at, now);
            let mut item = key.clone();
            item.insert("tokens".into(), n(left));
            item.insert("at".into(), s(ts(now)));
            // Unique per write, so the condition tells any other writer apart.
            item.insert("writer".into(), s(uuid::Uuid::new_v4().to_string()));
            item.insert("expiresAt".into(), n(now.timestamp() + 86_400));
            let mut put = self
                .clients
                .ddb
                .put_item()
                .table_name(&self.config.table)
                .set_item(Some(item));
            put = match out.item.as_ref().and_then(|i| i.get("writer")) {
                Some(w) => put
                    .condition_expression("writer = :w")
                    .expression_attribute_values(":w", w.clone()),
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
