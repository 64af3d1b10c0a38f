//! The one error type that callers see, and its one mapping to a status and body.
//!
//! Every failure of a request ends as an [`ApiError`]. [`ApiError::status`],
//! [`ApiError::error_code`] and [`ApiError::detail`] are the only place that
//! decides what the client reads. The source of an internal error stays in the
//! log and never reaches the response body.

use crate::store::StoreError;
use crate::token::TokenError;

/// A failed request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request that contradicts itself or the configuration, such as `table` without `db_id`.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// No caller identity could be established.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The caller is known but may not delete these learnings.
    #[error("forbidden: {0}")]
    Forbidden(String),

    /// The path is not this operation's, or the database or table is not configured.
    #[error("not found: {0}")]
    NotFound(String),

    /// The path is this operation's but the method is not DELETE.
    #[error("method not allowed: {method}")]
    MethodNotAllowed { method: String },

    /// A parameter failed validation before any DynamoDB call was made.
    #[error("validation error: {0}")]
    Validation(String),

    /// The keys to verify a Bearer token could not be fetched. The detail shown to the client is generic.
    #[error("token verification keys are unavailable")]
    KeysUnavailable(#[source] TokenError),

    /// DynamoDB failed, or left items undeleted. The detail shown to the client is generic.
    #[error("deletion failed after {deleted} deleted learnings")]
    Internal {
        deleted: u64,
        #[source]
        source: StoreError,
    },
}

impl ApiError {
    /// Returns the HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Validation(_) => 422,
            Self::KeysUnavailable(_) | Self::Internal { .. } => 500,
        }
    }

    /// Returns the `error_code` field of the response body.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::KeysUnavailable(_) | Self::Internal { .. } => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Returns the `detail` field of the response body.
    ///
    /// An internal error names only the request id, which lets an operator find
    /// the SDK error in the log without exposing it to the client. A deletion
    /// cut short by the invocation deadline also gives the number deleted,
    /// because the client can finish it by repeating the request.
    pub fn detail(&self, request_id: &str) -> String {
        match self {
            Self::BadRequest(detail)
            | Self::Unauthenticated(detail)
            | Self::Forbidden(detail)
            | Self::NotFound(detail)
            | Self::Validation(detail) => detail.clone(),
            Self::MethodNotAllowed { .. } => "Method not allowed: use DELETE".to_owned(),
            Self::Internal {
                deleted,
                source: StoreError::DeadlineReached,
            } => format!(
                "The function ran out of time after deleting {deleted} learnings; repeat the request to delete the rest (request id {request_id})"
            ),
            Self::KeysUnavailable(_) | Self::Internal { .. } => {
                format!("Internal server error (request id {request_id})")
            }
        }
    }

    /// Returns the JSON response body: `{"detail": ..., "error_code": ...}`.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "detail": self.detail(request_id),
            "error_code": self.error_code(),
        })
    }
}

/// Shortens a value taken from the request before it is echoed in a detail, so
/// that a 1 MB parameter cannot come back as a 1 MB error body.
pub(crate) fn quote_for_detail(value: &str) -> String {
    const MAX_CHARS: usize = 64;

    let mut quoted: String = value.chars().take(MAX_CHARS).collect();
    if quoted.len() < value.len() {
        quoted.push_str("...");
    }
    format!("'{quoted}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_hides_source() {
        let error = ApiError::Internal {
            deleted: 3,
            source: StoreError::Unprocessed {
                remaining: 7,
                attempts: 10,
            },
        };

        let detail = error.detail("req-1");

        assert_eq!(detail, "Internal server error (request id req-1)");
        assert!(!detail.contains("unprocessed"));
    }

    #[test]
    fn deadline_detail_counts_deleted() {
        let error = ApiError::Internal {
            deleted: 1250,
            source: StoreError::DeadlineReached,
        };

        let detail = error.detail("req-2");

        assert_eq!(error.status(), 500);
        assert_eq!(error.error_code(), "INTERNAL_SERVER_ERROR");
        assert!(detail.contains("after deleting 1250 learnings"), "{detail}");
        assert!(detail.contains("repeat the request"), "{detail}");
        assert!(detail.contains("req-2"), "{detail}");
    }

    #[test]
    fn body_has_detail_and_code() {
        let body = ApiError::Forbidden("Cannot delete learnings for another user".into()).body("r");

        assert_eq!(body["detail"], "Cannot delete learnings for another user");
        assert_eq!(body["error_code"], "FORBIDDEN");
    }

    #[test]
    fn long_values_are_shortened() {
        let quoted = quote_for_detail(&"x".repeat(10_000));

        assert_eq!(quoted.len(), 64 + "''...".len());
    }
}
