//! Reported usage and cost as a client sends them (spec §2.3, §6.3), normalised to Langfuse
//! usage keys.
//!
//! For parsers of ingestion events: one event body's legacy `usage`, `usageDetails` and
//! `costDetails` become the `usage`/`cost` of an `ObservationPatch`. OTel extractors that
//! assemble their own key map pass it through [`parse_usage_details`], as Langfuse does.

use serde_json::{Map, Value};

use super::CostError;
use super::model::UNITS;
use crate::record::{CostMap, UsageMap};

/// Usage and cost reported on one event; `None` means "not reported" (never an empty map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvidedUsage {
    pub usage: Option<UsageMap>,
    pub cost: Option<CostMap>,
}

/// Combines an event body's legacy `usage`, `usageDetails` and `costDetails`.
///
/// Legacy counts map to `input`/`output`/`total` (OpenAI's `promptTokens`, `completionTokens`,
/// `totalTokens` too); a missing legacy `total` is `input + output` only when the event has no
/// `usageDetails`. `usageDetails` keys then override. Legacy `inputCost`/`outputCost`/
/// `totalCost` map to `input`/`output`/`total` costs, overridden by `costDetails`. Negative
/// counts and negative or non-finite costs are dropped.
///
/// Errors are what Langfuse rejects the event for: a non-object, a non-integer legacy count, an
/// unknown `unit`, a non-numeric legacy cost.
pub fn from_event_body(
    usage: Option<&Value>,
    usage_details: Option<&Value>,
    cost_details: Option<&Value>,
) -> Result<ProvidedUsage, CostError> {
    let legacy = parse_legacy(usage)?;
    let details = match usage_details {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => parse_usage_details(v),
        Some(_) => return Err(bad_usage("usageDetails must be an object")),
    };
    let costs = match cost_details {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => parse_cost_details(v),
        Some(_) => return Err(bad_usage("costDetails must be an object")),
    };

    let mut usage_map = UsageMap::new();
    let mut cost_map = CostMap::new();
    if let Some(l) = &legacy {
        // Langfuse: `total || (no usageDetails ? (input && output ? input + output : input ??
        // output) : undefined)` — JavaScript truthiness, so a zero total is recomputed.
        let total = match l.total {
            Some(t) if t != 0 => Some(t),
            _ if details.is_none() => match (l.input, l.output) {
                (Some(i), Some(o)) if i != 0 && o != 0 => Some(i.saturating_add(o)),
                (i, o) => i.or(o),
            },
            _ => None,
        };
        for (key, n) in [("input", l.input), ("output", l.output), ("total", total)] {
            if let Some(n) = n.and_then(|n| u64::try_from(n).ok()) {
                usage_map.insert(key.into(), n);
            }
        }
        for (key, c) in [
            ("input", l.input_cost),
            ("output", l.output_cost),
            ("total", l.total_cost),
        ] {
            if let Some(c) = c.filter(|c| c.is_finite() && *c >= 0.0) {
                cost_map.insert(key.into(), c);
            }
        }
    }
    usage_map.extend(details.unwrap_or_default());
    cost_map.extend(costs.unwrap_or_default());
    Ok(ProvidedUsage {
        usage: (!usage_map.is_empty()).then_some(usage_map),
        cost: (!cost_map.is_empty()).then_some(cost_map),
    })
}

/// Parses `usageDetails`: OpenAI Chat Completions usage, OpenAI Responses usage (both strict:
/// exactly their keys), else a free-form map keeping non-negative integers and numeric strings.
/// `None` when nothing usable remains.
pub fn parse_usage_details(v: &Value) -> Option<UsageMap> {
    let obj = v.as_object()?;
    let map = openai_usage(
        obj,
        [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        ],
    )
    .or_else(|| {
        openai_usage(
            obj,
            [
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "input_tokens_details",
                "output_tokens_details",
            ],
        )
    })
    .unwrap_or_else(|| {
        obj.iter()
            .filter_map(|(k, v)| Some((k.clone(), free_form_count(v)?)))
            .collect()
    });
    (!map.is_empty()).then_some(map)
}

/// Parses `costDetails`: keeps non-negative finite numbers. `None` when nothing remains.
pub fn parse_cost_details(v: &Value) -> Option<CostMap> {
    let map: CostMap = v
        .as_object()?
        .iter()
        .filter_map(|(k, v)| {
            let c = v.as_f64().filter(|c| c.is_finite() && *c >= 0.0)?;
            Some((k.clone(), c))
        })
        .collect();
    (!map.is_empty()).then_some(map)
}

/// `[input, output, total, input details, output details]` key names of one OpenAI shape.
/// Details become `input_<k>`/`output_<k>` and are subtracted from input/output (floor 0).
fn openai_usage(obj: &Map<String, Value>, keys: [&str; 5]) -> Option<UsageMap> {
    if obj.keys().any(|k| !keys.contains(&k.as_str())) {
        return None;
    }
    let count = |k: &str| obj.get(k).and_then(non_negative_int);
    let (mut input, mut output, total) = (count(keys[0])?, count(keys[1])?, count(keys[2])?);
    let mut map = UsageMap::new();
    for (details_key, prefix, bucket) in [
        (keys[3], "input", &mut input),
        (keys[4], "output", &mut output),
    ] {
        let details = match obj.get(details_key) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(d)) => d,
            Some(_) => return None,
        };
        for (k, v) in details {
            if v.is_null() {
                continue;
            }
            let n = non_negative_int(v)?;
            map.insert(format!("{prefix}_{k}"), n);
            *bucket = bucket.saturating_sub(n);
        }
    }
    map.insert("input".into(), input);
    map.insert("output".into(), output);
    map.insert("total".into(), total);
    Some(map)
}

fn non_negative_int(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f as u64)
    })
}

/// A free-form usage value: a non-negative integer, or a string read like JavaScript's
/// `parseInt(s, 10)` (leading digits, so `"12abc"` is 12).
fn free_form_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(_) => non_negative_int(v),
        Value::String(s) => {
            let s = s.trim_start();
            let (negative, digits) = match s.as_bytes().first() {
                Some(b'-') => (true, &s[1..]),
                Some(b'+') => (false, &s[1..]),
                _ => (false, s),
            };
            let end = digits
                .bytes()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            let n: u64 = digits[..end].parse().ok()?;
            // parseInt("-0") is -0, which passes `>= 0`.
            (!negative || n == 0).then_some(n)
        }
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Legacy {
    input: Option<i64>,
    output: Option<i64>,
    total: Option<i64>,
    input_cost: Option<f64>,
    output_cost: Option<f64>,
    total_cost: Option<f64>,
}

fn parse_legacy(v: Option<&Value>) -> Result<Option<Legacy>, CostError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad_usage("usage must be an object")),
    };
    let int = |k: &str| -> Result<Option<i64>, CostError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                })
                .map(Some)
                .ok_or_else(|| bad_usage(format!("usage.{k} must be an integer"))),
        }
    };
    let num = |k: &str| -> Result<Option<f64>, CostError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad_usage(format!("usage.{k} must be a number"))),
        }
    };
    match obj.get("unit") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) if UNITS.contains(&u.as_str()) => {}
        Some(_) => {
            return Err(bad_usage(format!(
                "usage.unit must be one of {}",
                UNITS.join(", ")
            )));
        }
    }
    let mut l = Legacy {
        input: int("input")?,
        output: int("output")?,
        total: int("total")?,
        input_cost: num("inputCost")?,
        output_cost: num("outputCost")?,
        total_cost: num("totalCost")?,
    };
    // The OpenAI camel form replaces the whole object (its costs included), as in Langfuse.
    if ["promptTokens", "completionTokens", "totalTokens"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        l = Legacy {
            input: int("promptTokens")?,
            output: int("completionTokens")?,
            total: int("totalTokens")?,
            ..Legacy::default()
        };
    }
    Ok(Some(l))
}

fn bad_usage(reason: impl Into<String>) -> CostError {
    CostError::InvalidUsage(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(pairs: &[(&str, u64)]) -> UsageMap {
        pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    #[test]
    fn openai_chat_usage_splits_cached_tokens_out_of_input() {
        // The spec's §2.3 example.
        let got = parse_usage_details(&json!({
            "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 100}
        }));
        assert_eq!(
            got,
            Some(usage(&[
                ("input", 20),
                ("input_cached_tokens", 100),
                ("output", 30),
                ("total", 150)
            ]))
        );
    }

    #[test]
    fn openai_responses_usage_splits_reasoning_out_of_output() {
        let got = parse_usage_details(&json!({
            "input_tokens": 10, "output_tokens": 50, "total_tokens": 60,
            "output_tokens_details": {"reasoning_tokens": 80}
        }));
        assert_eq!(
            got,
            Some(usage(&[
                ("input", 10),
                ("output", 0),
                ("output_reasoning_tokens", 80),
                ("total", 60)
            ]))
        );
    }

    #[test]
    fn free_form_keeps_integers_and_numeric_strings() {
        let got = parse_usage_details(&json!({
            "input": 5, "output": "7", "weird": "12abc", "neg": -1, "frac": 1.5,
            "obj": {"a": 1}, "prompt_tokens": 3
        }));
        assert_eq!(
            got,
            Some(usage(&[
                ("input", 5),
                ("output", 7),
                ("prompt_tokens", 3),
                ("weird", 12)
            ]))
        );
        assert_eq!(parse_usage_details(&json!({"x": "abc"})), None);
    }

    #[test]
    fn legacy_usage_maps_to_input_output_total() {
        let p = from_event_body(Some(&json!({"input": 10, "output": 20})), None, None).unwrap();
        assert_eq!(
            p.usage,
            Some(usage(&[("input", 10), ("output", 20), ("total", 30)]))
        );
        let p = from_event_body(
            Some(&json!({"promptTokens": 3, "completionTokens": 4, "totalTokens": 7, "inputCost": 1.0})),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            p.usage,
            Some(usage(&[("input", 3), ("output", 4), ("total", 7)]))
        );
        assert_eq!(p.cost, None, "the camel form drops legacy costs");
        // With usageDetails present, a missing legacy total is not invented.
        let p = from_event_body(
            Some(&json!({"input": 10, "output": 20})),
            Some(&json!({"input_cached_tokens": 5})),
            None,
        )
        .unwrap();
        assert_eq!(
            p.usage,
            Some(usage(&[
                ("input", 10),
                ("input_cached_tokens", 5),
                ("output", 20)
            ]))
        );
        assert_eq!(
            from_event_body(Some(&json!({})), None, None).unwrap(),
            ProvidedUsage::default()
        );
    }

    #[test]
    fn costs_merge_and_drop_negatives() {
        let p = from_event_body(
            Some(&json!({"inputCost": 0.5, "outputCost": -1.0})),
            None,
            Some(&json!({"output": 0.25, "bad": "x", "neg": -2})),
        )
        .unwrap();
        assert_eq!(
            p.cost,
            Some(CostMap::from([
                ("input".into(), 0.5),
                ("output".into(), 0.25)
            ]))
        );
        assert_eq!(p.usage, None);
    }

    #[test]
    fn rejects_what_langfuse_rejects() {
        assert!(from_event_body(Some(&json!({"input": 1.5})), None, None).is_err());
        assert!(from_event_body(Some(&json!({"unit": "PARSECS"})), None, None).is_err());
        assert!(from_event_body(Some(&json!([1])), None, None).is_err());
        assert!(from_event_body(None, Some(&json!(5)), None).is_err());
    }
}
