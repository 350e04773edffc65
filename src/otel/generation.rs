//! Generation fields of a span: model, model parameters, completion start time, prompt link
//! (spec 3.4).

use serde_json::{Map, Value};

use crate::time::Timestamp;

use super::attrs::{Attrs, as_text, json_or_text, parse_json};

const MODEL_KEYS: [&str; 7] = [
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
];

pub(crate) fn model_name(attrs: &Attrs) -> Option<String> {
    attrs.first_text(&MODEL_KEYS)
}

/// Model parameters: the Langfuse JSON object, Vercel AI SDK settings (scope `ai`), JSON
/// `llm.invocation_parameters` or `model_config`, else every `gen_ai.request.<k>` and
/// `llm.invocation_parameters.<k>` except the model. Values other than strings and numbers are
/// JSON-encoded, as Langfuse stores them.
pub(crate) fn model_parameters(attrs: &Attrs, scope_name: &str) -> Option<Map<String, Value>> {
    let json_object = |key: &str| match attrs.truthy(key).and_then(parse_json) {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let params = if let Some(m) = json_object("langfuse.observation.model.parameters") {
        m
    } else if scope_name == "ai" {
        vercel_parameters(attrs)
    } else if let Some(m) =
        json_object("llm.invocation_parameters").or_else(|| json_object("model_config"))
    {
        m
    } else {
        attrs
            .iter()
            .filter_map(|(k, v)| {
                let name = k
                    .strip_prefix("gen_ai.request.")
                    .or_else(|| k.strip_prefix("llm.invocation_parameters."))?;
                (name != "model").then(|| (name.to_owned(), v.clone()))
            })
            .collect()
    };
    let params: Map<String, Value> = params
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(_) | Value::Number(_) => (k, v),
            other => (k, Value::String(other.to_string())),
        })
        .collect();
    (!params.is_empty()).then_some(params)
}

fn vercel_parameters(attrs: &Attrs) -> Map<String, Value> {
    let settings: [(&str, &[&str]); 8] = [
        ("maxSteps", &["ai.settings.maxSteps"]),
        ("toolChoice", &["ai.prompt.toolChoice"]),
        ("maxTokens", &["gen_ai.request.max_tokens"]),
        (
            "finishReason",
            &["gen_ai.response.finish_reasons", "gen_ai.finishReason"],
        ),
        ("system", &["gen_ai.system", "ai.model.provider"]),
        ("maxRetries", &["ai.settings.maxRetries"]),
        ("mode", &["ai.settings.mode"]),
        ("temperature", &["gen_ai.request.temperature"]),
    ];
    settings
        .iter()
        .filter_map(|(name, keys)| {
            let v = keys.iter().find_map(|k| attrs.get(k))?;
            let text = match v {
                // JavaScript's `toString()` of an array joins with commas.
                Value::Array(items) => items.iter().map(as_text).collect::<Vec<_>>().join(","),
                other => as_text(other),
            };
            Some(((*name).to_owned(), Value::String(text)))
        })
        .collect()
}

/// Time to first token: the Langfuse attribute (an ISO string, or an ISO string JSON-encoded
/// once more, as the Python SDK sends it), else the Vercel AI SDK's milliseconds after start.
pub(crate) fn completion_start_time(attrs: &Attrs, start: Timestamp) -> Option<Timestamp> {
    if let Some(raw) = attrs.str("langfuse.observation.completion_start_time") {
        let parsed = Timestamp::parse(raw).or_else(|| match json_or_text(&Value::from(raw)) {
            Value::String(inner) => Timestamp::parse(&inner),
            _ => None,
        });
        if parsed.is_some() {
            return parsed;
        }
    }
    let ms = ["ai.response.msToFirstChunk", "ai.stream.msToFirstChunk"]
        .iter()
        .find_map(|k| attrs.truthy(k))
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        })
        .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1.0e12)?;
    let micros = (ms.ceil() as i64).saturating_mul(1000);
    Some(Timestamp::from_micros(
        start.micros().saturating_add(micros),
    ))
}

/// The prompt a generation used: Langfuse attributes, else the Vercel AI SDK's
/// `ai.telemetry.metadata.langfusePrompt` JSON. Name and version come as a pair or not at all
/// (Langfuse rejects one without the other).
pub(crate) fn prompt(attrs: &Attrs) -> Option<(String, i64)> {
    let from_ai_sdk = attrs
        .truthy("ai.telemetry.metadata.langfusePrompt")
        .and_then(parse_json);
    let name = attrs
        .first_text(&["langfuse.observation.prompt.name", "langfuse.prompt.name"])
        .or_else(|| {
            from_ai_sdk
                .as_ref()
                .and_then(|p| p.get("name"))
                .map(as_text)
        })?;
    let version = [
        "langfuse.observation.prompt.version",
        "langfuse.prompt.version",
    ]
    .iter()
    .find_map(|k| attrs.get(k))
    .or_else(|| from_ai_sdk.as_ref().and_then(|p| p.get("version")))
    .and_then(|v| match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    })?;
    Some((name, version))
}
