//! The upstream ingestion API as import and forward see it: batches of events POSTed to
//! `/api/public/ingestion` under a byte budget, retried with backoff on 429/5xx and transport
//! errors, split in two on 413, per-event rejections reported rather than retried. Over http or
//! https (see `crate::tls`); a certificate this machine does not trust ends the request at once.

use std::time::Duration;

use serde_json::Value;

use super::ForwardError;

/// Langfuse's SDKs cap a batch at 3.5 MB so it stays under the 4.5 MB body limit of Langfuse's
/// ingestion API (and ours) with room for the envelope.
pub const DEFAULT_BATCH_BYTES: usize = 3_500_000;
/// Events per batch at most, whatever their size: keeps one rejected batch cheap to retry.
pub const MAX_BATCH_EVENTS: usize = 500;
/// First retry delay; doubled per attempt up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to send and as whom. `Debug` and `Display` never show the secret, and the public key
/// only by its first characters.
#[derive(Clone)]
pub struct Credentials {
    pub public_key: String,
    pub secret_key: String,
}

impl Credentials {
    /// `pk-lf-12…`: enough to tell keys apart in a log line, not enough to use one.
    pub fn redacted(&self) -> String {
        let shown: String = self.public_key.chars().take(8).collect();
        format!("{shown}…")
    }

    fn header(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.public_key, self.secret_key);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.redacted())
    }
}

/// One event the upstream refused for good (its own 4xx in the 207 answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: String,
    pub status: u16,
    pub message: String,
}

/// Events as serialized JSON, collected up to the byte budget.
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<(String, Vec<u8>)>,
    bytes: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether `event_bytes` more would break the budget. An empty batch takes anything: an
    /// event larger than the budget goes alone, and the upstream decides (413 → reported).
    pub fn would_overflow(&self, event_bytes: usize, budget: usize) -> bool {
        !self.events.is_empty()
            && (self.bytes + event_bytes + 1 > budget || self.events.len() >= MAX_BATCH_EVENTS)
    }

    pub fn push(&mut self, event: &Value) -> Result<usize, ForwardError> {
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let bytes = serde_json::to_vec(event).map_err(|e| ForwardError::Encode(e.to_string()))?;
        let n = bytes.len();
        self.bytes += n + 1;
        self.events.push((id, bytes));
        Ok(n)
    }

    fn body(events: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(events.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"batch\":[");
        for (i, (_, e)) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        body
    }

    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}

/// An ingestion API to send to.
pub struct Upstream {
    base: String,
    /// `host:port`, for the explanation of a TLS failure.
    authority: String,
    credentials: Credentials,
    http: reqwest::blocking::Client,
    /// Attempts per request before giving up; `None` retries until it succeeds (a running
    /// forward outlives an upstream outage instead of exiting).
    pub max_attempts: Option<u32>,
    /// Ends the waits between retries (the server's forward at shutdown).
    pub stop: crate::background::StopSignal,
}

enum Outcome {
    Done(Vec<Rejected>),
    Retry {
        after: Option<Duration>,
        why: String,
    },
    TooLarge,
}

impl Upstream {
    pub fn new(base_url: &str, credentials: Credentials) -> Result<Upstream, ForwardError> {
        let base = base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| ForwardError::BadUrl(format!("{base_url:?} is not a url: {e}")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => crate::tls::check_trust_env().map_err(ForwardError::Tls)?,
            other => {
                return Err(ForwardError::BadUrl(format!(
                    "unsupported scheme {other:?}; use http://host:port or https://host"
                )));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ForwardError::BadUrl(
                "put credentials in --public-key/--secret-key, not in the url".into(),
            ));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ForwardError::Http(format!("cannot build the http client: {e}")))?;
        let authority = format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or_default()
        );
        Ok(Upstream {
            base,
            authority,
            credentials,
            http,
            max_attempts: Some(8),
            stop: Default::default(),
        })
    }

    /// The url and redacted key, for progress lines.
    pub fn describe(&self) -> String {
        format!("{} as {}", self.base, self.credentials.redacted())
    }

    /// Sends a batch until the upstream has acknowledged every event (accepted or rejected for
    /// good). Returns the rejected ones.
    pub fn send(&self, batch: &Batch) -> Result<Vec<Rejected>, ForwardError> {
        self.send_events(&batch.events)
    }

    fn send_events(&self, events: &[(String, Vec<u8>)]) -> Result<Vec<Rejected>, ForwardError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let body = Batch::body(events);
        let url = format!("{}/api/public/ingestion", self.base);
        let outcome = self.with_retries("ingestion batch", || {
            let resp = self
                .http
                .post(&url)
                .header("authorization", self.credentials.header())
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            classify(resp, &self.authority)
        })?;
        match outcome {
            Some(rejected) => Ok(rejected),
            // 413: halve until it fits; one event alone that is still too large is rejected.
            None if events.len() > 1 => {
                let (a, b) = events.split_at(events.len() / 2);
                let mut rejected = self.send_events(a)?;
                rejected.extend(self.send_events(b)?);
                Ok(rejected)
            }
            None => Ok(vec![Rejected {
                id: events[0].0.clone(),
                status: 413,
                message: "event is larger than the upstream accepts".into(),
            }]),
        }
    }

    /// `DELETE {path}` (a trace or score deleted here); an id the upstream does not have is done.
    pub fn delete(&self, path: &str) -> Result<(), ForwardError> {
        let url = format!("{}{path}", self.base);
        self.with_retries("delete", || {
            let resp = self
                .http
                .delete(&url)
                .header("authorization", self.credentials.header())
                .send();
            match resp {
                Err(e) => failed(e, &self.authority),
                Ok(r) => match r.status().as_u16() {
                    200..=299 | 404 => Ok(Outcome::Done(Vec::new())),
                    s => status_outcome(s, &r),
                },
            }
        })?;
        Ok(())
    }

    /// Runs `attempt` until it is done, backing off (or waiting `Retry-After`) between tries.
    /// `Ok(None)` means 413.
    fn with_retries(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<Outcome, ForwardError>,
    ) -> Result<Option<Vec<Rejected>>, ForwardError> {
        let mut delay = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt()? {
                Outcome::Done(rejected) => return Ok(Some(rejected)),
                Outcome::TooLarge => return Ok(None),
                Outcome::Retry { after, why } => {
                    if self.max_attempts.is_some_and(|max| tries >= max) {
                        return Err(ForwardError::GaveUp {
                            what: what.to_string(),
                            tries,
                            last: why,
                        });
                    }
                    let wait = after.unwrap_or(delay).min(MAX_BACKOFF);
                    tracing::warn!(%what, attempt = tries, wait_ms = wait.as_millis() as u64, reason = %why, "upstream not ready; retrying");
                    if self.stop.sleep(wait) {
                        return Err(ForwardError::Stopped);
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A request that got no answer: retried, unless TLS failed in a way that retrying cannot fix.
fn failed(e: reqwest::Error, authority: &str) -> Result<Outcome, ForwardError> {
    if let Some(why) = crate::tls::explain(&e, authority) {
        return Err(ForwardError::Tls(why));
    }
    // Without the url: it is in the progress output already. The innermost cause says what
    // went wrong ("Connection refused"); reqwest's own message only that something did.
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let cause = cause.to_string();
    let e = e.without_url();
    let why = if cause == e.to_string() {
        format!("transport error: {e}")
    } else {
        format!("transport error: {e}: {cause}")
    };
    Ok(Outcome::Retry { after: None, why })
}

fn retry_after(r: &reqwest::blocking::Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What a non-success status means for any request.
fn status_outcome(s: u16, r: &reqwest::blocking::Response) -> Result<Outcome, ForwardError> {
    match s {
        413 => Ok(Outcome::TooLarge),
        429 | 500..=599 => Ok(Outcome::Retry {
            after: retry_after(r),
            why: format!("upstream answered {s}"),
        }),
        401 | 403 => Err(ForwardError::Refused(format!(
            "upstream answered {s}: check the public and secret key of the upstream project"
        ))),
        _ => Err(ForwardError::Refused(format!("upstream answered {s}"))),
    }
}

/// What the answer to a batch means: done (with the events refused for good), or try again.
fn classify(
    resp: reqwest::Result<reqwest::blocking::Response>,
    authority: &str,
) -> Result<Outcome, ForwardError> {
    let r = match resp {
        Ok(r) => r,
        Err(e) => return failed(e, authority),
    };
    let s = r.status().as_u16();
    if !(200..=299).contains(&s) {
        return status_outcome(s, &r);
    }
    let body: Value = match r.json() {
        Ok(v) => v,
        // A 2xx without the 207 body (e.g. a proxy's 200): every event counts as accepted.
        Err(_) => return Ok(Outcome::Done(Vec::new())),
    };
    let errors = body
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut rejected = Vec::new();
    for e in &errors {
        let status = e
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(500);
        if status == 429 || status >= 500 {
            // The upstream failed on its side: the whole batch again (replays are idempotent).
            return Ok(Outcome::Retry {
                after: None,
                why: format!("upstream failed an event with {status}"),
            });
        }
        let id = e
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let message = [e.get("message"), e.get("error")]
            .into_iter()
            .flatten()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(": ");
        rejected.push(Rejected {
            id,
            status,
            message,
        });
    }
    Ok(Outcome::Done(rejected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_never_show() {
        let c = Credentials {
            public_key: "pk-lf-1234567890".into(),
            secret_key: "sk-lf-supersecret".into(),
        };
        let shown = format!("{c:?} {}", c.redacted());
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(!shown.contains("1234567890"), "{shown}");
        assert!(shown.contains("pk-lf-12"), "{shown}");
    }

    #[test]
    fn batches_respect_the_budget_but_take_one_oversized_event() {
        let mut b = Batch::default();
        let big = json!({"id": "big", "body": "x".repeat(100)});
        assert!(!b.would_overflow(10_000, 50));
        b.push(&big).unwrap();
        assert!(b.would_overflow(10, 50));
        let body = Batch::body(&b.events);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["batch"][0]["id"], "big");
    }

    #[test]
    fn urls_with_credentials_or_other_schemes_are_refused_clearly() {
        let c = Credentials {
            public_key: "pk".into(),
            secret_key: "sk".into(),
        };
        let err = |u: &str| Upstream::new(u, c.clone()).err().unwrap().to_string();
        assert!(err("ftp://cloud.langfuse.com").contains("https://host"));
        assert!(err("http://u:p@host").contains("--secret-key"));
        assert!(err("not a url").contains("not a url"));
        let tls = Upstream::new("https://cloud.langfuse.com/", c.clone()).unwrap();
        assert_eq!(tls.authority, "cloud.langfuse.com:443");
        assert!(Upstream::new("http://127.0.0.1:3000/", c).is_ok());
    }
}
