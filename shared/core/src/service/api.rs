//! The [`JobService`] the HTTP API calls, implemented once over the
//! [`Service`]: submission, reads, lists, cancel and retry, batches, keys.

use super::*;

#[async_trait]
impl JobService for Service {
    async fn submit(&self, new: NewJob) -> Result<Job, ServiceError> {
        self.admit(&new.tenant).await?;
        self.create(new).await
    }

    async fn submit_once(&self, new: NewJob, key: &str) -> Result<Submitted, ServiceError> {
        let now = Utc::now();
        let fingerprint = new.fingerprint();
        let ours = crate::store::IdempotencyRecord {
            tenant: new.tenant.clone(),
            key: key.to_owned(),
            fingerprint: fingerprint.clone(),
            job_id: JobId::new(),
            created_at: now,
        };
        let held = self
            .store
            .idempotency_put(&ours, now - IDEMPOTENCY_WINDOW)
            .await?;
        if held.fingerprint != fingerprint {
            return Err(ServiceError::IdempotencyMismatch(format!(
                "Idempotency-Key '{key}' was used with a different request (job {})",
                held.job_id
            )));
        }
        let replayed = held.job_id != ours.job_id;
        if !replayed {
            // Only a request that creates spends a token; a replay is free.
            self.admit(&new.tenant).await?;
        }
        if replayed {
            match self.store.get(held.job_id).await {
                Ok(_) => {
                    return Ok(Submitted {
                        job_id: held.job_id,
                        replayed,
                    });
                }
                // The first request stopped between its record and its job
                // (or was refused, or is making it now): make it, once.
                Err(StoreError::NotFound(_)) => self.admit(&new.tenant).await?,
                Err(e) => return Err(e.into()),
            }
        }
        match self.create_as(held.job_id, new).await {
            Ok(job) => self.queue(&job).await?,
            Err(ServiceError::Store(StoreError::ConditionFailed(_))) if replayed => {}
            Err(e) => return Err(e),
        }
        Ok(Submitted {
            job_id: held.job_id,
            replayed,
        })
    }

    async fn get(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError> {
        let job = owned(tenant, self.store.get(id).await?)?;
        let job = self.with_current_text(job).await?;
        self.view(job, true).await
    }

    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError> {
        let filter = ListFilter {
            tenant: query.tenant.clone(),
            status: query.status,
            kind: query.kind,
            priority: query.priority,
        };
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(&filter, c))
            .transpose()?;
        let page = self
            .store
            .list(&PageRequest {
                filter: filter.clone(),
                limit: query.limit,
                after,
            })
            .await?;
        let mut jobs = Vec::with_capacity(page.jobs.len());
        for j in page.jobs {
            jobs.push(self.view(j, false).await?);
        }
        Ok(JobPage {
            jobs,
            next_cursor: page.next.map(|p| Cursor::encode(&filter, &p)),
        })
    }

    async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        let (before, after) = self.client_change(tenant, id, Change::Cancel).await?;
        self.runner.cancelled(&after, before.status).await;
        Ok(after)
    }

    async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        let (_, after) = self.client_change(tenant, id, Change::Retry).await?;
        self.runner.queued(&after).await?;
        Ok(after)
    }

    async fn chunks_from(
        &self,
        tenant: &Tenant,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkOutput>, ServiceError> {
        self.pulse(tenant, id).await?;
        Ok(self
            .store
            .chunks_between(id, from, to)
            .await?
            .into_iter()
            .filter(|c| c.status == ChunkStatus::Completed)
            .map(|c| ChunkOutput {
                index: c.index,
                translation: c.translation.unwrap_or_default(),
            })
            .collect())
    }

    async fn usage(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
        group: crate::usage::UsageGroup,
    ) -> Result<crate::usage::UsageReport, ServiceError> {
        let rows = self.store.usage(tenant, from, to).await?;
        let prices = self.prices.clone();
        let price =
            |engine: &str, model: &str| prices.price(engine, (!model.is_empty()).then_some(model));
        let (lines, total) = crate::usage::report_lines(&rows, group, price);
        let budget = match self.store.budget(tenant).await? {
            Some(b) => {
                let (used, resets) =
                    crate::usage::month_used(&*self.store, tenant, Utc::now()).await?;
                Some((b, used, resets))
            }
            None => None,
        };
        Ok(crate::usage::UsageReport {
            lines,
            total,
            budget,
        })
    }

    async fn chunk_sheet(&self, tenant: &Tenant, id: JobId) -> Result<ChunkSheet, ServiceError> {
        self.sheet(tenant, id).await
    }

    async fn chunk(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
    ) -> Result<(crate::ledger::ChunkRecord, crate::review::EngineLabel), ServiceError> {
        self.one_chunk(tenant, id, index).await
    }

    async fn correct_chunk(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        index: u32,
        if_match: Option<&str>,
        request: &crate::review::EditRequest,
    ) -> Result<(crate::ledger::ChunkRecord, crate::review::EngineLabel), ServiceError> {
        self.correct(caller, id, index, if_match, request).await
    }

    async fn retranslate(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
        engine: &str,
        model: Option<String>,
    ) -> Result<(), ServiceError> {
        self.start_retranslation(tenant, id, index, engine, model)
            .await
    }

    async fn import_memory(&self, tenant: &Tenant, xml: &str) -> Result<usize, ServiceError> {
        Service::import_memory(self, tenant, xml).await
    }

    async fn create_glossary(
        &self,
        tenant: &Tenant,
        name: String,
        entries: Vec<crate::glossary::GlossaryEntry>,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError> {
        let name = crate::glossaries::check_name(&name).map_err(ServiceError::Invalid)?;
        let held = self.store.glossary_list(tenant).await?.len();
        if held >= crate::glossaries::MAX_GLOSSARIES {
            return Err(ServiceError::Conflicted(format!(
                "a tenant keeps at most {} glossaries; delete one first",
                crate::glossaries::MAX_GLOSSARIES
            )));
        }
        let now = Utc::now();
        let record = crate::glossaries::GlossaryRecord {
            id: crate::job::GlossaryId::new(),
            tenant: tenant.clone(),
            name,
            terms: entries.len() as u32,
            entries,
            created_at: now,
            updated_at: now,
        };
        self.store.glossary_put(&record).await?;
        Ok(record)
    }

    async fn glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError> {
        self.store
            .glossary_get(tenant, id)
            .await?
            .ok_or(ServiceError::GlossaryNotFound(id))
    }

    async fn glossaries(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<crate::glossaries::GlossaryRecord>, ServiceError> {
        Ok(self.store.glossary_list(tenant).await?)
    }

    async fn replace_glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
        name: Option<String>,
        entries: Vec<crate::glossary::GlossaryEntry>,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError> {
        let mut record = self
            .store
            .glossary_get(tenant, id)
            .await?
            .ok_or(ServiceError::GlossaryNotFound(id))?;
        if let Some(name) = name {
            record.name = crate::glossaries::check_name(&name).map_err(ServiceError::Invalid)?;
        }
        record.terms = entries.len() as u32;
        record.entries = entries;
        record.updated_at = Utc::now();
        self.store.glossary_put(&record).await?;
        Ok(record)
    }

    async fn delete_glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<(), ServiceError> {
        if self.store.glossary_delete(tenant, id).await? {
            Ok(())
        } else {
            Err(ServiceError::GlossaryNotFound(id))
        }
    }

    async fn import_xliff(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        xml: &str,
    ) -> Result<ImportReport, ServiceError> {
        Service::import_xliff(self, caller, id, xml).await
    }

    async fn chunk_records(
        &self,
        tenant: &Tenant,
        id: JobId,
    ) -> Result<Vec<crate::ledger::ChunkRecord>, ServiceError> {
        self.pulse(tenant, id).await?;
        Ok(self.store.chunks(id, 0).await?)
    }

    async fn pulse(&self, tenant: &Tenant, id: JobId) -> Result<crate::store::Pulse, ServiceError> {
        let pulse = self.store.pulse(id).await?;
        if pulse.tenant != *tenant {
            return Err(ServiceError::NotFound(id));
        }
        Ok(pulse)
    }

    async fn watch(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError> {
        let brief = owned(tenant, self.store.get_brief(id).await?)?;
        let job = match brief.status {
            JobStatus::Completed => {
                // The result, without the source a watcher has no use for.
                let mut full = self.with_current_text(self.store.get(id).await?).await?;
                full.source = String::new();
                full
            }
            _ => brief,
        };
        self.view(job, false).await
    }

    async fn submit_batch(&self, new: NewBatch) -> Result<BatchView, ServiceError> {
        let n = new.items.len();
        if n == 0 {
            return Err(ServiceError::Invalid(
                "items: a batch needs at least one item".into(),
            ));
        }
        if n > self.max_batch_items as usize {
            return Err(ServiceError::Invalid(format!(
                "items: a batch may have at most {} items; this one has {n}: split it",
                self.max_batch_items
            )));
        }
        let mut names = std::collections::HashSet::with_capacity(n);
        for (i, item) in new.items.iter().enumerate() {
            crate::batch::check_name(&item.name)
                .map_err(|e| ServiceError::Invalid(format!("items[{i}].name {e}")))?;
            if !names.insert(item.name.as_str()) {
                return Err(ServiceError::Invalid(format!(
                    "items[{i}].name '{}' is used by an earlier item; names must be unique",
                    item.name
                )));
            }
            if item.job.tenant != new.tenant {
                return Err(ServiceError::Invalid(format!(
                    "items[{i}] belongs to another tenant"
                )));
            }
        }
        // Every item is checked before anything is stored.
        let id = BatchId::new();
        let mut prepared = Vec::with_capacity(n);
        for (i, item) in new.items.into_iter().enumerate() {
            let (mut job, chunks) = self.prepare(item.job).await.map_err(|e| match e {
                ServiceError::Invalid(m) => ServiceError::Invalid(format!("items[{i}]: {m}")),
                other => other,
            })?;
            job.batch = Some(BatchRef {
                id,
                index: i as u32,
            });
            prepared.push((item.name, job, chunks));
        }
        self.admit_n(&new.tenant, n as u32).await?;
        // The jobs first, then the batch: a stop in between leaves jobs that
        // run as singles, never a batch naming jobs that do not exist.
        for (_, job, chunks) in &prepared {
            self.store.create(job, chunks).await?;
        }
        let batch = Batch {
            id,
            tenant: new.tenant,
            created_at: Utc::now(),
            items: prepared
                .iter()
                .map(|(name, job, _)| BatchItem {
                    name: name.clone(),
                    job_id: job.id,
                })
                .collect(),
        };
        self.store.batch_put(&batch).await?;
        for (_, job, _) in &prepared {
            self.runner.queued(job).await?;
        }
        self.batch_view(batch).await
    }

    async fn batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        self.batch_view(batch).await
    }

    async fn list_batches(
        &self,
        tenant: &Tenant,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<BatchPage, ServiceError> {
        let tag = Cursor::batches_tag(tenant);
        let after = cursor
            .as_deref()
            .map(|c| Cursor::decode_tagged(&tag, c))
            .transpose()?;
        let (batches, next) = self
            .store
            .batch_list(tenant, limit, after.as_deref())
            .await?;
        let mut views = Vec::with_capacity(batches.len());
        for b in batches {
            views.push(self.batch_view(b).await?);
        }
        Ok(BatchPage {
            batches: views,
            next_cursor: next.map(|p| Cursor::encode_tagged(&tag, &p)),
        })
    }

    async fn cancel_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        for job in self.store.get_briefs(&ids).await? {
            if job.status.is_terminal() {
                continue;
            }
            match self.cancel(tenant, job.id).await {
                // It ended meanwhile.
                Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.batch_view(batch).await
    }

    async fn retry_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        for job in self.store.get_briefs(&ids).await? {
            if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
                continue;
            }
            match self.retry(tenant, job.id).await {
                Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.batch_view(batch).await
    }

    async fn authenticate(&self, key: &str) -> Result<crate::auth::Caller, ServiceError> {
        let refused = || ServiceError::Unauthorized("unknown or revoked API key".into());
        if !crate::auth::looks_like_key(key) {
            return Err(refused());
        }
        match self.store.key_find(&crate::auth::key_hash(key)).await? {
            Some(k) if k.revoked_at.is_none() => Ok(crate::auth::Caller {
                tenant: k.tenant,
                key_id: Some(k.id),
            }),
            _ => Err(refused()),
        }
    }

    async fn wait_for_change(&self, id: JobId, seen: &mut u64, max_wait: Duration) {
        self.runner.wait_for_change(id, seen, max_wait).await;
    }

    fn engines(&self) -> Vec<String> {
        self.engines.names.clone()
    }

    async fn metrics(&self) -> Result<String, ServiceError> {
        let mut out = self.gauges().await?;
        out.push_str(&self.runner.extra_metrics().await?);
        Ok(out)
    }

    async fn healthy(&self) -> Result<(), ServiceError> {
        self.runner.ready()?;
        self.store.slots_in_use().await?;
        Ok(())
    }
}
