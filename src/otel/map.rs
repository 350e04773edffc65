//! Spans → trace and observation patches (spec 3.2–3.4).
//!
//! Ordering stamps (`TimedChange::at`), chosen so the store's "later event wins" merge does what
//! Langfuse does whatever order it applies the changes in:
//! * an observation patch is stamped with its span's **end** time. OTel exports a span once it
//!   has ended, so a re-export of the same span carries the same stamp and, since the merge
//!   treats equal stamps as newer, the later-applied copy wins; a copy with a later end time
//!   (the more finished state) wins over an earlier one.
//! * a trace patch is stamped with its span's **start** time, as Langfuse stamps the trace events
//!   it derives from spans. The root span starts first, so its first-write-wins fields
//!   (timestamp, environment) win over those of child spans even when a child is applied first,
//!   while trace attributes repeated on later-starting spans win over earlier ones, as in
//!   Langfuse. Re-exports again carry equal stamps, so the later copy wins.

use std::collections::HashSet;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value};

use crate::record::{
    Change, Level, ObservationPatch, Patch, TimedChange, TracePatch, normalize_environment,
};
use crate::time::Timestamp;

use super::attrs::{Attrs, as_text, json_or_text, parse_json};
use super::decode::hex_encode;
use super::io::{self, Domain};
use super::{ExportTraceServiceRequest, Mapped, generation, kind, usage};

/// The instrumentation scope of a batch of spans.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub(crate) name: String,
    pub(crate) version: String,
    attrs: Attrs,
}

impl Scope {
    fn new(scope: Option<&InstrumentationScope>) -> Self {
        scope.map_or_else(Scope::default, |s| Scope {
            name: s.name.clone(),
            version: s.version.clone(),
            attrs: Attrs::from_kvs(&s.attributes),
        })
    }

    /// The `scope` metadata block: `{name, version, attributes}`.
    fn block(&self) -> Value {
        let mut block = Map::new();
        if !self.name.is_empty() {
            block.insert("name".into(), Value::from(self.name.as_str()));
        }
        if !self.version.is_empty() {
            block.insert("version".into(), Value::from(self.version.as_str()));
        }
        block.insert("attributes".into(), Value::Object(self.attrs.to_map()));
        Value::Object(block)
    }

    fn is_langfuse_sdk(&self) -> bool {
        self.name.starts_with("langfuse-sdk")
    }
}

/// What a resource and scope contribute to every span below them.
struct Context<'a> {
    resource: &'a Attrs,
    /// `langfuse.trace.metadata*` set on the resource.
    resource_trace_metadata: &'a Map<String, Value>,
    scope: &'a Scope,
    /// The `resourceAttributes` and `scope` metadata blocks, built once for all the spans:
    /// a clone copies a map's hash table, building one hashes every key again.
    resource_block: &'a Value,
    scope_block: Value,
}

/// How much trace data a span carries (spec 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceEvent {
    /// Root span: every trace field.
    Full,
    /// Child span with trace attributes: only those.
    Partial,
    /// Child span without: `{id, timestamp, environment}`, so the trace exists.
    Shallow,
}

struct SpanChanges {
    trace: (TraceEvent, TimedChange),
    observation: TimedChange,
}

/// Maps every span of an export. Spans with invalid ids are counted and skipped; the rest are
/// mapped. Shallow trace patches are kept once per trace and only when no span of the export
/// carries real trace data for it.
pub fn map_request(req: &ExportTraceServiceRequest, received_at: Timestamp) -> Mapped {
    let mut mapped: Vec<(String, SpanChanges)> = Vec::new();
    let mut rejected = 0u64;
    let mut first_reason: Option<String> = None;
    for resource_spans in &req.resource_spans {
        let resource = Attrs::from_kvs(
            resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes),
        );
        let resource_trace_metadata = metadata(&resource, Domain::Trace);
        let resource_block = Value::Object(resource.to_map());
        for scope_spans in &resource_spans.scope_spans {
            let scope = Scope::new(scope_spans.scope.as_ref());
            let ctx = Context {
                resource: &resource,
                resource_trace_metadata: &resource_trace_metadata,
                scope: &scope,
                resource_block: &resource_block,
                scope_block: scope.block(),
            };
            for span in &scope_spans.spans {
                match map_span(span, &ctx, received_at) {
                    Ok(changes) => mapped.push(changes),
                    Err(reason) => {
                        rejected += 1;
                        first_reason.get_or_insert(reason);
                    }
                }
            }
        }
    }

    let with_data: HashSet<String> = mapped
        .iter()
        .filter(|(_, c)| c.trace.0 != TraceEvent::Shallow)
        .map(|(id, _)| id.clone())
        .collect();
    let mut shallow_sent: HashSet<String> = HashSet::new();
    let mut changes = Vec::with_capacity(mapped.len() * 2);
    for (trace_id, span) in mapped {
        let (event, trace_change) = span.trace;
        let keep = event != TraceEvent::Shallow
            || (!with_data.contains(&trace_id) && shallow_sent.insert(trace_id));
        if keep {
            changes.push(trace_change);
        }
        changes.push(span.observation);
    }
    let error_message = first_reason.map(|reason| match rejected {
        1 => format!("1 span rejected: {reason}"),
        n => format!("{n} spans rejected; first: {reason}"),
    });
    Mapped {
        changes,
        rejected_spans: rejected,
        error_message,
    }
}

fn map_span(
    span: &Span,
    ctx: &Context<'_>,
    received_at: Timestamp,
) -> Result<(String, SpanChanges), String> {
    let trace_id = required_id(&span.trace_id, 16, "trace id")?;
    let span_id = required_id(&span.span_id, 8, "span id")?;
    let parent_id = parent_id(&span.parent_span_id)?;
    let nanos = |n: u64| (n > 0).then(|| Timestamp::from_nanos(n));
    let (start, end) = match (
        nanos(span.start_time_unix_nano),
        nanos(span.end_time_unix_nano),
    ) {
        (Some(s), Some(e)) => (s, e),
        (Some(t), None) | (None, Some(t)) => (t, t),
        (None, None) => (received_at, received_at),
    };

    let attrs = Attrs::from_kvs(&span.attributes);
    let scope = ctx.scope;
    let name = observation_name(&attrs, &span.name);
    let environment = environment(&attrs, ctx.resource);
    let version = attrs
        .first_text(&["langfuse.version"])
        .or_else(|| ctx.resource.first_text(&["service.version"]));
    let observation_metadata = metadata(&attrs, Domain::Observation);

    let mut obs = ObservationPatch::new(
        span_id,
        kind::observation_type(&attrs, ctx.resource, scope, &span.name),
    );
    obs.trace_id = Some(trace_id.clone());
    obs.parent_observation_id = parent_id.clone();
    obs.name = Patch::Set(name.clone());
    obs.start_time = Some(start);
    obs.end_time = Some(end);
    obs.completion_start_time = generation::completion_start_time(&attrs, start);
    (obs.input, obs.output) = io::extract(&attrs, &span.events, &scope.name, Domain::Observation);
    let mut meta = ctx.resource_trace_metadata.clone();
    meta.extend(observation_metadata.clone());
    add_context_blocks(&mut meta, &attrs, ctx, true);
    obs.metadata = Some(Value::Object(meta));
    obs.level = Patch::Set(level(&attrs, span, scope));
    obs.status_message = attrs
        .first_text(&["langfuse.observation.status_message"])
        .or_else(|| {
            span.status
                .as_ref()
                .map(|s| s.message.clone())
                .filter(|m| !m.is_empty())
        });
    obs.version = version.clone();
    obs.environment = Some(environment.clone());
    // Vercel AI SDK agent spans repeat their steps' model and usage; Langfuse skips them there
    // to avoid counting them twice.
    let agent_rollup = scope.name == "ai"
        && matches!(
            attrs.str("gen_ai.operation.name"),
            Some("invoke_agent" | "agent_step")
        );
    if !agent_rollup {
        obs.model = generation::model_name(&attrs).into();
        obs.usage = usage::usage(&attrs);
        obs.cost = usage::cost(&attrs);
    }
    obs.model_parameters = generation::model_parameters(&attrs, &scope.name);
    if obs.kind == crate::record::ObservationType::Generation
        && let Some((prompt_name, prompt_version)) = generation::prompt(&attrs)
    {
        obs.prompt_name = Some(prompt_name);
        obs.prompt_version = Some(prompt_version);
    }

    let is_root = parent_id.is_none()
        || attrs
            .get("langfuse.internal.as_root")
            .is_some_and(|v| as_text(v) == "true");
    obs.app_root = is_root
        || attrs
            .get("langfuse.internal.is_app_root")
            .is_some_and(|v| as_text(v) == "true");
    let event = if is_root {
        TraceEvent::Full
    } else if has_trace_updates(&attrs) {
        TraceEvent::Partial
    } else {
        TraceEvent::Shallow
    };
    let mut trace = TracePatch {
        id: trace_id.clone(),
        timestamp: Some(start),
        environment: Some(environment),
        ..TracePatch::default()
    };
    if event != TraceEvent::Shallow {
        let mut meta = ctx.resource_trace_metadata.clone();
        meta.extend(metadata(&attrs, Domain::Trace));
        let trace_name = attrs.first_text(&["langfuse.trace.name"]);
        if event == TraceEvent::Full {
            meta.extend(observation_metadata);
            add_context_blocks(&mut meta, &attrs, ctx, true);
            trace.name = Patch::Set(trace_name.unwrap_or(name));
            (trace.input, trace.output) =
                io::extract(&attrs, &span.events, &scope.name, Domain::Trace);
        } else {
            // The `attributes` block stays off partial updates so that a child span cannot
            // replace the root's.
            add_context_blocks(&mut meta, &attrs, ctx, false);
            trace.name = trace_name.into();
            trace.input = attrs.truthy("langfuse.trace.input").map(json_or_text);
            trace.output = attrs.truthy("langfuse.trace.output").map(json_or_text);
        }
        trace.metadata = Some(Value::Object(meta));
        trace.version = version.into();
        trace.release = attrs
            .first_text(&["langfuse.release"])
            .or_else(|| ctx.resource.first_text(&["langfuse.release"]))
            .into();
        trace.user_id = attrs.first_text(&USER_ID_KEYS).into();
        trace.session_id = attrs.first_text(&SESSION_ID_KEYS).into();
        trace.public = ["langfuse.trace.public", "langfuse.public"]
            .iter()
            .find_map(|k| attrs.get(k))
            .map(|v| as_text(v) == "true");
        trace.tags = tags(&attrs);
    }

    let changes = SpanChanges {
        trace: (
            event,
            TimedChange {
                at: start,
                change: Change::Trace(trace),
            },
        ),
        observation: TimedChange {
            at: end,
            change: Change::Observation(obs),
        },
    };
    Ok((trace_id, changes))
}

/// Hex of a required id: exactly `len` bytes, not all zero.
fn required_id(bytes: &[u8], len: usize, what: &str) -> Result<String, String> {
    if bytes.len() == len && bytes.iter().any(|b| *b != 0) {
        Ok(hex_encode(bytes))
    } else {
        Err(format!(
            "{what} '{}' is invalid: it must be {} hex characters and not all zero",
            shown_id(bytes),
            len * 2
        ))
    }
}

/// A parent id: empty or eight zero bytes means none; otherwise it must be a valid span id.
fn parent_id(bytes: &[u8]) -> Result<Option<String>, String> {
    if bytes.is_empty() || bytes == [0; 8] {
        return Ok(None);
    }
    required_id(bytes, 8, "parent span id").map(Some)
}

/// An id as hex for an error message, cut so a hostile id cannot bloat the answer.
fn shown_id(bytes: &[u8]) -> String {
    let mut hex = hex_encode(bytes.get(..32).unwrap_or(bytes));
    if bytes.len() > 32 {
        hex.push_str("...");
    }
    hex
}

/// Adds `attributes` (foreign instrumentations only, when asked), `resourceAttributes` and
/// `scope` to a metadata object.
fn add_context_blocks(
    meta: &mut Map<String, Value>,
    attrs: &Attrs,
    ctx: &Context<'_>,
    with_attributes: bool,
) {
    if with_attributes && !ctx.scope.is_langfuse_sdk() {
        meta.insert(
            "attributes".into(),
            Value::Object(io::filtered_attributes(attrs)),
        );
    }
    meta.insert("resourceAttributes".into(), ctx.resource_block.clone());
    meta.insert("scope".into(), ctx.scope_block.clone());
}

const USER_ID_KEYS: [&str; 5] = [
    "langfuse.user.id",
    "user.id",
    "langfuse.observation.metadata.langfuse_user_id",
    "langfuse.trace.metadata.langfuse_user_id",
    "ai.telemetry.metadata.userId",
];
const SESSION_ID_KEYS: [&str; 6] = [
    "langfuse.session.id",
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.observation.metadata.langfuse_session_id",
    "langfuse.trace.metadata.langfuse_session_id",
    "ai.telemetry.metadata.sessionId",
];
const TAG_KEYS: [&str; 6] = [
    "langfuse.trace.tags",
    "langfuse.tags",
    "langfuse.observation.metadata.langfuse_tags",
    "langfuse.trace.metadata.langfuse_tags",
    "ai.telemetry.metadata.tags",
    "tag.tags",
];
/// Vercel AI SDK telemetry keys that are trace fields, not metadata.
const AI_SDK_TRACE_KEYS: [&str; 4] = [
    "ai.telemetry.metadata.userId",
    "ai.telemetry.metadata.sessionId",
    "ai.telemetry.metadata.tags",
    "ai.telemetry.metadata.langfusePrompt",
];

/// Whether a non-root span carries trace-level attributes (spec 3.3).
fn has_trace_updates(attrs: &Attrs) -> bool {
    const KEYS: [&str; 16] = [
        "langfuse.trace.name",
        "langfuse.trace.input",
        "langfuse.trace.output",
        "langfuse.trace.public",
        "langfuse.trace.tags",
        "user.id",
        "session.id",
        "langfuse.user.id",
        "langfuse.session.id",
        "langfuse.observation.metadata.langfuse_user_id",
        "langfuse.observation.metadata.langfuse_session_id",
        "langfuse.observation.metadata.langfuse_tags",
        "ai.telemetry.metadata.sessionId",
        "ai.telemetry.metadata.userId",
        "ai.telemetry.metadata.tags",
        "tag.tags",
    ];
    // Any `langfuse.trace.metadata*` key counts, `langfuse_user_id` and friends included.
    KEYS.iter().any(|k| attrs.truthy(k).is_some())
        || attrs
            .iter()
            .any(|(k, _)| k.starts_with("langfuse.trace.metadata"))
}

/// Langfuse metadata of one domain: the JSON object attribute (`langfuse.<domain>.metadata` or
/// `langfuse.metadata`) overlaid with every `<prefix>.<key>` attribute. Top-level string values
/// holding JSON are decoded, as Langfuse does when it reads metadata back: the Python SDK sends
/// `"\"acme\""` where the JS SDK sends `"acme"`, and both end as `acme`.
fn metadata(attrs: &Attrs, domain: Domain) -> Map<String, Value> {
    let own = match domain {
        Domain::Observation => "langfuse.observation.metadata",
        Domain::Trace => "langfuse.trace.metadata",
    };
    let mut out = Map::new();
    if let Some(Value::Object(top)) = attrs
        .truthy(own)
        .or_else(|| attrs.truthy("langfuse.metadata"))
        .and_then(parse_json)
    {
        out.extend(top);
    }
    for (key, value) in attrs.iter() {
        if AI_SDK_TRACE_KEYS.contains(&key.as_str()) {
            continue;
        }
        for prefix in [own, "langfuse.metadata", "ai.telemetry.metadata"] {
            if let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
                out.insert(rest.to_owned(), value.clone());
            }
        }
    }
    if let Some(tools) = attrs.truthy("ai.prompt.tools") {
        out.insert("tools".into(), tools.clone());
    }
    for value in out.values_mut() {
        if value.is_string() {
            *value = json_or_text(value);
        }
    }
    out
}

/// Observation name: GenAI tool name, Genkit/Logfire/Vercel names, else the span name.
fn observation_name(attrs: &Attrs, span_name: &str) -> String {
    if let Some(name) = attrs.first_text(&["gen_ai.tool.name", "genkit:name", "logfire.msg"]) {
        return name;
    }
    if let Some(tool) = attrs.get("ai.toolCall.name") {
        return as_text(tool);
    }
    if let Some(op) = attrs.get("ai.operationId") {
        return match attrs.truthy("ai.telemetry.functionId") {
            Some(function) => format!("{}:{}", as_text(function), as_text(op)),
            None => as_text(op),
        };
    }
    span_name.to_owned()
}

/// Environment from the span, then the resource, for each known key; normalised.
fn environment(attrs: &Attrs, resource: &Attrs) -> String {
    [
        "langfuse.environment",
        "deployment.environment.name",
        "deployment.environment",
    ]
    .iter()
    .find_map(|k| attrs.truthy(k).or_else(|| resource.truthy(k)))
    .map_or_else(
        || normalize_environment(None),
        |v| normalize_environment(Some(&as_text(v))),
    )
}

/// LiveKit spans Langfuse shows at DEBUG level.
const LIVEKIT_DEBUG_SPANS: [&str; 14] = [
    "user_speaking",
    "eou_detection",
    "llm_request_run",
    "tts_node",
    "tts_request",
    "tts_request_run",
    "tts_stream_adapter",
    "agent_speaking",
    "drain_agent_activity",
    "on_exit",
    "on_enter",
    "llm_fallback_adapter",
    "tts_fallback_adapter",
    "start_agent_activity",
];

fn level(attrs: &Attrs, span: &Span, scope: &Scope) -> Level {
    if let Some(level) = attrs
        .str("langfuse.observation.level")
        .and_then(level_alias)
    {
        return level;
    }
    if span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
    {
        return Level::Error;
    }
    if scope.name == "livekit-agents" && LIVEKIT_DEBUG_SPANS.contains(&span.name.as_str()) {
        return Level::Debug;
    }
    Level::Default
}

/// Level names and the aliases logging libraries use, case-insensitive. An unknown name is
/// ignored (the span's status decides) rather than failing the span.
fn level_alias(raw: &str) -> Option<Level> {
    Some(match raw.trim().to_ascii_uppercase().as_str() {
        "DEBUG" | "TRACE" | "VERBOSE" => Level::Debug,
        "DEFAULT" | "INFO" | "LOG" | "NOTICE" | "OK" | "SUCCESS" => Level::Default,
        "WARNING" | "WARN" => Level::Warning,
        "ERROR" | "FATAL" | "CRITICAL" => Level::Error,
        _ => return None,
    })
}

/// Trace tags: an array, a JSON array in a string, a comma-separated string, or one tag.
fn tags(attrs: &Attrs) -> Vec<String> {
    let list: Vec<String> = match attrs.first_truthy(&TAG_KEYS) {
        Some(Value::Array(items)) => items.iter().map(as_text).collect(),
        Some(Value::String(s)) => {
            let from_json = match s.trim_start().starts_with('[') {
                true => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Array(items)) => Some(items.iter().map(as_text).collect()),
                    _ => None,
                },
                false => None,
            };
            from_json.unwrap_or_else(|| s.split(',').map(|t| t.trim().to_owned()).collect())
        }
        _ => Vec::new(),
    };
    list.into_iter().filter(|t| !t.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_aliases() {
        assert_eq!(level_alias("warn"), Some(Level::Warning));
        assert_eq!(level_alias("Fatal"), Some(Level::Error));
        assert_eq!(level_alias("info"), Some(Level::Default));
        assert_eq!(level_alias("trace"), Some(Level::Debug));
        assert_eq!(level_alias("loud"), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(required_id(&[0; 16], 16, "trace id").is_err());
        assert!(required_id(&[1; 15], 16, "trace id").is_err());
        assert_eq!(
            required_id(&[0xab; 8], 8, "span id").unwrap(),
            "abababababababab"
        );
        assert_eq!(parent_id(&[]), Ok(None));
        assert_eq!(parent_id(&[0; 8]), Ok(None));
        assert!(parent_id(&[1; 3]).is_err());
        assert!(parent_id(&[0; 1]).is_err());
        let msg = required_id(&[1; 100], 16, "trace id").unwrap_err();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn tag_spellings() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let one = |v: &str| {
            Attrs::from_kvs(&[KeyValue {
                key: "langfuse.trace.tags".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.into())),
                }),
                key_strindex: 0,
            }])
        };
        assert_eq!(tags(&one(r#"["a", "b"]"#)), ["a", "b"]);
        assert_eq!(tags(&one("a, b,")), ["a", "b"]);
        assert_eq!(tags(&one("solo")), ["solo"]);
        assert_eq!(tags(&one("[broken")), ["[broken"]);
    }
}
