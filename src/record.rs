//! The records Sightline keeps — traces, observations, scores — and the patches that change them.
//!
//! Owns: the domain vocabulary shared by every ingestion path (batch ingestion, OTLP) and by the
//! store, and the merge rules that turn a stream of patches into a record (Langfuse's upsert
//! semantics). Must not touch: storage, HTTP, or JSON wire shapes of the read API — those live in
//! `store` and `api`. Everything here is plain data and pure functions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// Every kind of observation Langfuse knows. Closed set: an unknown type is rejected at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObservationType {
    Span,
    Generation,
    Event,
    Agent,
    Tool,
    Chain,
    Retriever,
    Evaluator,
    Embedding,
    Guardrail,
}

impl ObservationType {
    pub const ALL: [ObservationType; 10] = [
        Self::Span,
        Self::Generation,
        Self::Event,
        Self::Agent,
        Self::Tool,
        Self::Chain,
        Self::Retriever,
        Self::Evaluator,
        Self::Embedding,
        Self::Guardrail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Span => "SPAN",
            Self::Generation => "GENERATION",
            Self::Event => "EVENT",
            Self::Agent => "AGENT",
            Self::Tool => "TOOL",
            Self::Chain => "CHAIN",
            Self::Retriever => "RETRIEVER",
            Self::Evaluator => "EVALUATOR",
            Self::Embedding => "EMBEDDING",
            Self::Guardrail => "GUARDRAIL",
        }
    }

    /// Case-insensitive parse of a type name (`span`, `GENERATION`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// Observation severity. Ordered so that `max` gives the most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    Debug,
    #[default]
    Default,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Default => "DEFAULT",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
        }
    }

    /// Exact Langfuse level names (`DEBUG`, `DEFAULT`, `WARNING`, `ERROR`), case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Debug, Self::Default, Self::Warning, Self::Error]
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScoreDataType {
    Numeric,
    Boolean,
    Categorical,
    Text,
    Correction,
}

impl ScoreDataType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Numeric => "NUMERIC",
            Self::Boolean => "BOOLEAN",
            Self::Categorical => "CATEGORICAL",
            Self::Text => "TEXT",
            Self::Correction => "CORRECTION",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Numeric,
            Self::Boolean,
            Self::Categorical,
            Self::Text,
            Self::Correction,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScoreSource {
    #[default]
    Api,
    Annotation,
    Eval,
}

impl ScoreSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "API",
            Self::Annotation => "ANNOTATION",
            Self::Eval => "EVAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Api, Self::Annotation, Self::Eval]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// A field of a patch: absent (leave alone), explicitly cleared (JSON `null`), or set.
///
/// Langfuse lets an explicit `null` clear some fields (trace name, user, session...) but not
/// others; the parser decides which fields get `Clear`, the merge just obeys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Patch<T> {
    #[default]
    Absent,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }

    fn apply_to(self, slot: &mut Option<T>, newer: bool) {
        match self {
            Patch::Absent => {}
            // An older event may fill a gap but never undoes what a newer one wrote.
            _ if !newer && slot.is_some() => {}
            Patch::Clear => *slot = None,
            Patch::Set(v) => *slot = Some(v),
        }
    }
}

impl<T> From<Option<T>> for Patch<T> {
    fn from(v: Option<T>) -> Self {
        match v {
            Some(v) => Patch::Set(v),
            None => Patch::Absent,
        }
    }
}

/// Token (or other unit) counts by usage key, e.g. `input`, `output`, `cache_read_input_tokens`.
pub type UsageMap = BTreeMap<String, u64>;
/// USD amounts by usage key; `total` is the observation's total.
pub type CostMap = BTreeMap<String, f64>;

/// Normalises an environment name as Langfuse does: lower-case, strip leading `langfuse`
/// prefixes, at most 40 characters of `[a-z0-9-_]`, else `default`.
pub fn normalize_environment(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "default".into();
    };
    let mut s = raw.to_lowercase();
    while let Some(rest) = s.strip_prefix("langfuse") {
        s = rest.strip_prefix(['-', '_']).unwrap_or(rest).to_string();
    }
    let s: String = s.chars().take(40).collect();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        s
    } else {
        "default".into()
    }
}

/// Merges metadata as Langfuse does: objects merge key-wise (later keys win); any other JSON
/// value is wrapped as `{"metadata": value}` first.
pub fn merge_metadata(slot: &mut Map<String, Value>, patch: Value, newer: bool) {
    let patch = match patch {
        Value::Object(m) => m,
        Value::Null => return,
        other => {
            let mut m = Map::new();
            m.insert("metadata".into(), other);
            m
        }
    };
    for (k, v) in patch {
        if newer || !slot.contains_key(&k) {
            slot.insert(k, v);
        }
    }
}

/// Whether a value counts as "truthy" for Langfuse's input/output rule: `""`, `0`, `false`,
/// `null` never overwrite a stored value.
pub fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A change to one trace, from a `trace-create` event or derived from an OTel span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracePatch {
    pub id: String,
    pub timestamp: Option<Timestamp>,
    pub name: Patch<String>,
    pub user_id: Patch<String>,
    pub session_id: Patch<String>,
    pub release: Patch<String>,
    pub version: Patch<String>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub metadata: Option<Value>,
    pub tags: Vec<String>,
    pub public: Option<bool>,
    pub environment: Option<String>,
}

/// A change to one observation, from any `*-create`/`*-update` event or an OTel span.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationPatch {
    pub id: String,
    pub trace_id: Option<String>,
    pub kind: ObservationType,
    pub parent_observation_id: Option<String>,
    pub name: Patch<String>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub completion_start_time: Option<Timestamp>,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub metadata: Option<Value>,
    pub level: Patch<Level>,
    pub status_message: Option<String>,
    pub version: Option<String>,
    pub environment: Option<String>,
    pub model: Patch<String>,
    pub model_parameters: Option<Map<String, Value>>,
    /// Usage as the client reported it (already normalised to Langfuse usage keys).
    pub usage: Option<UsageMap>,
    /// Costs as the client reported them; when present they win over computed costs.
    pub cost: Option<CostMap>,
    pub prompt_name: Option<String>,
    pub prompt_version: Option<i64>,
    /// The SDK marked this span as the root of its trace although it has a (remote) parent.
    pub app_root: bool,
}

impl ObservationPatch {
    pub fn new(id: impl Into<String>, kind: ObservationType) -> Self {
        Self {
            id: id.into(),
            trace_id: None,
            kind,
            parent_observation_id: None,
            name: Patch::Absent,
            start_time: None,
            end_time: None,
            completion_start_time: None,
            input: None,
            output: None,
            metadata: None,
            level: Patch::Absent,
            status_message: None,
            version: None,
            environment: None,
            model: Patch::Absent,
            model_parameters: None,
            usage: None,
            cost: None,
            prompt_name: None,
            prompt_version: None,
            app_root: false,
        }
    }

    /// A copy of everything but the input and output, which the writer reads in place: they
    /// are most of a patch's bytes, and copying them for the merge was a tenth of its time.
    pub fn without_payload(&self) -> Self {
        let Self {
            id,
            trace_id,
            kind,
            parent_observation_id,
            name,
            start_time,
            end_time,
            completion_start_time,
            input: _,
            output: _,
            metadata,
            level,
            status_message,
            version,
            environment,
            model,
            model_parameters,
            usage,
            cost,
            prompt_name,
            prompt_version,
            app_root,
        } = self;
        Self {
            id: id.clone(),
            trace_id: trace_id.clone(),
            kind: *kind,
            parent_observation_id: parent_observation_id.clone(),
            name: name.clone(),
            start_time: *start_time,
            end_time: *end_time,
            completion_start_time: *completion_start_time,
            input: None,
            output: None,
            metadata: metadata.clone(),
            level: level.clone(),
            status_message: status_message.clone(),
            version: version.clone(),
            environment: environment.clone(),
            model: model.clone(),
            model_parameters: model_parameters.clone(),
            usage: usage.clone(),
            cost: cost.clone(),
            prompt_name: prompt_name.clone(),
            prompt_version: *prompt_version,
            app_root: *app_root,
        }
    }
}

/// What a score points at. Exactly one target, so "a score on nothing" cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreTarget {
    Trace {
        trace_id: String,
        observation_id: Option<String>,
    },
    Session {
        session_id: String,
    },
    DatasetRun {
        dataset_run_id: String,
    },
}

/// A score's value, shaped by its data type so a categorical score cannot lack its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScoreValue {
    Numeric(f64),
    Boolean(bool),
    Categorical { label: String, value: f64 },
    Text(String),
    Correction(String),
}

impl ScoreValue {
    pub fn data_type(&self) -> ScoreDataType {
        match self {
            Self::Numeric(_) => ScoreDataType::Numeric,
            Self::Boolean(_) => ScoreDataType::Boolean,
            Self::Categorical { .. } => ScoreDataType::Categorical,
            Self::Text(_) => ScoreDataType::Text,
            Self::Correction(_) => ScoreDataType::Correction,
        }
    }

    /// Langfuse's numeric `value` column.
    pub fn numeric(&self) -> f64 {
        match self {
            Self::Numeric(v) => *v,
            Self::Boolean(b) => f64::from(u8::from(*b)),
            Self::Categorical { value, .. } => *value,
            Self::Text(_) | Self::Correction(_) => 0.0,
        }
    }

    /// Langfuse's `stringValue` column.
    pub fn string(&self) -> Option<String> {
        match self {
            Self::Numeric(_) => None,
            Self::Boolean(b) => Some(if *b { "True" } else { "False" }.into()),
            Self::Categorical { label, .. } => Some(label.clone()),
            Self::Text(s) | Self::Correction(s) => Some(s.clone()),
        }
    }
}

/// A stored trace, minus its input/output (kept apart, compressed, by the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    pub id: String,
    pub timestamp: Timestamp,
    /// True once an event carried an explicit timestamp; a defaulted one may still be corrected.
    #[serde(default)]
    pub timestamp_explicit: bool,
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub release: Option<String>,
    pub version: Option<String>,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub public: bool,
    pub bookmarked: bool,
    pub environment: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Envelope time of the newest event merged so far (Langfuse's "later event wins" clock).
    pub last_event: Timestamp,
}

/// A stored observation, minus its input/output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationRecord {
    pub id: String,
    pub trace_id: String,
    #[serde(rename = "type")]
    pub kind: ObservationType,
    pub parent_observation_id: Option<String>,
    pub name: Option<String>,
    pub start_time: Timestamp,
    #[serde(default)]
    pub start_time_explicit: bool,
    pub end_time: Option<Timestamp>,
    pub completion_start_time: Option<Timestamp>,
    pub metadata: Map<String, Value>,
    pub level: Level,
    pub status_message: Option<String>,
    pub version: Option<String>,
    pub environment: String,
    pub model: Option<String>,
    pub model_parameters: Option<Map<String, Value>>,
    pub provided_usage: Option<UsageMap>,
    pub provided_cost: Option<CostMap>,
    /// Usage after resolution (provided, or counted by a tokenizer).
    #[serde(default)]
    pub usage_details: UsageMap,
    /// Costs after resolution (provided, or usage × matched price).
    #[serde(default)]
    pub cost_details: CostMap,
    #[serde(default)]
    pub pricing: Option<PricingRef>,
    /// True when `usage_details` was counted by a tokenizer rather than reported.
    #[serde(default)]
    pub usage_estimated: bool,
    pub prompt_name: Option<String>,
    pub prompt_version: Option<i64>,
    /// Marked as the root of its trace by the SDK (kept even with a dangling parent id).
    #[serde(default)]
    pub app_root: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_event: Timestamp,
}

impl ObservationRecord {
    /// Langfuse's `isRootObservation`: no physical parent, or marked as root by the SDK.
    pub fn is_root(&self) -> bool {
        self.parent_observation_id.is_none() || self.app_root
    }
}

/// Which price was used to compute an observation's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricingRef {
    pub model_id: String,
    pub tier_id: Option<String>,
    pub tier_name: Option<String>,
    /// Default-tier prices per unit for `input`, `output`, `total`, for Langfuse's read shape.
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    pub total_price: Option<f64>,
}

impl ObservationRecord {
    /// A fresh record for an id seen for the first time; every field is filled by the merge.
    pub fn empty(patch: &ObservationPatch, trace_id: String, event_time: Timestamp) -> Self {
        Self {
            id: patch.id.clone(),
            trace_id,
            kind: patch.kind,
            parent_observation_id: None,
            name: None,
            start_time: event_time,
            start_time_explicit: false,
            end_time: None,
            completion_start_time: None,
            metadata: Map::new(),
            level: Level::Default,
            status_message: None,
            version: None,
            environment: normalize_environment(None),
            model: None,
            model_parameters: None,
            provided_usage: None,
            provided_cost: None,
            usage_details: UsageMap::new(),
            cost_details: CostMap::new(),
            pricing: None,
            usage_estimated: false,
            prompt_name: None,
            prompt_version: None,
            app_root: false,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            last_event: Timestamp::MIN,
        }
    }

    /// Applies a patch whose envelope time is `event_time`. Returns nothing: the store
    /// re-prices and re-indexes afterwards from the merged record.
    pub fn merge(&mut self, patch: ObservationPatch, event_time: Timestamp) {
        let newer = event_time >= self.last_event;
        // Creates and OTel spans may say what the type is; updates repeat it. The latest wins.
        if newer {
            self.kind = patch.kind;
        }
        if let Some(start) = patch.start_time {
            // Immutable once explicitly set, except that the earliest event's value wins.
            if !self.start_time_explicit || (!newer && start < self.start_time) {
                self.start_time = start;
                self.start_time_explicit = true;
            }
        } else if !self.start_time_explicit && event_time < self.start_time {
            self.start_time = event_time;
        }
        if patch.environment.is_some() && (self.last_event == Timestamp::MIN || !newer) {
            self.environment = normalize_environment(patch.environment.as_deref());
        }
        fill(
            &mut self.parent_observation_id,
            patch.parent_observation_id,
            newer,
        );
        patch.name.apply_to(&mut self.name, newer);
        fill(&mut self.end_time, patch.end_time, newer);
        fill(
            &mut self.completion_start_time,
            patch.completion_start_time,
            newer,
        );
        if let Some(m) = patch.metadata {
            merge_metadata(&mut self.metadata, m, newer);
        }
        let mut level = Some(self.level);
        patch.level.apply_to(&mut level, newer);
        self.level = level.unwrap_or_default();
        fill(&mut self.status_message, patch.status_message, newer);
        fill(&mut self.version, patch.version, newer);
        patch.model.apply_to(&mut self.model, newer);
        fill_nonempty_map(&mut self.model_parameters, patch.model_parameters, newer);
        fill_nonempty_map(&mut self.provided_usage, patch.usage, newer);
        fill_nonempty_map(&mut self.provided_cost, patch.cost, newer);
        fill(&mut self.prompt_name, patch.prompt_name, newer);
        fill(&mut self.prompt_version, patch.prompt_version, newer);
        self.app_root |= patch.app_root;
        if let Some(end) = self.end_time
            && end < self.start_time
        {
            self.end_time = Some(self.start_time);
        }
        if newer {
            self.last_event = event_time;
        }
        self.updated_at = Timestamp::now();
    }
}

impl TraceRecord {
    pub fn empty(id: String, event_time: Timestamp) -> Self {
        Self {
            id,
            timestamp: event_time,
            timestamp_explicit: false,
            name: None,
            user_id: None,
            session_id: None,
            release: None,
            version: None,
            metadata: Map::new(),
            tags: Vec::new(),
            public: false,
            bookmarked: false,
            environment: normalize_environment(None),
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            last_event: Timestamp::MIN,
        }
    }

    pub fn merge(&mut self, patch: TracePatch, event_time: Timestamp) {
        let first = self.last_event == Timestamp::MIN;
        let newer = event_time >= self.last_event;
        if let Some(ts) = patch.timestamp {
            if !self.timestamp_explicit || (!newer && ts < self.timestamp) {
                self.timestamp = ts;
                self.timestamp_explicit = true;
            }
        } else if !self.timestamp_explicit && event_time < self.timestamp {
            self.timestamp = event_time;
        }
        if patch.environment.is_some() && (first || !newer) {
            self.environment = normalize_environment(patch.environment.as_deref());
        }
        patch.name.apply_to(&mut self.name, newer);
        patch.user_id.apply_to(&mut self.user_id, newer);
        patch.session_id.apply_to(&mut self.session_id, newer);
        patch.release.apply_to(&mut self.release, newer);
        patch.version.apply_to(&mut self.version, newer);
        if let Some(m) = patch.metadata {
            merge_metadata(&mut self.metadata, m, newer);
        }
        for tag in patch.tags {
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self.tags.sort();
        if let Some(p) = patch.public
            && newer
        {
            self.public = p;
        }
        if newer {
            self.last_event = event_time;
        }
        self.updated_at = Timestamp::now();
    }
}

fn fill<T>(slot: &mut Option<T>, value: Option<T>, newer: bool) {
    if let Some(v) = value
        && (newer || slot.is_none())
    {
        *slot = Some(v);
    }
}

/// Like `fill`, but an empty map never overwrites (Langfuse: `{}` usage means "no usage").
fn fill_nonempty_map<M: MapLen>(slot: &mut Option<M>, value: Option<M>, newer: bool) {
    if let Some(v) = value
        && !v.map_is_empty()
    {
        fill(slot, Some(v), newer);
    }
}

/// Lets `fill_nonempty_map` serve both ordered maps and JSON objects.
pub trait MapLen {
    fn map_is_empty(&self) -> bool;
}
impl<V> MapLen for BTreeMap<String, V> {
    fn map_is_empty(&self) -> bool {
        self.is_empty()
    }
}
impl MapLen for Map<String, Value> {
    fn map_is_empty(&self) -> bool {
        self.is_empty()
    }
}

/// A stored score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub id: String,
    pub target: ScoreTarget,
    pub name: String,
    pub value: ScoreValue,
    pub source: ScoreSource,
    pub comment: Option<String>,
    pub metadata: Value,
    pub config_id: Option<String>,
    pub queue_id: Option<String>,
    pub author_user_id: Option<String>,
    pub environment: String,
    pub timestamp: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ScoreRecord {
    pub fn trace_id(&self) -> Option<&str> {
        match &self.target {
            ScoreTarget::Trace { trace_id, .. } => Some(trace_id),
            _ => None,
        }
    }

    pub fn observation_id(&self) -> Option<&str> {
        match &self.target {
            ScoreTarget::Trace { observation_id, .. } => observation_id.as_deref(),
            _ => None,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.target {
            ScoreTarget::Session { session_id } => Some(session_id),
            _ => None,
        }
    }

    pub fn dataset_run_id(&self) -> Option<&str> {
        match &self.target {
            ScoreTarget::DatasetRun { dataset_run_id } => Some(dataset_run_id),
            _ => None,
        }
    }
}

/// One normalised write, whichever path it came in by.
// Boxing the patches would change the shape every ingestion path builds; changes are short-lived
// and few per request, so the size difference costs nothing worth that churn.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Trace(TracePatch),
    Observation(ObservationPatch),
    Score(Box<ScoreRecord>),
}

/// A change together with the envelope time that orders it against other changes.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedChange {
    pub at: Timestamp,
    pub change: Change,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_normalised_like_langfuse() {
        assert_eq!(normalize_environment(Some("Production")), "production");
        assert_eq!(normalize_environment(Some("langfuse-prod")), "prod");
        assert_eq!(normalize_environment(Some("my env")), "default");
        assert_eq!(normalize_environment(None), "default");
        assert_eq!(normalize_environment(Some("")), "default");
    }

    #[test]
    fn older_event_fills_gaps_but_never_overwrites() {
        let t = |s| Timestamp::from_micros(s);
        let mut rec = TraceRecord::empty("t".into(), t(10));
        rec.merge(
            TracePatch {
                id: "t".into(),
                name: Patch::Set("new".into()),
                ..Default::default()
            },
            t(10),
        );
        rec.merge(
            TracePatch {
                id: "t".into(),
                name: Patch::Set("old".into()),
                user_id: Patch::Set("u".into()),
                ..Default::default()
            },
            t(5),
        );
        assert_eq!(rec.name.as_deref(), Some("new"));
        assert_eq!(rec.user_id.as_deref(), Some("u"));
        // A newer explicit null clears.
        rec.merge(
            TracePatch {
                id: "t".into(),
                name: Patch::Clear,
                ..Default::default()
            },
            t(20),
        );
        assert_eq!(rec.name, None);
    }

    #[test]
    fn update_before_create_keeps_the_create_start_time() {
        let t = Timestamp::from_micros;
        let mut upd = ObservationPatch::new("o", ObservationType::Generation);
        upd.end_time = Some(t(300));
        let mut rec = ObservationRecord::empty(&upd, "tr".into(), t(300));
        rec.merge(upd, t(300));
        let mut create = ObservationPatch::new("o", ObservationType::Generation);
        create.start_time = Some(t(100));
        create.name = Patch::Set("gen".into());
        rec.merge(create, t(100));
        assert_eq!(rec.start_time, t(100));
        assert_eq!(rec.end_time, Some(t(300)));
        assert_eq!(rec.name.as_deref(), Some("gen"));
    }

    #[test]
    fn metadata_merges_and_wraps_scalars() {
        let mut m = Map::new();
        merge_metadata(&mut m, serde_json::json!({"a": 1}), true);
        merge_metadata(&mut m, serde_json::json!({"b": 2}), true);
        merge_metadata(&mut m, serde_json::json!("x"), true);
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a": 1, "b": 2, "metadata": "x"})
        );
    }
}
