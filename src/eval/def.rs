//! An evaluator's definition: what it evaluates (target and filter, see `filter`), how it asks the judge
//! (prompt template, variable mapping, model) and what it writes (the output score), with the
//! JSON shape of `/api/evaluators` and the rules that reject a bad one with a clear message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::filter::{Filter, parse_filter, sampled, strings};
use super::template;
use crate::record::{ObservationRecord, ScoreDataType, TraceRecord};
use crate::score_config::ConfigSet;
use crate::time::Timestamp;

const MAX_NAME_CHARS: usize = 100;
const MAX_PROMPT_CHARS: usize = 50_000;
const MAX_DELAY_SECONDS: u64 = 86_400;
/// New records wait this long by default, so the outputs that follow a trace's creation are in
/// before the judge sees it.
pub const DEFAULT_DELAY_SECONDS: u64 = 5;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DefError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DefError> {
    Err(DefError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Trace,
    Observation,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Trace => "trace",
            Target::Observation => "observation",
        }
    }
}

/// The score an evaluator writes. With `config_id`, name, type and allowed values come from
/// that score config and every score is checked against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub score_name: String,
    pub data_type: ScoreDataType,
    pub categories: Vec<String>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub config_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluator {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub paused: bool,
    pub target: Target,
    pub filter: Filter,
    pub prompt: String,
    pub variable_mapping: BTreeMap<String, String>,
    pub output: Output,
    /// The judge model; `None` = the configured `[judge] model`.
    pub model: Option<String>,
    pub model_parameters: Map<String, Value>,
    pub delay_seconds: u64,
    /// Tokens this evaluator may spend on judge calls; `None` = the configured default.
    pub budget_tokens: Option<u64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Evaluator {
    /// A new evaluator from a `POST /api/evaluators` body.
    pub fn create(
        body: &Value,
        project: &str,
        configs: &ConfigSet,
        now: Timestamp,
    ) -> Result<Evaluator, DefError> {
        parse(
            body,
            uuid::Uuid::new_v4().to_string(),
            project,
            configs,
            now,
            now,
        )
    }

    /// This evaluator with a `PATCH` body merged in (nested `filter` and `output` key by key).
    pub fn patched(
        &self,
        patch: &Value,
        configs: &ConfigSet,
        now: Timestamp,
    ) -> Result<Evaluator, DefError> {
        let Value::Object(p) = patch else {
            return err("body must be a JSON object");
        };
        let mut merged = self.to_json();
        let Value::Object(m) = &mut merged else {
            return err("stored evaluator is not an object");
        };
        for (k, v) in p {
            match (m.get_mut(k), v) {
                (Some(Value::Object(old)), Value::Object(new))
                    if k == "filter" || k == "output" =>
                {
                    if k == "output" && new.contains_key("configId") {
                        // A new config replaces what the old one implied.
                        old.retain(|k, _| k == "configId");
                    }
                    for (nk, nv) in new {
                        old.insert(nk.clone(), nv.clone());
                    }
                }
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(Value::Object(out)) = m.get_mut("output")
            && out.get("configId").is_some_and(|c| !c.is_null())
        {
            // Whatever came from the config is taken from it again.
            for k in [
                "scoreName",
                "dataType",
                "categories",
                "minValue",
                "maxValue",
            ] {
                if !p
                    .get("output")
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.contains_key(k))
                {
                    out.remove(k);
                }
            }
        }
        parse(
            &merged,
            self.id.clone(),
            &self.project_id,
            configs,
            self.created_at,
            now,
        )
    }

    /// The wire shape (without status, which the API adds).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "projectId": self.project_id,
            "name": self.name,
            "paused": self.paused,
            "target": self.target.as_str(),
            "filter": {
                "names": self.filter.names,
                "tags": self.filter.tags,
                "environments": self.filter.environments,
                "types": self.filter.types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "models": self.filter.models,
                "sampleRate": self.filter.sample_rate,
            },
            "prompt": self.prompt,
            "variableMapping": self.variable_mapping,
            "output": {
                "scoreName": self.output.score_name,
                "dataType": self.output.data_type.as_str(),
                "categories": self.output.categories,
                "minValue": self.output.min_value,
                "maxValue": self.output.max_value,
                "configId": self.output.config_id,
            },
            "model": self.model,
            "modelParameters": self.model_parameters,
            "delaySeconds": self.delay_seconds,
            "budgetTokens": self.budget_tokens,
            "createdAt": self.created_at.to_iso(),
            "updatedAt": self.updated_at.to_iso(),
        })
    }

    /// Whether a trace passes the filter (sampling aside). Judge traces never do.
    pub fn matches_trace(&self, t: &TraceRecord) -> bool {
        self.target == Target::Trace && self.filter.takes_trace(t)
    }

    /// Whether an observation passes the filter (sampling aside); `trace` supplies the tags.
    pub fn matches_observation(&self, o: &ObservationRecord, trace: Option<&TraceRecord>) -> bool {
        self.target == Target::Observation && self.filter.takes_observation(o, trace)
    }

    /// Whether the sample takes the record with this target key (see `filter::sampled`).
    pub fn samples(&self, target_key: &str) -> bool {
        sampled(&self.id, target_key, self.filter.sample_rate)
    }
}

fn parse(
    body: &Value,
    id: String,
    project: &str,
    configs: &ConfigSet,
    created_at: Timestamp,
    updated_at: Timestamp,
) -> Result<Evaluator, DefError> {
    let Value::Object(b) = body else {
        return err("body must be a JSON object");
    };
    let name = required_string(b, "name")?;
    if name.chars().count() > MAX_NAME_CHARS {
        return err(format!("name must be at most {MAX_NAME_CHARS} characters"));
    }
    let target = match b.get("target") {
        None | Some(Value::Null) => Target::Trace,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("trace") => Target::Trace,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("observation") => Target::Observation,
        Some(other) => {
            return err(format!(
                "target must be \"trace\" or \"observation\"; got {other}"
            ));
        }
    };
    let prompt = required_string(b, "prompt")?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return err(format!(
            "prompt must be at most {MAX_PROMPT_CHARS} characters"
        ));
    }
    let variable_mapping = match b.get("variableMapping") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => err(format!(
                    "variableMapping.{k} must be a path string such as \"output.answer\""
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return err("variableMapping must be an object of variable → path"),
    };
    template::check(&prompt, &variable_mapping, target).map_err(DefError)?;
    let filter = parse_filter(b.get("filter"), target)?;
    let output = parse_output(b.get("output"), project, configs)?;
    let model = match b.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return err("model must be a string"),
    };
    let model_parameters = match b.get("modelParameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            for k in ["model", "messages"] {
                if m.contains_key(k) {
                    return err(format!("modelParameters may not set {k:?}"));
                }
            }
            m.clone()
        }
        Some(_) => return err("modelParameters must be an object (e.g. {\"temperature\": 0})"),
    };
    let delay_seconds = match b.get("delaySeconds") {
        None | Some(Value::Null) => DEFAULT_DELAY_SECONDS,
        Some(v) => v
            .as_u64()
            .filter(|d| *d <= MAX_DELAY_SECONDS)
            .ok_or_else(|| {
                DefError(format!(
                    "delaySeconds must be an integer from 0 to {MAX_DELAY_SECONDS}"
                ))
            })?,
    };
    let budget_tokens = match b.get("budgetTokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            DefError("budgetTokens must be a non-negative integer or null".into())
        })?),
    };
    let paused = match b.get("paused") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(p)) => *p,
        Some(_) => return err("paused must be a boolean"),
    };
    Ok(Evaluator {
        id,
        project_id: project.to_string(),
        name,
        paused,
        target,
        filter,
        prompt,
        variable_mapping,
        output,
        model,
        model_parameters,
        delay_seconds,
        budget_tokens,
        created_at,
        updated_at,
    })
}

fn required_string(b: &Map<String, Value>, name: &str) -> Result<String, DefError> {
    match b.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => err(format!("{name} is required")),
        Some(_) => err(format!("{name} must be a string")),
    }
}

fn parse_output(v: Option<&Value>, project: &str, configs: &ConfigSet) -> Result<Output, DefError> {
    let Some(Value::Object(o)) = v else {
        return err(
            "output is required: {\"scoreName\": ..., \"dataType\": \"NUMERIC\"|\"BOOLEAN\"|\"CATEGORICAL\"}",
        );
    };
    let num = |k: &str| match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| DefError(format!("output.{k} must be a number"))),
    };
    if let Some(id) = o.get("configId").and_then(Value::as_str) {
        let Some(c) = configs.get(project, id) else {
            return err(format!(
                "output.configId {id:?} does not match a score config in this project"
            ));
        };
        if c.is_archived {
            return err(format!("score config {:?} is archived", c.name));
        }
        if c.data_type == ScoreDataType::Text {
            return err(
                "a judge writes NUMERIC, BOOLEAN or CATEGORICAL scores; this config is TEXT",
            );
        }
        return Ok(Output {
            score_name: c.name.clone(),
            data_type: c.data_type,
            categories: match c.data_type {
                ScoreDataType::Categorical => c
                    .categories
                    .iter()
                    .flatten()
                    .map(|c| c.label.clone())
                    .collect(),
                _ => Vec::new(),
            },
            min_value: c.min_value,
            max_value: c.max_value,
            config_id: Some(c.id.clone()),
        });
    }
    let score_name = match o.get("scoreName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return err("output.scoreName is required (or output.configId)"),
    };
    let data_type = match o.get("dataType") {
        None | Some(Value::Null) => ScoreDataType::Numeric,
        Some(Value::String(s)) => ScoreDataType::parse(s)
            .filter(|t| {
                matches!(
                    t,
                    ScoreDataType::Numeric | ScoreDataType::Boolean | ScoreDataType::Categorical
                )
            })
            .ok_or_else(|| {
                DefError(format!(
                    "output.dataType must be NUMERIC, BOOLEAN or CATEGORICAL; got {s:?}"
                ))
            })?,
        Some(_) => return err("output.dataType must be a string"),
    };
    let categories = strings(o.get("categories"), "categories")
        .map_err(|_| DefError("output.categories must be an array of strings".into()))?;
    let (min_value, max_value) = (num("minValue")?, num("maxValue")?);
    match data_type {
        ScoreDataType::Categorical if categories.is_empty() => {
            return err("a CATEGORICAL output needs categories: [\"good\", \"bad\", ...]");
        }
        ScoreDataType::Categorical => {}
        _ if !categories.is_empty() => {
            return err("output.categories apply to CATEGORICAL outputs only");
        }
        _ => {}
    }
    if data_type != ScoreDataType::Numeric && (min_value.is_some() || max_value.is_some()) {
        return err("output.minValue/maxValue apply to NUMERIC outputs only");
    }
    if let (Some(a), Some(b)) = (min_value, max_value)
        && b <= a
    {
        return err("output.maxValue must be greater than output.minValue");
    }
    Ok(Output {
        score_name,
        data_type,
        categories,
        min_value,
        max_value,
        config_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ObservationType;

    fn make(v: Value) -> Result<Evaluator, DefError> {
        Evaluator::create(&v, "p", &ConfigSet::default(), Timestamp::from_micros(0))
    }

    #[test]
    fn defaults_and_errors() {
        let e = make(json!({"name": "e", "prompt": "Rate {{output}}",
            "output": {"scoreName": "quality"}}))
        .unwrap();
        assert_eq!(e.target, Target::Trace);
        assert_eq!(e.filter.sample_rate, 1.0);
        assert_eq!(e.output.data_type, ScoreDataType::Numeric);
        let o = make(
            json!({"name": "e", "target": "observation", "prompt": "{{output}}",
            "output": {"scoreName": "q"}}),
        )
        .unwrap();
        assert_eq!(o.filter.types, vec![ObservationType::Generation]);
        for bad in [
            json!({"prompt": "{{output}}", "output": {"scoreName": "q"}}),
            json!({"name": "e", "prompt": "{{nope}}", "output": {"scoreName": "q"}}),
            json!({"name": "e", "prompt": "{{output}}", "output": {"scoreName": "q", "dataType": "CATEGORICAL"}}),
            json!({"name": "e", "prompt": "{{output}}", "output": {"scoreName": "q"}, "filter": {"sampleRate": 2}}),
            json!({"name": "e", "prompt": "{{output}}", "output": {"scoreName": "q"}, "filter": {"models": ["x"]}}),
            json!({"name": "e", "prompt": "{{output}}", "output": {"configId": "missing"}}),
        ] {
            assert!(make(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_merges_nested_objects() {
        let e = make(
            json!({"name": "e", "prompt": "{{output}}", "output": {"scoreName": "q"},
            "filter": {"names": ["a"], "sampleRate": 0.5}}),
        )
        .unwrap();
        let p = e
            .patched(
                &json!({"paused": true, "filter": {"tags": ["t"]}}),
                &ConfigSet::default(),
                Timestamp::from_micros(9),
            )
            .unwrap();
        assert!(p.paused);
        assert_eq!(p.filter.names, vec!["a"]);
        assert_eq!(p.filter.tags, vec!["t"]);
        assert_eq!(p.filter.sample_rate, 0.5);
        assert_eq!((p.id.as_str(), p.created_at), (e.id.as_str(), e.created_at));
    }
}
