//! The judge: any OpenAI-compatible `POST {base}/chat/completions` (OpenAI, a LiteLLM proxy,
//! vLLM, Ollama), asked for a JSON verdict `{"score": …, "reasoning": "…"}`.
//!
//! Owns: the request, the classification of failures (retry 408/409/429/5xx, transport errors
//! and unusable answers; give up on other 4xx), the request rate limit shared by the workers,
//! and reading the verdict into a score value. The API key goes into the `Authorization` header
//! and nowhere else: never into an error, a log line or a trace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::def::Output;
use crate::config::JudgeConfig;
use crate::record::{ScoreDataType, ScoreValue, UsageMap};
use crate::score_config::ScoreConfig;

/// How much of an error body goes into the evaluator's status and the judge trace.
const ERROR_BODY_CHARS: usize = 300;
/// Longest `Retry-After` honoured; longer waits are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a call did not give an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Worth another attempt (after `after`, when the server said).
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Another attempt would fail the same way (bad key, unknown model, bad request).
    Fatal(String),
}

impl CallError {
    pub fn message(&self) -> &str {
        match self {
            CallError::Retry { message, .. } | CallError::Fatal(message) => message,
        }
    }
}

/// What the judge answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub content: String,
    /// The model that answered, as the server names it.
    pub model: Option<String>,
    pub usage: Option<UsageMap>,
}

pub struct Judge {
    url: String,
    api_key: Option<crate::config::Secret>,
    json_mode: bool,
    http: reqwest::blocking::Client,
}

impl Judge {
    /// `None` when no `[judge] base_url` is configured.
    pub fn new(cfg: &JudgeConfig) -> Result<Option<Judge>, String> {
        let Some(base) = &cfg.base_url else {
            return Ok(None);
        };
        if base.starts_with("https://") {
            // A typo in SSL_CERT_FILE would otherwise surface as "unknown issuer" on every call.
            crate::tls::check_trust_env()?;
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("cannot build the judge's HTTP client: {e}"))?;
        Ok(Some(Judge {
            url: format!("{base}/chat/completions"),
            api_key: cfg.api_key.clone(),
            json_mode: cfg.json_mode,
            http,
        }))
    }

    /// The chat-completions request body.
    pub fn body(&self, model: &str, messages: &Value, params: &Map<String, Value>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), messages.clone());
        // Judging should be repeatable unless the evaluator asks otherwise.
        body.insert("temperature".into(), json!(0));
        if self.json_mode {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        for (k, v) in params {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// One HTTP exchange.
    pub fn call(&self, body: &Value) -> Result<Reply, CallError> {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req.send().map_err(|e| {
            // A certificate the host's trust store rejects is said as such (with what to set),
            // not as a chain of transport errors. reqwest's messages name the URL, never headers.
            let host = e
                .url()
                .and_then(|u| u.host_str())
                .unwrap_or_default()
                .to_string();
            match crate::tls::explain(&e, &host) {
                Some(why) => CallError::Fatal(format!("judge request failed: {why}")),
                None => CallError::Retry {
                    message: format!("judge request failed: {e}"),
                    after: None,
                },
            }
        })?;
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = resp.text().map_err(|e| CallError::Retry {
            message: format!("reading the judge's answer failed: {e}"),
            after: None,
        })?;
        if !(200..300).contains(&status) {
            let message = format!("judge answered HTTP {status}: {}", excerpt(&text));
            return Err(if matches!(status, 408 | 409 | 429) || status >= 500 {
                CallError::Retry { message, after }
            } else {
                CallError::Fatal(message)
            });
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| CallError::Retry {
            message: format!("judge answer is not JSON: {}", excerpt(&text)),
            after: None,
        })?;
        let content = v
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| CallError::Retry {
                message: format!(
                    "judge answer has no choices[0].message.content: {}",
                    excerpt(&text)
                ),
                after: None,
            })?
            .to_string();
        let usage = v.get("usage").and_then(|u| {
            let n = |k: &str| u.get(k).and_then(Value::as_u64);
            let mut m = UsageMap::new();
            for (ours, theirs) in [
                ("input", "prompt_tokens"),
                ("output", "completion_tokens"),
                ("total", "total_tokens"),
            ] {
                if let Some(x) = n(theirs) {
                    m.insert(ours.into(), x);
                }
            }
            (!m.is_empty()).then_some(m)
        });
        Ok(Reply {
            content,
            model: v.get("model").and_then(Value::as_str).map(String::from),
            usage,
        })
    }
}

fn excerpt(s: &str) -> String {
    let t = s.trim();
    if t.chars().count() <= ERROR_BODY_CHARS {
        return t.to_string();
    }
    let cut: String = t.chars().take(ERROR_BODY_CHARS).collect();
    format!("{cut}…")
}

/// Spaces requests at least `60 / per_minute` seconds apart across all workers.
pub struct RateLimit {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn per_minute(n: u32) -> RateLimit {
        RateLimit {
            interval: (n > 0).then(|| Duration::from_secs(60) / n),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Blocks until this caller's slot.
    pub fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + interval;
            slot
        };
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
    }
}

/// The system message: what the verdict must look like for this output.
pub fn instructions(output: &Output) -> String {
    let score = match output.data_type {
        ScoreDataType::Boolean => "true or false".to_string(),
        ScoreDataType::Categorical => format!(
            "exactly one of {}",
            output
                .categories
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => match (output.min_value, output.max_value) {
            (Some(a), Some(b)) => format!("a number from {a} to {b}"),
            (Some(a), None) => format!("a number of at least {a}"),
            (None, Some(b)) => format!("a number of at most {b}"),
            (None, None) => "a number".to_string(),
        },
    };
    format!(
        "You are an evaluator. Judge the content the user gives you by the criteria it states. \
         Answer with a single JSON object and nothing else: \
         {{\"score\": <{score}>, \"reasoning\": \"<one or two sentences on why>\"}}. \
         The score is \"{}\".",
        output.score_name
    )
}

/// The verdict in the judge's answer: the score value (checked against the output and, when the
/// evaluator writes a configured score, against the config) and the reasoning.
pub fn verdict(
    content: &str,
    output: &Output,
    config: Option<&ScoreConfig>,
) -> Result<(ScoreValue, String), String> {
    let v = json_object(content)
        .ok_or_else(|| format!("judge answer holds no JSON object: {}", excerpt(content)))?;
    let raw = v
        .get("score")
        .or_else(|| v.get("value"))
        .filter(|s| !s.is_null())
        .ok_or_else(|| format!("judge answer has no \"score\": {}", excerpt(content)))?;
    let reasoning = match v.get("reasoning").or_else(|| v.get("explanation")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let value = match config {
        Some(c) => c
            .value_for(None, &normalise(raw, output.data_type))
            .map_err(|e| format!("judge score does not fit: {e}"))?,
        None => typed(raw, output)?,
    };
    Ok((value, reasoning))
}

/// Booleans and numbers sometimes come back as strings (`"true"`, `"0.8"`).
fn normalise(raw: &Value, t: ScoreDataType) -> Value {
    match (t, raw) {
        (ScoreDataType::Numeric, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| raw.clone()),
        (ScoreDataType::Boolean, Value::String(s)) => {
            match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Value::Bool(true),
                "false" | "no" | "0" => Value::Bool(false),
                _ => raw.clone(),
            }
        }
        _ => raw.clone(),
    }
}

fn typed(raw: &Value, output: &Output) -> Result<ScoreValue, String> {
    let raw = normalise(raw, output.data_type);
    match output.data_type {
        ScoreDataType::Boolean => match raw {
            Value::Bool(b) => Ok(ScoreValue::Boolean(b)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(ScoreValue::Boolean(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(ScoreValue::Boolean(false)),
            other => Err(format!("judge score {other} is not a boolean")),
        },
        ScoreDataType::Categorical => {
            let label = raw.as_str().unwrap_or_default();
            output
                .categories
                .iter()
                .position(|c| c == label)
                .map(|i| ScoreValue::Categorical {
                    label: label.to_string(),
                    value: i as f64,
                })
                .ok_or_else(|| {
                    format!(
                        "judge score {raw} is not one of the categories {:?}",
                        output.categories
                    )
                })
        }
        _ => {
            let n = raw
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("judge score {raw} is not a number"))?;
            if output.min_value.is_some_and(|m| n < m) || output.max_value.is_some_and(|m| n > m) {
                return Err(format!(
                    "judge score {n} is outside {}..{}",
                    output.min_value.map_or("-∞".into(), |m| m.to_string()),
                    output.max_value.map_or("∞".into(), |m| m.to_string())
                ));
            }
            Ok(ScoreValue::Numeric(n))
        }
    }
}

/// The JSON object in an answer: the whole text, or inside a ```json fence, or from the first
/// `{` to the last `}` (models like to add a sentence around it).
fn json_object(content: &str) -> Option<Map<String, Value>> {
    let t = content.trim();
    let candidates = [
        Some(t),
        t.strip_prefix("```json")
            .or_else(|| t.strip_prefix("```"))
            .and_then(|r| r.strip_suffix("```")),
        t.find('{')
            .zip(t.rfind('}'))
            .and_then(|(a, b)| (a < b).then(|| &t[a..=b])),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|c| match serde_json::from_str::<Value>(c.trim()) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(t: ScoreDataType, cats: &[&str]) -> Output {
        Output {
            score_name: "q".into(),
            data_type: t,
            categories: cats.iter().map(|c| c.to_string()).collect(),
            min_value: Some(0.0),
            max_value: (t == ScoreDataType::Numeric).then_some(1.0),
            config_id: None,
        }
        .clone()
    }

    #[test]
    fn verdicts_in_the_shapes_models_answer() {
        let n = out(ScoreDataType::Numeric, &[]);
        assert_eq!(
            verdict("{\"score\": 0.8, \"reasoning\": \"ok\"}", &n, None).unwrap(),
            (ScoreValue::Numeric(0.8), "ok".into())
        );
        assert_eq!(
            verdict(
                "Sure!\n```json\n{\"score\": \"0.5\", \"reasoning\": \"meh\"}\n```",
                &n,
                None
            )
            .unwrap()
            .0,
            ScoreValue::Numeric(0.5)
        );
        assert!(
            verdict("{\"score\": 3}", &n, None)
                .unwrap_err()
                .contains("outside")
        );
        assert!(verdict("no json here", &n, None).is_err());
        let b = out(ScoreDataType::Boolean, &[]);
        let b = Output {
            min_value: None,
            ..b
        };
        assert_eq!(
            verdict("{\"score\": \"yes\"}", &b, None).unwrap().0,
            ScoreValue::Boolean(true)
        );
        let c = Output {
            min_value: None,
            ..out(ScoreDataType::Categorical, &["good", "bad"])
        };
        assert_eq!(
            verdict("{\"score\": \"bad\", \"reasoning\": \"r\"}", &c, None)
                .unwrap()
                .0,
            ScoreValue::Categorical {
                label: "bad".into(),
                value: 1.0
            }
        );
        assert!(verdict("{\"score\": \"ugly\"}", &c, None).is_err());
    }

    #[test]
    fn rate_limit_spaces_calls() {
        let r = RateLimit::per_minute(1200); // 50 ms apart
        let t = Instant::now();
        for _ in 0..4 {
            r.wait();
        }
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        let free = RateLimit::per_minute(0);
        let t = Instant::now();
        for _ in 0..100 {
            free.wait();
        }
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
