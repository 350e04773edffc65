//! Validation of prompt writes: names, labels, and the create body (`CreatePromptRequest`), with
//! messages that say what to change.

use serde_json::{Map, Value};

use super::{NewPrompt, PromptError, PromptType};

const NAME_MAX_CHARS: usize = 255;
/// Names Langfuse keeps for its own routes.
const RESERVED_NAMES: [&str; 3] = ["new", "metrics", "prompt-detail"];
const LABEL_MAX_CHARS: usize = 36;
const COMMIT_MESSAGE_MAX_CHARS: usize = 500;

fn invalid(message: impl Into<String>) -> PromptError {
    PromptError::Invalid(message.into())
}

pub fn validate_name(name: &str) -> Result<(), PromptError> {
    if name.trim().is_empty() {
        return Err(invalid("name must not be empty"));
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(invalid(format!(
            "name must be at most {NAME_MAX_CHARS} characters"
        )));
    }
    if name.contains('|') {
        return Err(invalid("name must not contain '|'"));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(invalid(format!(
            "{name:?} is reserved and cannot name a prompt; choose another name"
        )));
    }
    Ok(())
}

/// 1 to 36 characters of lowercase letters, digits, `_`, `-` and `.`.
pub fn validate_label(label: &str) -> Result<(), PromptError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if label.is_empty() || label.len() > LABEL_MAX_CHARS || !label.chars().all(ok_char) {
        return Err(invalid(format!(
            "label {label:?} is invalid: use 1 to {LABEL_MAX_CHARS} lowercase letters, digits, \
             '_', '-' or '.'"
        )));
    }
    Ok(())
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, PromptError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{field} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(format!("{field} must be an array of strings"))),
    }
}

/// A list of labels (`labels`, `newLabels`), each valid; absent or null is empty.
pub fn parse_labels(v: Option<&Value>, field: &str) -> Result<Vec<String>, PromptError> {
    let labels = string_list(v, field)?.unwrap_or_default();
    for l in &labels {
        validate_label(l)?;
    }
    Ok(labels)
}

fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, PromptError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

/// `{{name}}` variables of a template (letters, digits and `_`, spaces allowed inside braces).
fn variables(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push(name);
        }
        rest = &after[end + 2..];
    }
    out
}

/// A chat message (`{role, content}`, optionally `type: "chatmessage"`) or a placeholder
/// (`{type: "placeholder", name}`), with unknown keys dropped.
fn chat_item(item: &Value, index: usize) -> Result<Value, PromptError> {
    let at = |what: &str| invalid(format!("prompt[{index}] {what}"));
    let obj = item
        .as_object()
        .ok_or_else(|| at("must be a message object"))?;
    let kind = match obj.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(at("type must be \"chatmessage\" or \"placeholder\"")),
    };
    match kind {
        Some("placeholder") => {
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| at("is a placeholder and needs a non-empty string name"))?;
            Ok(serde_json::json!({"type": "placeholder", "name": name}))
        }
        None | Some("chatmessage") => {
            let role = obj
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| at("needs a string role"))?;
            let content = obj
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| at("needs a string content"))?;
            let mut m = Map::new();
            m.insert("role".into(), Value::String(role.into()));
            m.insert("content".into(), Value::String(content.into()));
            if kind.is_some() {
                m.insert("type".into(), Value::String("chatmessage".into()));
            }
            Ok(Value::Object(m))
        }
        Some(other) => Err(at(&format!(
            "has type {other:?}; use \"chatmessage\" or \"placeholder\""
        ))),
    }
}

fn chat_prompt(v: &Value) -> Result<Value, PromptError> {
    let items = v.as_array().ok_or_else(|| {
        invalid("a chat prompt must be an array of messages ({role, content}) or placeholders")
    })?;
    let items: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| chat_item(item, i))
        .collect::<Result<_, _>>()?;
    let placeholders: Vec<&str> = items
        .iter()
        .filter(|m| m["type"] == "placeholder")
        .filter_map(|m| m["name"].as_str())
        .collect();
    for m in &items {
        if let Some(content) = m["content"].as_str()
            && let Some(clash) = variables(content)
                .into_iter()
                .find(|v| placeholders.contains(v))
        {
            return Err(invalid(format!(
                "{clash:?} names both a variable and a placeholder; variables and placeholders \
                 must have different names"
            )));
        }
    }
    Ok(Value::Array(items))
}

/// A create body (`POST /api/public/v2/prompts`) as a new version. `created_by` records who
/// asked (`API` for keys).
pub fn parse_create(body: &Value, created_by: &str) -> Result<NewPrompt, PromptError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("body must be a JSON object"))?;
    let name = optional_str(obj, "name")?
        .ok_or_else(|| invalid("name is required"))?
        .to_string();
    validate_name(&name)?;
    let kind = match optional_str(obj, "type")? {
        None | Some("text") => PromptType::Text,
        Some("chat") => PromptType::Chat,
        Some(other) => {
            return Err(invalid(format!(
                "type must be \"text\" or \"chat\", got {other:?}"
            )));
        }
    };
    let raw = obj
        .get("prompt")
        .filter(|p| !p.is_null())
        .ok_or_else(|| invalid("prompt is required"))?;
    let prompt = match kind {
        PromptType::Text if raw.is_array() => {
            return Err(invalid(
                "prompt is an array of messages: send type \"chat\" with it",
            ));
        }
        PromptType::Text => Value::String(
            raw.as_str()
                .ok_or_else(|| invalid("a text prompt must be a string"))?
                .to_string(),
        ),
        PromptType::Chat => chat_prompt(raw)?,
    };
    let commit_message = optional_str(obj, "commitMessage")?.map(str::to_string);
    if commit_message
        .as_ref()
        .is_some_and(|m| m.chars().count() > COMMIT_MESSAGE_MAX_CHARS)
    {
        return Err(invalid(format!(
            "commitMessage must be at most {COMMIT_MESSAGE_MAX_CHARS} characters"
        )));
    }
    Ok(NewPrompt {
        name,
        kind,
        prompt,
        config: match obj.get("config") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(c) => c.clone(),
        },
        labels: parse_labels(obj.get("labels"), "labels")?,
        tags: string_list(obj.get("tags"), "tags")?,
        commit_message,
        created_by: created_by.to_string(),
    })
}
