//! The operations sections of the configuration: `[retention]` (how long data is kept and how
//! much disk it may use) and `[forward]` (an upstream the server tees everything to), with the
//! human forms their values take ("10GiB", "1h").
//!
//! Like the rest of `config`, this only reads and validates; `retention` and `forward` act.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse_num};
use crate::forward::Credentials;

/// How often the retention task looks for expired data when nothing else is set.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest accepted retention interval: tests use 1 s, production hours.
const MIN_RETENTION_INTERVAL: Duration = Duration::from_secs(1);
/// How often a forward looks for new commits once caught up.
pub const DEFAULT_FORWARD_POLL: Duration = Duration::from_millis(1000);

/// `[retention]` as written: every field optional so file and environment merge field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Days to keep traces (by trace timestamp); 0 keeps them forever.
    pub max_age_days: Option<u32>,
    /// Bytes (or "10GiB") the database file and search index may use together; 0 = no cap.
    pub max_disk_bytes: Option<Size>,
    /// Seconds (or "10m", "1h") between retention runs.
    pub check_interval: Option<Span>,
    /// Return freed space to the file system after large deletes.
    pub compact: Option<bool>,
    /// Per-project overrides of `max_age_days`, keyed by project id.
    #[serde(default)]
    pub projects: BTreeMap<String, RawProjectRetention>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjectRetention {
    pub max_age_days: Option<u32>,
}

/// A byte count as an integer or a string with a unit ("500MB", "10 GiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Size(pub u64);

impl TryFrom<toml::Value> for Size {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => u64::try_from(n)
                .map(Size)
                .map_err(|_| "must not be negative".into()),
            toml::Value::String(s) => parse_size(&s).map(Size),
            other => Err(format!(
                "expected bytes or a size like \"10GiB\", got {other}"
            )),
        }
    }
}

/// A duration as integer seconds or a string with a unit ("90s", "10m", "1h", "1d").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Span(pub Duration);

impl TryFrom<toml::Value> for Span {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => u64::try_from(n)
                .map(|s| Span(Duration::from_secs(s)))
                .map_err(|_| "must not be negative".into()),
            toml::Value::String(s) => parse_duration(&s).map(Span),
            other => Err(format!(
                "expected seconds or a duration like \"1h\", got {other}"
            )),
        }
    }
}

/// "10GiB" → 10 × 2³⁰. Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB,
/// MiB, GiB, TiB) powers of 1024; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. 500MB or 10GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// "90s", "10m", "1h", "1d", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30s, 10m or 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?}; use s, m, h or d"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

impl RawRetention {
    pub(super) fn with_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let invalid = |name: &'static str, v: &str, reason: String| ConfigError::Invalid {
            name,
            value: v.into(),
            reason,
        };
        if let Some(v) = env("SIGHTLINE_RETENTION_MAX_AGE_DAYS") {
            self.max_age_days = Some(parse_num("SIGHTLINE_RETENTION_MAX_AGE_DAYS", &v)?);
        }
        if let Some(v) = env("SIGHTLINE_RETENTION_MAX_DISK_BYTES") {
            let n =
                parse_size(&v).map_err(|r| invalid("SIGHTLINE_RETENTION_MAX_DISK_BYTES", &v, r))?;
            self.max_disk_bytes = Some(Size(n));
        }
        if let Some(v) = env("SIGHTLINE_RETENTION_CHECK_INTERVAL") {
            let d = parse_duration(&v)
                .map_err(|r| invalid("SIGHTLINE_RETENTION_CHECK_INTERVAL", &v, r))?;
            self.check_interval = Some(Span(d));
        }
        if let Some(v) = env("SIGHTLINE_RETENTION_COMPACT") {
            self.compact = Some(parse_num("SIGHTLINE_RETENTION_COMPACT", &v)?);
        }
        // `proj-a=7,proj-b=0`: the per-project table, for deployments configured by environment.
        if let Some(v) = env("SIGHTLINE_RETENTION_PROJECTS") {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (id, days) = item.split_once('=').ok_or_else(|| {
                    invalid(
                        "SIGHTLINE_RETENTION_PROJECTS",
                        &v,
                        "expected project=days pairs separated by commas".into(),
                    )
                })?;
                let days = parse_num("SIGHTLINE_RETENTION_PROJECTS", days)?;
                self.projects.insert(
                    id.trim().to_string(),
                    RawProjectRetention {
                        max_age_days: Some(days),
                    },
                );
            }
        }
        Ok(())
    }

    pub(super) fn validate(self) -> Result<Retention, ConfigError> {
        let check_interval = self
            .check_interval
            .map_or(DEFAULT_RETENTION_INTERVAL, |s| s.0);
        if check_interval < MIN_RETENTION_INTERVAL {
            return Err(ConfigError::Invalid {
                name: "retention.check_interval",
                value: format!("{check_interval:?}"),
                reason: "must be at least 1s".into(),
            });
        }
        let mut projects = BTreeMap::new();
        for (id, p) in self.projects {
            let days = p.max_age_days.ok_or_else(|| ConfigError::Invalid {
                name: "retention.projects",
                value: id.clone(),
                reason: "a project entry needs max_age_days (0 keeps its data forever)".into(),
            })?;
            projects.insert(id, days);
        }
        let compact = self.compact.unwrap_or(true);
        let max_disk_bytes = self.max_disk_bytes.map_or(0, |s| s.0);
        if max_disk_bytes > 0 && !compact {
            return Err(ConfigError::Invalid {
                name: "retention.compact",
                value: "false".into(),
                reason: "a disk cap (max_disk_bytes) needs compaction: without it the file never                          shrinks"
                    .into(),
            });
        }
        Ok(Retention {
            max_age_days: self.max_age_days.unwrap_or(0),
            projects,
            max_disk_bytes,
            check_interval,
            compact,
        })
    }
}

/// What retention enforces. Off by default: nothing is ever deleted unless configured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retention {
    /// Days traces are kept, for projects without an override; 0 = forever.
    pub max_age_days: u32,
    /// Project id → days (0 = forever), overriding `max_age_days`.
    pub projects: BTreeMap<String, u32>,
    /// Cap on database file + search index bytes; 0 = none.
    pub max_disk_bytes: u64,
    pub check_interval: Duration,
    pub compact: bool,
}

impl Retention {
    /// Days `project`'s data is kept, or None when it is kept forever.
    pub fn max_age_days_for(&self, project: &str) -> Option<u32> {
        let days = self
            .projects
            .get(project)
            .copied()
            .unwrap_or(self.max_age_days);
        (days > 0).then_some(days)
    }

    /// Whether the retention task has anything to do at all.
    pub fn is_enabled(&self) -> bool {
        self.max_age_days > 0 || self.projects.values().any(|d| *d > 0) || self.max_disk_bytes > 0
    }
}

/// `[forward]` as written. The secret key is never read from this file: it comes from the
/// environment or from a file of its own, so `config.toml` can be shared and checked in.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub url: Option<String>,
    pub public_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    /// Present only to refuse it with a clear message.
    pub secret_key: Option<toml::Value>,
    pub project: Option<String>,
    pub batch_bytes: Option<Size>,
    pub poll_ms: Option<u64>,
    /// Kept apart from `secret_key` so it can only come from the environment.
    #[serde(skip)]
    pub env_secret_key: Option<String>,
}

impl RawForward {
    pub(super) fn with_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("SIGHTLINE_FORWARD_URL") {
            self.url = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_PUBLIC_KEY") {
            self.public_key = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_SECRET_KEY") {
            self.env_secret_key = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_SECRET_KEY_FILE") {
            self.secret_key_file = Some(v.into());
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_PROJECT") {
            self.project = Some(v);
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_BATCH_BYTES") {
            let n = parse_size(&v).map_err(|reason| ConfigError::Invalid {
                name: "SIGHTLINE_FORWARD_BATCH_BYTES",
                value: v.clone(),
                reason,
            })?;
            self.batch_bytes = Some(Size(n));
        }
        if let Some(v) = env("SIGHTLINE_FORWARD_POLL_MS") {
            self.poll_ms = Some(parse_num("SIGHTLINE_FORWARD_POLL_MS", &v)?);
        }
        Ok(())
    }

    pub(super) fn validate(self) -> Result<Option<ForwardConfig>, ConfigError> {
        let invalid = |name: &'static str, value: String, reason: &str| ConfigError::Invalid {
            name,
            value,
            reason: reason.into(),
        };
        if self.secret_key.is_some() {
            // The value is not echoed: it is a secret.
            return Err(invalid(
                "forward.secret_key",
                "(not shown)".into(),
                "the secret key is not read from the config file; set SIGHTLINE_FORWARD_SECRET_KEY \
                 or point secret_key_file at a file that holds it",
            ));
        }
        let Some(url) = self.url.filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let public_key = self.public_key.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            invalid(
                "forward.public_key",
                String::new(),
                "forwarding needs the upstream project's public key (or SIGHTLINE_FORWARD_PUBLIC_KEY)",
            )
        })?;
        let secret_key = match (self.env_secret_key, &self.secret_key_file) {
            (Some(k), _) => k,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .trim()
                .to_string(),
            (None, None) => String::new(),
        };
        if secret_key.trim().is_empty() {
            return Err(invalid(
                "forward.secret_key_file",
                String::new(),
                "forwarding needs the upstream project's secret key: set \
                 SIGHTLINE_FORWARD_SECRET_KEY or secret_key_file",
            ));
        }
        let batch_bytes = self
            .batch_bytes
            .map_or(crate::forward::DEFAULT_BATCH_BYTES as u64, |s| s.0);
        if !(1024..=1 << 30).contains(&batch_bytes) {
            return Err(invalid(
                "forward.batch_bytes",
                batch_bytes.to_string(),
                "must be between 1 KiB and 1 GiB",
            ));
        }
        let poll = self
            .poll_ms
            .map_or(DEFAULT_FORWARD_POLL, Duration::from_millis);
        if poll < Duration::from_millis(10) {
            return Err(invalid(
                "forward.poll_ms",
                poll.as_millis().to_string(),
                "must be at least 10",
            ));
        }
        Ok(Some(ForwardConfig {
            url: url.trim().to_string(),
            credentials: Credentials {
                public_key,
                secret_key,
            },
            project: self.project,
            batch_bytes: usize::try_from(batch_bytes).unwrap_or(usize::MAX),
            poll,
        }))
    }
}

/// An upstream the server forwards to while it runs. `Debug` shows the key redacted.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub url: String,
    pub credentials: Credentials,
    /// The project to forward; None = the only one there is.
    pub project: Option<String>,
    pub batch_bytes: usize,
    pub poll: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10 gib").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("lots").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1 fortnight").is_err());
    }

    #[test]
    fn project_overrides_win_and_zero_means_forever() {
        let raw: RawRetention = toml::from_str(
            "max_age_days = 30\nmax_disk_bytes = \"1GiB\"\ncheck_interval = \"10m\"\n\
             [projects.\"short\"]\nmax_age_days = 7\n[projects.\"keep\"]\nmax_age_days = 0\n",
        )
        .unwrap();
        let r = raw.validate().unwrap();
        assert_eq!(r.max_age_days_for("other"), Some(30));
        assert_eq!(r.max_age_days_for("short"), Some(7));
        assert_eq!(r.max_age_days_for("keep"), None);
        assert_eq!(r.max_disk_bytes, 1 << 30);
        assert_eq!(r.check_interval, Duration::from_secs(600));
        assert!(r.compact && r.is_enabled());
        let off = RawRetention::default().validate().unwrap();
        assert!(!off.is_enabled());
        assert_eq!(off.check_interval, DEFAULT_RETENTION_INTERVAL);
    }

    #[test]
    fn retention_environment_overrides() {
        let mut raw = RawRetention::default();
        let env = |k: &str| match k {
            "SIGHTLINE_RETENTION_MAX_AGE_DAYS" => Some("14".to_string()),
            "SIGHTLINE_RETENTION_MAX_DISK_BYTES" => Some("2GB".to_string()),
            "SIGHTLINE_RETENTION_CHECK_INTERVAL" => Some("30s".to_string()),
            "SIGHTLINE_RETENTION_PROJECTS" => Some("a=3, b=0".to_string()),
            _ => None,
        };
        raw.with_env(&env).unwrap();
        let r = raw.validate().unwrap();
        assert_eq!((r.max_age_days, r.max_disk_bytes), (14, 2_000_000_000));
        assert_eq!(r.check_interval, Duration::from_secs(30));
        assert_eq!(r.max_age_days_for("a"), Some(3));
        assert_eq!(r.max_age_days_for("b"), None);
        let mut bad = RawRetention::default();
        let err = bad
            .with_env(&|k: &str| (k == "SIGHTLINE_RETENTION_PROJECTS").then(|| "a:3".into()))
            .unwrap_err();
        assert!(err.to_string().contains("project=days"), "{err}");
    }

    #[test]
    fn the_documented_examples_parse() {
        let shipped = include_str!("../../config.toml");
        // The commented-out examples, uncommented.
        let block = |header: &str| -> String {
            let start = shipped.find(&format!("# {header}")).unwrap();
            shipped[start..]
                .lines()
                .map_while(|l| l.strip_prefix("# "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let raw: super::super::RawConfig = toml::from_str(&format!(
            "[retention]\nmax_age_days = 30\n{}\n{}\n",
            block("[retention.projects.\"my-project\"]"),
            block("[forward]")
        ))
        .unwrap();
        let env = |k: &str| (k == "SIGHTLINE_FORWARD_SECRET_KEY").then(|| "sk-lf-x".to_string());
        let cfg = raw.with_env(&env).unwrap().validate().unwrap();
        assert_eq!(cfg.retention.max_age_days_for("my-project"), Some(7));
        assert_eq!(cfg.retention.max_age_days_for("other"), Some(30));
        let f = cfg.forward.unwrap();
        assert_eq!(f.url, "http://langfuse.internal:3000");
        assert_eq!(f.project.as_deref(), Some("my-project"));
        assert_eq!(f.batch_bytes, 3_500_000);
    }

    #[test]
    fn forward_secret_never_comes_from_the_file_and_never_shows() {
        let raw: RawForward =
            toml::from_str("url = \"http://up:3000\"\npublic_key = \"pk-lf-abc\"\nsecret_key = \"sk-lf-topsecret\"\n")
                .unwrap();
        let err = raw.validate().unwrap_err().to_string();
        assert!(err.contains("SIGHTLINE_FORWARD_SECRET_KEY"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");

        let mut raw: RawForward =
            toml::from_str("url = \"http://up:3000\"\npublic_key = \"pk-lf-abcdefgh123\"\n")
                .unwrap();
        assert!(
            raw.clone()
                .validate()
                .unwrap_err()
                .to_string()
                .contains("secret key")
        );
        raw.with_env(&|k: &str| {
            (k == "SIGHTLINE_FORWARD_SECRET_KEY").then(|| "sk-lf-topsecret".into())
        })
        .unwrap();
        let f = raw.validate().unwrap().unwrap();
        assert_eq!(f.credentials.secret_key, "sk-lf-topsecret");
        assert!(!format!("{f:?}").contains("topsecret"));
        assert!(!format!("{f:?}").contains("abcdefgh123"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "sk-lf-fromfile\n").unwrap();
        let raw = RawForward {
            url: Some("http://up:3000".into()),
            public_key: Some("pk".into()),
            secret_key_file: Some(file),
            ..Default::default()
        };
        assert_eq!(
            raw.validate().unwrap().unwrap().credentials.secret_key,
            "sk-lf-fromfile"
        );
        assert!(RawForward::default().validate().unwrap().is_none());
    }
}
