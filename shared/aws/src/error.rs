//! The error of the cloud backend outside the job store (SQS, Step
//! Functions, S3, EventBridge), and the adapter that wraps an SDK error.

use lotsawa_core::StoreError;

/// A cloud backend failure outside the job store (SQS, Step Functions, S3).
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An AWS call failed; the SDK error is the source.
    #[error("{service} call failed")]
    Aws {
        /// Which service.
        service: &'static str,
        /// The SDK's error.
        #[source]
        source: lotsawa_core::store::BoxError,
    },
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job service refused a request.
    #[error(transparent)]
    Service(#[from] lotsawa_core::ServiceError),
    /// A request could not be built or a stored text did not parse.
    #[error("invalid request: {0}")]
    Build(String),
}

impl From<CloudError> for lotsawa_core::ServiceError {
    fn from(e: CloudError) -> Self {
        match e {
            CloudError::Store(s) => s.into(),
            CloudError::Service(s) => s,
            other => lotsawa_core::ServiceError::Internal(Box::new(other)),
        }
    }
}

/// An AWS error outside the store, kept as the source.
pub fn aws<E: std::error::Error + Send + Sync + 'static>(
    service: &'static str,
) -> impl Fn(E) -> CloudError {
    move |e| CloudError::Aws {
        service,
        source: Box::new(e),
    }
}
