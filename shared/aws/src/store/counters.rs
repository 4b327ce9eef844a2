//! Sharded counters of jobs by status and of chunk totals, read by the
//! metrics and by admission.

use super::*;

impl DynamoStore {
    /// Add a chunk attempt (or a translation-memory hit) to the counters
    /// behind `/metrics`. The counters are spread over [`METRIC_SHARDS`]
    /// items so that no one item takes every worker's writes.
    pub async fn count(&self, counted: &Counted<'_>) -> Result<(), StoreError> {
        let shard = rand::random::<u32>() % METRIC_SHARDS;
        let (expr, names, values) = counter_update(counted);
        self.clients
            .ddb
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(format!("METRICS#{shard}"), "METRICS")))
            .update_expression(expr)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(ddb("DynamoDB UpdateItem"))?;
        Ok(())
    }

    /// The counters of every shard, summed.
    pub async fn chunk_totals(&self) -> Result<ChunkTotals, StoreError> {
        let mut keys: Vec<Item> = (0..METRIC_SHARDS)
            .map(|i| Self::key(format!("METRICS#{i}"), "METRICS"))
            .collect();
        let items = self.batch_get(&mut keys, false).await?;
        Ok(totals_from_items(&items))
    }

    /// The `ADD` of one job to (`by` 1) or from (`by` -1) a status count.
    pub(super) fn count_update(
        &self,
        id: JobId,
        adds: &[(JobStatus, i64)],
    ) -> Result<TransactWriteItem, StoreError> {
        let mut u = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(counts_pk(shard_of(id)), "COUNTS")));
        let mut parts = Vec::new();
        for (i, (st, by)) in adds.iter().enumerate() {
            u = u
                .expression_attribute_names(format!("#s{i}"), st.as_str())
                .expression_attribute_values(format!(":v{i}"), n(by));
            parts.push(format!("#s{i} :v{i}"));
        }
        Ok(TransactWriteItem::builder()
            .update(
                u.update_expression(format!("ADD {}", parts.join(", ")))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }

    /// The `ADD` of `by` to `tenant`'s count of waiting jobs.
    pub(super) fn tenant_pending_update(
        &self,
        tenant: &lotsawa_core::Tenant,
        by: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(Self::key(tenant_counts_pk(tenant), "COUNTS")))
                    .update_expression("ADD pending :v")
                    .expression_attribute_values(":v", n(by))
                    .build()
                    .map_err(build)?,
            )
            .build())
    }
}

/// Counter items behind the cloud's `/metrics`.
pub const METRIC_SHARDS: u32 = 8;

/// What one step of a worker adds to the counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Counted<'a> {
    /// A provider call and its outcome (one of
    /// [`lotsawa_core::metrics::ATTEMPT_OUTCOMES`]); `seconds` for successes.
    Attempt {
        /// Outcome label.
        outcome: &'static str,
        /// Engine that answered.
        engine: &'a str,
        /// How long a successful call took.
        seconds: Option<f64>,
        /// Whether the answer was asked for again after the quality checks.
        quality_retried: bool,
    },
    /// The tokens a successful attempt reported.
    Tokens {
        /// Engine.
        engine: &'a str,
        /// Model (empty when none).
        model: &'a str,
        /// What it reported.
        usage: lotsawa_core::usage::Usage,
    },
    /// A chunk served from the translation memory.
    MemoryHit,
    /// An answer to the state machine that Step Functions refused for a
    /// reason other than the execution having ended.
    AnswerFailed,
}

/// The `ADD` update of a counter item. Attribute names: `attempts#<outcome>`,
/// `dur#<engine>#<bucket>` (non-cumulative counts), `dur#<engine>#sum`,
/// `memory_hits`, `quality_retries`, `tok#<engine>#<model>#<kind>`.
fn counter_update(
    counted: &Counted<'_>,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut adds: Vec<(String, AttributeValue)> = Vec::new();
    match counted {
        Counted::Attempt {
            outcome,
            engine,
            seconds,
            quality_retried,
        } => {
            adds.push((format!("attempts#{outcome}"), n(1)));
            if let Some(secs) = seconds {
                let bucket = lotsawa_core::metrics::bucket_index(*secs);
                adds.push((format!("dur#{engine}#{bucket}"), n(1)));
                adds.push((format!("dur#{engine}#sum"), n(secs)));
            }
            if *quality_retried {
                adds.push(("quality_retries".to_owned(), n(1)));
            }
        }
        Counted::Tokens {
            engine,
            model,
            usage,
        } => {
            adds.push((
                format!("tok#{engine}#{model}#prompt"),
                n(usage.prompt_tokens),
            ));
            adds.push((
                format!("tok#{engine}#{model}#completion"),
                n(usage.completion_tokens),
            ));
        }
        Counted::MemoryHit => adds.push(("memory_hits".to_owned(), n(1))),
        Counted::AnswerFailed => adds.push(("answer_failures".to_owned(), n(1))),
    }
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut parts = Vec::new();
    for (i, (name, value)) in adds.into_iter().enumerate() {
        names.insert(format!("#a{i}"), name);
        values.insert(format!(":v{i}"), value);
        parts.push(format!("#a{i} :v{i}"));
    }
    (format!("ADD {}", parts.join(", ")), names, values)
}

/// Sum counter items into totals (unknown attributes are ignored).
pub fn totals_from_items(items: &[Item]) -> ChunkTotals {
    let mut t = ChunkTotals::default();
    for item in items {
        for (k, v) in item {
            let Some(num) = v.as_n().ok().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let count = num.max(0.0) as u64;
            if let Some(outcome) = k.strip_prefix("attempts#") {
                *t.attempts.entry(outcome.to_owned()).or_default() += count;
            } else if let Some(rest) = k.strip_prefix("dur#") {
                let Some((engine, what)) = rest.rsplit_once('#') else {
                    continue;
                };
                let d = t.durations.entry(engine.to_owned()).or_default();
                if what == "sum" {
                    d.sum += num;
                } else if let Some(slot) = what
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| d.buckets.get_mut(i))
                {
                    *slot += count;
                }
            } else if let Some(rest) = k.strip_prefix("tok#") {
                // Engine names have no '#'; a model's name may.
                let (Some((engine, rest)), Some((_, kind))) =
                    (rest.split_once('#'), rest.rsplit_once('#'))
                else {
                    continue;
                };
                let model = rest.strip_suffix(kind).and_then(|m| m.strip_suffix('#'));
                if let Some(model) = model {
                    *t.tokens
                        .entry((engine.to_owned(), model.to_owned(), kind.to_owned()))
                        .or_default() += count;
                }
            } else if k == "memory_hits" {
                t.memory_hits += count;
            } else if k == "quality_retries" {
                t.quality_retries += count;
            } else if k == "answer_failures" {
                t.answer_failures += count;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(item: &mut Item, counted: &Counted<'_>) {
        // What DynamoDB does with the ADD update, for the test.
        let (expr, names, values) = counter_update(counted);
        for part in expr.trim_start_matches("ADD ").split(", ") {
            let (name, value) = part.split_once(' ').expect("ADD #a :v");
            let attr = names[name].clone();
            let add: f64 = values[value].as_n().expect("number").parse().expect("f64");
            let old: f64 = item
                .get(&attr)
                .and_then(|v| v.as_n().ok())
                .map_or(0.0, |v| v.parse().expect("f64"));
            item.insert(attr, n(old + add));
        }
    }

    #[test]
    fn counters_over_shards_sum_to_the_totals() {
        let mut shards = vec![Item::new(), Item::new(), Item::new()];
        let steps = [
            Counted::Attempt {
                outcome: "success",
                engine: "openai",
                seconds: Some(0.2),
                quality_retried: false,
            },
            Counted::Attempt {
                outcome: "transient_error",
                engine: "openai",
                seconds: None,
                quality_retried: false,
            },
            Counted::Attempt {
                outcome: "success",
                engine: "openai",
                seconds: Some(3.0),
                quality_retried: true,
            },
            Counted::Attempt {
                outcome: "success",
                engine: "bedrock",
                seconds: Some(0.2),
                quality_retried: false,
            },
            Counted::MemoryHit,
            Counted::Tokens {
                engine: "bedrock",
                model: "anthropic.claude:0#x",
                usage: lotsawa_core::usage::Usage::call(30, 7),
            },
            Counted::Tokens {
                engine: "bedrock",
                model: "anthropic.claude:0#x",
                usage: lotsawa_core::usage::Usage::call(5, 1),
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            apply(&mut shards[i % 3], step);
        }
        shards[0].insert("pk".into(), s("METRICS#0"));
        let t = totals_from_items(&shards);
        assert_eq!(t.attempts["success"], 3);
        assert_eq!(t.attempts["transient_error"], 1);
        assert_eq!(t.memory_hits, 1);
        assert_eq!(t.quality_retries, 1);
        let openai = &t.durations["openai"];
        assert_eq!(openai.count(), 2);
        assert_eq!(openai.buckets[lotsawa_core::metrics::bucket_index(0.2)], 1);
        assert_eq!(openai.buckets[lotsawa_core::metrics::bucket_index(3.0)], 1);
        assert!((openai.sum - 3.2).abs() < 1e-9);
        assert_eq!(t.durations["bedrock"].count(), 1);
        let tokens = |kind: &str| {
            t.tokens[&(
                "bedrock".to_owned(),
                "anthropic.claude:0#x".to_owned(),
                kind.to_owned(),
            )]
        };
        assert_eq!((tokens("prompt"), tokens("completion")), (35, 8));
    }
}
