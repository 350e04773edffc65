//! Request bodies with a hard size limit, also after gzip inflation, so a small compressed
//! body cannot expand into gigabytes of memory (gzip bombs get 413 after reading at most
//! `limit + 1` inflated bytes), and a time limit (`serve` ends bodies that trickle in past
//! `http.body_read_timeout_secs`: 408).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::ApiError;
use crate::serve::BodyDeadline;

pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes reports the limit as an error whose source is LengthLimitError.
        let source = std::error::Error::source(&e);
        if source.is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit")
        {
            ApiError::too_large(limit)
        } else if let Some(deadline) = source.and_then(|s| s.downcast_ref::<BodyDeadline>()) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                deadline.to_string(),
                "RequestTimeoutError",
            )
        } else {
            ApiError::bad_request(format!("could not read request body: {e}"))
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            let mut dec = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            dec.read_to_end(&mut out).map_err(|e| {
                ApiError::bad_request(format!("failed to decompress request body: {e}"))
            })?;
            if out.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::unsupported_media(format!(
            "unsupported content-encoding {other:?}; use gzip or none"
        ))),
    }
}

/// Parses a JSON body, with a message that says where it broke.
pub fn json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
}
