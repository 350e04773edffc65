//! OTLP attribute values as JSON (section 3.2), and the lookups the mapping rules are written in.

use indexmap::IndexMap;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Value};

use crate::record::is_truthy;

/// Array attributes nested deeper than this become `null`: no real client nests that deep, and
/// it keeps every conversion below bounded whatever a decoder let through.
pub(crate) const MAX_VALUE_DEPTH: usize = 32;

/// Segments a flattened key (`gen_ai.prompt.0.content`) may have, and the array slots a rebuild
/// may allocate (Langfuse caps the latter at 10,001).
const MAX_PATH_SEGMENTS: usize = 16;
const MAX_ARRAY_SLOTS: usize = 10_001;

/// Converts an attribute value the way Langfuse reads it: strings, numbers, booleans and arrays
/// map to their JSON counterparts; non-finite doubles become their names; `kvlistValue` and
/// `bytesValue` become the JSON text of their OTLP/JSON wrapper.
pub(crate) fn any_to_json(v: &AnyValue) -> Value {
    any_to_json_at(v, 0)
}

fn any_to_json_at(v: &AnyValue, depth: usize) -> Value {
    use any_value::Value as V;
    match &v.value {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None if d.is_nan() => Value::String("NaN".into()),
            None if *d > 0.0 => Value::String("Infinity".into()),
            None => Value::String("-Infinity".into()),
        },
        Some(V::ArrayValue(a)) => {
            if depth >= MAX_VALUE_DEPTH {
                return Value::Null;
            }
            Value::Array(
                a.values
                    .iter()
                    .map(|x| any_to_json_at(x, depth + 1))
                    .collect(),
            )
        }
        Some(V::KvlistValue(_) | V::BytesValue(_)) => {
            if !depth_within(v, MAX_VALUE_DEPTH.saturating_sub(depth)) {
                return Value::Null;
            }
            serde_json::to_string(v).map_or(Value::Null, Value::String)
        }
    }
}

/// Whether `v` nests at most `limit` levels; stops descending as soon as the answer is no.
fn depth_within(v: &AnyValue, limit: usize) -> bool {
    use any_value::Value as V;
    let children: &[AnyValue] = match &v.value {
        Some(V::ArrayValue(a)) => &a.values,
        Some(V::KvlistValue(kv)) => {
            return limit > 0
                && kv
                    .values
                    .iter()
                    .filter_map(|x| x.value.as_ref())
                    .all(|x| depth_within(x, limit - 1));
        }
        _ => return true,
    };
    limit > 0 && children.iter().all(|x| depth_within(x, limit - 1))
}

/// A span's (or resource's, or scope's) attributes by key; a repeated key keeps its last value.
/// The mapping rules look up dozens of keys per span: hashed with foldhash (seeded per process),
/// where serde_json's map would hash each lookup with SipHash.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attrs(IndexMap<String, Value, foldhash::fast::RandomState>);

impl Attrs {
    pub(crate) fn from_kvs(kvs: &[KeyValue]) -> Self {
        let mut map = IndexMap::with_capacity_and_hasher(kvs.len(), Default::default());
        for kv in kvs {
            let value = kv.value.as_ref().map_or(Value::Null, any_to_json);
            map.insert(kv.key.clone(), value);
        }
        Attrs(map)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The value under `key` if it is "truthy" in JavaScript's sense (`""`, `0`, `false`, `null`
    /// are not): the test Langfuse applies with `attributes[key] ? ... : ...`.
    pub(crate) fn truthy(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| is_truthy(v))
    }

    /// The first truthy value among `keys`.
    pub(crate) fn first_truthy(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.truthy(k))
    }

    /// The first truthy value among `keys`, as text (non-strings JSON-encoded).
    pub(crate) fn first_text(&self, keys: &[&str]) -> Option<String> {
        self.first_truthy(keys).map(as_text)
    }

    /// The value under `key` if it is "meaningful" (not null, `""`, `[]` or `{}`), the test
    /// Langfuse's type mappers apply.
    pub(crate) fn meaningful(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| meaningful(v))
    }

    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }

    pub(crate) fn to_map(&self) -> Map<String, Value> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

pub(crate) fn meaningful(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// A value as text: strings as they are, anything else as JSON.
pub(crate) fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A string holding JSON becomes that JSON; anything else is returned as it is. This is how
/// Langfuse reads back the strings it stores for input/output and metadata values, so doing it
/// on the way in gives the same read result (`"\"acme\""` → `"acme"`, `"acme"` → `"acme"`).
/// serde_json's nesting limit bounds the work on hostile strings.
pub(crate) fn json_or_text(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

/// A string holding JSON, or a value that already is JSON.
pub(crate) fn parse_json(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => serde_json::from_str(s).ok(),
        other => Some(other.clone()),
    }
}

/// Rebuilds flattened keys under `prefix` into nested JSON, as Traceloop/OpenLLMetry
/// (`gen_ai.prompt.0.role`) and OpenInference (`llm.input_messages.0.message.content`) write
/// them: numeric segments become array indexes. Returns `None` when no key has the prefix.
pub(crate) fn rebuild_flattened(attrs: &Attrs, prefix: &str) -> Option<Value> {
    if let Some(whole) = attrs.get(prefix) {
        return Some(json_or_text(whole));
    }
    let dotted = format!("{prefix}.");
    let entries: Vec<(Vec<&str>, &Value)> = attrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&dotted)?.split('.').collect(), v)))
        .filter(|(path, _): &(Vec<&str>, _)| path.len() <= MAX_PATH_SEGMENTS)
        .collect();
    if entries.is_empty() {
        return None;
    }
    let top_is_array = entries.iter().any(|(p, _)| p.len() > 1 && is_index(p[0]));
    let mut root = if top_is_array {
        Value::Array(Vec::new())
    } else {
        Value::Object(Map::new())
    };
    let mut slots = 0usize;
    for (path, value) in entries {
        insert_path(&mut root, &path, value.clone(), &mut slots);
    }
    Some(root)
}

fn is_index(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
}

/// Walks (creating as needed) to `path` and stores `value` there. Segments that do not fit the
/// container they meet (a name in an array, an index past the slot budget) drop the entry.
fn insert_path(root: &mut Value, path: &[&str], value: Value, slots: &mut usize) {
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        let fresh = || match path.get(i + 1) {
            Some(next) if is_index(next) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        node = match node {
            Value::Array(items) => {
                let Some(idx) = seg
                    .parse::<usize>()
                    .ok()
                    .filter(|i| is_index(seg) && *i < MAX_ARRAY_SLOTS)
                else {
                    return;
                };
                if idx >= items.len() {
                    let grow = idx + 1 - items.len();
                    if *slots + grow > MAX_ARRAY_SLOTS {
                        return;
                    }
                    *slots += grow;
                    items.resize(idx + 1, Value::Null);
                }
                let Some(slot) = items.get_mut(idx) else {
                    return;
                };
                if last {
                    *slot = value;
                    return;
                }
                if !(slot.is_array() || slot.is_object()) {
                    *slot = fresh();
                }
                slot
            }
            Value::Object(map) => {
                if last {
                    map.insert((*seg).to_owned(), value);
                    return;
                }
                let slot = map.entry((*seg).to_owned()).or_insert_with(fresh);
                if !(slot.is_array() || slot.is_object()) {
                    *slot = fresh();
                }
                slot
            }
            _ => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use serde_json::json;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    fn kv(k: &str, v: AnyValue) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(v),
            key_strindex: 0,
        }
    }

    #[test]
    fn values_convert_like_langfuse() {
        let arr = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![s("a"), s("b")],
            })),
        };
        assert_eq!(any_to_json(&arr), json!(["a", "b"]));
        let nan = AnyValue {
            value: Some(any_value::Value::DoubleValue(f64::NAN)),
        };
        assert_eq!(any_to_json(&nan), json!("NaN"));
        let kvl = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("k", s("v"))],
            })),
        };
        let text = any_to_json(&kvl);
        assert!(text.as_str().unwrap().contains("kvlistValue"), "{text}");
    }

    #[test]
    fn deep_arrays_are_cut_not_overflowed() {
        let mut v = s("leaf");
        for _ in 0..(MAX_VALUE_DEPTH * 3) {
            v = AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", v)],
                })),
            };
        }
        assert_eq!(any_to_json(&v), Value::Null);
    }

    #[test]
    fn flattened_keys_rebuild() {
        let attrs = Attrs::from_kvs(&[
            kv("gen_ai.prompt.0.role", s("user")),
            kv("gen_ai.prompt.0.content", s("hi")),
            kv("gen_ai.prompt.1.role", s("assistant")),
            kv("llm.input_messages.0.message.role", s("user")),
            kv("gen_ai.completion.0.content", s("yo")),
        ]);
        assert_eq!(
            rebuild_flattened(&attrs, "gen_ai.prompt"),
            Some(json!([{"role": "user", "content": "hi"}, {"role": "assistant"}]))
        );
        assert_eq!(
            rebuild_flattened(&attrs, "llm.input_messages"),
            Some(json!([{"message": {"role": "user"}}]))
        );
        assert_eq!(rebuild_flattened(&attrs, "llm.output_messages"), None);
        for index in [
            "99999999999",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            let key = format!("gen_ai.prompt.{index}.content");
            let huge = Attrs::from_kvs(&[kv(&key, s("x"))]);
            assert_eq!(rebuild_flattened(&huge, "gen_ai.prompt"), Some(json!([])));
        }
    }
}
