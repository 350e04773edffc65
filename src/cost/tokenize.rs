//! Token counting for generations that reported no usage (spec §6.6).
//!
//! Only `tokenizerId = "openai"` counts: its `tokenizerConfig.tokenizerModel` names a tiktoken
//! model, whose BPE (embedded by `tiktoken-rs`) is loaded on first use and kept. `"claude"` and
//! unknown tokenizers count nothing: Langfuse uses `@anthropic-ai/tokenizer` (the legacy Claude 2
//! vocabulary, wrong for current Claude models anyway), and no Rust crate ships that vocabulary
//! offline. An absent count leaves usage empty, which the UI shows as unknown — better than a
//! count from the wrong vocabulary.
//!
//! As in Langfuse, a `tokenizerModel` outside tiktoken's known list means no count (the
//! spec's "unknown → cl100k_base" is a fallback Langfuse's config check makes unreachable).

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The BPE vocabularies tiktoken-rs embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    O200k,
    Cl100k,
    P50k,
    P50kEdit,
    R50k,
}

impl Encoding {
    fn bpe(self) -> &'static CoreBPE {
        // Each singleton parses its vocabulary once, on first use (hundreds of milliseconds).
        match self {
            Self::O200k => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Self::P50k => tiktoken_rs::p50k_base_singleton(),
            Self::P50kEdit => tiktoken_rs::p50k_edit_singleton(),
            Self::R50k => tiktoken_rs::r50k_base_singleton(),
        }
    }

    /// Tokens in `text`, special tokens included (tiktoken's `allowed_special = "all"`).
    pub(crate) fn count(self, text: &str) -> u64 {
        self.bpe().encode_with_special_tokens(text).len() as u64
    }
}

/// The tiktoken models Langfuse accepts as `tokenizerModel`, and their encodings.
fn encoding_for_model(model: &str) -> Option<Encoding> {
    use Encoding::*;
    Some(match model {
        "gpt-4o" | "gpt-4o-2024-05-13" => O200k,
        "gpt-3.5-turbo"
        | "gpt-35-turbo"
        | "gpt-3.5-turbo-0301"
        | "gpt-3.5-turbo-0613"
        | "gpt-3.5-turbo-1106"
        | "gpt-3.5-turbo-0125"
        | "gpt-3.5-turbo-16k"
        | "gpt-3.5-turbo-16k-0613"
        | "gpt-3.5-turbo-instruct"
        | "gpt-3.5-turbo-instruct-0914"
        | "gpt-4"
        | "gpt-4-0314"
        | "gpt-4-0613"
        | "gpt-4-32k"
        | "gpt-4-32k-0314"
        | "gpt-4-32k-0613"
        | "gpt-4-turbo"
        | "gpt-4-turbo-2024-04-09"
        | "gpt-4-turbo-preview"
        | "gpt-4-1106-preview"
        | "gpt-4-0125-preview"
        | "gpt-4-vision-preview"
        | "text-embedding-ada-002"
        | "davinci-002"
        | "babbage-002" => Cl100k,
        "text-davinci-003" | "text-davinci-002" | "code-davinci-002" | "code-davinci-001"
        | "code-cushman-002" | "code-cushman-001" | "davinci-codex" | "cushman-codex" => P50k,
        "text-davinci-edit-001" | "code-davinci-edit-001" => P50kEdit,
        "text-davinci-001"
        | "text-curie-001"
        | "text-babbage-001"
        | "text-ada-001"
        | "davinci"
        | "curie"
        | "babbage"
        | "ada"
        | "text-similarity-davinci-001"
        | "text-similarity-curie-001"
        | "text-similarity-babbage-001"
        | "text-similarity-ada-001"
        | "text-search-davinci-doc-001"
        | "text-search-curie-doc-001"
        | "text-search-babbage-doc-001"
        | "text-search-ada-doc-001"
        | "code-search-babbage-code-001"
        | "code-search-ada-code-001"
        | "gpt2" => R50k,
        _ => return None,
    })
}

/// Models whose chat-message arrays are counted per message.
fn is_chat_model(model: &str) -> bool {
    matches!(
        model,
        "gpt-4"
            | "gpt-4-0314"
            | "gpt-4-0613"
            | "gpt-4-32k"
            | "gpt-4-32k-0314"
            | "gpt-4-32k-0613"
            | "gpt-3.5-turbo"
            | "gpt-35-turbo"
            | "gpt-3.5-turbo-0301"
            | "gpt-3.5-turbo-0613"
            | "gpt-3.5-turbo-1106"
            | "gpt-3.5-turbo-16k"
            | "gpt-3.5-turbo-16k-0613"
            | "gpt-4-1106-preview"
            | "gpt-4-vision-preview"
            | "gpt-4o-2024-05-13"
            | "gpt-4o"
    )
}

/// A model's tokenizer, resolved once when the price book is built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tokenizer {
    /// No tokenizer, `claude`, an unknown id, or an unusable `openai` config: counts nothing.
    None,
    OpenAi {
        encoding: Encoding,
        /// `(tokensPerMessage, tokensPerName)` when the model is a chat model with both set.
        chat: ChatConfig,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ChatConfig {
    /// Not a chat model: message arrays are counted as their JSON text.
    NotChat,
    /// A chat model whose config lacks `tokensPerMessage`/`tokensPerName`: Langfuse refuses to
    /// count message arrays for it.
    Missing,
    Chat {
        per_message: i64,
        per_name: i64,
    },
}

impl Tokenizer {
    pub(crate) fn resolve(tokenizer_id: Option<&str>, config: Option<&Value>) -> Tokenizer {
        if tokenizer_id != Some("openai") {
            return Tokenizer::None;
        }
        let Some(model) = config
            .and_then(|c| c.get("tokenizerModel"))
            .and_then(Value::as_str)
        else {
            return Tokenizer::None;
        };
        let Some(encoding) = encoding_for_model(model) else {
            return Tokenizer::None;
        };
        let num = |k: &str| {
            config
                .and_then(|c| c.get(k))
                .and_then(Value::as_f64)
                .map(|f| f as i64)
        };
        let chat = if !is_chat_model(model) {
            ChatConfig::NotChat
        } else {
            match (num("tokensPerMessage"), num("tokensPerName")) {
                (Some(per_message), Some(per_name)) => ChatConfig::Chat {
                    per_message,
                    per_name,
                },
                _ => ChatConfig::Missing,
            }
        };
        Tokenizer::OpenAi { encoding, chat }
    }

    pub(crate) fn counts(&self) -> bool {
        !matches!(self, Tokenizer::None)
    }

    /// Tokens in an observation's input or output, or `None` when it cannot be counted.
    ///
    /// Langfuse counts the stored text, which is the JSON text of non-string values; a string
    /// that holds JSON is parsed first, so `"[{\"role\":...}]"` counts as a message array.
    pub(crate) fn count(&self, value: Option<&Value>) -> Option<u64> {
        let Tokenizer::OpenAi { encoding, chat } = self else {
            return None;
        };
        let value = value.filter(|v| !v.is_null())?;
        let parsed;
        let value = match value {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => {
                    parsed = v;
                    &parsed
                }
                Err(_) => return Some(encoding.count(s)),
            },
            other => other,
        };
        if is_chat_message_array(value) {
            match chat {
                ChatConfig::Chat {
                    per_message,
                    per_name,
                } => return Some(count_messages(*encoding, value, *per_message, *per_name)),
                ChatConfig::Missing => return None,
                ChatConfig::NotChat => {}
            }
        }
        Some(match value {
            Value::String(s) => encoding.count(s),
            other => encoding.count(&other.to_string()),
        })
    }
}

/// Every item is an object with string `role` and `content`, and `name` (if present) a string.
fn is_chat_message_array(v: &Value) -> bool {
    let Value::Array(items) = v else {
        return false;
    };
    items.iter().all(|m| {
        m.get("role").is_some_and(Value::is_string)
            && m.get("content").is_some_and(Value::is_string)
            && m.get("name").is_none_or(Value::is_string)
    })
}

/// OpenAI's chat accounting: per message `tokensPerMessage` plus the tokens of its content,
/// role, name and function/tool calls (`tokensPerName` more when named), plus 3 for the reply
/// primer `<|start|>assistant<|message|>`.
fn count_messages(encoding: Encoding, messages: &Value, per_message: i64, per_name: i64) -> u64 {
    const COUNTED: [&str; 7] = [
        "content",
        "role",
        "name",
        "tool_calls",
        "function_call",
        "toolCalls",
        "functionCall",
    ];
    let mut total: i64 = 0;
    for message in messages.as_array().into_iter().flatten() {
        total += per_message;
        let Some(fields) = message.as_object() else {
            continue;
        };
        for (key, value) in fields {
            if COUNTED.contains(&key.as_str()) && crate::record::is_truthy(value) {
                // Langfuse hands non-string calls to tiktoken as-is (counting
                // "[object Object]"); we count their JSON text instead.
                let tokens = match value {
                    Value::String(s) => encoding.count(s),
                    other => encoding.count(&other.to_string()),
                };
                total += i64::try_from(tokens).unwrap_or(i64::MAX);
            }
            if key == "name" {
                total += per_name;
            }
        }
    }
    total += 3;
    u64::try_from(total).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn openai(model: &str) -> Tokenizer {
        Tokenizer::resolve(
            Some("openai"),
            Some(&json!({"tokenizerModel": model, "tokensPerMessage": 3, "tokensPerName": 1})),
        )
    }

    #[test]
    fn known_counts_for_fixed_strings() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(
            Encoding::Cl100k.count("The quick brown fox jumps over the lazy dog."),
            10
        );
        assert_eq!(Encoding::O200k.count("<|endoftext|>"), 1);
        let t = openai("gpt-4o");
        assert_eq!(t.count(Some(&json!("hello world"))), Some(2));
        // A JSON object is counted as its JSON text.
        assert_eq!(
            t.count(Some(&json!({"a": 1}))),
            Some(Encoding::O200k.count("{\"a\":1}"))
        );
    }

    /// The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", whose
    /// counts OpenAI's API confirmed: 129 prompt tokens for gpt-4, 124 for gpt-4o.
    fn cookbook_messages() -> Value {
        json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ])
    }

    #[test]
    fn chat_messages_count_like_openai() {
        let msgs = cookbook_messages();
        assert_eq!(openai("gpt-4").count(Some(&msgs)), Some(129));
        assert_eq!(openai("gpt-4o").count(Some(&msgs)), Some(124));
        // The same array stored as a JSON string counts the same.
        assert_eq!(
            openai("gpt-4o").count(Some(&Value::String(msgs.to_string()))),
            Some(124)
        );
    }

    #[test]
    fn what_does_not_count() {
        assert_eq!(openai("gpt-4o").count(None), None);
        assert_eq!(openai("gpt-4o").count(Some(&Value::Null)), None);
        assert_eq!(
            Tokenizer::resolve(Some("claude"), None).count(Some(&json!("hi"))),
            None
        );
        assert_eq!(openai("gpt-9-unknown"), Tokenizer::None);
        assert_eq!(Tokenizer::resolve(None, None), Tokenizer::None);
        // A chat model without per-message settings cannot count message arrays...
        let bare = Tokenizer::resolve(Some("openai"), Some(&json!({"tokenizerModel": "gpt-4"})));
        assert_eq!(
            bare.count(Some(&json!([{"role": "user", "content": "hi"}]))),
            None
        );
        // ...but still counts plain text.
        assert_eq!(bare.count(Some(&json!("hello world"))), Some(2));
    }

    #[test]
    fn non_chat_models_count_messages_as_text() {
        let t = Tokenizer::resolve(
            Some("openai"),
            Some(&json!({"tokenizerModel": "text-embedding-ada-002"})),
        );
        let msgs = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            t.count(Some(&msgs)),
            Some(Encoding::Cl100k.count(&msgs.to_string()))
        );
    }
}
