//! The error of an input refused at the edge, shared by every validated
//! type (jobs, tenants, keys).

/// Why an input was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);
