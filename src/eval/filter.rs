//! Which records an evaluator takes: the filter over names, tags, environments, observation
//! types and models, and deterministic sampling.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::JUDGE_ENVIRONMENT;
use super::def::{DefError, Target};
use crate::record::{ObservationRecord, ObservationType, TraceRecord};

const MAX_FILTER_VALUES: usize = 100;

fn err<T>(msg: impl Into<String>) -> Result<T, DefError> {
    Err(DefError(msg.into()))
}

/// Which new records an evaluator takes. Every non-empty list must match: `names` any of,
/// `tags` all of (the trace's tags, also for observations), `environments` any of, and for
/// observations `types` and `models` any of. Then `sample_rate` keeps a fixed, deterministic
/// share of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub names: Vec<String>,
    pub tags: Vec<String>,
    pub environments: Vec<String>,
    pub types: Vec<ObservationType>,
    pub models: Vec<String>,
    pub sample_rate: f64,
}

impl Filter {
    /// Whether a trace passes the filter (sampling aside). Judge traces never do.
    pub fn takes_trace(&self, t: &TraceRecord) -> bool {
        t.environment != JUDGE_ENVIRONMENT
            && any_of(&self.names, t.name.as_deref())
            && self.tags.iter().all(|tag| t.tags.contains(tag))
            && any_of(&self.environments, Some(&t.environment))
    }

    /// Whether an observation passes the filter (sampling aside); `trace` supplies the tags.
    pub fn takes_observation(&self, o: &ObservationRecord, trace: Option<&TraceRecord>) -> bool {
        let tags: &[String] = trace.map_or(&[], |t| &t.tags);
        o.environment != JUDGE_ENVIRONMENT
            && trace.is_none_or(|t| t.environment != JUDGE_ENVIRONMENT)
            && any_of(&self.names, o.name.as_deref())
            && self.tags.iter().all(|tag| tags.contains(tag))
            && any_of(&self.environments, Some(&o.environment))
            && (self.types.is_empty() || self.types.contains(&o.kind))
            && (self.models.is_empty()
                || o.model
                    .as_deref()
                    .is_some_and(|m| self.models.iter().any(|w| w.eq_ignore_ascii_case(m))))
    }
}

fn any_of(wanted: &[String], have: Option<&str>) -> bool {
    wanted.is_empty() || have.is_some_and(|h| wanted.iter().any(|w| w == h))
}

/// Deterministic sampling: the record is taken when the SHA-256 of `evaluator id`, NUL,
/// `target key`, read as a fraction of 2^64, is below the rate. The same record is always
/// taken or always left, across restarts and backfills.
pub fn sampled(evaluator_id: &str, target_key: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(evaluator_id.as_bytes());
    h.update([0]);
    h.update(target_key.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0) < rate
}

pub(super) fn strings(v: Option<&Value>, name: &str) -> Result<Vec<String>, DefError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_FILTER_VALUES => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => err(format!("filter.{name} must be an array of strings")),
            })
            .collect(),
        Some(Value::Array(_)) => err(format!(
            "filter.{name} takes at most {MAX_FILTER_VALUES} values"
        )),
        Some(_) => err(format!("filter.{name} must be an array of strings")),
    }
}

pub(super) fn parse_filter(v: Option<&Value>, target: Target) -> Result<Filter, DefError> {
    let empty = Map::new();
    let f = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return err("filter must be an object"),
    };
    let types = match f.get("types") {
        // Observations default to generations: the calls a judge is usually about.
        None if target == Target::Observation => vec![ObservationType::Generation],
        other => strings(other, "types")?
            .iter()
            .map(|t| {
                ObservationType::parse(t).ok_or_else(|| {
                    DefError(format!("filter.types: unknown observation type {t:?}"))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let models = strings(f.get("models"), "models")?;
    if target == Target::Trace && (!models.is_empty() || !types.is_empty()) {
        return err(
            "filter.models and filter.types apply to observations; set target to \"observation\"",
        );
    }
    let sample_rate = match f.get("sampleRate") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| DefError("filter.sampleRate must be a number from 0 to 1".into()))?,
    };
    Ok(Filter {
        names: strings(f.get("names"), "names")?,
        tags: strings(f.get("tags"), "tags")?,
        environments: strings(f.get("environments"), "environments")?,
        types,
        models,
        sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let taken = (0..2000)
            .filter(|i| sampled("ev", &format!("t:{i}"), 0.3))
            .count();
        assert!((500..700).contains(&taken), "{taken}");
        assert_eq!(sampled("ev", "t:1", 0.3), sampled("ev", "t:1", 0.3));
        assert!(sampled("ev", "t:1", 1.0) && !sampled("ev", "t:1", 0.0));
    }
}
