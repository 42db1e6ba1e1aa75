//! Typed ARM errors. Each names the operation and the resource; none carries a token or secret.

use std::time::Duration;

/// An ARM call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    /// 404: the resource (or its parent) does not exist. The only error that means "not found".
    #[error("{operation} {resource}: not found ({code})")]
    NotFound {
        /// e.g. `LoadBalancers.Get`.
        operation: String,
        /// Resource id or path.
        resource: String,
        /// ARM error code (e.g. `ResourceNotFound`, `NotFound`).
        code: String,
    },
    /// 412: the ETag sent with `If-Match` is stale; re-read and re-plan.
    #[error("{operation} {resource}: precondition failed (the resource changed since it was read; re-read and retry)")]
    Conflict {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
    },
    /// The bucket is throttled (429 or a closed gate) and the wait bound was reached.
    #[error("{operation} {resource}: throttled by ARM ({bucket}); retry after {retry_after:?}")]
    Throttled {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// `<provider>/<read|write>`.
        bucket: String,
        /// How long until the bucket reopens.
        retry_after: Duration,
    },
    /// Any other HTTP error answer from ARM.
    #[error("{operation} {resource}: HTTP {status} {code}: {message}")]
    Http {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// HTTP status.
        status: u16,
        /// ARM error code.
        code: String,
        /// ARM error message.
        message: String,
    },
    /// A long-running operation ended Failed or Canceled.
    #[error("{operation} {resource}: long-running operation {status}: {code}: {message}")]
    OperationFailed {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// `Failed` or `Canceled`.
        status: String,
        /// ARM error code.
        code: String,
        /// ARM error message.
        message: String,
    },
    /// No answer: connection refused or reset, timeout (after retries).
    #[error("{operation} {resource}: {reason}")]
    Transport {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// Why.
        reason: String,
    },
    /// A token could not be obtained.
    #[error("{operation} {resource}: {reason}")]
    Auth {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// The auth error.
        reason: String,
    },
    /// The answer could not be decoded (the raw body is logged, not carried).
    #[error("{operation} {resource}: cannot decode the response: {reason}")]
    Decode {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// The serde error.
        reason: String,
    },
    /// ARM answered with a redirect; redirects are never followed (a token must not follow them).
    #[error("{operation} {resource}: HTTP {status} redirect to {location} refused (redirects are not followed; check the ARM endpoint in the configuration)")]
    Redirected {
        /// Operation.
        operation: String,
        /// Resource.
        resource: String,
        /// HTTP status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// A request could not be built (bad name or id).
    #[error("{operation}: invalid request: {reason}")]
    InvalidRequest {
        /// Operation.
        operation: String,
        /// Why.
        reason: String,
    },
}

impl ArmError {
    /// The operation that failed (`<resource>_<operation>`, e.g. `public_ip_addresses_create_or_update`).
    pub fn operation(&self) -> &str {
        match self {
            Self::NotFound { operation, .. }
            | Self::Conflict { operation, .. }
            | Self::Throttled { operation, .. }
            | Self::Http { operation, .. }
            | Self::OperationFailed { operation, .. }
            | Self::Transport { operation, .. }
            | Self::Auth { operation, .. }
            | Self::Decode { operation, .. }
            | Self::Redirected { operation, .. }
            | Self::InvalidRequest { operation, .. } => operation,
        }
    }

    /// True for a confirmed 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for a 412.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True when ARM throttled the call.
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    /// When to try again, if ARM said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// ARM's `error.code` when it answered with one (for metrics).
    pub fn arm_code(&self) -> &str {
        match self {
            Self::NotFound { code, .. } | Self::Http { code, .. } | Self::OperationFailed { code, .. } => code,
            _ => "",
        }
    }

    /// The HTTP status, for metrics (`0` when there was no answer).
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } => 412,
            Self::Throttled { .. } => 429,
            Self::Http { status, .. } | Self::Redirected { status, .. } => *status,
            _ => 0,
        }
    }
}
