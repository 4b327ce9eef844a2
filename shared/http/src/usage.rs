//! `GET /api/usage`: the caller's provider usage over some days, by day or
//! by engine and model, priced from the server's price table, with its
//! monthly budget.

use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::NaiveDate;
use lotsawa_core::Tenant;
use lotsawa_core::usage::UsageGroup;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dto::UsageDto;
use crate::{ApiError, AppState};

/// The longest span one report covers.
pub const MAX_DAYS: i64 = 366;

/// The query of `GET /api/usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// One line of a usage report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageLineDto {
    /// The day (`groupBy=day`), `YYYY-MM-DD` UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The engine (`groupBy=model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The model (`groupBy=model`; "" when the engine has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Calls, tokens and cost (`null` when a model in it has no price).
    #[serde(flatten)]
    pub usage: UsageDto,
}

/// The monthly budget and what is used of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetDto {
    /// Tokens a month.
    pub monthly_tokens: u64,
    /// Tokens used this month (UTC).
    pub used_this_month: u64,
    /// When it resets, RFC 3339 UTC.
    pub resets_at: String,
}

/// `GET /api/usage` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReportDto {
    /// First day, `YYYY-MM-DD` UTC.
    pub from: String,
    /// Last day, included.
    pub to: String,
    /// `day` or `model`.
    pub group_by: String,
    /// The lines, oldest day (or engine and model) first.
    pub lines: Vec<UsageLineDto>,
    /// All of it.
    pub total: UsageDto,
    /// The caller's monthly token budget, when it has one.
    pub budget: Option<BudgetDto>,
}

fn day(name: &str, raw: &str) -> Result<NaiveDate, ApiError> {
    let raw = raw.trim();
    // A date, or the date of an RFC 3339 time.
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc).date_naive())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be a date (YYYY-MM-DD) or an RFC 3339 time, got '{raw}'"
            ))
        })
}

/// The caller's provider usage.
#[utoipa::path(get, path = "/api/usage",
    params(
        ("from" = Option<String>, Query, description = "First day (YYYY-MM-DD, UTC); default the first of this month"),
        ("to" = Option<String>, Query, description = "Last day, included; default today"),
        ("groupBy" = Option<String>, Query, description = "day (default) or model"),
    ),
    responses(
        (status = 200, description = "Usage over the days asked for", body = UsageReportDto),
        (status = 400, description = "Bad dates, span or grouping"),
    ))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    query: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<UsageReportDto>, ApiError> {
    let Query(q) = query?;
    let today = chrono::Utc::now().date_naive();
    let from = match &q.from {
        Some(raw) => day("from", raw)?,
        None => lotsawa_core::usage::month_of(today).0,
    };
    let to = match &q.to {
        Some(raw) => day("to", raw)?,
        None => today,
    };
    if from > to {
        return Err(ApiError::bad_request(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "a report covers at most {MAX_DAYS} days; ask for several"
        )));
    }
    let (group, name) = match q.group_by.as_deref().map(str::trim) {
        None | Some("day") => (UsageGroup::Day, "day"),
        Some("model") => (UsageGroup::Model, "model"),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "groupBy must be day or model, got '{other}'"
            )));
        }
    };
    let report = state.service.usage(&tenant, from, to, group).await?;
    Ok(Json(UsageReportDto {
        from: from.to_string(),
        to: to.to_string(),
        group_by: name.to_owned(),
        lines: report
            .lines
            .into_iter()
            .map(|l| UsageLineDto {
                day: l.day.map(|d| d.to_string()),
                engine: l.engine,
                model: l.model,
                usage: UsageDto::from(l.usage),
            })
            .collect(),
        total: UsageDto::from(report.total),
        budget: report.budget.map(|(b, used, resets)| BudgetDto {
            monthly_tokens: b,
            used_this_month: used,
            resets_at: resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
    }))
}
