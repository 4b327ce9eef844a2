//! What provider calls cost: the tokens each answer reported, summed per
//! chunk and per job, and their price from an optional table
//! (`LOTSAWA_PRICES`).

use serde::{Deserialize, Serialize};

use crate::limits::{Entry, lookup, parse_table};

/// Provider calls and the tokens they reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Provider calls (translation, quality retry, review).
    pub calls: u64,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// One call's usage.
    pub fn call(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            calls: 1,
            prompt_tokens,
            completion_tokens,
        }
    }

    /// Prompt and completion tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Nothing at all.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            calls: self.calls.saturating_add(o.calls),
            prompt_tokens: self.prompt_tokens.saturating_add(o.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_add(o.completion_tokens),
        }
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), |a, b| a + b)
    }
}

/// A job's usage as its result shows it: the calls, the tokens, and their
/// cost in US dollars (`null` when the model has no price).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobUsage {
    /// Provider calls.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Their price, when the price table has the model.
    pub cost_usd: Option<f64>,
}

impl JobUsage {
    /// `usage` priced by `price` (when there is one).
    pub fn priced(usage: Usage, price: Option<Price>) -> Self {
        Self {
            calls: usage.calls,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_usd: price.map(|p| p.cost(&usage)),
        }
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

impl Price {
    /// What `usage` costs, rounded to a millionth of a dollar.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let c = (usage.prompt_tokens as f64 * self.input
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0;
        (c * 1_000_000.0).round() / 1_000_000.0
    }
}

/// The price table (`LOTSAWA_PRICES='ENGINE[:MODEL] in=USD out=USD; …'`,
/// dollars per million tokens).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prices {
    entries: Vec<Entry<Price>>,
}

impl Prices {
    /// Parse the table; every entry gives both `in` and `out`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let given = parse_table(text, |p: &mut (Option<f64>, Option<f64>), k, v| {
            let n: f64 = v
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| "expected dollars per million tokens, 0 or more".to_owned())?;
            match k {
                "in" => p.0 = Some(n),
                "out" => p.1 = Some(n),
                other => return Err(format!("unknown figure '{other}' (in, out)")),
            }
            Ok(())
        })?;
        let entries = given
            .into_iter()
            .map(|e| match e.value {
                (Some(input), Some(output)) => Ok(Entry {
                    engine: e.engine,
                    model: e.model,
                    value: Price { input, output },
                }),
                _ => Err(format!(
                    "'{}{}': every entry gives both in=… and out=…",
                    e.engine,
                    e.model.map(|m| format!(":{m}")).unwrap_or_default()
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// The price of `engine` with `model`: `ENGINE:MODEL`, else `ENGINE`.
    pub fn price(&self, engine: &str, model: Option<&str>) -> Option<Price> {
        lookup(&self.entries, engine, model).map(|e| e.value)
    }
}

/// The first day of `day`'s month and the first instant of the next
/// month (when a monthly budget resets), UTC.
pub fn month_of(day: chrono::NaiveDate) -> (chrono::NaiveDate, chrono::DateTime<chrono::Utc>) {
    use chrono::Datelike;
    let first = day.with_day(1).unwrap_or(day);
    let next = if first.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    (first, next.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// A tenant's monthly token budget, spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent {
    /// The budget, tokens a month.
    pub budget: u64,
    /// Tokens used this month.
    pub used: u64,
    /// When the budget starts again.
    pub resets_at: chrono::DateTime<chrono::Utc>,
}

impl BudgetSpent {
    /// The job error of a run stopped by it (`budget_exhausted: …`).
    pub fn job_error(&self) -> String {
        format!(
            "{}: the monthly token budget of {} tokens is spent ({} used); it resets at {}, \
             and a retry then continues from the first unfinished chunk",
            BUDGET_EXHAUSTED,
            self.budget,
            self.used,
            self.resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The error code of a job or a submission refused for a spent budget.
pub const BUDGET_EXHAUSTED: &str = "budget_exhausted";

/// Whether `tenant`'s budget is spent at `now` (`None`: it has no budget,
/// or tokens are left).
pub async fn budget_spent(
    store: &dyn crate::store::UsageStore,
    tenant: &crate::auth::Tenant,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<BudgetSpent>, crate::store::StoreError> {
    match store.budget(tenant).await? {
        Some(budget) => spent_of(store, tenant, budget, now).await,
        None => Ok(None),
    }
}

/// Tenants' budgets as a runner last read them, for at most [`BUDGET_TTL`]:
/// a chunk checks its tenant's budget before it starts, and most tenants
/// have none, so the budget itself is not read again for every chunk (the
/// month's usage is, when there is a budget). A budget set or lifted takes
/// effect within the TTL.
#[derive(Debug, Default)]
pub struct BudgetCache {
    seen: std::sync::Mutex<
        std::collections::HashMap<crate::auth::Tenant, (std::time::Instant, Option<u64>)>,
    >,
}

/// How long a runner trusts a budget it read.
pub const BUDGET_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl BudgetCache {
    /// Whether `tenant`'s budget is spent at `now`, its budget read at most
    /// [`BUDGET_TTL`] ago.
    pub async fn spent(
        &self,
        store: &dyn crate::store::UsageStore,
        tenant: &crate::auth::Tenant,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<BudgetSpent>, crate::store::StoreError> {
        let cached = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get(tenant)
                .filter(|(at, _)| at.elapsed() < BUDGET_TTL)
                .map(|(_, b)| *b)
        };
        let budget = match cached {
            Some(b) => b,
            None => {
                let b = store.budget(tenant).await?;
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.len() > 10_000 {
                    seen.clear();
                }
                seen.insert(tenant.clone(), (std::time::Instant::now(), b));
                b
            }
        };
        match budget {
            Some(b) => spent_of(store, tenant, b, now).await,
            None => Ok(None),
        }
    }
}

/// The tokens `tenant` used this month (UTC) as of `now`, and when the
/// month ends (its budget resets).
pub async fn month_used(
    store: &dyn crate::store::UsageStore,
    tenant: &crate::auth::Tenant,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(u64, chrono::DateTime<chrono::Utc>), crate::store::StoreError> {
    let (first, resets_at) = month_of(now.date_naive());
    let used = store
        .usage(tenant, first, now.date_naive())
        .await?
        .iter()
        .map(|r| r.usage.tokens())
        .sum();
    Ok((used, resets_at))
}

async fn spent_of(
    store: &dyn crate::store::UsageStore,
    tenant: &crate::auth::Tenant,
    budget: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<BudgetSpent>, crate::store::StoreError> {
    let (used, resets_at) = month_used(store, tenant, now).await?;
    Ok((used >= budget).then_some(BudgetSpent {
        budget,
        used,
        resets_at,
    }))
}

/// How a usage report groups its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// One line per day.
    Day,
    /// One line per engine and model.
    Model,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLine {
    /// The day (grouped by day).
    pub day: Option<chrono::NaiveDate>,
    /// The engine (grouped by model).
    pub engine: Option<String>,
    /// The model (grouped by model; "" when none).
    pub model: Option<String>,
    /// Calls and tokens, with their cost.
    pub usage: JobUsage,
}

/// A tenant's usage over some days.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    /// The lines, by day or by engine and model, in order.
    pub lines: Vec<UsageLine>,
    /// All of it.
    pub total: JobUsage,
    /// The tenant's monthly budget this month, when it has one:
    /// (budget, tokens used this month, when it resets).
    pub budget: Option<(u64, u64, chrono::DateTime<chrono::Utc>)>,
}

/// What a report line groups by: day, or engine and model.
type LineKey = (Option<chrono::NaiveDate>, Option<String>, Option<String>);

/// Group `rows` into report lines, each priced by `price` (its cost is
/// `null` when any of its rows has no price).
pub fn report_lines(
    rows: &[crate::store::UsageRow],
    group: UsageGroup,
    price: impl Fn(&str, &str) -> Option<Price>,
) -> (Vec<UsageLine>, JobUsage) {
    use std::collections::BTreeMap;
    let mut lines: BTreeMap<LineKey, (Usage, Option<f64>)> = BTreeMap::new();
    let mut total = (Usage::default(), Some(0.0));
    for r in rows {
        let key = match group {
            UsageGroup::Day => (Some(r.day), None, None),
            UsageGroup::Model => (None, Some(r.engine.clone()), Some(r.model.clone())),
        };
        let model = (!r.model.is_empty()).then_some(r.model.as_str());
        let cost = price(&r.engine, model.unwrap_or("")).map(|p| p.cost(&r.usage));
        let line = lines.entry(key).or_insert((Usage::default(), Some(0.0)));
        line.0 += r.usage;
        line.1 = line.1.zip(cost).map(|(a, b)| a + b);
        total.0 += r.usage;
        total.1 = total.1.zip(cost).map(|(a, b)| a + b);
    }
    let round = |c: Option<f64>| c.map(|c| (c * 1_000_000.0).round() / 1_000_000.0);
    let priced = |(u, c): (Usage, Option<f64>)| JobUsage {
        calls: u.calls,
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cost_usd: round(c),
    };
    let out = lines
        .into_iter()
        .map(|((day, engine, model), v)| UsageLine {
            day,
            engine,
            model,
            usage: priced(v),
        })
        .collect();
    (out, priced(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_price_usage() {
        let p = Prices::parse("openai:gpt-4o-mini in=0.15 out=0.6; bedrock in=3 out=15")
            .expect("parse");
        let price = p.price("openai", Some("gpt-4o-mini")).expect("priced");
        let u = Usage {
            calls: 2,
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        };
        assert!((price.cost(&u) - 0.45).abs() < 1e-9);
        assert!(p.price("openai", Some("gpt-4o")).is_none());
        assert!(p.price("bedrock", Some("x")).is_some());
        let priced = JobUsage::priced(u, None);
        assert_eq!(priced.cost_usd, None);
        let json = serde_json::to_value(priced).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"calls": 2, "promptTokens": 1_000_000, "completionTokens": 500_000, "costUsd": null})
        );
    }

    #[test]
    fn bad_price_tables_are_refused() {
        for bad in [
            "openai in=1",
            "openai in=-1 out=2",
            "openai in=x out=1",
            "openai cost=1",
        ] {
            assert!(Prices::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_lines_group_and_price() {
        use crate::store::UsageRow;
        let d = |day| chrono::NaiveDate::from_ymd_opt(2026, 12, day).expect("date");
        let row = |day, engine: &str, model: &str, p, c| UsageRow {
            day: d(day),
            engine: engine.into(),
            model: model.into(),
            usage: Usage {
                calls: 1,
                prompt_tokens: p,
                completion_tokens: c,
            },
        };
        let rows = [
            row(1, "openai", "m", 1_000_000, 0),
            row(1, "bedrock", "x", 10, 10),
            row(2, "openai", "m", 0, 1_000_000),
        ];
        let price = |e: &str, _: &str| {
            (e == "openai").then_some(Price {
                input: 1.0,
                output: 2.0,
            })
        };
        let (days, total) = report_lines(&rows, UsageGroup::Day, price);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].usage.calls, 2);
        assert_eq!(days[0].usage.cost_usd, None, "bedrock has no price");
        assert_eq!(days[1].usage.cost_usd, Some(2.0));
        assert_eq!(total.prompt_tokens, 1_000_010);
        assert_eq!(total.cost_usd, None);
        let (models, _) = report_lines(&rows, UsageGroup::Model, price);
        let openai = models
            .iter()
            .find(|l| l.engine.as_deref() == Some("openai"))
            .expect("openai");
        assert_eq!((openai.usage.calls, openai.usage.cost_usd), (2, Some(3.0)));
    }

    #[test]
    fn months_reset_on_the_first() {
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).expect("date");
        let (first, reset) = month_of(d(2026, 12, 7));
        assert_eq!(first, d(2026, 12, 1));
        assert_eq!(reset.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (first, reset) = month_of(d(2026, 2, 28));
        assert_eq!(first, d(2026, 2, 1));
        assert_eq!(reset.date_naive(), d(2026, 3, 1));
    }

    #[test]
    fn usage_sums() {
        let total: Usage = [Usage::call(10, 5), Usage::call(3, 2)].into_iter().sum();
        assert_eq!(
            total,
            Usage {
                calls: 2,
                prompt_tokens: 13,
                completion_tokens: 7
            }
        );
        assert_eq!(total.tokens(), 20);
    }
}
