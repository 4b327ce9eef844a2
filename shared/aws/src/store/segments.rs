//! The segment memory facet: a tenant's segments in its memory partition
//! (`TM#<tenant>`/`SEG#<id>`), and for each segment the key items of its
//! sketch (`TMK#<tenant>#<key>`/`SEG#<id>`, [`lotsawa_core::segments::sketch`]),
//! so a lookup reads only the segments sharing keys with the chunk: one
//! query per key of the chunk's sketch, then the best candidates by shared
//! keys, read in one batch and ranked by similarity.

use std::collections::HashMap;

use lotsawa_core::segments::{Example, Segment, best_examples, segment_id, sketch};
use lotsawa_core::store::SegmentStore;

use super::*;

/// Segments a lookup reads and ranks, at most (the best by shared keys).
const CANDIDATES: usize = 60;
/// Key items a lookup reads per key, at most.
const POSTINGS_PER_KEY: i32 = 400;

fn memory_pk(tenant: &lotsawa_core::Tenant) -> String {
    format!("TM#{tenant}")
}

fn key_pk(tenant: &lotsawa_core::Tenant, key: u64) -> String {
    format!("TMK#{tenant}#{key:016x}")
}

fn segment_sk(id: u64) -> String {
    format!("SEG#{id:016x}")
}

fn text(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

impl DynamoStore {
    /// The key items of a segment, written after the segment.
    async fn put_sketch(
        &self,
        tenant: &lotsawa_core::Tenant,
        id: u64,
        source: &str,
    ) -> Result<(), StoreError> {
        let mut requests = Vec::new();
        for key in sketch(source) {
            let item = HashMap::from([
                ("pk".to_owned(), s(key_pk(tenant, key))),
                ("sk".to_owned(), s(segment_sk(id))),
            ]);
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
        self.batch_write(requests, "segment key items").await
    }
}

#[async_trait]
impl SegmentStore for DynamoStore {
    async fn segment_put(
        &self,
        tenant: &lotsawa_core::Tenant,
        source: &str,
        target: &str,
        human: bool,
    ) -> Result<(), StoreError> {
        let id = segment_id(tenant, source, human);
        let item = HashMap::from([
            ("pk".to_owned(), s(memory_pk(tenant))),
            ("sk".to_owned(), s(segment_sk(id))),
            ("source".to_owned(), s(source)),
            ("target".to_owned(), s(target)),
            ("human".to_owned(), AttributeValue::Bool(human)),
            ("createdAt".to_owned(), s(crate::items::ts(Utc::now()))),
        ]);
        let mut put = self
            .clients
            .ddb
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(item));
        if !human {
            // An engine's first answer stays.
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        match put.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(ddb("DynamoDB PutItem")(e)),
        }
        self.put_sketch(tenant, id, source).await
    }

    async fn human_segment(
        &self,
        tenant: &lotsawa_core::Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .clients
            .ddb
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(
                memory_pk(tenant),
                &segment_sk(segment_id(tenant, source, true)),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(ddb("DynamoDB GetItem"))?;
        Ok(out.item.map(|i| text(&i, "target")))
    }

    async fn similar_segments(
        &self,
        tenant: &lotsawa_core::Tenant,
        source: &str,
        k: usize,
        min: f64,
    ) -> Result<Vec<Example>, StoreError> {
        let keys = sketch(source);
        if k == 0 || keys.is_empty() {
            return Ok(Vec::new());
        }
        let queries = keys.iter().map(|key| {
            self.clients
                .ddb
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(key_pk(tenant, *key)))
                .projection_expression("sk")
                .limit(POSTINGS_PER_KEY)
                .send()
        });
        let mut shared: HashMap<String, u32> = HashMap::new();
        for page in futures::future::join_all(queries).await {
            let page = page.map_err(ddb("DynamoDB Query"))?;
            for item in page.items() {
                *shared.entry(text(item, "sk")).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, u32)> = shared.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(CANDIDATES);
        let mut found = Vec::with_capacity(ranked.len());
        for group in ranked.chunks(100) {
            let mut wanted: Vec<Item> = group
                .iter()
                .map(|(sk, _)| Self::key(memory_pk(tenant), sk))
                .collect();
            for item in self.batch_get(&mut wanted, false).await? {
                let id = text(&item, "sk")
                    .strip_prefix("SEG#")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                found.push(Segment {
                    id,
                    source: text(&item, "source"),
                    target: text(&item, "target"),
                    human: item
                        .get("human")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false),
                    at: Utc::now(),
                });
            }
        }
        Ok(best_examples(source, found, k, min))
    }
}
