//! Writes: the transaction of a status change (with its slot and counts),
//! claims and executions, and the events a written change makes.

use super::*;

impl DynamoStore {
    /// The marker that lists a job under `CALLBACKS` in `gsi2` while its
    /// callback is pending, keyed by when it is due; deleted otherwise.
    pub(super) fn callback_marker(
        &self,
        id: JobId,
        callback: Option<&lotsawa_core::Callback>,
    ) -> Result<TransactWriteItem, StoreError> {
        let due = callback
            .filter(|c| c.status == lotsawa_core::CallbackStatus::Pending)
            .and_then(|c| c.next_attempt_at);
        Ok(match due {
            Some(due) => {
                // Gone with its (finished) job.
                let item = crate::items::callback_marker_item(id, due, self.ttl(Utc::now()))?;
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.config.table)
                            .set_item(Some(item))
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
            None => TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.config.table)
                        .set_key(Some(Self::key(job_pk(id), CALLBACK_SK)))
                        .build()
                        .map_err(build)?,
                )
                .build(),
        })
    }

    pub(super) fn release_item(&self) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
                    .update_expression("SET #c = #c - :one")
                    .condition_expression("#c > :zero")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":zero", n(0))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    pub(super) fn take_item(&self, limit: u32) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(SEMAPHORE.into(), SEMAPHORE)))
                    .update_expression("SET #c = if_not_exists(#c, :zero) + :one")
                    .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":limit", n(limit))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    /// Write `requests` with BatchWriteItem, 25 at a time, until none is
    /// left unprocessed (ten rounds with backoff per batch, then an error
    /// naming `what`).
    pub(super) async fn batch_write(
        &self,
        requests: Vec<WriteRequest>,
        what: &str,
    ) -> Result<(), StoreError> {
        for batch in requests.chunks(25) {
            let mut pending = HashMap::from([(self.config.table.clone(), batch.to_vec())]);
            for round in 0..10 {
                let out = self
                    .clients
                    .ddb
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(ddb("DynamoDB BatchWriteItem"))?;
                match out.unprocessed_items {
                    Some(u) if !u.is_empty() => {
                        if round == 9 {
                            return Err(StoreError::Throttled(
                                format!("{what} stayed unprocessed after 10 rounds").into(),
                            ));
                        }
                        pending = u;
                        tokio::time::sleep(ROUND_BACKOFF.ceiling(round + 2)).await;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Write items in one transaction. A conflict with another transaction,
    /// throttling and server errors that outlast the SDK's own retries are
    /// tried again with full-jitter exponential backoff, under one client
    /// request token, so a transaction that did commit before its answer
    /// was lost is not applied twice (DynamoDB answers a repeated token with
    /// the first outcome for 10 minutes); what still fails is returned.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Tx, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0u32;
        loop {
            let out = tx_outcome(
                self.clients
                    .ddb
                    .transact_write_items()
                    .set_transact_items(Some(items.clone()))
                    .client_request_token(&token)
                    .send()
                    .await,
            );
            match out {
                Err(e) if e.is_retryable() && attempt + 1 < TX_ATTEMPTS => {
                    attempt += 1;
                    let wait = TX_BACKOFF.full_jitter(attempt, rand::random());
                    tracing::warn!(attempt, wait_ms = wait.as_millis(), error = %e, "transaction not written; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// The job update of a planned patch: what it sets and removes, under
    /// the compare-and-set on status and run.
    pub(super) async fn patch_update(
        &self,
        id: JobId,
        patch: &JobPatch,
        now: DateTime<Utc>,
    ) -> Result<
        (
            aws_sdk_dynamodb::types::builders::UpdateBuilder,
            Option<aws_sdk_dynamodb::types::builders::UpdateBuilder>,
        ),
        StoreError,
    > {
        let mut sets = vec![
            "#st = :to".to_owned(),
            "#run = :att".to_owned(),
            "gsi1pk = :g1".to_owned(),
            "gsi5pk = :g5".to_owned(),
            // A job written before the tenant status index existed gets its
            // sort key there from the status index's (the same value).
            "gsi5sk = if_not_exists(gsi5sk, gsi1sk)".to_owned(),
        ];
        let mut removes: Vec<&str> = Vec::new();
        let mut u = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":to", s(patch.to.as_str()))
            .expression_attribute_values(":att", n(patch.new_run))
            .expression_attribute_values(":g1", s(status_pk(patch.to, shard_of(id))))
            .expression_attribute_values(
                ":g5",
                s(tenant_status_pk(&patch.tenant, patch.to, shard_of(id))),
            )
            .expression_attribute_values(":from", s(patch.from.as_str()))
            .expression_attribute_values(":run", n(patch.run));
        let mut condition = "#st = :from AND #run = :run".to_owned();
        if patch.from == JobStatus::Pending && patch.to != JobStatus::Pending {
            removes.extend(["gsi4pk", "gsi4sk"]);
        } else if patch.from != JobStatus::Pending && patch.to == JobStatus::Pending {
            // Back: the end of the current turn; front: before every turn.
            let (turn, at) = match patch.queue {
                lotsawa_core::store::QueuePlace::Front => (0, ts(DateTime::<Utc>::UNIX_EPOCH)),
                _ => (self.current_turn(patch.priority).await?, ts(now)),
            };
            u = u
                .expression_attribute_values(":q4pk", s(crate::items::queue_pk(shard_of(id))))
                .expression_attribute_values(
                    ":q4sk",
                    s(crate::items::queue_sk(patch.priority, turn, &at, id)),
                );
            sets.extend(["gsi4pk = :q4pk".to_owned(), "gsi4sk = :q4sk".to_owned()]);
        }
        for (name, field) in [
            ("startedAt", &patch.started_at),
            ("completedAt", &patch.completed_at),
            ("cancelledAt", &patch.cancelled_at),
        ] {
            match field {
                Field::Keep => {}
                Field::Clear => removes.push(name),
                Field::Set(t) => {
                    let v = format!(":{name}");
                    u = u.expression_attribute_values(&v, s(ts(*t)));
                    sets.push(format!("{name} = {v}"));
                }
            }
        }
        match &patch.error {
            Field::Keep => {}
            Field::Clear => removes.push("#err"),
            Field::Set(e) => {
                u = u.expression_attribute_values(":err", s(e.clone()));
                sets.push("#err = :err".into());
            }
        }
        if !matches!(patch.error, Field::Keep) {
            u = u.expression_attribute_names("#err", "error");
        }
        match &patch.callback {
            Field::Keep => {}
            Field::Clear => {
                u = u.expression_attribute_names("#cb", "callback");
                removes.push("#cb");
            }
            Field::Set(c) => {
                let text = serde_json::to_string(c).map_err(build)?;
                u = u
                    .expression_attribute_names("#cb", "callback")
                    .expression_attribute_values(":cb", s(text));
                sets.push("#cb = :cb".into());
            }
        }
        // The result has an item of its own, written in the same
        // transaction: a completion writes the result, not the source.
        let text = match &patch.result {
            Field::Keep => None,
            Field::Clear => Some(
                Update::builder()
                    .update_expression("SET expiresAt = :exp REMOVE #res, resultKey")
                    .expression_attribute_names("#res", "result"),
            ),
            Field::Set(r) => {
                let text = serde_json::to_string(r).map_err(build)?;
                Some(if text.len() > INLINE_LIMIT {
                    let key = format!("job-results/{id}.json");
                    self.put_text(&key, &text, "application/json").await?;
                    Update::builder()
                        .update_expression("SET expiresAt = :exp, resultKey = :rk REMOVE #res")
                        .expression_attribute_values(":rk", s(key))
                        .expression_attribute_names("#res", "result")
                } else {
                    Update::builder()
                        .update_expression("SET expiresAt = :exp, #res = :res REMOVE resultKey")
                        .expression_attribute_values(":res", s(text))
                        .expression_attribute_names("#res", "result")
                })
            }
        }
        .map(|u| {
            // A result outlives its job item by the chunk margin at most.
            u.table_name(&self.config.table)
                .set_key(Some(Self::key(job_pk(id), RESULT_SK)))
                .expression_attribute_values(
                    ":exp",
                    n(now.timestamp()
                        + (i64::from(self.config.job_ttl_days) + CHUNK_TTL_MARGIN_DAYS) * 86_400),
                )
        });
        match patch.slot {
            SlotChange::Take { .. } => sets.push("slot = :att".into()),
            SlotChange::Release => {
                removes.push("slot");
                condition.push_str(" AND slot = :run");
            }
            SlotChange::Keep => {}
        }
        if patch.to.is_terminal() {
            u = u.expression_attribute_values(":ttl", n(self.ttl(now)));
            sets.push("expiresAt = :ttl".into());
        } else {
            removes.push("expiresAt");
        }
        if matches!(patch.to, JobStatus::Pending) || matches!(patch.slot, SlotChange::Take { .. }) {
            // A new run gets a new execution.
            removes.push("executionArn");
        }
        if patch.requires_all_chunks {
            condition.push_str(" AND chunksCompleted = chunksTotal");
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        Ok((
            u.update_expression(expr).condition_expression(condition),
            text,
        ))
    }

    /// Remember the S3 object a job was ingested from.
    pub async fn set_ingest_key(&self, id: JobId, key: &str) -> Result<(), StoreError> {
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET ingestKey = :k")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":k", s(key))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(())
    }

    /// Start `job` (as just read, texts or not) into a free slot: the
    /// core's transition, with the job read again without its texts when
    /// the write loses (still pending: no slot was free).
    pub async fn claim(
        &self,
        job: &Job,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        let patch = match JobPatch::plan(job, Change::Start { limit }, now) {
            Ok(p) => p,
            Err(e) => return Ok(TransitionOutcome::NotAllowed(e)),
        };
        match self.apply(job.id, &patch).await? {
            Applied::Done(j) => Ok(TransitionOutcome::Applied(*j)),
            Applied::Lost => Ok(TransitionOutcome::LostRace(
                self.item(job.id, false).await?.job,
            )),
        }
    }

    /// Record the execution of run `run`, segment `segment`. A segment
    /// never replaces a later one of the same run (a sweep starting a
    /// claimed run late must not point the job back at its first segment
    /// after the run moved on); such a write changes nothing.
    pub async fn set_execution(
        &self,
        id: JobId,
        run: u32,
        segment: u32,
        arn: &str,
    ) -> Result<(), StoreError> {
        let out = self
            .clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("SET executionArn = :arn, executionSegment = :seg")
            .condition_expression(
                "#run = :run AND (attribute_not_exists(executionSegment) OR executionSegment <= :seg)",
            )
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":arn", s(arn))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":seg", n(segment))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"));
        match out {
            Ok(_) => Ok(()),
            Err(StoreError::ConditionFailed(_)) => {
                tracing::info!(job_id = %id, run, segment, "a later execution is recorded; this one is not");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Jobs holding slots, for reconciliation.
    pub async fn processing(&self) -> Result<Vec<JobItem>, StoreError> {
        let pks = (0..LIST_SHARDS)
            .map(|i| status_pk(JobStatus::Processing, i))
            .collect();
        self.read_index("gsi1", pks, None, true, usize::MAX, |_| true)
            .await
    }

    /// Write a new job's items, and count it, in one transaction; a job
    /// item already there is `ConditionFailed` (nothing written).
    pub(super) async fn put_job(
        &self,
        job: &Job,
        job_item: Item,
        text: Item,
    ) -> Result<(), StoreError> {
        let expires = self.chunk_expiry(job.created_at);
        let put = |item: Item, condition: Option<&str>| -> Result<TransactWriteItem, StoreError> {
            Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.config.table)
                        .set_item(Some(item))
                        .set_condition_expression(condition.map(str::to_owned))
                        .build()
                        .map_err(build)?,
                )
                .build())
        };
        let mut items = vec![
            put(job_item, Some("attribute_not_exists(pk)"))?,
            put(new_config_item(job, expires)?, None)?,
            put(text, None)?,
            self.count_update(job.id, &[(job.status, 1)])?,
        ];
        if job.status == JobStatus::Pending {
            items.push(self.tenant_pending_update(&job.tenant, 1)?);
        }
        match self.transact(items).await? {
            Tx::Done => Ok(()),
            Tx::ConditionFailed => Err(StoreError::ConditionFailed(format!(
                "job {} exists already",
                job.id
            ))),
        }
    }

    /// The events a written change makes: the job's, and `batch.completed`
    /// when it was the last item of its batch to end.
    pub(super) async fn publish_change(&self, from: JobStatus, job: &Job) {
        let Some(kind) = lotsawa_core::webhook::EventKind::of_change(from, job.status) else {
            return;
        };
        self.messages
            .publish(kind.as_str(), &lotsawa_core::webhook::job_event(kind, job))
            .await;
        if let (true, Some(b)) = (job.status.is_terminal(), job.batch) {
            match self.batch_ended(b.id).await {
                Ok(Some(event)) => self.messages.publish("batch.completed", &event).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(batch_id = %b.id, error = %e, "reading a batch for its event failed")
                }
            }
        }
    }

    /// The `batch.completed` event of a batch whose items have all ended.
    pub(super) async fn batch_ended(
        &self,
        id: lotsawa_core::BatchId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let batch = match BatchStore::batch_get(self, id).await {
            Ok(b) => b,
            // Its jobs are stored before it: the last item can end first.
            Err(StoreError::BatchNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        let jobs = JobStore::get_briefs(self, &ids).await?;
        let refs: Vec<&Job> = jobs.iter().collect();
        let summary = lotsawa_core::batch::summarize(&refs, Utc::now());
        Ok(summary
            .status
            .is_terminal()
            .then(|| lotsawa_core::webhook::batch_event(&batch, &summary)))
    }

    /// The current turn of `priority`'s queue: the smallest turn of a
    /// pending job of that priority (0 when none waits), from the head of
    /// its band in each queue shard.
    pub(super) async fn current_turn(&self, priority: i8) -> Result<u64, StoreError> {
        let mut least: Option<u64> = None;
        for shard in 0..LIST_SHARDS {
            let out = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .index_name("gsi4")
                .key_condition_expression("gsi4pk = :pk AND begins_with(gsi4sk, :band)")
                .expression_attribute_values(":pk", s(crate::items::queue_pk(shard)))
                .expression_attribute_values(":band", s(crate::items::queue_band(priority)))
                .limit(1)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            if let Some(turn) = out
                .items()
                .first()
                .and_then(|i| i.get("gsi4sk"))
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| crate::items::turn_of(sk))
            {
                least = Some(least.map_or(turn, |l| l.min(turn)));
            }
        }
        Ok(least.unwrap_or(0))
    }
}

/// Whether the job item among `items` says the job is completed.
pub(super) fn completed(items: &[Item]) -> bool {
    items.iter().any(|i| {
        i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("JOB")
            && i.get("status")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(JobStatus::Completed.as_str())
    })
}
