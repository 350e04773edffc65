//! Records in Langfuse's JSON shapes. Generated clients fail on a missing required field, so
//! every field Langfuse sends is present (null where it has no value).

use serde_json::{Map, Value, json};

use crate::record::{ObservationRecord, ScoreRecord, TraceRecord};
use crate::store::{Io, ObsSummary, SessionRecord};
use crate::time::Timestamp;

fn iso(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_iso()))
}

/// Characters of an input/output preview (`fields=preview`, Sightline's): one list row.
pub const PREVIEW_CHARS: usize = 200;

/// The text of one chat message's `content`: a string, or the text parts of a parts array.
fn message_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            (!texts.is_empty()).then(|| texts.join(" "))
        }
        _ => None,
    }
}

/// The message a reader wants to see of a chat: the last user turn, else the last message.
fn chat_text(v: &Value) -> Option<String> {
    let messages = match v {
        Value::Array(m) => m,
        Value::Object(o) => match o.get("messages") {
            Some(Value::Array(m)) => m,
            _ => return o.get("role").and(o.get("content")).and_then(message_text),
        },
        _ => return None,
    };
    if !messages.iter().all(|m| m.get("role").is_some()) {
        return None;
    }
    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    last_user
        .or(messages.last())
        .and_then(|m| message_text(&m["content"]))
}

/// A one-line text preview of an input or output: the last user message of a chat, the text
/// of a message, or the text values of any other JSON; whitespace collapsed, cut at
/// `PREVIEW_CHARS` with an ellipsis. Null when there is nothing to show.
pub fn preview(v: Option<&Value>) -> Value {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    let text = chat_text(v).unwrap_or_else(|| crate::search::json_text(v, PREVIEW_CHARS * 8));
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > PREVIEW_CHARS * 4 {
            break;
        }
    }
    match out.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => {
            out.truncate(cut);
            out.push('…');
        }
        None if out.is_empty() => return Value::Null,
        None => {}
    }
    Value::String(out)
}

/// Latency (seconds) and total cost of a trace from its observations' summaries.
pub fn trace_metrics(summaries: &[(String, ObsSummary)]) -> (f64, f64) {
    let mut min = i64::MAX;
    let mut max = i64::MIN;
    let mut cost = 0.0;
    for (_, s) in summaries {
        min = min.min(s.start);
        max = max.max(s.end.unwrap_or(s.start)).max(s.start);
        cost += s.total_cost.unwrap_or(0.0);
    }
    let latency = if summaries.is_empty() {
        0.0
    } else {
        Timestamp::from_micros(max).seconds_since(Timestamp::from_micros(min))
    };
    (latency, cost)
}

pub fn trace(project: &str, t: TraceRecord, io: Io) -> Map<String, Value> {
    // Built by moving the record's parts in: a list of 50 traces would otherwise copy every
    // input, output and metadata tree once more (`json!` serializes what it is given).
    let text = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let html_path = format!("/project/{project}/traces/{}", t.id);
    [
        ("id", Value::String(t.id)),
        ("timestamp", Value::String(t.timestamp.to_iso())),
        ("name", text(t.name)),
        ("input", io.input.unwrap_or(Value::Null)),
        ("output", io.output.unwrap_or(Value::Null)),
        ("sessionId", text(t.session_id)),
        ("release", text(t.release)),
        ("version", text(t.version)),
        ("userId", text(t.user_id)),
        ("metadata", Value::Object(t.metadata)),
        (
            "tags",
            Value::Array(t.tags.into_iter().map(Value::String).collect()),
        ),
        ("public", Value::Bool(t.public)),
        ("environment", Value::String(t.environment)),
        ("bookmarked", Value::Bool(t.bookmarked)),
        ("projectId", Value::String(project.to_string())),
        ("externalId", Value::Null),
        ("createdAt", Value::String(t.created_at.to_iso())),
        ("updatedAt", Value::String(t.updated_at.to_iso())),
        ("htmlPath", Value::String(html_path)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Langfuse JSON-encodes model parameters that are neither strings nor numbers on read (older
/// SDKs cannot parse nested values there).
fn model_parameters(o: &ObservationRecord) -> Value {
    let Some(params) = &o.model_parameters else {
        return Value::Null;
    };
    let out: Map<String, Value> = params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(_) | Value::Number(_) | Value::Null => v.clone(),
                other => Value::String(other.to_string()),
            };
            (k.clone(), v)
        })
        .collect();
    Value::Object(out)
}

fn sum_keys(map: &std::collections::BTreeMap<String, u64>, needle: &str) -> u64 {
    map.iter()
        .filter(|(k, _)| k.contains(needle))
        .map(|(_, v)| *v)
        .fold(0, u64::saturating_add)
}

fn sum_cost(map: &std::collections::BTreeMap<String, f64>, needle: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for (k, v) in map {
        if k.contains(needle) {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum)
}

fn latency(o: &ObservationRecord) -> Value {
    o.end_time
        .map_or(Value::Null, |e| json!(e.seconds_since(o.start_time)))
}

fn time_to_first_token(o: &ObservationRecord) -> Value {
    o.completion_start_time
        .map_or(Value::Null, |c| json!(c.seconds_since(o.start_time)))
}

/// The legacy observation object (`/api/public/observations`, trace detail).
pub fn observation(project: &str, o: &ObservationRecord, io: Io) -> Value {
    let input_units = sum_keys(&o.usage_details, "input");
    let output_units = sum_keys(&o.usage_details, "output");
    let total_units = o.usage_details.get("total").copied().unwrap_or(0);
    let pricing = o.pricing.as_ref();
    // Input and output are moved in below, into their places: `json!` would copy them.
    let mut v = json!({
        "id": o.id,
        "projectId": project,
        "traceId": o.trace_id,
        "parentObservationId": o.parent_observation_id,
        "type": o.kind.as_str(),
        "name": o.name,
        "environment": o.environment,
        "startTime": o.start_time.to_iso(),
        "endTime": iso(o.end_time),
        "completionStartTime": iso(o.completion_start_time),
        "version": o.version,
        "createdAt": o.created_at.to_iso(),
        "updatedAt": o.updated_at.to_iso(),
        "input": null,
        "output": null,
        "metadata": o.metadata,
        "level": o.level.as_str(),
        "statusMessage": o.status_message,
        "model": o.model,
        "modelParameters": model_parameters(o),
        "promptId": null,
        "promptName": o.prompt_name,
        "promptVersion": o.prompt_version,
        "usageDetails": o.usage_details,
        "costDetails": o.cost_details,
        "usage": {"unit": "TOKENS", "input": input_units, "output": output_units, "total": total_units},
        "unit": "TOKENS",
        "promptTokens": input_units,
        "completionTokens": output_units,
        "totalTokens": total_units,
        "usagePricingTierId": pricing.and_then(|p| p.tier_id.clone()),
        "usagePricingTierName": pricing.and_then(|p| p.tier_name.clone()),
        "modelId": pricing.map(|p| p.model_id.clone()),
        "inputPrice": pricing.and_then(|p| p.input_price),
        "outputPrice": pricing.and_then(|p| p.output_price),
        "totalPrice": pricing.and_then(|p| p.total_price),
        "calculatedInputCost": sum_cost(&o.cost_details, "input"),
        "calculatedOutputCost": sum_cost(&o.cost_details, "output"),
        "calculatedTotalCost": o.cost_details.get("total"),
        "usageEstimated": o.usage_estimated,
        "latency": latency(o),
        "timeToFirstToken": time_to_first_token(o),
    });
    v["input"] = io.input.unwrap_or(Value::Null);
    v["output"] = io.output.unwrap_or(Value::Null);
    v
}

/// Field groups of `/api/public/v2/observations`.
#[derive(Debug, Clone, Copy)]
pub struct V2Fields {
    pub basic: bool,
    pub time: bool,
    pub io: bool,
    pub metadata: bool,
    pub model: bool,
    pub usage: bool,
    pub prompt: bool,
    pub metrics: bool,
    pub trace_context: bool,
}

impl V2Fields {
    /// From the `fields` parameter; absent means every group.
    pub fn parse(fields: &[String]) -> V2Fields {
        let all = fields.is_empty();
        let has = |g: &str| all || fields.iter().any(|f| f == g);
        V2Fields {
            basic: has("basic"),
            time: has("time"),
            io: has("io"),
            metadata: has("metadata"),
            model: has("model"),
            usage: has("usage"),
            prompt: has("prompt"),
            metrics: has("metrics"),
            trace_context: has("trace_context"),
        }
    }

    pub fn needs_trace(&self) -> bool {
        self.basic || self.trace_context
    }
}

fn price_string(p: Option<f64>) -> Value {
    p.map_or(Value::Null, |p| Value::String(p.to_string()))
}

/// I/O on the v2 endpoint comes back as the raw stored string, as Langfuse's ClickHouse does.
fn raw_io(v: &Option<Value>) -> Value {
    match v {
        None => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    }
}

pub fn observation_v2(
    project: &str,
    o: &ObservationRecord,
    io: &Io,
    trace: Option<&TraceRecord>,
    f: V2Fields,
) -> Value {
    let pricing = o.pricing.as_ref();
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("id", json!(o.id));
    put("traceId", json!(o.trace_id));
    put("startTime", json!(o.start_time.to_iso()));
    put("endTime", iso(o.end_time));
    put("projectId", json!(project));
    put("parentObservationId", json!(o.parent_observation_id));
    put("type", json!(o.kind.as_str()));
    put("modelId", json!(pricing.map(|p| p.model_id.clone())));
    put(
        "inputPrice",
        price_string(pricing.and_then(|p| p.input_price)),
    );
    put(
        "outputPrice",
        price_string(pricing.and_then(|p| p.output_price)),
    );
    put(
        "totalPrice",
        price_string(pricing.and_then(|p| p.total_price)),
    );
    if f.basic {
        put("name", json!(o.name));
        put("level", json!(o.level.as_str()));
        put("statusMessage", json!(o.status_message));
        put("version", json!(o.version));
        put("environment", json!(o.environment));
        put("bookmarked", json!(false));
        put("public", json!(trace.is_some_and(|t| t.public)));
        put("userId", json!(trace.and_then(|t| t.user_id.clone())));
        put("sessionId", json!(trace.and_then(|t| t.session_id.clone())));
        put("isRootObservation", json!(o.is_root()));
    }
    if f.time {
        put("completionStartTime", iso(o.completion_start_time));
        put("createdAt", json!(o.created_at.to_iso()));
        put("updatedAt", json!(o.updated_at.to_iso()));
    }
    if f.io {
        put("input", raw_io(&io.input));
        put("output", raw_io(&io.output));
    }
    if f.metadata {
        put("metadata", json!(o.metadata));
    }
    if f.model {
        put("model", json!(o.model));
        put("providedModelName", json!(o.model));
        put(
            "internalModelId",
            json!(pricing.map(|p| p.model_id.clone())),
        );
        put("modelParameters", model_parameters(o));
    }
    if f.usage {
        put("usageDetails", json!(o.usage_details));
        put("costDetails", json!(o.cost_details));
        put("totalCost", json!(o.cost_details.get("total")));
        put(
            "usagePricingTierName",
            json!(pricing.and_then(|p| p.tier_name.clone())),
        );
    }
    if f.prompt {
        put("promptId", Value::Null);
        put("promptName", json!(o.prompt_name));
        put("promptVersion", json!(o.prompt_version));
    }
    if f.metrics {
        put("latency", latency(o));
        put("timeToFirstToken", time_to_first_token(o));
    }
    if f.trace_context {
        put("traceName", json!(trace.and_then(|t| t.name.clone())));
        put(
            "tags",
            json!(trace.map(|t| t.tags.clone()).unwrap_or_default()),
        );
        put("release", json!(trace.and_then(|t| t.release.clone())));
    }
    Value::Object(m)
}

pub fn score(s: &ScoreRecord) -> Value {
    json!({
        "id": s.id,
        "traceId": s.trace_id(),
        "observationId": s.observation_id(),
        "sessionId": s.session_id(),
        "datasetRunId": s.dataset_run_id(),
        "name": s.name,
        "value": s.value.numeric(),
        "stringValue": s.value.string(),
        "dataType": s.value.data_type().as_str(),
        "source": s.source.as_str(),
        "timestamp": s.timestamp.to_iso(),
        "createdAt": s.created_at.to_iso(),
        "updatedAt": s.updated_at.to_iso(),
        "authorUserId": s.author_user_id,
        "comment": s.comment,
        "metadata": s.metadata,
        "configId": s.config_id,
        "queueId": s.queue_id,
        "environment": s.environment,
    })
}

/// The v3 score object: value typed by data type, and a `subject` naming what was scored.
pub fn score_v3(project: &str, s: &ScoreRecord) -> Value {
    use crate::record::{ScoreTarget, ScoreValue};
    let value = match &s.value {
        ScoreValue::Numeric(v) => json!(v),
        ScoreValue::Boolean(b) => json!(b),
        ScoreValue::Categorical { label, .. } => json!(label),
        ScoreValue::Text(t) | ScoreValue::Correction(t) => json!(t),
    };
    let subject = match &s.target {
        ScoreTarget::Trace {
            trace_id,
            observation_id: Some(o),
        } => json!({"kind": "observation", "id": o, "traceId": trace_id}),
        ScoreTarget::Trace { trace_id, .. } => json!({"kind": "trace", "id": trace_id}),
        ScoreTarget::Session { session_id } => json!({"kind": "session", "id": session_id}),
        ScoreTarget::DatasetRun { dataset_run_id } => {
            json!({"kind": "experiment", "id": dataset_run_id})
        }
    };
    json!({
        "id": s.id,
        "projectId": project,
        "name": s.name,
        "dataType": s.value.data_type().as_str(),
        "value": value,
        "source": s.source.as_str(),
        "timestamp": s.timestamp.to_iso(),
        "environment": s.environment,
        "createdAt": s.created_at.to_iso(),
        "updatedAt": s.updated_at.to_iso(),
        "comment": s.comment,
        "configId": s.config_id,
        "metadata": s.metadata,
        "authorUserId": s.author_user_id,
        "queueId": s.queue_id,
        "subject": subject,
    })
}

pub fn session(project: &str, s: &SessionRecord) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("createdAt".into(), json!(s.created_at.to_iso()));
    m.insert("projectId".into(), json!(project));
    m.insert("environment".into(), json!(s.environment));
    m
}

#[cfg(test)]
mod tests {
    use super::{PREVIEW_CHARS, preview};
    use serde_json::{Value, json};

    fn p(v: Value) -> Value {
        preview(Some(&v))
    }

    #[test]
    fn chat_previews_show_the_last_user_turn() {
        let chat = json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "where  is\nmy"}, {"type": "text", "text": "order?"}]},
        ]);
        assert_eq!(p(chat.clone()), "where is my order?");
        assert_eq!(p(json!({"messages": chat})), "where is my order?");
        assert_eq!(
            p(json!({"role": "assistant", "content": "It ships today."})),
            "It ships today."
        );
    }

    #[test]
    fn other_json_previews_its_text_values_and_long_text_is_cut() {
        assert_eq!(p(json!({"query": "sea snakes", "k": 3})), "sea snakes 3");
        let long = "word ".repeat(500);
        let cut = p(json!(long));
        let cut = cut.as_str().unwrap();
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(preview(None), Value::Null);
        assert_eq!(p(json!("   ")), Value::Null);
    }
}
