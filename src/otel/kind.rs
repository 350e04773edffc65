//! Observation type inference (spec 3.6): the first rule that yields a type wins, else `SPAN`.

use crate::record::ObservationType;

use super::attrs::Attrs;
use super::map::Scope;

const LANGFUSE_TYPE: &str = "langfuse.observation.type";

const VERCEL_GENERATION_OPS: [&str; 4] = [
    "ai.generateText.doGenerate",
    "ai.streamText.doStream",
    "ai.generateObject.doGenerate",
    "ai.streamObject.doStream",
];
const VERCEL_EMBEDDING_OPS: [&str; 2] = ["ai.embedMany.doEmbed", "ai.embed.doEmbed"];

/// Infers the observation type of a span.
pub(crate) fn observation_type(
    attrs: &Attrs,
    resource: &Attrs,
    scope: &Scope,
    span_name: &str,
) -> ObservationType {
    let rules: [&dyn Fn() -> Option<ObservationType>; 10] = [
        &|| legacy_python_generation(attrs, resource, scope),
        &|| attrs.str(LANGFUSE_TYPE).and_then(ObservationType::parse),
        &|| attrs.str("openinference.span.kind").and_then(openinference),
        &|| {
            attrs
                .str("gen_ai.operation.name")
                .and_then(gen_ai_operation)
        },
        &|| {
            attrs
                .str("genkit:metadata:subtype")
                .and_then(genkit_subtype)
        },
        &|| vercel_model_operation(attrs),
        &|| vercel_tool_call(attrs),
        &|| {
            (attrs.meaningful("gen_ai.tool.name").is_some()
                || attrs.meaningful("gen_ai.tool.call.id").is_some())
            .then_some(ObservationType::Tool)
        },
        &|| livekit(scope, span_name),
        &|| has_model(attrs).then_some(ObservationType::Generation),
    ];
    rules
        .iter()
        .find_map(|rule| rule())
        .unwrap_or(ObservationType::Span)
}

/// Langfuse Python SDK ≤ 3.3 wrote `type=span` on generations; a span with generation
/// attributes from such an SDK is a generation.
fn legacy_python_generation(
    attrs: &Attrs,
    resource: &Attrs,
    scope: &Scope,
) -> Option<ObservationType> {
    if attrs.str(LANGFUSE_TYPE) != Some("span")
        || scope.name != "langfuse-sdk"
        || resource.str("telemetry.sdk.language") != Some("python")
    {
        return None;
    }
    let mut parts = scope.version.split('.').map(|p| p.parse::<u32>().ok());
    if let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next())
        && (major > 3 || (major == 3 && minor > 3))
    {
        return None;
    }
    const GENERATION_KEYS: [&str; 7] = [
        "langfuse.observation.model.name",
        "langfuse.observation.cost_details",
        "langfuse.observation.usage_details",
        "langfuse.observation.completion_start_time",
        "langfuse.observation.model.parameters",
        "langfuse.observation.prompt.name",
        "langfuse.observation.prompt.version",
    ];
    GENERATION_KEYS
        .iter()
        .any(|k| attrs.contains(k))
        .then_some(ObservationType::Generation)
}

fn openinference(kind: &str) -> Option<ObservationType> {
    use ObservationType as T;
    Some(match kind {
        "CHAIN" => T::Chain,
        "RETRIEVER" => T::Retriever,
        "LLM" => T::Generation,
        "EMBEDDING" => T::Embedding,
        "AGENT" => T::Agent,
        "TOOL" => T::Tool,
        "GUARDRAIL" => T::Guardrail,
        "EVALUATOR" => T::Evaluator,
        _ => return None,
    })
}

fn gen_ai_operation(op: &str) -> Option<ObservationType> {
    use ObservationType as T;
    Some(match op {
        "chat" | "completion" | "text_completion" | "generate_content" | "generate" => {
            T::Generation
        }
        "embeddings" => T::Embedding,
        "invoke_agent" | "create_agent" => T::Agent,
        "execute_tool" => T::Tool,
        _ => return None,
    })
}

fn genkit_subtype(subtype: &str) -> Option<ObservationType> {
    use ObservationType as T;
    Some(match subtype {
        "model" | "background-model" => T::Generation,
        "embedder" => T::Embedding,
        "tool" | "tool.v2" => T::Tool,
        "retriever" => T::Retriever,
        "evaluator" => T::Evaluator,
        _ => return None,
    })
}

/// Vercel AI SDK operations match by `operation.name` prefix or exact `ai.operationId`.
fn vercel_matches(attrs: &Attrs, ops: &[&str]) -> bool {
    let by_name = attrs
        .str("operation.name")
        .is_some_and(|name| ops.iter().any(|op| name.starts_with(op)));
    let by_id = attrs
        .str("ai.operationId")
        .is_some_and(|id| ops.contains(&id));
    by_name || by_id
}

fn vercel_model_operation(attrs: &Attrs) -> Option<ObservationType> {
    let has_model_info = [
        "langfuse.observation.model.name",
        "ai.model.id",
        "gen_ai.request.model",
        "gen_ai.response.model",
    ]
    .iter()
    .any(|k| attrs.meaningful(k).is_some());
    if !has_model_info {
        return None;
    }
    if vercel_matches(attrs, &VERCEL_GENERATION_OPS) {
        Some(ObservationType::Generation)
    } else if vercel_matches(attrs, &VERCEL_EMBEDDING_OPS) {
        Some(ObservationType::Embedding)
    } else {
        None
    }
}

fn vercel_tool_call(attrs: &Attrs) -> Option<ObservationType> {
    let is_ai_op = ["operation.name", "ai.operationId"]
        .iter()
        .any(|k| attrs.str(k).is_some_and(|v| v.starts_with("ai.")));
    (is_ai_op && vercel_matches(attrs, &["ai.toolCall"])).then_some(ObservationType::Tool)
}

fn livekit(scope: &Scope, span_name: &str) -> Option<ObservationType> {
    if scope.name != "livekit-agents" {
        return None;
    }
    match span_name {
        "agent_turn" | "start_agent_activity" => Some(ObservationType::Agent),
        "function_tool" => Some(ObservationType::Tool),
        _ => None,
    }
}

fn has_model(attrs: &Attrs) -> bool {
    [
        "langfuse.observation.model.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "llm.model_name",
        "model",
    ]
    .iter()
    .any(|k| attrs.meaningful(k).is_some())
}
