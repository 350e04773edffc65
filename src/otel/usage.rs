//! Usage and cost details of a span (spec 3.4 `usageDetails`/`costDetails`, 3.7, and the
//! `usageDetails` parser of 2.3 every extracted map goes through).

use serde_json::{Map, Value};

use crate::cost::usage::parse_usage_details;
use crate::record::{CostMap, UsageMap};

use super::attrs::{Attrs, parse_json};

const LANGFUSE_USAGE: &str = "langfuse.observation.usage_details";
const LANGFUSE_COST: &str = "langfuse.observation.cost_details";

/// Usage reported by the span, normalised to Langfuse usage keys; `None` when it reports none.
pub(crate) fn usage(attrs: &Attrs) -> Option<UsageMap> {
    if let Some(raw) = attrs.truthy(LANGFUSE_USAGE) {
        // Parsable but not an object means "no usage"; unparsable falls through to the
        // instrumentation rules, as Langfuse does.
        if let Some(parsed) = parse_json(raw) {
            return parse_usage_details(&parsed);
        }
    }
    generic_usage(attrs)
}

/// Costs reported by the span: the Langfuse JSON object, else `gen_ai.usage.cost` or
/// `llm.cost.total` as the total.
pub(crate) fn cost(attrs: &Attrs) -> Option<CostMap> {
    if let Some(parsed) = attrs.truthy(LANGFUSE_COST).and_then(parse_json) {
        let Value::Object(map) = parsed else {
            return None;
        };
        let costs: CostMap = map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), number(v)?)))
            .filter(|(_, v)| *v >= 0.0)
            .collect();
        return (!costs.is_empty()).then_some(costs);
    }
    ["gen_ai.usage.cost", "llm.cost.total"]
        .iter()
        .find_map(|k| attrs.truthy(k).and_then(number))
        .filter(|v| *v >= 0.0)
        .map(|total| CostMap::from([("total".to_owned(), total)]))
}

/// A number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Which source keys feed which Langfuse key; the first present source wins.
const KEY_ALIASES: [(&str, &[&str]); 7] = [
    ("input", &["prompt_tokens", "input_tokens", "prompt"]),
    (
        "output",
        &["completion_tokens", "output_tokens", "completion"],
    ),
    ("total", &["total_tokens", "total"]),
    (
        "input_cached_tokens",
        &[
            "cache_read.input_tokens",
            "cache_read_input_tokens",
            "cache_read_tokens",
            "details.cache_read_tokens",
            "details.cache_read_input_tokens",
            "prompt_details.cache_read",
            "input_cached_tokens",
        ],
    ),
    (
        "input_cache_creation",
        &[
            "cache_creation.input_tokens",
            "cache_creation_input_tokens",
            "cache_write_tokens",
            "details.cache_write_tokens",
            "details.cache_creation_input_tokens",
            "prompt_details.cache_write",
            "input_cache_creation",
        ],
    ),
    (
        "output_reasoning_tokens",
        &["reasoning.output_tokens", "completion_details.reasoning"],
    ),
    ("output_audio_tokens", &["completion_details.audio"]),
];

/// GenAI semantic conventions (`gen_ai.usage.*`) and OpenInference (`llm.token_count.*`): known
/// keys renamed, cache and reasoning counts moved out of input/output, the rest passed through.
fn generic_usage(attrs: &Attrs) -> Option<UsageMap> {
    let mut raw: Vec<(String, f64)> = Vec::new();
    for (key, value) in attrs.iter() {
        let short = if key == "gen_ai.usage.cost" {
            continue;
        } else if let Some(rest) = key.strip_prefix("gen_ai.usage.") {
            rest
        } else if let Some(rest) = key.strip_prefix("llm.token_count.") {
            rest
        } else {
            continue;
        };
        if let Some(n) = number(value) {
            raw.push((short.to_owned(), n));
        }
    }
    if raw.is_empty() {
        return None;
    }
    let lookup = |k: &str| raw.iter().find(|(key, _)| key == k).map(|(_, n)| *n);
    let mut mapped: Map<String, Value> = Map::new();
    let mut consumed: Vec<&str> = Vec::new();
    for (target, sources) in KEY_ALIASES {
        consumed.extend_from_slice(sources);
        if let Some(n) = sources.iter().find_map(|s| lookup(s)) {
            mapped.insert(target.into(), Value::from(n));
        }
    }
    for (key, n) in &raw {
        if consumed.contains(&key.as_str()) {
            continue;
        }
        let key = key.strip_prefix("details.").unwrap_or(key);
        mapped.entry(key).or_insert_with(|| Value::from(*n));
    }
    let get = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    if mapped.contains_key("input") {
        let input = get(&mapped, "input")
            - get(&mapped, "input_cached_tokens")
            - get(&mapped, "input_cache_creation");
        mapped.insert("input".into(), Value::from(input.max(0.0)));
    }
    if mapped.contains_key("output") {
        let output = get(&mapped, "output")
            - get(&mapped, "output_reasoning_tokens")
            - get(&mapped, "output_audio_tokens");
        mapped.insert("output".into(), Value::from(output.max(0.0)));
    }
    parse_usage_details(&Value::Object(mapped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use serde_json::json;

    fn attrs(pairs: &[(&str, any_value::Value)]) -> Attrs {
        let kvs: Vec<KeyValue> = pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).into(),
                value: Some(AnyValue {
                    value: Some(v.clone()),
                }),
                key_strindex: 0,
            })
            .collect();
        Attrs::from_kvs(&kvs)
    }

    fn int(i: i64) -> any_value::Value {
        any_value::Value::IntValue(i)
    }

    fn text(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    fn usage_map(v: Value) -> UsageMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn langfuse_usage_details_pass_through() {
        let a = attrs(&[(
            LANGFUSE_USAGE,
            text(r#"{"input":120,"output":40,"cache_read_input_tokens":20,"bad":-1,"x":"7"}"#),
        )]);
        assert_eq!(
            usage(&a),
            Some(usage_map(
                json!({"input":120,"output":40,"cache_read_input_tokens":20,"x":7})
            ))
        );
        assert_eq!(usage(&attrs(&[(LANGFUSE_USAGE, text("[1]"))])), None);
    }

    #[test]
    fn openai_shapes_subtract_details() {
        let v = json!({"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
                       "prompt_tokens_details":{"cached_tokens":100}});
        assert_eq!(
            parse_usage_details(&v),
            Some(usage_map(
                json!({"input":20,"input_cached_tokens":100,"output":30,"total":150})
            ))
        );
    }

    #[test]
    fn gen_ai_and_openinference_counts() {
        let a = attrs(&[
            ("gen_ai.usage.input_tokens", int(100)),
            ("gen_ai.usage.output_tokens", int(20)),
            ("gen_ai.usage.cache_read.input_tokens", int(30)),
            ("gen_ai.usage.reasoning.output_tokens", int(5)),
            ("gen_ai.usage.details.web_search", int(1)),
            ("gen_ai.usage.cost", any_value::Value::DoubleValue(0.5)),
        ]);
        assert_eq!(
            usage(&a),
            Some(usage_map(
                json!({"input":70,"output":15,"input_cached_tokens":30,
                                  "output_reasoning_tokens":5,"web_search":1})
            ))
        );
        assert_eq!(cost(&a), Some(CostMap::from([("total".to_owned(), 0.5)])));
        let oi = attrs(&[
            ("llm.token_count.prompt", int(10)),
            ("llm.token_count.completion", int(20)),
            ("llm.token_count.total", int(30)),
        ]);
        assert_eq!(
            usage(&oi),
            Some(usage_map(json!({"input":10,"output":20,"total":30})))
        );
        assert_eq!(usage(&attrs(&[("other", int(1))])), None);
    }
}
