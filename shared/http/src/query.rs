//! The query of a list request (`GET /api/jobs`, `GET /api/batches`),
//! parsed at the edge into domain types, so a bad value or an unknown
//! parameter is a 400 problem naming it before any handler runs.

use lotsawa_core::{JobStatus, JobType};
use serde::Deserialize;

/// Most jobs one page may hold.
pub const MAX_PAGE: u32 = 100;

/// The query of a list request, parsed at the edge: a bad value or an
/// unknown parameter is a 400 problem naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only jobs in this status.
    #[serde(default, deserialize_with = "parsed")]
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    #[serde(default, rename = "type", deserialize_with = "parsed")]
    pub kind: Option<JobType>,
    /// Only jobs of this queue priority.
    #[serde(default, deserialize_with = "parsed")]
    pub priority: Option<Priority>,
    /// Page size.
    #[serde(default, deserialize_with = "parsed")]
    pub limit: Option<PageLimit>,
    /// Opaque cursor from a previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A page size in 1..=[`MAX_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(pub u32);

impl std::str::FromStr for PageLimit {
    type Err = lotsawa_core::ValidationError;
    fn from_str(l: &str) -> Result<Self, Self::Err> {
        match l.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(Self(n)),
            _ => Err(lotsawa_core::ValidationError(format!(
                "limit must be an integer between 1 and {MAX_PAGE}, got '{l}'"
            ))),
        }
    }
}

/// A queue priority in -10..=10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority(pub i8);

impl std::str::FromStr for Priority {
    type Err = lotsawa_core::ValidationError;
    fn from_str(p: &str) -> Result<Self, Self::Err> {
        use lotsawa_core::job::{MAX_PRIORITY, MIN_PRIORITY};
        match p.trim().parse::<i8>() {
            Ok(n) if (MIN_PRIORITY..=MAX_PRIORITY).contains(&n) => Ok(Self(n)),
            _ => Err(lotsawa_core::ValidationError(format!(
                "priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, got '{p}'"
            ))),
        }
    }
}

/// A query value through its type's own parser, so the message is the
/// domain's.
pub(crate) fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = lotsawa_core::ValidationError>,
{
    let raw = String::deserialize(d)?;
    raw.parse()
        .map(Some)
        .map_err(|e: lotsawa_core::ValidationError| <D::Error as serde::de::Error>::custom(e.0))
}
