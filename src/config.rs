//! Configuration in two layers: a raw layer merged from defaults < `config.toml` < environment <
//! command line, then a validated `Config` the rest of the program trusts.
//!
//! Owns: every setting's name, default and validation, and the Langfuse bootstrap variables
//! (`LANGFUSE_INIT_*`). Must not touch: anything that acts on settings — it only reads them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cost::ModelDef;

mod judge;
mod ops;
pub use judge::{JudgeConfig, RawJudge, Secret};
pub use ops::{
    DEFAULT_FORWARD_POLL, DEFAULT_RETENTION_INTERVAL, ForwardConfig, RawForward, RawRetention,
    Retention, parse_duration, parse_size,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_DATA_DIR: &str = "./sightline-data";
/// Langfuse's own body parser limit (4.5 MB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4_718_592;
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// hyper's own default: time for a client to send a request's head (also the idle keep-alive
/// limit).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
/// Time from a request's head to the end of its body: a 4.5 MB batch at 80 KB/s.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("setting {name} = {value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// The raw layer: every field optional, so layers can be merged field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub ingest: RawIngest,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub judge: RawJudge,
    /// Model prices for installs that cannot use the API (air-gapped, provisioned): the fields
    /// of Langfuse's `POST /api/public/models` body, plus an optional `projectId`.
    #[serde(default)]
    pub models: Vec<toml::Table>,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub forward: RawForward,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub header_read_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    pub max_body_bytes: Option<u64>,
    pub queue_capacity: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Overlays `SIGHTLINE_*` variables from `env` (a lookup, so tests need not touch the
    /// process environment).
    pub fn with_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some(v) = env("SIGHTLINE_LISTEN") {
            self.listen = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = env("SIGHTLINE_MAX_BODY_BYTES") {
            self.ingest.max_body_bytes = Some(parse_num("SIGHTLINE_MAX_BODY_BYTES", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_QUEUE_CAPACITY") {
            self.ingest.queue_capacity = Some(parse_num("SIGHTLINE_QUEUE_CAPACITY", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_HEADER_READ_TIMEOUT_SECS") {
            self.http.header_read_timeout_secs =
                Some(parse_num("SIGHTLINE_HEADER_READ_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_BODY_READ_TIMEOUT_SECS") {
            self.http.body_read_timeout_secs =
                Some(parse_num("SIGHTLINE_BODY_READ_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_LOG") {
            self.log.level = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_LOG_FORMAT") {
            self.log.format = Some(v);
        }
        self.retention.with_env(env)?;
        self.forward.with_env(env)?;
        self.judge.with_env(env)?;
        Ok(self)
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen_raw = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_raw.parse().map_err(|e| ConfigError::Invalid {
            name: "listen",
            value: listen_raw.clone(),
            reason: format!("{e}; expected HOST:PORT such as {DEFAULT_LISTEN}"),
        })?;
        let max_body_bytes = self.ingest.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(1024..=1 << 30).contains(&max_body_bytes) {
            return Err(ConfigError::Invalid {
                name: "ingest.max_body_bytes",
                value: max_body_bytes.to_string(),
                reason: "must be between 1 KiB and 1 GiB".into(),
            });
        }
        let queue_capacity = self.ingest.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if !(1..=1_000_000).contains(&queue_capacity) {
            return Err(ConfigError::Invalid {
                name: "ingest.queue_capacity",
                value: queue_capacity.to_string(),
                reason: "must be between 1 and 1000000".into(),
            });
        }
        let timeout = |name: &'static str, v: Option<u64>, default: u64| {
            let secs = v.unwrap_or(default);
            if (1..=3600).contains(&secs) {
                Ok(std::time::Duration::from_secs(secs))
            } else {
                Err(ConfigError::Invalid {
                    name,
                    value: secs.to_string(),
                    reason: "must be between 1 and 3600 seconds".into(),
                })
            }
        };
        let header_read_timeout = timeout(
            "http.header_read_timeout_secs",
            self.http.header_read_timeout_secs,
            DEFAULT_HEADER_READ_TIMEOUT_SECS,
        )?;
        let body_read_timeout = timeout(
            "http.body_read_timeout_secs",
            self.http.body_read_timeout_secs,
            DEFAULT_BODY_READ_TIMEOUT_SECS,
        )?;
        let log_format = match self.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    name: "log.format",
                    value: other.into(),
                    reason: "expected \"text\" or \"json\"".into(),
                });
            }
        };
        let models = validate_models(&self.models)?;
        let retention = self.retention.validate()?;
        let forward = self.forward.validate()?;
        let judge = self.judge.validate()?;
        Ok(Config {
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            queue_capacity,
            header_read_timeout,
            body_read_timeout,
            log_level: self.log.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
            log_format,
            models,
            retention,
            forward,
            judge,
        })
    }
}

/// Parses `[[models]]` entries with the API's own validation. Ids default to
/// `config-<modelName>` so they stay the same across restarts.
fn validate_models(raw: &[toml::Table]) -> Result<Vec<ModelDef>, ConfigError> {
    let mut out: Vec<ModelDef> = Vec::with_capacity(raw.len());
    for (i, table) in raw.iter().enumerate() {
        let name = table
            .get("modelName")
            .and_then(toml::Value::as_str)
            .unwrap_or("")
            .to_string();
        let invalid = |reason: String| ConfigError::Invalid {
            name: "models",
            value: format!("entry {} ({name})", i + 1),
            reason,
        };
        let mut json = serde_json::to_value(table).map_err(|e| invalid(e.to_string()))?;
        let project_id = match json.get("projectId") {
            None => None,
            Some(serde_json::Value::String(p)) if !p.is_empty() => Some(p.clone()),
            Some(_) => return Err(invalid("projectId must be a non-empty string".into())),
        };
        if json.get("id").is_none() {
            json["id"] = serde_json::Value::String(format!("config-{name}"));
        }
        let mut def = ModelDef::from_langfuse_json(&json).map_err(|e| invalid(e.to_string()))?;
        def.project_id = project_id;
        def.from_config = true;
        if let Some(dup) = out
            .iter()
            .find(|m| m.model_name == def.model_name && m.project_id == def.project_id)
        {
            return Err(invalid(format!(
                "modelName {:?} is defined twice for the same projects; keep one",
                dup.model_name
            )));
        }
        out.push(def);
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
        name,
        value: v.into(),
        reason: e.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub queue_capacity: usize,
    /// Time a client has to send a request's head; idle keep-alive connections close after it.
    pub header_read_timeout: std::time::Duration,
    /// Time from a request's head to the end of its body (slow bodies get 408).
    pub body_read_timeout: std::time::Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `[[models]]` of the config file, validated; `project_id` None = every project.
    pub models: Vec<ModelDef>,
    /// `[retention]`: off unless configured.
    pub retention: Retention,
    /// `[forward]`: the upstream `serve` tees to, if any.
    pub forward: Option<ForwardConfig>,
    pub judge: JudgeConfig,
}

impl Config {
    /// Defaults with a given data directory: what tests and tools start from.
    pub fn for_data_dir(dir: &Path) -> Config {
        let mut c = RawConfig::default()
            .validate()
            .unwrap_or_else(|_| unreachable!("defaults are valid"));
        c.data_dir = dir.to_path_buf();
        c
    }
}

/// Langfuse's bootstrap variables, as its Helm chart sets them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bootstrap {
    pub org_id: Option<String>,
    pub org_name: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub public_key: Option<String>,
    pub secret_key: Option<String>,
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub user_password: Option<String>,
}

impl Bootstrap {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Bootstrap {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        Bootstrap {
            org_id: get("LANGFUSE_INIT_ORG_ID"),
            org_name: get("LANGFUSE_INIT_ORG_NAME"),
            project_id: get("LANGFUSE_INIT_PROJECT_ID"),
            project_name: get("LANGFUSE_INIT_PROJECT_NAME"),
            public_key: get("LANGFUSE_INIT_PROJECT_PUBLIC_KEY"),
            secret_key: get("LANGFUSE_INIT_PROJECT_SECRET_KEY"),
            user_email: get("LANGFUSE_INIT_USER_EMAIL"),
            user_name: get("LANGFUSE_INIT_USER_NAME"),
            user_password: get("LANGFUSE_INIT_USER_PASSWORD"),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Bootstrap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_overrides_file_and_defaults_apply() {
        let raw: RawConfig =
            toml::from_str("listen = \"127.0.0.1:4000\"\n[ingest]\nqueue_capacity = 8\n").unwrap();
        let cfg = raw
            .with_env(&env_of(&[("SIGHTLINE_LISTEN", "127.0.0.1:5000")]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.listen.port(), 5000);
        assert_eq!(cfg.queue_capacity, 8);
        assert_eq!(cfg.max_body_bytes as u64, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let err = RawConfig::default()
            .with_env(&env_of(&[("SIGHTLINE_LISTEN", "nowhere")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = toml::from_str::<RawConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn shipped_config_toml_parses_and_matches_defaults() {
        let raw = RawConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.toml"
        )))
        .unwrap();
        let cfg = raw.validate().unwrap();
        let defaults = RawConfig::default().validate().unwrap();
        assert_eq!(cfg.listen, defaults.listen);
        assert_eq!(cfg.data_dir, defaults.data_dir);
        assert_eq!(cfg.max_body_bytes, defaults.max_body_bytes);
        assert_eq!(cfg.queue_capacity, defaults.queue_capacity);
        assert_eq!(cfg.header_read_timeout, defaults.header_read_timeout);
        assert_eq!(cfg.body_read_timeout, defaults.body_read_timeout);
        assert!(
            cfg.models.is_empty(),
            "the shipped file only documents [[models]]"
        );
        assert_eq!(
            cfg.retention, defaults.retention,
            "retention is off by default"
        );
        assert!(!cfg.retention.is_enabled());
        assert!(
            cfg.forward.is_none(),
            "the shipped file only documents [forward]"
        );
        assert_eq!(cfg.judge, defaults.judge);
    }

    #[test]
    fn judge_settings_from_env_and_secret_stays_hidden() {
        let cfg = RawConfig::default()
            .with_env(&env_of(&[
                ("SIGHTLINE_JUDGE_BASE_URL", "http://127.0.0.1:4000/v1/"),
                ("SIGHTLINE_JUDGE_API_KEY", "sk-very-secret"),
                ("SIGHTLINE_JUDGE_REQUESTS_PER_MINUTE", "0"),
            ]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            cfg.judge.base_url.as_deref(),
            Some("http://127.0.0.1:4000/v1")
        );
        assert_eq!(cfg.judge.requests_per_minute, 0);
        assert_eq!(
            cfg.judge.api_key.as_ref().unwrap().expose(),
            "sk-very-secret"
        );
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
        let raw: RawConfig = toml::from_str("[judge]\napi_key = \"sk-from-file\"\n").unwrap();
        assert!(!format!("{raw:?}").contains("sk-from-file"));
        assert_eq!(
            raw.validate().unwrap().judge.api_key.unwrap().expose(),
            "sk-from-file"
        );
        // https works (rustls, the system's trust store); other schemes do not.
        let https = RawConfig::default()
            .with_env(&env_of(&[(
                "SIGHTLINE_JUDGE_BASE_URL",
                "https://api.openai.com/v1",
            )]))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            https.judge.base_url.as_deref(),
            Some("https://api.openai.com/v1")
        );
        let err = RawConfig::default()
            .with_env(&env_of(&[(
                "SIGHTLINE_JUDGE_BASE_URL",
                "ftp://models.example/v1",
            )]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("judge.base_url"), "{err}");
        let err = RawConfig::default()
            .with_env(&env_of(&[(
                "SIGHTLINE_JUDGE_BASE_URL",
                "http://me:pw@127.0.0.1:4000/v1",
            )]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            !err.to_string().contains("pw@"),
            "the refusal repeats the password: {err}"
        );
    }

    #[test]
    fn config_models_are_validated_like_the_api() {
        let raw: RawConfig = toml::from_str(
            "[[models]]\nmodelName = \"my-llm\"\nmatchPattern = \"(?i)^my-llm$\"\nunit = \"TOKENS\"\ninputPrice = 0.000001\noutputPrice = 0.000002\n\n[[models]]\nprojectId = \"p1\"\nmodelName = \"gpt-4o\"\nmatchPattern = \"(?i)^gpt-4o$\"\ntotalPrice = 0.5\n",
        )
        .unwrap();
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.models.len(), 2);
        assert_eq!(cfg.models[0].id, "config-my-llm");
        assert!(cfg.models[0].from_config && cfg.models[0].project_id.is_none());
        assert_eq!(cfg.models[1].project_id.as_deref(), Some("p1"));
        let bad: RawConfig =
            toml::from_str("[[models]]\nmodelName = \"x\"\nmatchPattern = \"(\"\ninputPrice = 1\n")
                .unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("models") && err.contains("regex"), "{err}");
    }
}
