//! The one mapping from failures to HTTP status + JSON body (`{"message", "error"}`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::search::SearchError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Langfuse's error name (`InvalidRequestError`, `LangfuseNotFoundError`, ...).
    pub error: Option<String>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, error: &str) -> Self {
        ApiError {
            status,
            message: message.into(),
            error: Some(error.into()),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "InvalidRequestError")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, "LangfuseNotFoundError")
    }

    /// Langfuse's 404 for an id the caller's project does not have.
    pub fn missing(kind: &str, id: &str) -> Self {
        Self::not_found(format!("{kind} {id} not found within authorized project"))
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
            "PayloadTooLargeError",
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message,
            "UnsupportedMediaTypeError",
        )
    }

    /// 503 with `Retry-After`: a condition that passes (full queue, recovery, shutdown), which
    /// every Langfuse client retries.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        ApiError {
            retry_after: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                message,
                "ServiceUnavailableError",
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            "InternalServerError",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ApiError::unavailable(e.to_string(), 1),
            StoreError::DiskFull(_) => ApiError {
                retry_after: Some(30),
                ..ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    e.to_string(),
                    "InsufficientStorageError",
                )
            },
            StoreError::Unavailable => ApiError::unavailable(e.to_string(), 2),
            StoreError::Closed => ApiError::unavailable(e.to_string(), 5),
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Query(q) => ApiError::bad_request(q.to_string()),
            SearchError::Store(s) => s.into(),
            SearchError::Closed => ApiError::unavailable(e.to_string(), 5),
            other => {
                tracing::error!(error = %other, "search error");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Forbidden => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string(), "ForbiddenError")
            }
            AuthError::Store(s) => s.into(),
            // Langfuse's 401 body is `{"message"}` alone.
            other => ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: other.to_string(),
                error: None,
                retry_after: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.error {
            Some(e) => json!({"message": self.message, "error": e}),
            None => json!({"message": self.message}),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_is_503_with_retry_after() {
        let resp = ApiError::from(StoreError::Busy).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn auth_failures_are_401_with_a_message_only() {
        let e = ApiError::from(AuthError::Missing);
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.message, "No authorization header");
        assert!(e.error.is_none());
    }
}
