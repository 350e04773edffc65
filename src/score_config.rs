//! Score configs: the schema a project's scores may promise to follow (Langfuse's
//! `/api/public/score-configs`), and the check of a score against the config it names.
//!
//! Owns: the `ScoreConfig` record, the rules for creating and patching one (name, data type,
//! range, categories), its wire shape, and `value_for`, which turns a score's raw value into a
//! typed value that fits its config or says clearly why not. Must not touch: storage (the store
//! keeps the configs and an in-memory set of them for the ingest path) or HTTP.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::record::{ScoreDataType, ScoreValue};
use crate::time::Timestamp;

/// Langfuse's limit on a config name.
const MAX_NAME_CHARS: usize = 35;
const MAX_DESCRIPTION_CHARS: usize = 2000;
const MAX_CATEGORIES: usize = 100;
/// TEXT scores: 1 to this many characters, as Langfuse allows.
const MAX_TEXT_CHARS: usize = 500;

/// A rejected config body or a score that does not fit its config; the text is the 400 message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// One label of a categorical config and the number it stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub label: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// NUMERIC, BOOLEAN, CATEGORICAL or TEXT (never CORRECTION).
    pub data_type: ScoreDataType,
    pub is_archived: bool,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    /// Set for CATEGORICAL (given) and BOOLEAN (always `True`=1, `False`=0).
    pub categories: Option<Vec<Category>>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ScoreConfig {
    /// A new config from a `POST /api/public/score-configs` body.
    pub fn create(body: &Value, project: &str, now: Timestamp) -> Result<ScoreConfig, ConfigError> {
        let Value::Object(b) = body else {
            return err("body must be a JSON object");
        };
        let name = match b.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return err("name must be a string"),
            None => return err("name is required"),
        };
        let data_type = match b.get("dataType") {
            Some(Value::String(s)) => ScoreDataType::parse(s)
                .filter(|t| *t != ScoreDataType::Correction)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "dataType must be NUMERIC, BOOLEAN, CATEGORICAL or TEXT; got {s:?}"
                    ))
                })?,
            Some(_) => return err("dataType must be a string"),
            None => return err("dataType is required (NUMERIC, BOOLEAN, CATEGORICAL or TEXT)"),
        };
        let mut config = ScoreConfig {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project.to_string(),
            name,
            data_type,
            is_archived: false,
            min_value: number(b, "minValue")?.flatten(),
            max_value: number(b, "maxValue")?.flatten(),
            categories: categories(b)?.flatten(),
            description: text(b, "description")?.flatten(),
            created_at: now,
            updated_at: now,
        };
        if data_type == ScoreDataType::Boolean {
            if config.categories.is_some() {
                return err(
                    "BOOLEAN configs take no categories: they are always True (1) and False (0)",
                );
            }
            config.categories = Some(boolean_categories());
        }
        config.check()?;
        Ok(config)
    }

    /// This config with a `PATCH` body applied: `isArchived`, `name`, `categories`, `minValue`,
    /// `maxValue`, `description`; an explicit `null` clears an optional field. The data type
    /// never changes, so stored scores keep meaning what they meant.
    pub fn patched(&self, body: &Value, now: Timestamp) -> Result<ScoreConfig, ConfigError> {
        let Value::Object(b) = body else {
            return err("body must be a JSON object");
        };
        if let Some(t) = b.get("dataType").and_then(Value::as_str)
            && ScoreDataType::parse(t) != Some(self.data_type)
        {
            return err(format!(
                "dataType cannot change (this config is {}); create a new config instead",
                self.data_type.as_str()
            ));
        }
        let mut next = self.clone();
        match b.get("isArchived") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(v)) => next.is_archived = *v,
            Some(_) => return err("isArchived must be a boolean"),
        }
        match b.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => next.name = s.clone(),
            Some(_) => return err("name must be a string"),
        }
        if let Some(v) = number(b, "minValue")? {
            next.min_value = v;
        }
        if let Some(v) = number(b, "maxValue")? {
            next.max_value = v;
        }
        if let Some(v) = text(b, "description")? {
            next.description = v;
        }
        if let Some(v) = categories(b)? {
            if self.data_type == ScoreDataType::Boolean {
                return err(
                    "BOOLEAN configs take no categories: they are always True (1) and False (0)",
                );
            }
            next.categories = v;
        }
        next.check()?;
        next.updated_at = now;
        Ok(next)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let n = self.name.chars().count();
        if n == 0 || n > MAX_NAME_CHARS {
            return err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if let Some(c) = self
            .name
            .chars()
            .find(|c| !(c.is_alphanumeric() || " _.()-".contains(*c)))
        {
            return err(format!(
                "name may contain only letters, digits, spaces, underscores, periods, parentheses and hyphens; found {c:?}"
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return err(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        let has_range = self.min_value.is_some() || self.max_value.is_some();
        match self.data_type {
            ScoreDataType::Numeric => {
                if self.categories.is_some() {
                    return err("NUMERIC configs take minValue/maxValue, not categories");
                }
                if let (Some(min), Some(max)) = (self.min_value, self.max_value)
                    && max <= min
                {
                    return err(format!(
                        "maxValue ({max}) must be greater than minValue ({min})"
                    ));
                }
            }
            ScoreDataType::Categorical => {
                if has_range {
                    return err("CATEGORICAL configs take categories, not minValue/maxValue");
                }
                let Some(cats) = &self.categories else {
                    return err(
                        "CATEGORICAL configs need categories: [{\"label\": \"good\", \"value\": 1}, ...]",
                    );
                };
                if cats.is_empty() {
                    return err("categories must hold at least one {label, value}");
                }
                for (i, c) in cats.iter().enumerate() {
                    if cats[..i].iter().any(|o| o.label == c.label) {
                        return err(format!(
                            "category label {:?} appears twice; labels must be unique",
                            c.label
                        ));
                    }
                    if cats[..i].iter().any(|o| o.value == c.value) {
                        return err(format!(
                            "category value {} appears twice; values must be unique",
                            c.value
                        ));
                    }
                }
            }
            ScoreDataType::Boolean | ScoreDataType::Text => {
                if has_range {
                    return err(format!(
                        "{} configs take no minValue/maxValue",
                        self.data_type.as_str()
                    ));
                }
                if self.data_type == ScoreDataType::Text && self.categories.is_some() {
                    return err("TEXT configs take no categories");
                }
            }
            ScoreDataType::Correction => return err("CORRECTION is not a config data type"),
        }
        Ok(())
    }

    /// Langfuse's `ScoreConfig` object.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "createdAt": self.created_at.to_iso(),
            "updatedAt": self.updated_at.to_iso(),
            "projectId": self.project_id,
            "dataType": self.data_type.as_str(),
            "isArchived": self.is_archived,
            "minValue": self.min_value,
            "maxValue": self.max_value,
            "categories": self.categories,
            "description": self.description,
        })
    }

    /// The typed value a score with raw value `raw` gets under this config, or why it does not
    /// fit. `explicit` is the `dataType` the score named itself, if any: it must agree.
    ///
    /// A categorical value may be given by label (`"good"`, Langfuse's form) or by the number a
    /// category stands for (`1`); a boolean by `0`/`1`, `true`/`false` or its label.
    pub fn value_for(
        &self,
        explicit: Option<ScoreDataType>,
        raw: &Value,
    ) -> Result<ScoreValue, ConfigError> {
        let who = || format!("score config {:?} ({})", self.name, self.id);
        if self.is_archived {
            return err(format!(
                "{} is archived and takes no new scores; restore it with PATCH {{\"isArchived\": false}} or use another config",
                who()
            ));
        }
        if let Some(t) = explicit
            && t != self.data_type
        {
            return err(format!(
                "dataType {} does not match {}, which is {}",
                t.as_str(),
                who(),
                self.data_type.as_str()
            ));
        }
        let labels = || {
            self.categories
                .iter()
                .flatten()
                .map(|c| format!("{:?}", c.label))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.data_type {
            ScoreDataType::Numeric => {
                let Some(v) = raw.as_f64().filter(|v| v.is_finite()) else {
                    return err(format!("{} is NUMERIC: value must be a number", who()));
                };
                if let Some(min) = self.min_value
                    && v < min
                {
                    return err(format!(
                        "value {v} is below the minValue {min} of {}",
                        who()
                    ));
                }
                if let Some(max) = self.max_value
                    && v > max
                {
                    return err(format!(
                        "value {v} is above the maxValue {max} of {}",
                        who()
                    ));
                }
                Ok(ScoreValue::Numeric(v))
            }
            ScoreDataType::Boolean => match raw {
                Value::Bool(b) => Ok(ScoreValue::Boolean(*b)),
                Value::Number(n) if n.as_f64() == Some(1.0) => Ok(ScoreValue::Boolean(true)),
                Value::Number(n) if n.as_f64() == Some(0.0) => Ok(ScoreValue::Boolean(false)),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(ScoreValue::Boolean(true)),
                Value::String(s) if s.eq_ignore_ascii_case("false") => {
                    Ok(ScoreValue::Boolean(false))
                }
                other => err(format!(
                    "{} is BOOLEAN: value must be 0 or 1 (or true/false); got {other}",
                    who()
                )),
            },
            ScoreDataType::Categorical => {
                let cats = self.categories.iter().flatten();
                let found = match raw {
                    Value::String(s) => cats.clone().find(|c| c.label == *s),
                    Value::Number(n) => {
                        n.as_f64().and_then(|v| cats.clone().find(|c| c.value == v))
                    }
                    _ => None,
                };
                match found {
                    Some(c) => Ok(ScoreValue::Categorical {
                        label: c.label.clone(),
                        value: c.value,
                    }),
                    None => err(format!(
                        "value {raw} is not a category of {}; use one of {}",
                        who(),
                        labels()
                    )),
                }
            }
            ScoreDataType::Text => match raw {
                Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_TEXT_CHARS => {
                    Ok(ScoreValue::Text(s.clone()))
                }
                _ => err(format!(
                    "{} is TEXT: value must be a string of 1 to {MAX_TEXT_CHARS} characters",
                    who()
                )),
            },
            ScoreDataType::Correction => err("CORRECTION is not a config data type"),
        }
    }
}

fn boolean_categories() -> Vec<Category> {
    vec![
        Category {
            label: "True".into(),
            value: 1.0,
        },
        Category {
            label: "False".into(),
            value: 0.0,
        },
    ]
}

/// `None` = absent, `Some(None)` = explicit null, `Some(Some(v))` = a finite number.
fn number(b: &Map<String, Value>, name: &str) -> Result<Option<Option<f64>>, ConfigError> {
    match b.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_f64().filter(|f| f.is_finite()) {
            Some(f) => Ok(Some(Some(f))),
            None => err(format!("{name} must be a number")),
        },
    }
}

fn text(b: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>, ConfigError> {
    match b.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => err(format!("{name} must be a string")),
    }
}

fn categories(b: &Map<String, Value>) -> Result<Option<Option<Vec<Category>>>, ConfigError> {
    let shape = "categories must be an array of {\"label\": string, \"value\": number}";
    match b.get("categories") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Array(items)) => {
            if items.len() > MAX_CATEGORIES {
                return err(format!("at most {MAX_CATEGORIES} categories"));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let label = item.get("label").and_then(Value::as_str);
                let value = item
                    .get("value")
                    .and_then(Value::as_f64)
                    .filter(|f| f.is_finite());
                match (label, value) {
                    (Some(l), Some(v)) if !l.is_empty() => out.push(Category {
                        label: l.to_string(),
                        value: v,
                    }),
                    _ => return err(shape),
                }
            }
            Ok(Some(Some(out)))
        }
        Some(_) => err(shape),
    }
}

/// Where a score's `configId` is looked up: the configs of the caller's project.
pub trait ConfigLookup {
    fn config(&self, id: &str) -> Option<&ScoreConfig>;
}

/// No configs at all (tools that parse events without a store).
pub struct NoConfigs;

impl ConfigLookup for NoConfigs {
    fn config(&self, _id: &str) -> Option<&ScoreConfig> {
        None
    }
}

/// Every stored config, by project and id: the set the writer keeps current in memory.
#[derive(Debug, Default, Clone)]
pub struct ConfigSet {
    by_project: HashMap<String, HashMap<String, ScoreConfig>>,
}

impl ConfigSet {
    pub fn new(configs: impl IntoIterator<Item = ScoreConfig>) -> ConfigSet {
        let mut set = ConfigSet::default();
        for c in configs {
            set.by_project
                .entry(c.project_id.clone())
                .or_default()
                .insert(c.id.clone(), c);
        }
        set
    }

    /// The lookup for one project's scores.
    pub fn project<'a>(&'a self, project: &'a str) -> ProjectConfigs<'a> {
        ProjectConfigs { set: self, project }
    }

    pub fn get(&self, project: &str, id: &str) -> Option<&ScoreConfig> {
        self.by_project.get(project)?.get(id)
    }

    /// A project's configs, newest first (Langfuse's list order).
    pub fn list(&self, project: &str) -> Vec<&ScoreConfig> {
        let mut v: Vec<&ScoreConfig> = self
            .by_project
            .get(project)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        v
    }
}

pub struct ProjectConfigs<'a> {
    set: &'a ConfigSet,
    project: &'a str,
}

impl ConfigLookup for ProjectConfigs<'_> {
    fn config(&self, id: &str) -> Option<&ScoreConfig> {
        self.set.get(self.project, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(body: Value) -> Result<ScoreConfig, ConfigError> {
        ScoreConfig::create(&body, "p", Timestamp::from_micros(0))
    }

    #[test]
    fn creation_rules() {
        let b = make(json!({"name": "correct", "dataType": "BOOLEAN"})).unwrap();
        assert_eq!(b.categories.as_ref().unwrap().len(), 2);
        assert!(make(json!({"name": "x", "dataType": "CATEGORICAL"})).is_err());
        assert!(make(json!({"name": "x/y", "dataType": "NUMERIC"})).is_err());
        assert!(make(json!({"name": "a".repeat(36), "dataType": "NUMERIC"})).is_err());
        let e = make(json!({"name": "r", "dataType": "NUMERIC", "minValue": 5, "maxValue": 1}))
            .unwrap_err();
        assert!(e.0.contains("greater"), "{e}");
        let e = make(json!({"name": "c", "dataType": "CATEGORICAL",
            "categories": [{"label": "a", "value": 1}, {"label": "a", "value": 2}]}))
        .unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        assert!(make(json!({"name": "n", "dataType": "CORRECTION"})).is_err());
    }

    #[test]
    fn values_are_checked_against_the_config() {
        let n = make(json!({"name": "q", "dataType": "NUMERIC", "minValue": 0, "maxValue": 1}))
            .unwrap();
        assert_eq!(
            n.value_for(None, &json!(0.5)).unwrap(),
            ScoreValue::Numeric(0.5)
        );
        assert!(
            n.value_for(None, &json!(1.5))
                .unwrap_err()
                .0
                .contains("maxValue")
        );
        assert!(
            n.value_for(Some(ScoreDataType::Boolean), &json!(1))
                .unwrap_err()
                .0
                .contains("does not match")
        );
        let c = make(json!({"name": "tone", "dataType": "CATEGORICAL",
            "categories": [{"label": "good", "value": 1}, {"label": "bad", "value": 0}]}))
        .unwrap();
        assert_eq!(
            c.value_for(None, &json!("bad")).unwrap(),
            ScoreValue::Categorical {
                label: "bad".into(),
                value: 0.0
            }
        );
        assert_eq!(
            c.value_for(None, &json!(1)).unwrap(),
            ScoreValue::Categorical {
                label: "good".into(),
                value: 1.0
            }
        );
        assert!(
            c.value_for(None, &json!("meh"))
                .unwrap_err()
                .0
                .contains("\"good\"")
        );
        let b = make(json!({"name": "ok", "dataType": "BOOLEAN"})).unwrap();
        assert_eq!(
            b.value_for(None, &json!(1)).unwrap(),
            ScoreValue::Boolean(true)
        );
        assert!(b.value_for(None, &json!(2)).is_err());
        let archived = b
            .patched(&json!({"isArchived": true}), Timestamp::from_micros(1))
            .unwrap();
        assert!(
            archived
                .value_for(None, &json!(1))
                .unwrap_err()
                .0
                .contains("archived")
        );
    }

    #[test]
    fn patch_keeps_the_type_and_revalidates() {
        let n = make(json!({"name": "q", "dataType": "NUMERIC", "minValue": 0})).unwrap();
        let p = n
            .patched(
                &json!({"maxValue": 10, "description": "d"}),
                Timestamp::from_micros(5),
            )
            .unwrap();
        assert_eq!((p.min_value, p.max_value), (Some(0.0), Some(10.0)));
        assert!(
            n.patched(&json!({"maxValue": -1}), Timestamp::from_micros(5))
                .is_err()
        );
        assert!(
            n.patched(&json!({"dataType": "BOOLEAN"}), Timestamp::from_micros(5))
                .is_err()
        );
        let cleared = p
            .patched(&json!({"minValue": null}), Timestamp::from_micros(6))
            .unwrap();
        assert_eq!(cleared.min_value, None);
    }
}
