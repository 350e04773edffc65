//! Query-string parameters as Langfuse reads them: repeatable keys (`tags=a&tags=b`), empty
//! values treated as absent, typed accessors whose errors name the parameter.

use axum::extract::{FromRequestParts, RawQuery};
use axum::http::request::Parts;

use super::ApiError;
use crate::time::Timestamp;

pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let RawQuery(q) = RawQuery::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        Ok(Params(
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        ))
    }
}

/// Offset pagination: `page` ≥ 1, `limit` 1..=max.
pub struct Paging {
    pub page: usize,
    pub limit: usize,
}

impl Paging {
    pub fn skip(&self) -> usize {
        (self.page - 1).saturating_mul(self.limit)
    }

    pub fn window(&self) -> crate::store::Window {
        crate::store::Window {
            skip: self.skip(),
            limit: self.limit,
        }
    }

    /// This page of a list held in memory, as `{data, meta}`.
    pub fn page_of<T>(
        &self,
        all: &[T],
        to_json: impl Fn(&T) -> serde_json::Value,
    ) -> serde_json::Value {
        let data: Vec<serde_json::Value> = all
            .iter()
            .skip(self.skip())
            .take(self.limit)
            .map(to_json)
            .collect();
        self.answer(data, all.len() as u64)
    }

    /// `{data, meta}` for this page of `total` items.
    pub fn answer(&self, data: Vec<serde_json::Value>, total: u64) -> serde_json::Value {
        listed(data, self.meta(total))
    }

    pub fn meta(&self, total: u64) -> serde_json::Value {
        let limit = self.limit as u64;
        serde_json::json!({
            "page": self.page,
            "limit": self.limit,
            "totalItems": total,
            "totalPages": total.div_ceil(limit),
        })
    }
}

impl Params {
    pub fn str(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Every value of a repeatable parameter; comma lists are split too.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(str::trim).map(String::from))
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        self.str(name)
            .map(|v| {
                Timestamp::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{name} must be an ISO-8601 datetime with offset, got {v:?}"
                    ))
                })
            })
            .transpose()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be an integer, got {v:?}"))
                })
            })
            .transpose()
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.str(name)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{name} must be a number, got {v:?}"))
                    })
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.str(name).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "{name} must be true or false, got {v:?}"
            ))),
        }
    }

    pub fn paging(&self, default_limit: usize, max_limit: usize) -> Result<Paging, ApiError> {
        let page = self.int("page")?.unwrap_or(1);
        let limit = self.int("limit")?.unwrap_or(default_limit as i64);
        if page < 1 {
            return Err(ApiError::bad_request("page must be 1 or more"));
        }
        if limit < 1 || limit > max_limit as i64 {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {max_limit}"
            )));
        }
        Ok(Paging {
            page: page as usize,
            limit: limit as usize,
        })
    }

    /// An opaque keyset cursor `(time, id)`, base64 of `"<micros>:<id>"`.
    pub fn cursor(&self) -> Result<Option<(i64, String)>, ApiError> {
        use base64::Engine;
        let Some(c) = self.str("cursor") else {
            return Ok(None);
        };
        let bad = || ApiError::bad_request("cursor is not one this server issued");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (ts, id) = raw.split_once(':').ok_or_else(bad)?;
        Ok(Some((ts.parse().map_err(|_| bad())?, id.to_string())))
    }
}

pub fn encode_cursor(ts: Timestamp, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{id}", ts.micros()))
}

/// A list answer, `{"data": data, "meta": meta}`, with the items moved in: `json!` would copy
/// every one of them (a page of 50 traces with their input and output is tens of kilobytes).
pub fn listed(data: Vec<serde_json::Value>, meta: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(2);
    m.insert("data".into(), serde_json::Value::Array(data));
    m.insert("meta".into(), meta);
    serde_json::Value::Object(m)
}
