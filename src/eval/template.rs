//! Judge prompt templates: `{{variable}}` placeholders filled from the evaluated record.
//!
//! A variable is a dotted path into the record's context (`input`, `output.answer`,
//! `metadata.customer`, `input.messages.0.content`, `trace.input` for an observation), or a name
//! that the evaluator's variable mapping points at such a path. Strings are inserted as they
//! are, other JSON compactly; a path that leads nowhere renders as an empty string.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::def::Target;
use crate::record::{ObservationRecord, TraceRecord};
use crate::store::Io;

/// The first path segments a trace context has.
const TRACE_ROOTS: &[&str] = &[
    "id",
    "name",
    "input",
    "output",
    "metadata",
    "tags",
    "userId",
    "sessionId",
    "environment",
    "release",
    "version",
    "timestamp",
];
/// The first path segments an observation context has (`trace` holds its trace's context).
const OBSERVATION_ROOTS: &[&str] = &[
    "id",
    "traceId",
    "name",
    "type",
    "model",
    "modelParameters",
    "input",
    "output",
    "metadata",
    "level",
    "statusMessage",
    "environment",
    "startTime",
    "endTime",
    "usage",
    "trace",
];

/// The placeholders of a template, in order of first appearance.
pub fn variables(template: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, name) in placeholders(template) {
        if !out.iter().any(|v| v == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Each `{{ name }}` as (byte range of the whole placeholder, trimmed name). Text between
/// braces that is not a plain name (letters, digits, `_`, `-`, `.`) is left alone.
fn placeholders(template: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| i + from) {
        let Some(close) = template[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        let name = template[open + 2..close].trim();
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if plain {
            out.push((open..close + 2, name));
            from = close + 2;
        } else {
            from = open + 2;
        }
    }
    out
}

/// Why a template cannot be used for `target`, if it cannot.
pub fn check(
    template: &str,
    mapping: &BTreeMap<String, String>,
    target: Target,
) -> Result<(), String> {
    let roots = match target {
        Target::Trace => TRACE_ROOTS,
        Target::Observation => OBSERVATION_ROOTS,
    };
    let vars = variables(template);
    if vars.is_empty() {
        return Err(
            "prompt has no {{variable}}: the judge would never see the record (use {{input}}, {{output}}, ...)"
                .into(),
        );
    }
    for var in &vars {
        let path = mapping.get(var).map_or(var.as_str(), String::as_str);
        let root = path.split('.').next().unwrap_or_default();
        if !roots.contains(&root) {
            return Err(format!(
                "prompt variable {{{{{var}}}}} does not name a field of a {} ({}) and has no variableMapping entry",
                target.as_str(),
                roots.join(", ")
            ));
        }
    }
    for (var, path) in mapping {
        let root = path.split('.').next().unwrap_or_default();
        if !roots.contains(&root) {
            return Err(format!(
                "variableMapping {var:?} → {path:?}: a path must start with one of {}",
                roots.join(", ")
            ));
        }
    }
    Ok(())
}

pub fn trace_context(t: &TraceRecord, io: &Io) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "input": io.input,
        "output": io.output,
        "metadata": t.metadata,
        "tags": t.tags,
        "userId": t.user_id,
        "sessionId": t.session_id,
        "environment": t.environment,
        "release": t.release,
        "version": t.version,
        "timestamp": t.timestamp.to_iso(),
    })
}

pub fn observation_context(o: &ObservationRecord, io: &Io, trace: Option<Value>) -> Value {
    json!({
        "id": o.id,
        "traceId": o.trace_id,
        "name": o.name,
        "type": o.kind.as_str(),
        "model": o.model,
        "modelParameters": o.model_parameters,
        "input": io.input,
        "output": io.output,
        "metadata": o.metadata,
        "level": o.level.as_str(),
        "statusMessage": o.status_message,
        "environment": o.environment,
        "startTime": o.start_time.to_iso(),
        "endTime": o.end_time.map(|t| t.to_iso()),
        "usage": o.usage_details,
        "trace": trace.unwrap_or(Value::Object(Map::new())),
    })
}

/// Follows a dotted path; array items by index, and a string that holds JSON is looked into
/// (SDKs often send input as a JSON-encoded string).
fn lookup<'a>(root: &'a Value, path: &str) -> Option<std::borrow::Cow<'a, Value>> {
    use std::borrow::Cow;
    let mut cur: Cow<'a, Value> = Cow::Borrowed(root);
    for seg in path.split('.') {
        if let Value::String(s) = cur.as_ref()
            && let Ok(parsed) = serde_json::from_str::<Value>(s)
            && (parsed.is_object() || parsed.is_array())
        {
            cur = Cow::Owned(parsed);
        }
        let next = match cur.as_ref() {
            Value::Object(m) => m.get(seg).cloned(),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
            _ => None,
        }?;
        cur = Cow::Owned(next);
    }
    Some(cur)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The template with every placeholder replaced from `context`.
pub fn render(template: &str, mapping: &BTreeMap<String, String>, context: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (range, name) in placeholders(template) {
        out.push_str(&template[last..range.start]);
        let path = mapping.get(name).map_or(name, String::as_str);
        if let Some(v) = lookup(context, path) {
            out.push_str(&as_text(&v));
        }
        last = range.end;
    }
    out.push_str(&template[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_paths_mappings_and_json_strings() {
        let ctx = json!({
            "input": "{\"question\": \"2+2?\"}",
            "output": {"answer": 4},
            "metadata": {"lang": "en"},
            "trace": {"name": "calc"},
        });
        let mut mapping = BTreeMap::new();
        mapping.insert("q".to_string(), "input.question".to_string());
        let t = "Q: {{q}} A: {{ output.answer }} ({{metadata.lang}}, {{trace.name}}) {{missing}} {{ not a var }}";
        assert_eq!(
            render(t, &mapping, &ctx),
            "Q: 2+2? A: 4 (en, calc)  {{ not a var }}"
        );
        assert_eq!(render("{{output}}", &mapping, &ctx), "{\"answer\":4}");
    }

    #[test]
    fn unknown_roots_are_refused() {
        let none = BTreeMap::new();
        assert!(check("{{input}} {{metadata.x}}", &none, Target::Trace).is_ok());
        assert!(check("{{model}}", &none, Target::Trace).is_err());
        assert!(check("{{model}} {{trace.input}}", &none, Target::Observation).is_ok());
        assert!(check("no variables", &none, Target::Trace).is_err());
        let mut m = BTreeMap::new();
        m.insert("q".to_string(), "bogus.x".to_string());
        assert!(check("{{q}}", &m, Target::Trace).is_err());
    }
}
