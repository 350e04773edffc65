//! `[judge]`: the OpenAI-compatible chat-completions endpoint LLM-as-a-judge evaluators call,
//! and `Secret`, which keeps its key out of every log line and panic message.
//!
//! Like the rest of `config`, this only reads and validates; `eval` acts.

use serde::Deserialize;

use super::{ConfigError, parse_num};

pub const DEFAULT_JUDGE_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_JUDGE_CONCURRENCY: usize = 2;
pub const DEFAULT_JUDGE_REQUESTS_PER_MINUTE: u32 = 60;
pub const DEFAULT_JUDGE_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_JUDGE_RETRY_BACKOFF_MS: u64 = 1000;
pub const DEFAULT_JUDGE_TIMEOUT_SECS: u64 = 60;
/// Tokens each evaluator may spend unless it sets its own budget; 0 = no limit.
pub const DEFAULT_JUDGE_BUDGET_TOKENS: u64 = 0;

/// `[judge]`: the OpenAI-compatible chat-completions endpoint evaluators call.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJudge {
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub model: Option<String>,
    pub concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub json_mode: Option<bool>,
}

impl RawJudge {
    /// Overlays the `SIGHTLINE_JUDGE_*` variables.
    pub(super) fn with_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("SIGHTLINE_JUDGE_BASE_URL") {
            self.base_url = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_API_KEY") {
            self.api_key = Some(Secret(v));
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_MODEL") {
            self.model = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_CONCURRENCY") {
            self.concurrency = Some(parse_num("SIGHTLINE_JUDGE_CONCURRENCY", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_REQUESTS_PER_MINUTE") {
            self.requests_per_minute = Some(parse_num("SIGHTLINE_JUDGE_REQUESTS_PER_MINUTE", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_MAX_ATTEMPTS") {
            self.max_attempts = Some(parse_num("SIGHTLINE_JUDGE_MAX_ATTEMPTS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_RETRY_BACKOFF_MS") {
            self.retry_backoff_ms = Some(parse_num("SIGHTLINE_JUDGE_RETRY_BACKOFF_MS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_TIMEOUT_SECS") {
            self.timeout_secs = Some(parse_num("SIGHTLINE_JUDGE_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_BUDGET_TOKENS") {
            self.budget_tokens = Some(parse_num("SIGHTLINE_JUDGE_BUDGET_TOKENS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_JUDGE_JSON_MODE") {
            self.json_mode = Some(parse_num("SIGHTLINE_JUDGE_JSON_MODE", &v)?);
        }
        Ok(())
    }
}

impl RawJudge {
    pub(super) fn validate(self) -> Result<JudgeConfig, ConfigError> {
        let base_url = match self
            .base_url
            .map(|u| u.trim().trim_end_matches('/').to_string())
        {
            None => None,
            Some(u) if u.is_empty() => None,
            Some(u) => {
                // Credentials in the URL would show wherever the URL does (errors, traces).
                let scheme_ok = reqwest::Url::parse(&u)
                    .map(|p| {
                        matches!(p.scheme(), "http" | "https")
                            && p.host().is_some()
                            && p.username().is_empty()
                            && p.password().is_none()
                    })
                    .unwrap_or(false);
                if !scheme_ok {
                    return Err(ConfigError::Invalid {
                        name: "judge.base_url",
                        value: reqwest::Url::parse(&u)
                            .map(|mut p| {
                                let _ = p.set_username("");
                                let _ = p.set_password(None);
                                p.to_string()
                            })
                            .unwrap_or(u),
                        reason: "expected an http:// or https:// URL without credentials such as https://api.openai.com/v1 or http://127.0.0.1:11434/v1 (the key goes in judge.api_key)".into(),
                    });
                }
                Some(u)
            }
        };
        let concurrency = self.concurrency.unwrap_or(DEFAULT_JUDGE_CONCURRENCY);
        if !(1..=64).contains(&concurrency) {
            return Err(ConfigError::Invalid {
                name: "judge.concurrency",
                value: concurrency.to_string(),
                reason: "must be between 1 and 64".into(),
            });
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_JUDGE_MAX_ATTEMPTS);
        if !(1..=20).contains(&max_attempts) {
            return Err(ConfigError::Invalid {
                name: "judge.max_attempts",
                value: max_attempts.to_string(),
                reason: "must be between 1 and 20".into(),
            });
        }
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_JUDGE_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout_secs) {
            return Err(ConfigError::Invalid {
                name: "judge.timeout_secs",
                value: timeout_secs.to_string(),
                reason: "must be between 1 and 3600".into(),
            });
        }
        Ok(JudgeConfig {
            base_url,
            api_key: self.api_key.filter(|k| !k.0.is_empty()),
            model: self
                .model
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_JUDGE_MODEL.into()),
            concurrency,
            requests_per_minute: self
                .requests_per_minute
                .unwrap_or(DEFAULT_JUDGE_REQUESTS_PER_MINUTE),
            max_attempts,
            retry_backoff: std::time::Duration::from_millis(
                self.retry_backoff_ms
                    .unwrap_or(DEFAULT_JUDGE_RETRY_BACKOFF_MS),
            ),
            timeout: std::time::Duration::from_secs(timeout_secs),
            budget_tokens: self.budget_tokens.unwrap_or(DEFAULT_JUDGE_BUDGET_TOKENS),
            json_mode: self.json_mode.unwrap_or(true),
        })
    }
}

/// A secret setting: `Debug` never shows it, so no log line or panic message can.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The validated `[judge]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// `…/v1` of an OpenAI-compatible server; `None` = no judge (evaluations wait).
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub model: String,
    pub concurrency: usize,
    /// 0 = no limit.
    pub requests_per_minute: u32,
    pub max_attempts: u32,
    pub retry_backoff: std::time::Duration,
    pub timeout: std::time::Duration,
    /// Default token budget of an evaluator; 0 = no limit.
    pub budget_tokens: u64,
    /// Ask for `response_format: {"type": "json_object"}`.
    pub json_mode: bool,
}
