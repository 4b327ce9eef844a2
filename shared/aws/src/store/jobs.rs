//! The job facet: lifecycle, chunks and lists.

use super::*;

#[async_trait]
impl JobStore for DynamoStore {
    async fn create(&self, job: &Job, chunks: &[String]) -> Result<(), StoreError> {
        let (inline, key) = self
            .place_text(&job.source, || format!("sources/{}.txt", job.id))
            .await?;
        // Chunks first: a job item is only visible once its ledger is whole.
        let mut requests = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let index = i as u32;
            let (text, key) = self
                .place_text(c, || format!("chunks/{}/{index:06}.txt", job.id))
                .await?;
            let expires = self.chunk_expiry(job.created_at);
            for item in [
                new_chunk_item(job.id, index, c.chars().count(), expires)?,
                new_chunk_source_item(job.id, index, text, key.as_deref(), expires)?,
            ] {
                requests.push(
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item))
                                .build()
                                .map_err(build)?,
                        )
                        .build(),
                );
            }
        }
        self.batch_write(requests, "chunk items").await?;
        let expires = self.chunk_expiry(job.created_at);
        let text = new_text_item(job.id, inline, key.as_deref(), expires)?;
        let turn = self.current_turn(job.config.priority).await?
            + u64::from(job.batch.map_or(0, |b| b.index));
        let item = new_job_item(job, turn)?;
        self.put_job(job, item, text).await?;
        self.publish_change(JobStatus::Pending, job).await;
        Ok(())
    }

    async fn create_failed(&self, job: &Job) -> Result<(), StoreError> {
        let item = crate::items::failed_job_item(job, job.completed_at.map(|t| self.ttl(t)))?;
        let text = new_text_item(job.id, Some(""), None, self.chunk_expiry(job.created_at))?;
        self.put_job(job, item, text).await?;
        self.publish_change(JobStatus::Pending, job).await;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        Ok(self.item(id, true).await?.job)
    }

    async fn list(&self, page: &PageRequest) -> Result<StorePage, StoreError> {
        // Every list reads the tenant's own index partitions: by status
        // (`gsi5`), by type (`gsi3`), or all (`gsi2`); the cost of a list
        // does not grow with other tenants' jobs.
        let tenant = page.filter.tenant.clone();
        let (index, pks): (&str, Vec<String>) = match (page.filter.status, page.filter.kind) {
            (Some(st), _) => (
                "gsi5",
                (0..LIST_SHARDS)
                    .map(|i| tenant_status_pk(&tenant, st, i))
                    .collect(),
            ),
            (None, Some(k)) => (
                "gsi3",
                (0..LIST_SHARDS).map(|i| type_pk(&tenant, k, i)).collect(),
            ),
            (None, None) => (
                "gsi2",
                (0..LIST_SHARDS).map(|i| all_pk(&tenant, i)).collect(),
            ),
        };
        if let Some(pos) = &page.after
            && position_key(pos).is_none()
        {
            return Err(StoreError::InvalidCursor(pos.clone()));
        }
        // One more than asked tells whether there is a next page.
        let want = page.limit as usize + 1;
        let (kind, priority) = (page.filter.kind, page.filter.priority);
        let mut jobs: Vec<Job> = self
            .read_index(index, pks, page.after.as_deref(), false, want, |j| {
                j.job.tenant == tenant
                    && kind.is_none_or(|k| j.job.kind == k)
                    && priority.is_none_or(|p| j.job.config.priority == p)
            })
            .await?
            .into_iter()
            .map(|j| j.job)
            .collect();
        let more = jobs.len() > page.limit as usize;
        jobs.truncate(page.limit as usize);
        let next = if more {
            jobs.last()
                .map(|j| crate::items::list_sk(&ts(j.created_at), j.id))
        } else {
            None
        };
        Ok(StorePage { jobs, next })
    }

    async fn apply(&self, id: JobId, patch: &JobPatch) -> Result<Applied, StoreError> {
        let now = Utc::now();
        let (job, text) = self.patch_update(id, patch, now).await?;
        let mut items = vec![
            TransactWriteItem::builder()
                .update(job.build().map_err(build)?)
                .build(),
        ];
        if let Some(t) = text {
            items.push(
                TransactWriteItem::builder()
                    .update(t.build().map_err(build)?)
                    .build(),
            );
        }
        if patch.from != patch.to {
            items.push(self.count_update(id, &[(patch.from, -1), (patch.to, 1)])?);
            if patch.from == JobStatus::Pending {
                items.push(self.tenant_pending_update(&patch.tenant, -1)?);
            } else if patch.to == JobStatus::Pending {
                items.push(self.tenant_pending_update(&patch.tenant, 1)?);
            }
        }
        match patch.slot {
            SlotChange::Take { limit } => items.push(self.take_item(limit)?),
            SlotChange::Release => items.push(self.release_item()?),
            SlotChange::Keep => {}
        }
        let chunk = match &patch.chunks {
            ChunkChange::None => None,
            ChunkChange::Fail { index } => Some(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(job_pk(id), &chunk_sk(*index))))
                    .update_expression("SET #st = :failed")
                    .condition_expression("#st = :pending")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":failed", s("failed"))
                    .expression_attribute_values(":pending", s("pending")),
            ),
            // Chunks complete in order: the failed chunk, if any, is the
            // first unfinished one.
            ChunkChange::ResetFailed { first_unfinished } => first_unfinished.map(|index| {
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
                    .update_expression("SET #st = :pending REMOVE #err")
                    .condition_expression("attribute_exists(pk) AND #st <> :done")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#err", "error")
                    .expression_attribute_values(":pending", s("pending"))
                    .expression_attribute_values(":done", s("completed"))
            }),
        };
        if let Some(c) = chunk {
            items.push(
                TransactWriteItem::builder()
                    .update(c.build().map_err(build)?)
                    .build(),
            );
        }
        match &patch.callback {
            Field::Keep => {}
            Field::Clear => items.push(self.callback_marker(id, None)?),
            Field::Set(c) => items.push(self.callback_marker(id, Some(c))?),
        }
        match self.transact(items).await? {
            Tx::Done => {
                // A claim reads no texts: a dispatcher needs the run, not
                // the source (a large one lives in S3, and one missing
                // object must not stop every claim behind it).
                let claim = patch.from == JobStatus::Pending && patch.to == JobStatus::Processing;
                let job = self.item(id, !claim).await?.job;
                if patch.from != patch.to {
                    self.publish_change(patch.from, &job).await;
                }
                if let Field::Set(c) = &patch.callback
                    && c.status == lotsawa_core::CallbackStatus::Pending
                {
                    self.messages
                        .schedule_callback(id, std::time::Duration::ZERO)
                        .await;
                }
                Ok(Applied::Done(Box::new(job)))
            }
            Tx::ConditionFailed => Ok(Applied::Lost),
        }
    }

    /// Pending jobs in queue order: by turn, then creation.
    /// The core's claim, reading each candidate without its texts (status,
    /// run and settings are all a claim needs): claims cost no S3 reads,
    /// and a job whose large source cannot be read does not stop the jobs
    /// behind it (its own chunk step fails it).
    async fn claim_next(&self, limit: u32, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        for id in self.next_pending(8).await? {
            let job = match self.item(id, false).await {
                Ok(j) => j.job,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match self.claim(&job, limit, now).await? {
                TransitionOutcome::Applied(j) => return Ok(Some(j)),
                TransitionOutcome::LostRace(j) if j.status == JobStatus::Pending => {
                    return Ok(None);
                }
                TransitionOutcome::LostRace(_) | TransitionOutcome::NotAllowed(_) => continue,
            }
        }
        Ok(None)
    }

    async fn next_pending(&self, n: u32) -> Result<Vec<JobId>, StoreError> {
        let pks = (0..LIST_SHARDS).map(crate::items::queue_pk).collect();
        Ok(self
            .read_index("gsi4", pks, None, true, n.max(1) as usize, |_| true)
            .await?
            .into_iter()
            .map(|j| j.job.id)
            .collect())
    }

    async fn checkpoint(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
    ) -> Result<Checkpoint, StoreError> {
        let mut chunk = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(done.index))))
            .condition_expression("#st = :pending")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":done", s("completed"))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":att", n(done.provider_calls))
            .expression_attribute_values(":mem", AttributeValue::Bool(done.from_memory));
        let mut set = vec![
            "#st = :done",
            "#run = :run",
            "#att = #att + :att",
            "#mem = :mem",
        ];
        chunk = chunk
            .expression_attribute_names("#run", "run")
            .expression_attribute_names("#att", "attempts")
            .expression_attribute_names("#mem", "fromMemory");
        let (inline, key) = self
            .place_text(&done.translation, || {
                format!("chunks/{id}/{:06}.out.txt", done.index)
            })
            .await?;
        if let Some(key) = key {
            chunk = chunk
                .expression_attribute_values(":tkey", s(key))
                .expression_attribute_names("#tkey", "translationKey");
            set.push("#tkey = :tkey");
        }
        if let Some(text) = inline {
            chunk = chunk
                .expression_attribute_values(":tr", s(text))
                .expression_attribute_names("#tr", "translation");
            set.push("#tr = :tr");
        }
        if let Some(d) = done.duration_ms {
            chunk = chunk
                .expression_attribute_values(":d", n(d))
                .expression_attribute_names("#dur", "durationMs");
            set.push("#dur = :d");
        }
        if let Some(c) = done.confidence {
            chunk = chunk
                .expression_attribute_values(":c", n(c))
                .expression_attribute_names("#conf", "confidence");
            set.push("#conf = :c");
        }
        if let Some(ctx) = &done.context {
            chunk = chunk
                .expression_attribute_values(":ctx", s(ctx.clone()))
                .expression_attribute_names("#ctx", "context");
            set.push("#ctx = :ctx");
        }
        if let Some(w) = &done.warning {
            chunk = chunk
                .expression_attribute_values(":w", s(w.clone()))
                .expression_attribute_names("#w", "warning");
            set.push("#w = :w");
        }
        if let Some(x) = &done.examples {
            chunk = chunk
                .expression_attribute_values(":ex", s(x.clone()))
                .expression_attribute_names("#ex", "examples");
            set.push("#ex = :ex");
        }
        if let Some(u) = done.usage.as_ref().map(|u| u.usage)
            && !u.is_zero()
        {
            chunk = chunk
                .expression_attribute_values(":ucalls", n(u.calls))
                .expression_attribute_values(":uin", n(u.prompt_tokens))
                .expression_attribute_values(":uout", n(u.completion_tokens))
                .expression_attribute_names("#ucalls", "usageCalls")
                .expression_attribute_names("#uin", "promptTokens")
                .expression_attribute_names("#uout", "completionTokens");
            set.extend(["#ucalls = :ucalls", "#uin = :uin", "#uout = :uout"]);
        }
        let chunk = chunk
            .update_expression(format!("SET {} REMOVE #err", set.join(", ")))
            .expression_attribute_names("#err", "error");
        let job = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .update_expression("ADD chunksCompleted :one")
            .condition_expression("#st = :processing AND #run = :run")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":processing", s("processing"))
            .expression_attribute_values(":run", n(run));
        let items = vec![
            TransactWriteItem::builder()
                .update(chunk.build().map_err(build)?)
                .build(),
            TransactWriteItem::builder()
                .update(job.build().map_err(build)?)
                .build(),
        ];
        match self.transact(items).await? {
            Tx::Done => {
                // The tenant's usage of the day, once the commit recorded
                // the chunk (so a repeated checkpoint adds nothing). Not in
                // the transaction: every commit of a tenant would then
                // write one item, and parallel commits would cancel each
                // other (TransactionConflict). A failure here is logged;
                // the chunk keeps its own usage either way.
                if let Some(u) = &done.usage
                    && !u.usage.is_zero()
                    && let Err(e) = self.usage_add(u, Utc::now().date_naive()).await
                {
                    tracing::warn!(job_id = %id, error = %e, "adding a chunk's usage to its tenant's day failed");
                }
                Ok(Checkpoint::Recorded)
            }
            Tx::ConditionFailed => {
                let now = self.item(id, false).await?.job;
                if now.status == JobStatus::Processing && now.run == run {
                    Ok(Checkpoint::AlreadyDone)
                } else {
                    Ok(Checkpoint::RunEnded)
                }
            }
        }
    }

    /// Step Functions drops failure causes on some emulators, so the message
    /// is kept here too.
    async fn note_chunk_error(&self, id: JobId, index: u32, error: &str) -> Result<(), StoreError> {
        let r = self
            .clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
            .update_expression("SET #err = :e, #att = #att + :one")
            .condition_expression("#st = :pending")
            .expression_attribute_names("#err", "error")
            .expression_attribute_names("#att", "attempts")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":pending", s("pending"))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"));
        match r {
            Ok(_) => Ok(()),
            // The chunk is no longer pending: nothing to note.
            Err(StoreError::ConditionFailed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One query from `from` to the last possible chunk key; the job item
    /// is read only when that finds nothing (to tell an unknown job).
    async fn chunks(&self, id: JobId, from: u32) -> Result<Vec<ChunkRecord>, StoreError> {
        self.chunks_between(id, from, MAX_CHUNKS).await
    }

    async fn chunks_between(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let chunks = self.chunk_range(id, from, to).await?;
        if chunks.is_empty() {
            self.item(id, false).await?;
        }
        Ok(chunks)
    }

    async fn get_brief(&self, id: JobId) -> Result<Job, StoreError> {
        Ok(self.item(id, false).await?.job)
    }

    /// The job item alone, eventually consistent: half a read unit.
    async fn pulse(&self, id: JobId) -> Result<Pulse, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), "JOB")))
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        let item = out.item.ok_or(StoreError::NotFound(id))?;
        Ok(Pulse::of(&job_from_items(&item, None, None, None)?.job))
    }

    async fn progress_inputs(&self, job: &Job) -> Result<(u64, Vec<ChunkTiming>), StoreError> {
        let k = job.chunks_completed;
        let from = k.saturating_sub(lotsawa_core::progress::WINDOW as u32);
        // Statistics: an eventually consistent read is enough.
        let recent = self.chunk_query(job.id, from, k, false).await?;
        let timings = recent
            .iter()
            .filter(|c| c.run == job.run && !c.from_memory)
            .filter_map(|c| {
                c.duration_ms.map(|d| ChunkTiming {
                    chars: c.source.chars().count() as u64,
                    duration_ms: d,
                })
            })
            .collect::<Vec<_>>();
        // Remaining characters: estimated from the average chunk size so far.
        let left = u64::from(job.chunks_total.saturating_sub(k));
        let avg = if timings.is_empty() {
            0
        } else {
            timings.iter().map(|t| t.chars).sum::<u64>() / timings.len() as u64
        };
        Ok((left * avg, timings))
    }

    /// The job and settings items of 50 jobs per BatchGetItem.
    async fn get_briefs(&self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        let mut by_id: HashMap<JobId, Job> = HashMap::with_capacity(ids.len());
        for part in ids.chunks(50) {
            let mut keys: Vec<Item> = part
                .iter()
                .flat_map(|id| {
                    [
                        Self::key(job_pk(*id), "JOB"),
                        Self::key(job_pk(*id), CONFIG_SK),
                    ]
                })
                .collect();
            let items = self.batch_get(&mut keys, true).await?;
            let mut grouped: HashMap<String, (Option<&Item>, Option<&Item>)> = HashMap::new();
            for item in &items {
                let (Some(pk), Some(sk)) = (
                    item.get("pk").and_then(|v| v.as_s().ok()),
                    item.get("sk").and_then(|v| v.as_s().ok()),
                ) else {
                    continue;
                };
                let slot = grouped.entry(pk.clone()).or_default();
                if sk == "JOB" {
                    slot.0 = Some(item);
                } else if sk == CONFIG_SK {
                    slot.1 = Some(item);
                }
            }
            for (job_item, config) in grouped.into_values() {
                if let Some(job_item) = job_item {
                    let j = job_from_items(job_item, config, None, None)?.job;
                    by_id.insert(j.id, j);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}
