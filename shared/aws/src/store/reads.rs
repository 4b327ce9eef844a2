//! Reads: a job's items (strongly consistent, read again until a
//! committing transaction's items agree), chunks and index pages.

use super::*;

impl DynamoStore {
    /// A job (strongly consistent), with the cloud-only attributes: its job
    /// and settings items in one query; with `with_texts` its source and
    /// result items too, and a large source or result read from S3.
    ///
    /// A query is isolated from a transaction item by item only (read
    /// committed): while a creation or a completion commits, it can see the
    /// job item without its settings or its result. Such a read is made
    /// again, with backoff, until the items agree.
    pub async fn item(&self, id: JobId, with_texts: bool) -> Result<JobItem, StoreError> {
        let last = if with_texts { TEXT_SK } else { CONFIG_SK };
        let mut round = 0u32;
        let mut job = loop {
            let out = self
                .clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(job_pk(id)))
                .expression_attribute_values(":a", s("JOB"))
                .expression_attribute_values(":b", s(last))
                .consistent_read(true)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            let items = out.items.unwrap_or_default();
            let has = |sk: &str| {
                items.iter().any(|i| {
                    i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
                })
            };
            // A completed job's result item holds its result (inline or
            // in S3): one without either is from before the completion.
            let has_result = items.iter().any(|i| {
                i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(RESULT_SK)
                    && (i.contains_key("result") || i.contains_key("resultKey"))
            });
            let whole = !has("JOB")
                || (has(CONFIG_SK)
                    && (!with_texts || (has(TEXT_SK) && (has_result || !completed(&items)))));
            if whole {
                let find = |sk: &'static str| {
                    items.iter().find(|i| {
                        i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
                    })
                };
                let job_item = find("JOB").ok_or(StoreError::NotFound(id))?;
                break job_from_items(job_item, find(CONFIG_SK), find(TEXT_SK), find(RESULT_SK))?;
            }
            round += 1;
            if round >= 8 {
                return Err(StoreError::Corrupt(format!(
                    "job {id}: its items stayed incomplete over 8 reads"
                )));
            }
            tokio::time::sleep(ROUND_BACKOFF.ceiling(round)).await;
        };
        if with_texts {
            if let Some(k) = job.result_key.clone() {
                let text = self.get_text(&k).await?;
                job.job.result = Some(
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("result {k}: {e}")))?,
                );
            }
            if let Some(k) = job.source_key.clone() {
                job.job.source = self.get_text(&k).await?;
            }
        }
        Ok(job)
    }

    /// Job items by id (no settings, no texts), in the order asked;
    /// strongly consistent, unprocessed keys asked again with backoff.
    pub(super) async fn job_items(&self, ids: &[JobId]) -> Result<Vec<JobItem>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::new();
        for part in ids.chunks(100) {
            let mut keys: Vec<Item> = part
                .iter()
                .map(|id| Self::key(job_pk(*id), "JOB"))
                .collect();
            found.extend(
                self.batch_get(&mut keys, true)
                    .await?
                    .into_iter()
                    .filter_map(|i| {
                        let pk = i.get("pk")?.as_s().ok()?.clone();
                        Some((pk, i))
                    }),
            );
        }
        ids.iter()
            .filter_map(|id| found.get(&job_pk(*id)))
            .map(|i| Ok(job_from_items(i, None, None, None)?))
            .collect()
    }

    /// Read `keys` (at most 100) with BatchGetItem until none is left
    /// unprocessed (ten rounds with backoff, then an error).
    pub(super) async fn batch_get(
        &self,
        keys: &mut Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for round in 0..10u32 {
            if keys.is_empty() {
                return Ok(items);
            }
            if round > 0 {
                tokio::time::sleep(ROUND_BACKOFF.ceiling(round + 1)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(keys)))
                .consistent_read(consistent)
                .build()
                .map_err(build)?;
            let out = self
                .clients
                .ddb
                .batch_get_item()
                .request_items(&self.config.table, request)
                .send()
                .await
                .map_err(ddb("DynamoDB BatchGetItem"))?;
            if let Some(got) = out.responses.and_then(|mut r| r.remove(&self.config.table)) {
                items.extend(got);
            }
            if let Some(rest) = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.config.table))
            {
                *keys = rest.keys;
            }
        }
        if keys.is_empty() {
            Ok(items)
        } else {
            Err(StoreError::Throttled(
                "items stayed unprocessed after 10 rounds of BatchGetItem".into(),
            ))
        }
    }

    /// Jobs from one listing index, merged over its shards: newest first
    /// (oldest first with `forward`), strictly after the position `after`,
    /// keeping those `keep` accepts, until `want` are found or the index
    /// ends. Each shard is read a page at a time, keys only; the job items
    /// of each round are then read in one batch.
    pub(super) async fn read_index(
        &self,
        index: &str,
        pks: Vec<String>,
        after: Option<&str>,
        forward: bool,
        want: usize,
        keep: impl Fn(&JobItem) -> bool,
    ) -> Result<Vec<JobItem>, StoreError> {
        struct Shard {
            pk: String,
            start: Option<Item>,
            buf: std::collections::VecDeque<(String, JobId)>,
            ended: bool,
        }
        let (pk_name, sk_name) = (format!("{index}pk"), format!("{index}sk"));
        let mut shards: Vec<Shard> = pks
            .into_iter()
            .map(|pk| Shard {
                pk,
                start: None,
                buf: Default::default(),
                ended: false,
            })
            .collect();
        let mut out = Vec::new();
        loop {
            let need = want - out.len();
            for sh in shards.iter_mut().filter(|s| s.buf.is_empty() && !s.ended) {
                let mut q = self
                    .clients
                    .ddb
                    .query()
                    .table_name(&self.config.table)
                    .index_name(index)
                    .expression_attribute_values(":pk", s(sh.pk.clone()))
                    .scan_index_forward(forward)
                    .limit(need.clamp(1, 200) as i32)
                    .set_exclusive_start_key(sh.start.take());
                q = match after {
                    Some(pos) => q
                        .key_condition_expression(format!(
                            "{pk_name} = :pk AND {sk_name} {} :after",
                            if forward { ">" } else { "<" }
                        ))
                        .expression_attribute_values(":after", s(pos)),
                    None => q.key_condition_expression(format!("{pk_name} = :pk")),
                };
                let page = q.send().await.map_err(ddb("DynamoDB Query"))?;
                for item in page.items() {
                    let sk = item
                        .get(&sk_name)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default();
                    let id = position_key(&sk)
                        .ok_or_else(|| StoreError::Corrupt(format!("index key {sk}")))?;
                    sh.buf.push_back((sk, id));
                }
                match page.last_evaluated_key.filter(|k| !k.is_empty()) {
                    Some(k) => sh.start = Some(k),
                    None => sh.ended = true,
                }
            }
            // The next `need` positions over every shard, in order; a shard
            // whose read part is used up stops the merge (its next page may
            // hold earlier positions) until it is read again.
            let mut ids = Vec::new();
            while ids.len() < need && !shards.iter().any(|sh| sh.buf.is_empty() && !sh.ended) {
                let best = shards
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sh)| sh.buf.front().map(|(sk, _)| (i, sk)))
                    .reduce(|a, b| if (b.1 < a.1) == forward { b } else { a })
                    .map(|(i, _)| i);
                let Some(i) = best else { break };
                if let Some((_, id)) = shards[i].buf.pop_front() {
                    ids.push(id);
                }
            }
            out.extend(self.job_items(&ids).await?.into_iter().filter(&keep));
            let exhausted = shards.iter().all(|sh| sh.ended && sh.buf.is_empty());
            if out.len() >= want || exhausted {
                out.truncate(want);
                return Ok(out);
            }
        }
    }

    /// One chunk's ledger record (its source left empty), its translation
    /// read from S3 when large.
    pub async fn chunk(&self, id: JobId, index: u32) -> Result<Option<ChunkRecord>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(index))))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        match out.item {
            Some(item) => Ok(Some(self.chunk_texts(chunk_from_item(&item)?).await?)),
            None => Ok(None),
        }
    }

    pub(super) async fn chunk_texts(&self, mut c: ChunkItem) -> Result<ChunkRecord, StoreError> {
        if let Some(k) = c.source_key.take() {
            c.record.source = self.get_text(&k).await?;
        }
        if let Some(k) = c.translation_key.take() {
            c.record.translation = Some(self.get_text(&k).await?);
        }
        Ok(c.record)
    }

    /// Run every page of a query.
    pub(super) async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(ddb("DynamoDB Query"))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Chunks with index in `from..to`, in order (strongly consistent).
    pub async fn chunk_range(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        self.chunk_query(id, from, to, true).await
    }

    pub(super) async fn chunk_query(
        &self,
        id: JobId,
        from: u32,
        to: u32,
        consistent: bool,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let query = self
            .clients
            .ddb
            .query()
            .table_name(&self.config.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(job_pk(id)))
            .expression_attribute_values(":a", s(chunk_sk(from)))
            .expression_attribute_values(":b", s(chunk_source_sk(to.min(MAX_CHUNKS) - 1)))
            .consistent_read(consistent);
        // Ledger items, each followed by its source item.
        let mut items: Vec<ChunkItem> = Vec::new();
        for item in self.query_all(query).await? {
            if is_chunk_source(&item) {
                if let Some(last) = items.last_mut() {
                    add_chunk_source(last, &item)?;
                }
            } else {
                items.push(chunk_from_item(&item)?);
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for c in items {
            out.push(self.chunk_texts(c).await?);
        }
        Ok(out)
    }
}

/// The list position of a job: its listing sort key (`createdAt#id`).
pub(super) fn position_key(pos: &str) -> Option<JobId> {
    let (rest, id) = pos.rsplit_once('#')?;
    // A queue key has the turn before the time.
    let created = rest.rsplit_once('#').map_or(rest, |(_, c)| c);
    DateTime::parse_from_rfc3339(created).ok()?;
    id.parse().ok()
}
