//! The callback facet: webhook deliveries due, and their state.

use super::*;

#[async_trait]
impl CallbackStore for DynamoStore {
    /// The `KEYS` partition of `gsi2`, then the key items.
    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let resp = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :pk AND gsi2sk <= :now")
            .expression_attribute_values(":pk", s(CALLBACKS_PK))
            .expression_attribute_values(":now", s(format!("{}#~", ts(now))))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(ddb("DynamoDB Query"))?;
        let mut out = Vec::new();
        for item in resp.items() {
            let Some(id) = item
                .get("gsi2sk")
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| sk.rsplit('#').next())
                .and_then(|id| id.parse::<JobId>().ok())
            else {
                continue;
            };
            match self.get(id).await {
                Ok(job)
                    if job
                        .callback
                        .as_ref()
                        .is_some_and(|c| c.status == lotsawa_core::CallbackStatus::Pending) =>
                {
                    out.push(job);
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn callback_update(
        &self,
        id: JobId,
        before: &lotsawa_core::Callback,
        after: &lotsawa_core::Callback,
    ) -> Result<bool, StoreError> {
        let update = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET #cb = :after")
            .condition_expression("#cb = :before")
            .expression_attribute_names("#cb", "callback")
            .expression_attribute_values(":after", s(serde_json::to_string(after).map_err(build)?))
            .expression_attribute_values(
                ":before",
                s(serde_json::to_string(before).map_err(build)?),
            )
            .build()
            .map_err(build)?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            self.callback_marker(id, Some(after))?,
        ];
        match self.transact(items).await? {
            Tx::Done => Ok(true),
            Tx::ConditionFailed => Ok(false),
        }
    }
}
