//! Request bodies with a hard size limit, also after gzip inflation, so a small compressed
//! body cannot expand into gigabytes of memory (gzip bombs get 413 after reading at most
//! `limit + 1` inflated bytes), and a time limit (`serve` ends bodies that trickle in past
//! `http.body_read_timeout_secs`: 408).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;

use super::{ApiError, AppState};
use crate::serve::BodyDeadline;

/// How much of an oversized body is read and thrown away, so that a client still sending it
/// reads the 413 (and can split its batch) instead of a connection reset. Past this the
/// connection is closed on it.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let raw = collect(body, limit).await?;
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

/// A handler's JSON body: read within `max_body_bytes` (gzip included) and parsed, or the
/// 400/408/413/415 that says why not. Must be a handler's last argument (it takes the body).
pub struct JsonBody(pub serde_json::Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts.headers, body, state.config.max_body_bytes).await?;
        json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, with a message that says where it broke.
pub fn json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
}

/// The body, at most `limit` bytes of it; a longer body is drained (up to `DRAIN_LIMIT`) and
/// refused with 413.
async fn collect(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if declared > DRAIN_LIMIT as u64 {
        return Err(ApiError::too_large(limit));
    }
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            // Too large is the answer however the rest of an oversized body went.
            Err(_) if seen > limit => break,
            Err(e) => return Err(read_error(&e)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= limit {
            out.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(Bytes::from(out))
}

fn read_error(e: &axum::Error) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(deadline) = c.downcast_ref::<BodyDeadline>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                deadline.to_string(),
                "RequestTimeoutError",
            );
        }
        cause = c.source();
    }
    ApiError::bad_request(format!("could not read request body: {e}"))
}
