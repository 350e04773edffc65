//! Input and output of a span (spec 3.5): the first instrumentation rule that yields something
//! wins. Genkit and Flue rules are not implemented.

use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde_json::{Map, Value, json};

use crate::record::is_truthy;

use super::attrs::{Attrs, as_text, json_or_text, parse_json, rebuild_flattened};

/// Which record the input/output is for: a root span's trace prefers `langfuse.trace.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    Trace,
    Observation,
}

pub(crate) type InOut = (Option<Value>, Option<Value>);

/// Attribute keys that hold input/output, removed from the `attributes` metadata block.
const IO_KEYS: &[&str] = &[
    "langfuse.trace.input",
    "langfuse.trace.output",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "ai.prompt.messages",
    "ai.prompt",
    "ai.toolCall.args",
    "ai.response.text",
    "ai.result.text",
    "ai.toolCall.result",
    "ai.response.object",
    "ai.result.object",
    "ai.response.toolCalls",
    "ai.result.toolCalls",
    "gcp.vertex.agent.llm_request",
    "gcp.vertex.agent.llm_response",
    "gcp.vertex.agent.tool_call_args",
    "gcp.vertex.agent.tool_response",
    "prompt",
    "all_messages_events",
    "events",
    "lk.input_text",
    "lk.user_transcript",
    "lk.chat_ctx",
    "lk.user_input",
    "lk.function_tool.output",
    "lk.response.text",
    "mlflow.spanInputs",
    "mlflow.spanOutputs",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "input.value",
    "output.value",
    "final_result",
    "pydantic_ai.all_messages",
    "input",
    "output",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "tool_arguments",
    "tool_response",
];
const IO_PREFIXES: [&str; 4] = [
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.input_messages",
    "llm.output_messages",
];
/// Keys already lifted into metadata proper.
const METADATA_PREFIXES: [&str; 3] = [
    "langfuse.observation.metadata",
    "langfuse.trace.metadata",
    "langfuse.metadata",
];

/// The span's attributes minus input/output and Langfuse metadata keys, non-strings
/// JSON-encoded: the `attributes` block Langfuse keeps in metadata for foreign instrumentations.
pub(crate) fn filtered_attributes(attrs: &Attrs) -> Map<String, Value> {
    attrs
        .iter()
        .filter(|(k, _)| {
            !IO_KEYS.contains(&k.as_str())
                && !IO_PREFIXES
                    .iter()
                    .chain(METADATA_PREFIXES.iter())
                    .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.clone(), Value::String(as_text(v))))
        .collect()
}

/// Extracts input and output; stored strings holding JSON are parsed (see `json_or_text`).
pub(crate) fn extract(attrs: &Attrs, events: &[Event], scope_name: &str, domain: Domain) -> InOut {
    extract_at(attrs, events, scope_name, domain, true).unwrap_or((None, None))
}

fn extract_at(
    attrs: &Attrs,
    events: &[Event],
    scope_name: &str,
    domain: Domain,
    use_events: bool,
) -> Option<InOut> {
    let get = |k: &str| attrs.truthy(k);
    let trace_first = |trace_key: &str, obs_key: &str| match domain {
        Domain::Trace => get(trace_key).or_else(|| get(obs_key)),
        Domain::Observation => get(obs_key),
    };
    if let Some(found) = pair(
        trace_first("langfuse.trace.input", "langfuse.observation.input"),
        trace_first("langfuse.trace.output", "langfuse.observation.output"),
    ) {
        return Some(found);
    }
    if scope_name == "ai" {
        return Some(vercel(attrs));
    }
    if use_events && let Some(found) = from_events(events, scope_name) {
        return Some(found);
    }
    let adk_in = get("gcp.vertex.agent.llm_request")
        .filter(|v| v.as_str() != Some("{}"))
        .or_else(|| get("gcp.vertex.agent.tool_call_args"));
    let adk_out = get("gcp.vertex.agent.llm_response")
        .filter(|v| v.as_str() != Some("{}"))
        .or_else(|| get("gcp.vertex.agent.tool_response"));
    if let Some(found) = pair(adk_in, adk_out)
        .or_else(|| pair(get("prompt"), get("all_messages_events")))
        .or_else(|| {
            let input = ["lk.input_text", "lk.user_transcript", "lk.chat_ctx"]
                .iter()
                .find_map(|k| attrs.get(k));
            let output = get("lk.function_tool.output").or_else(|| get("lk.response.text"));
            pair(input, output)
        })
        .or_else(|| logfire_events(attrs))
        .or_else(|| pair(get("mlflow.spanInputs"), get("mlflow.spanOutputs")))
        .or_else(|| {
            pair(
                get("traceloop.entity.input"),
                get("traceloop.entity.output"),
            )
        })
        .or_else(|| pair(get("input.value"), get("output.value")))
        .or_else(|| pair(get("input"), get("output")))
    {
        return Some(found);
    }
    if scope_name == "pydantic-ai"
        && let Some((input, output)) = pair(get("pydantic_ai.all_messages"), get("final_result"))
    {
        let input = input.map(|i| with_system_instructions(i, attrs));
        return Some((input, output));
    }
    if let Some(found) = pair(get("tool_arguments"), get("tool_response")) {
        return Some(found);
    }
    for (in_prefix, out_prefix) in [
        ("gen_ai.prompt", "gen_ai.completion"),
        ("llm.input_messages", "llm.output_messages"),
    ] {
        let input = rebuild_flattened(attrs, in_prefix);
        let output = rebuild_flattened(attrs, out_prefix);
        if input.is_some() || output.is_some() {
            return Some((input, output));
        }
    }
    if let Some((input, output)) = pair(get("gen_ai.input.messages"), get("gen_ai.output.messages"))
    {
        return Some((input.map(|i| with_system_instructions(i, attrs)), output));
    }
    pair(
        get("gen_ai.tool.call.arguments"),
        get("gen_ai.tool.call.result"),
    )
}

/// `Some` when either side is truthy; both sides parsed from stored JSON text.
fn pair(input: Option<&Value>, output: Option<&Value>) -> Option<InOut> {
    let input = input.filter(|v| is_truthy(v));
    let output = output.filter(|v| is_truthy(v));
    (input.is_some() || output.is_some())
        .then(|| (input.map(json_or_text), output.map(json_or_text)))
}

/// Vercel AI SDK (scope `ai`): prompt messages in; response text, tool calls or object out.
fn vercel(attrs: &Attrs) -> InOut {
    let input = ["ai.prompt.messages", "ai.prompt", "ai.toolCall.args"]
        .iter()
        .find_map(|k| attrs.get(k))
        .map(json_or_text);
    let output = match (
        attrs.get("ai.response.text"),
        attrs.get("ai.response.toolCalls"),
    ) {
        (Some(text), Some(calls)) => Some(json!({
            "role": "assistant",
            "content": text,
            "tool_calls": json_or_text(calls),
        })),
        _ => attrs
            .truthy("ai.response.text")
            .or_else(|| {
                [
                    "ai.result.text",
                    "ai.toolCall.result",
                    "ai.response.object",
                    "ai.result.object",
                    "ai.response.toolCalls",
                    "ai.result.toolCalls",
                ]
                .iter()
                .find_map(|k| attrs.get(k))
            })
            .map(json_or_text),
    };
    (input, output)
}

/// Span events carrying GenAI messages: the semconv ≥ 1.37 operation-details event, the
/// per-message events (`gen_ai.user.message`, ..., `gen_ai.choice`), and Semantic Kernel's
/// legacy `gen_ai.content.prompt`/`completion` events.
fn from_events(events: &[Event], scope_name: &str) -> Option<InOut> {
    if let Some(details) = events
        .iter()
        .find(|e| e.name == "gen_ai.client.inference.operation.details")
    {
        let attrs = Attrs::from_kvs(&details.attributes);
        let input = attrs
            .truthy("gen_ai.input.messages")
            .map(|i| with_system_instructions(json_or_text(i), &attrs));
        let output = attrs.truthy("gen_ai.output.messages").map(json_or_text);
        if input.is_some() || output.is_some() {
            return Some((input, output));
        }
    }
    const MESSAGE_EVENTS: [&str; 4] = [
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
    ];
    let inputs: Vec<Value> = events
        .iter()
        .filter(|e| MESSAGE_EVENTS.contains(&e.name.as_str()))
        .map(|e| {
            let role = e
                .name
                .trim_start_matches("gen_ai.")
                .trim_end_matches(".message");
            let mut message = Map::new();
            message.insert("role".into(), Value::from(role));
            message.extend(Attrs::from_kvs(&e.attributes).to_map());
            Value::Object(message)
        })
        .collect();
    let mut outputs: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "gen_ai.choice")
        .map(|e| Value::Object(Attrs::from_kvs(&e.attributes).to_map()))
        .collect();
    if !inputs.is_empty() || !outputs.is_empty() {
        let input = (!inputs.is_empty()).then_some(Value::Array(inputs));
        let output = match outputs.len() {
            0 => None,
            1 => outputs.pop(),
            _ => Some(Value::Array(outputs)),
        };
        return Some((input, output));
    }
    let prompt = events.iter().find(|e| e.name == "gen_ai.content.prompt");
    let completion = events
        .iter()
        .find(|e| e.name == "gen_ai.content.completion");
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    // The legacy events hold attributes such as `gen_ai.prompt`; read them with the attribute
    // rules (one level only: events are not consulted again), else keep them whole.
    let side = |event: Option<&Event>, pick_output: bool| {
        let attrs = Attrs::from_kvs(event.map_or(&[][..], |e| &e.attributes));
        extract_at(&attrs, &[], scope_name, Domain::Observation, false)
            .and_then(|(i, o)| if pick_output { o } else { i })
            .or_else(|| Some(Value::Object(attrs.to_map())))
    };
    Some((side(prompt, false), side(completion, true)))
}

/// Logfire's single `events` attribute (array or JSON text): the `gen_ai.choice` entry is the
/// output, every other entry is input.
fn logfire_events(attrs: &Attrs) -> Option<InOut> {
    let Some(Value::Array(entries)) = attrs.get("events").and_then(parse_json) else {
        return None;
    };
    let is_choice =
        |e: &Value| e.get("event.name").and_then(Value::as_str) == Some("gen_ai.choice");
    let output = entries.iter().find(|e| is_choice(e)).cloned();
    let inputs: Vec<Value> = entries.iter().filter(|e| !is_choice(e)).cloned().collect();
    let input = (!inputs.is_empty()).then_some(Value::Array(inputs));
    (input.is_some() || output.is_some()).then_some((input, output))
}

/// Prepends `gen_ai.system_instructions` to an input message list as system message(s), unless
/// the list already has a system message. Structured instructions (`[{role, parts}]`) stay
/// separate messages; text parts are joined into one `{role: system, content}`.
fn with_system_instructions(input: Value, attrs: &Attrs) -> Value {
    let Some(raw) = attrs.truthy("gen_ai.system_instructions") else {
        return input;
    };
    let Value::Array(mut messages) = input else {
        return input;
    };
    if messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some("system"))
    {
        return Value::Array(messages);
    }
    let system = |content: String| json!({"role": "system", "content": content});
    let prepend: Vec<Value> = match parse_json(raw) {
        None => vec![system(as_text(raw))],
        Some(Value::String(s)) => vec![system(s)],
        Some(Value::Array(items)) => {
            let structured = !items.is_empty() && items.iter().all(|i| i.get("parts").is_some());
            if structured {
                items
                    .into_iter()
                    .map(|mut m| {
                        if let Value::Object(o) = &mut m {
                            o.entry("role").or_insert_with(|| Value::from("system"));
                        }
                        m
                    })
                    .collect()
            } else {
                let texts: Vec<String> = items.iter().flat_map(text_parts).collect();
                if texts.is_empty() {
                    Vec::new()
                } else {
                    vec![system(texts.join("\n"))]
                }
            }
        }
        Some(_) => Vec::new(),
    };
    messages.splice(0..0, prepend);
    Value::Array(messages)
}

/// Text carried by one instruction entry: a string, a `{content}` part, or a message's parts.
fn text_parts(item: &Value) -> Vec<String> {
    match item {
        Value::String(s) => vec![s.clone()],
        Value::Object(o) => {
            if let Some(Value::String(c)) = o.get("content") {
                vec![c.clone()]
            } else if let Some(Value::Array(parts)) = o.get("parts") {
                parts
                    .iter()
                    .filter_map(|p| p.get("content").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}
