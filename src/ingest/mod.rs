//! Langfuse batch ingestion: `POST /api/public/ingestion` envelopes into normalised changes.
//!
//! Owns: the event envelope, the event-type table, per-event validation and the 207 answer's
//! per-event `successes`/`errors`. Must not touch: storage (it hands changes to the store's
//! writer through the caller), HTTP framing, or authentication decisions beyond "this key may
//! only write scores".

pub mod body;

use serde::Serialize;
use serde_json::Value;

use crate::auth::AccessLevel;
use crate::record::{Change, ObservationType, TimedChange};
use crate::score_config::ConfigLookup;
use crate::time::Timestamp;
use body::{Body, FieldError};

/// One entry of the 207 answer's `successes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSuccess {
    pub id: String,
    pub status: u16,
}

/// One entry of the 207 answer's `errors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventError {
    pub id: String,
    pub status: u16,
    pub message: String,
    pub error: String,
}

/// The whole batch after validation: what to store and what to answer.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Vec<TimedChange>,
    pub successes: Vec<EventSuccess>,
    pub errors: Vec<EventError>,
}

/// Why the envelope itself is unacceptable (the whole request gets 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(pub String);

/// What an event type does.
enum EventKind {
    Trace,
    Observation(ObservationType),
    /// Legacy `observation-create/update`: the type is in the body.
    LegacyObservation,
    Score,
    Log,
}

fn event_kind(t: &str) -> Option<EventKind> {
    if t == "trace-create" {
        return Some(EventKind::Trace);
    }
    if t == "score-create" {
        return Some(EventKind::Score);
    }
    if t == "sdk-log" {
        return Some(EventKind::Log);
    }
    if t == "observation-create" || t == "observation-update" {
        return Some(EventKind::LegacyObservation);
    }
    let base = t
        .strip_suffix("-create")
        .or_else(|| t.strip_suffix("-update"))?;
    ObservationType::parse(base).map(EventKind::Observation)
}

/// Validates a decoded batch body. Bad events become their own error entries; the rest are
/// returned as changes for one atomic write.
pub fn parse_batch(
    body: &Value,
    access: AccessLevel,
    configs: &dyn ConfigLookup,
) -> Result<Batch, EnvelopeError> {
    let Some(events) = body.get("batch").and_then(Value::as_array) else {
        return Err(EnvelopeError(
            "body must be a JSON object with a \"batch\" array".into(),
        ));
    };
    let mut out = Batch::default();
    for event in events {
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        match parse_event(event, access, configs) {
            Ok(Some(change)) => {
                out.changes.push(change);
                out.successes.push(EventSuccess { id, status: 201 });
            }
            // sdk-log: Langfuse drops it and lists it nowhere.
            Ok(None) => {}
            Err(Rejection::Invalid(e)) => out.errors.push(EventError {
                id,
                status: 400,
                message: "Invalid request data".into(),
                error: e.0,
            }),
            Err(Rejection::Scope) => out.errors.push(EventError {
                id,
                status: 401,
                message: "Authentication error".into(),
                error: "Access Scope Denied".into(),
            }),
        }
    }
    Ok(out)
}

enum Rejection {
    Invalid(FieldError),
    Scope,
}

impl From<FieldError> for Rejection {
    fn from(e: FieldError) -> Self {
        Rejection::Invalid(e)
    }
}

fn parse_event(
    event: &Value,
    access: AccessLevel,
    configs: &dyn ConfigLookup,
) -> Result<Option<TimedChange>, Rejection> {
    let invalid = |m: &str| Rejection::Invalid(FieldError(m.into()));
    let Value::Object(envelope) = event else {
        return Err(invalid("event must be a JSON object"));
    };
    let envelope = Body(envelope);
    let Some(id) = envelope.string("id")? else {
        return Err(invalid("event needs a string id"));
    };
    body::check_id("id", &id)?;
    let type_name = envelope
        .string("type")?
        .ok_or_else(|| invalid("event needs a type"))?;
    let kind = event_kind(&type_name).ok_or_else(|| {
        Rejection::Invalid(FieldError(format!("unknown event type {type_name:?}")))
    })?;
    let at = envelope
        .time("timestamp")?
        .ok_or_else(|| invalid("event needs a timestamp"))?;
    if matches!(kind, EventKind::Log) {
        return Ok(None);
    }
    if access == AccessLevel::ScoresOnly && !matches!(kind, EventKind::Score) {
        return Err(Rejection::Scope);
    }
    let Some(Value::Object(b)) = event.get("body") else {
        return Err(invalid("event needs a body object"));
    };
    let b = Body(b);
    let change = match kind {
        EventKind::Trace => Change::Trace(body::trace(&b)?),
        EventKind::Observation(t) => Change::Observation(body::observation(&b, t)?),
        EventKind::LegacyObservation => {
            let t = b
                .string("type")?
                .and_then(|t| ObservationType::parse(&t))
                .filter(|t| {
                    matches!(
                        t,
                        ObservationType::Span
                            | ObservationType::Generation
                            | ObservationType::Event
                    )
                })
                .ok_or_else(|| invalid("observation body needs type SPAN, GENERATION or EVENT"))?;
            Change::Observation(body::observation(&b, t)?)
        }
        EventKind::Score => Change::Score(Box::new(body::score(&b, at, configs)?)),
        EventKind::Log => return Ok(None),
    };
    Ok(Some(TimedChange { at, change }))
}

/// Parses the body of `POST /api/public/scores`: one score object, or the array the 5.x SDK
/// sends. Returns each item's result in order.
pub fn parse_scores(
    body: &Value,
    now: Timestamp,
    configs: &dyn ConfigLookup,
) -> Result<Vec<Result<TimedChange, FieldError>>, EnvelopeError> {
    let one = |v: &Value| match v {
        Value::Object(m) => body::score(&Body(m), now, configs).map(|s| TimedChange {
            at: s.timestamp,
            change: Change::Score(Box::new(s)),
        }),
        _ => Err(FieldError("each score must be a JSON object".into())),
    };
    match body {
        Value::Array(items) => Ok(items.iter().map(one).collect()),
        Value::Object(_) => Ok(vec![one(body)]),
        _ => Err(EnvelopeError(
            "body must be a score object or an array of them".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score_config::NoConfigs;
    use serde_json::json;

    #[test]
    fn bad_event_is_reported_alone() {
        let body = json!({"batch": [
            {"id": "e1", "type": "trace-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"id": "t"}},
            {"id": "e2", "type": "generation-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"name": "no id"}},
            {"id": "e3", "type": "nonsense", "timestamp": "2025-01-01T00:00:00Z", "body": {}},
            {"id": "e4", "type": "sdk-log", "timestamp": "2025-01-01T00:00:00Z", "body": {"log": 1}},
            {"type": "span-create"},
        ]});
        let b = parse_batch(&body, AccessLevel::Full, &NoConfigs).unwrap();
        assert_eq!(
            b.successes,
            vec![EventSuccess {
                id: "e1".into(),
                status: 201
            }]
        );
        let ids: Vec<_> = b.errors.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e2", "e3", "unknown"]);
        assert!(
            b.errors
                .iter()
                .all(|e| e.status == 400 && !e.error.is_empty())
        );
    }

    #[test]
    fn public_key_only_may_write_scores_only() {
        let body = json!({"batch": [
            {"id": "e1", "type": "trace-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"id": "t"}},
            {"id": "e2", "type": "score-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"name": "s", "value": 1, "traceId": "t"}},
        ]});
        let b = parse_batch(&body, AccessLevel::ScoresOnly, &NoConfigs).unwrap();
        assert_eq!(b.errors[0].status, 401);
        assert_eq!(b.successes[0].id, "e2");
    }

    #[test]
    fn envelope_without_batch_is_refused() {
        assert!(parse_batch(&json!({"events": []}), AccessLevel::Full, &NoConfigs).is_err());
        assert!(parse_batch(&json!([1]), AccessLevel::Full, &NoConfigs).is_err());
    }
}
