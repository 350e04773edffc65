//! Parsing of one event body (trace, observation, score) into a patch, with Langfuse's field
//! rules: camelCase names with the snake_case duplicates older SDKs send, explicit `null` that
//! clears only where Langfuse lets it, ISO times with an offset, usage in three shapes.

use serde_json::{Map, Value};

use crate::record::{
    Level, ObservationPatch, ObservationType, Patch, ScoreDataType, ScoreRecord, ScoreSource,
    ScoreTarget, ScoreValue, TracePatch, normalize_environment,
};
use crate::score_config::ConfigLookup;
use crate::time::Timestamp;

/// Langfuse's id rule: 1..800 characters, no carriage return.
const MAX_ID_CHARS: usize = 800;
const MAX_NAME_CHARS: usize = 1000;

/// A field-level problem, reported as the event's 400 message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError(msg.into()))
}

/// A JSON object body with lookup by camelCase name or its snake_case twin.
pub struct Body<'a>(pub &'a Map<String, Value>);

impl<'a> Body<'a> {
    /// The raw value under `name` (or its snake_case form); `Some(Null)` when explicitly null.
    fn raw(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).or_else(|| self.0.get(&snake(name)))
    }

    fn present(&self, name: &str) -> Option<&'a Value> {
        self.raw(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Numbers and booleans in string fields are common in hand-written clients.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => err(format!("{name} must be a string")),
        }
    }

    /// A string field where an explicit `null` clears the stored value.
    fn clearable(&self, name: &str) -> Result<Patch<String>, FieldError> {
        match self.raw(name) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(_) => Ok(self.string(name)?.map_or(Patch::Absent, Patch::Set)),
        }
    }

    pub fn id(&self, name: &str) -> Result<Option<String>, FieldError> {
        let Some(id) = self.string(name)? else {
            return Ok(None);
        };
        check_id(name, &id)?;
        Ok(Some(id))
    }

    pub fn time(&self, name: &str) -> Result<Option<Timestamp>, FieldError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) => Timestamp::parse(s).map(Some).ok_or_else(|| {
                FieldError(format!(
                    "{name} must be an ISO-8601 datetime with a timezone offset, got {s:?}"
                ))
            }),
            Some(_) => err(format!("{name} must be an ISO-8601 datetime string")),
        }
    }

    fn json(&self, name: &str) -> Option<Value> {
        self.present(name).cloned()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => err(format!("{name} must be a boolean")),
        }
    }

    fn tags(&self) -> Result<Vec<String>, FieldError> {
        match self.present("tags") {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| match t {
                    Value::String(s) => Ok(s.clone()),
                    _ => err("tags must be an array of strings"),
                })
                .collect(),
            Some(_) => err("tags must be an array of strings"),
        }
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.contains('\r') {
        return err(format!(
            "{field} must be 1 to {MAX_ID_CHARS} characters without carriage returns"
        ));
    }
    Ok(())
}

fn check_name(name: &Patch<String>) -> Result<(), FieldError> {
    if let Patch::Set(n) = name
        && n.chars().count() > MAX_NAME_CHARS
    {
        return err(format!("name must be at most {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

pub fn trace(body: &Body) -> Result<TracePatch, FieldError> {
    let id = body
        .id("id")?
        .ok_or_else(|| FieldError("trace body needs an id".into()))?;
    let name = body.clearable("name")?;
    check_name(&name)?;
    Ok(TracePatch {
        id,
        timestamp: body.time("timestamp")?,
        name,
        user_id: body.clearable("userId")?,
        session_id: body.clearable("sessionId")?,
        release: body.clearable("release")?,
        version: body.clearable("version")?,
        input: body.json("input"),
        output: body.json("output"),
        metadata: body.json("metadata"),
        tags: body.tags()?,
        public: body.bool("public")?,
        environment: body.string("environment")?,
    })
}

pub fn observation(body: &Body, kind: ObservationType) -> Result<ObservationPatch, FieldError> {
    let id = body
        .id("id")?
        .ok_or_else(|| FieldError("observation body needs an id".into()))?;
    let mut p = ObservationPatch::new(id, kind);
    p.trace_id = body.id("traceId")?;
    p.parent_observation_id = body.id("parentObservationId")?;
    p.name = body.clearable("name")?;
    check_name(&p.name)?;
    p.start_time = body.time("startTime")?;
    p.end_time = body.time("endTime")?;
    p.completion_start_time = body.time("completionStartTime")?;
    p.input = body.json("input");
    p.output = body.json("output");
    p.metadata = body.json("metadata");
    p.level = match body.raw("level") {
        None => Patch::Absent,
        Some(Value::Null) => Patch::Clear,
        Some(Value::String(s)) => Patch::Set(Level::parse(s).ok_or_else(|| {
            FieldError(format!(
                "level must be one of DEBUG, DEFAULT, WARNING, ERROR; got {s:?}"
            ))
        })?),
        Some(_) => return err("level must be a string"),
    };
    p.status_message = body.string("statusMessage")?;
    p.version = body.string("version")?;
    p.environment = body.string("environment")?;
    p.model = body.clearable("model")?;
    p.model_parameters = match body.present("modelParameters") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return err("modelParameters must be an object"),
    };
    let (usage, usage_details, cost_details) = (
        body.present("usage"),
        body.present("usageDetails"),
        body.present("costDetails"),
    );
    for (name, v) in [
        ("usage", usage),
        ("usageDetails", usage_details),
        ("costDetails", cost_details),
    ] {
        if let Some(v) = v {
            reject_negative(name, v, 0)?;
        }
    }
    let provided = crate::cost::usage::from_event_body(usage, usage_details, cost_details)
        .map_err(|e| FieldError(e.to_string()))?;
    p.usage = provided.usage;
    p.cost = provided.cost;
    p.prompt_name = body.string("promptName")?;
    p.prompt_version = match body.present("promptVersion") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| FieldError("promptVersion must be an integer".into()))?,
        ),
    };
    if p.prompt_name.is_some() != p.prompt_version.is_some() {
        return err("promptName and promptVersion must be set together");
    }
    Ok(p)
}

/// Langfuse silently drops negative counts and costs; a negative amount is a client bug the
/// client should hear about, so it is this event's 400 instead.
fn reject_negative(field: &str, v: &Value, depth: usize) -> Result<(), FieldError> {
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f < 0.0) => {
            err(format!("{field} must not be negative"))
        }
        Value::Object(m) if depth < 2 => m
            .iter()
            .try_for_each(|(k, x)| reject_negative(&format!("{field}.{k}"), x, depth + 1)),
        _ => Ok(()),
    }
}

/// A score body, shared by `score-create` events and `POST /api/public/scores`. A score that
/// names a `configId` must fit that config (looked up in `configs`, the caller's project) and
/// takes its name from it, as Langfuse does.
pub fn score(
    body: &Body,
    default_time: Timestamp,
    configs: &dyn ConfigLookup,
) -> Result<ScoreRecord, FieldError> {
    let id = body
        .id("id")?
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let config_id = body.string("configId")?;
    let config = match &config_id {
        None => None,
        Some(c) => Some(configs.config(c).ok_or_else(|| {
            FieldError(format!(
                "configId {c:?} does not match a score config in this project"
            ))
        })?),
    };
    let name = body
        .string("name")?
        .filter(|n| !n.is_empty())
        .or_else(|| config.map(|c| c.name.clone()))
        .ok_or_else(|| FieldError("score needs a non-empty name".into()))?;
    let data_type = match body.string("dataType")? {
        None => None,
        Some(s) => Some(ScoreDataType::parse(&s).ok_or_else(|| {
            FieldError(format!(
                "dataType must be NUMERIC, BOOLEAN, CATEGORICAL, TEXT or CORRECTION; got {s:?}"
            ))
        })?),
    };
    let raw = body
        .present("value")
        .ok_or_else(|| FieldError("score needs a value".into()))?;
    let value = match config {
        Some(c) => c.value_for(data_type, raw).map_err(|e| FieldError(e.0))?,
        None => score_value(raw, data_type)?,
    };
    let name = config.map_or(name, |c| c.name.clone());
    let trace_id = body.id("traceId")?;
    let observation_id = body.id("observationId")?;
    let session_id = body.id("sessionId")?;
    let dataset_run_id = body.id("datasetRunId")?;
    let target = match (trace_id, observation_id, session_id, dataset_run_id) {
        (Some(trace_id), observation_id, None, None) => ScoreTarget::Trace {
            trace_id,
            observation_id,
        },
        (None, None, Some(session_id), None) => ScoreTarget::Session { session_id },
        (None, None, None, Some(dataset_run_id)) => ScoreTarget::DatasetRun { dataset_run_id },
        (None, Some(_), None, None) => return err("observationId needs traceId"),
        (None, None, None, None) => {
            return err("score needs exactly one target: traceId, sessionId or datasetRunId");
        }
        _ => return err("score must have exactly one of traceId, sessionId, datasetRunId"),
    };
    if matches!(value, ScoreValue::Correction(_)) && !matches!(target, ScoreTarget::Trace { .. }) {
        return err("CORRECTION scores can only target traces or observations");
    }
    let source = match body.string("source")? {
        None => ScoreSource::Api,
        Some(s) => ScoreSource::parse(&s).ok_or_else(|| {
            FieldError(format!("source must be API, ANNOTATION or EVAL; got {s:?}"))
        })?,
    };
    if source == ScoreSource::Annotation
        && config.is_none()
        && !matches!(value, ScoreValue::Correction(_))
    {
        return err(
            "ANNOTATION scores need a configId (create one with POST /api/public/score-configs)",
        );
    }
    let timestamp = body.time("timestamp")?.unwrap_or(default_time);
    let now = Timestamp::now();
    Ok(ScoreRecord {
        id,
        target,
        name,
        value,
        source,
        comment: body.string("comment")?,
        metadata: {
            // Clients parse score metadata as an object; a scalar is wrapped as Langfuse does.
            let mut m = Map::new();
            if let Some(v) = body.json("metadata") {
                crate::record::merge_metadata(&mut m, v, true);
            }
            Value::Object(m)
        },
        config_id,
        queue_id: body.string("queueId")?,
        author_user_id: body.string("authorUserId")?,
        environment: normalize_environment(body.string("environment")?.as_deref()),
        timestamp,
        created_at: now,
        updated_at: now,
    })
}

fn score_value(raw: &Value, data_type: Option<ScoreDataType>) -> Result<ScoreValue, FieldError> {
    let number = || match raw.as_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => err("score value must be a finite number for this dataType"),
    };
    let text = || match raw {
        Value::String(s) => Ok(s.clone()),
        _ => err("score value must be a string for this dataType"),
    };
    match data_type {
        Some(ScoreDataType::Numeric) => Ok(ScoreValue::Numeric(number()?)),
        Some(ScoreDataType::Boolean) => match raw {
            Value::Bool(b) => Ok(ScoreValue::Boolean(*b)),
            _ => match number()? {
                0.0 => Ok(ScoreValue::Boolean(false)),
                1.0 => Ok(ScoreValue::Boolean(true)),
                _ => err("BOOLEAN score value must be 0 or 1"),
            },
        },
        Some(ScoreDataType::Categorical) => Ok(ScoreValue::Categorical {
            label: text()?,
            value: 0.0,
        }),
        Some(ScoreDataType::Text) => {
            let s = text()?;
            if s.is_empty() || s.chars().count() > 500 {
                return err("TEXT score value must be 1 to 500 characters");
            }
            Ok(ScoreValue::Text(s))
        }
        Some(ScoreDataType::Correction) => Ok(ScoreValue::Correction(text()?)),
        None => match raw {
            Value::String(s) => Ok(ScoreValue::Categorical {
                label: s.clone(),
                value: 0.0,
            }),
            _ => Ok(ScoreValue::Numeric(number()?)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs(v: Value) -> Result<ObservationPatch, FieldError> {
        let Value::Object(m) = v else { unreachable!() };
        observation(&Body(&m), ObservationType::Generation)
    }

    #[test]
    fn openai_usage_subtracts_details() {
        let p = obs(
            json!({"id": "o", "usageDetails": {"prompt_tokens": 120, "completion_tokens": 30,
            "total_tokens": 150, "prompt_tokens_details": {"cached_tokens": 100}}}),
        )
        .unwrap();
        let u = p.usage.unwrap();
        assert_eq!(u["input"], 20);
        assert_eq!(u["input_cached_tokens"], 100);
        assert_eq!(u["output"], 30);
        assert_eq!(u["total"], 150);
    }

    #[test]
    fn legacy_usage_and_cost_and_snake_case() {
        let p = obs(json!({"id": "o", "start_time": "2025-01-01T00:00:00Z",
            "usage": {"input": 3, "output": 4, "totalCost": 0.5}}))
        .unwrap();
        assert_eq!(p.usage.unwrap()["output"], 4);
        assert_eq!(p.cost.unwrap()["total"], 0.5);
        assert!(p.start_time.is_some());
    }

    #[test]
    fn bad_numbers_are_clear_errors() {
        let e = obs(json!({"id": "o", "usage": {"input": -5}})).unwrap_err();
        assert!(e.0.contains("negative"), "{e}");
        assert!(obs(json!({"id": "o", "costDetails": {"total": -1.0}})).is_err());
        assert!(obs(json!({"id": "o", "startTime": "2025-01-01T00:00:00"})).is_err());
        assert!(obs(json!({"id": "o", "promptName": "p"})).is_err());
        assert!(obs(json!({"id": "", "name": "x"})).is_err());
        assert!(obs(json!({"name": "x"})).is_err());
    }

    #[test]
    fn explicit_null_clears_name_but_not_status() {
        let p = obs(json!({"id": "o", "name": null, "statusMessage": null})).unwrap();
        assert_eq!(p.name, Patch::Clear);
        assert_eq!(p.status_message, None);
    }

    #[test]
    fn score_types_and_targets() {
        let parse = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            score(
                &Body(&m),
                Timestamp::from_micros(0),
                &crate::score_config::NoConfigs,
            )
        };
        let s = parse(json!({"name": "c", "value": "correct", "traceId": "t"})).unwrap();
        assert_eq!(s.value.data_type(), ScoreDataType::Categorical);
        let s = parse(json!({"name": "b", "value": 1.0, "dataType": "BOOLEAN", "sessionId": "s"}))
            .unwrap();
        assert_eq!(s.value, ScoreValue::Boolean(true));
        assert!(
            parse(json!({"name": "b", "value": 2, "dataType": "BOOLEAN", "traceId": "t"})).is_err()
        );
        assert!(parse(json!({"name": "n", "value": 1})).is_err());
        assert!(parse(json!({"name": "n", "value": 1, "observationId": "o"})).is_err());
        assert!(parse(json!({"value": 1, "traceId": "t"})).is_err());
    }
}
