//! Langfuse's metrics query (`GET /api/public/metrics?query=…` and `/v2/metrics`): parsing,
//! planning (rollups when the query fits them, a bounded record scan otherwise) and the rows
//! Langfuse answers with.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::agg::{Agg, Hist, usd};
use super::rollup::{self, DAY_US, Dim, Gran, HOUR_US};
use super::scan;
use crate::store::{Store, StoreError, tables};
use crate::time::Timestamp;

/// Most records a query may scan when the rollups cannot answer it.
pub const SCAN_CAP: usize = 200_000;
/// Langfuse v2's default row limit.
const V2_ROW_LIMIT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "this query needs a scan of more than {SCAN_CAP} records; narrow fromTimestamp/toTimestamp, or group and filter only by environment plus one of {0}"
    )]
    TooBroad(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::TableError> for QueryError {
    fn from(e: redb::TableError) -> Self {
        QueryError::Store(e.into())
    }
}

impl From<redb::StorageError> for QueryError {
    fn from(e: redb::StorageError) -> Self {
        QueryError::Store(e.into())
    }
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Traces,
    Observations,
    ScoresNumeric,
    ScoresBoolean,
    ScoresCategorical,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    Sum,
    Avg,
    Count,
    Max,
    Min,
    Quantile(f64),
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub measure: String,
    pub aggregation: Aggregation,
    /// `<aggregation>_<measure>`, the key Langfuse answers with.
    pub alias: String,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub column: String,
    pub operator: String,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub view: View,
    pub dimensions: Vec<String>,
    pub metrics: Vec<Metric>,
    pub filters: Vec<Filter>,
    pub granularity: Option<Granularity>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub order: Vec<(String, bool)>,
    pub bins: usize,
    pub row_limit: Option<usize>,
}

/// Measures whose values are integers: Langfuse (ClickHouse) answers their counts, sums,
/// minima and maxima as strings.
const INTEGER_MEASURES: [&str; 11] = [
    "count",
    "latency",
    "streamingLatency",
    "timeToFirstToken",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "observationsCount",
    "scoresCount",
    "countScores",
    "unpricedCount",
];

impl View {
    fn parse(s: &str, version: Version) -> Result<View, QueryError> {
        Ok(match (s, version) {
            ("traces", Version::V1) => View::Traces,
            ("traces", Version::V2) => {
                return Err(invalid(
                    "the traces view is not available in v2 metrics; use the observations view or /api/public/metrics",
                ));
            }
            ("observations", _) => View::Observations,
            ("scores-numeric", _) => View::ScoresNumeric,
            ("scores-boolean", _) => View::ScoresBoolean,
            ("scores-categorical", _) => View::ScoresCategorical,
            (other, _) => {
                return Err(invalid(format!(
                    "unknown view {other:?}; use traces, observations, scores-numeric, scores-boolean or scores-categorical"
                )));
            }
        })
    }

    /// Dimensions and measures the view knows (Langfuse's data model, the parts we serve).
    pub fn dimensions(self) -> &'static [&'static str] {
        match self {
            View::Traces => &[
                "id",
                "name",
                "tags",
                "userId",
                "sessionId",
                "release",
                "version",
                "environment",
                "timestampMonth",
            ],
            View::Observations => &[
                "id",
                "traceId",
                "traceName",
                "environment",
                "parentObservationId",
                "type",
                "name",
                "level",
                "version",
                "tags",
                "release",
                "providedModelName",
                "promptName",
                "promptVersion",
                "userId",
                "sessionId",
                "traceRelease",
                "traceVersion",
                "startTimeMonth",
                "isRootObservation",
            ],
            _ => &[
                "id",
                "name",
                "source",
                "dataType",
                "configId",
                "environment",
                "traceName",
                "tags",
                "userId",
                "sessionId",
                "traceId",
                "observationId",
                "value",
                "stringValue",
                "booleanValue",
                "timestampMonth",
                "timestampDay",
            ],
        }
    }

    pub fn measures(self) -> &'static [&'static str] {
        match self {
            View::Traces => &[
                "count",
                "observationsCount",
                "scoresCount",
                "latency",
                "totalTokens",
                "totalCost",
            ],
            View::Observations => &[
                "count",
                "latency",
                "streamingLatency",
                "timeToFirstToken",
                "inputTokens",
                "outputTokens",
                "totalTokens",
                "outputTokensPerSecond",
                "tokensPerSecond",
                "inputCost",
                "outputCost",
                "totalCost",
                "unpricedCount",
            ],
            View::ScoresCategorical => &["count"],
            _ => &["count", "value"],
        }
    }

    /// The record time the view filters and buckets by.
    pub fn time_column(self) -> &'static str {
        match self {
            View::Observations => "startTime",
            _ => "timestamp",
        }
    }
}

fn granularity(s: &str, from: Timestamp, to: Timestamp) -> Result<Granularity, QueryError> {
    Ok(match s {
        "minute" => Granularity::Minute,
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        "week" => Granularity::Week,
        "month" => Granularity::Month,
        // Langfuse's choice for "about 50 buckets".
        "auto" => {
            let hours = (to.micros() - from.micros()) as f64 / HOUR_US as f64;
            match hours {
                h if h < 2.0 => Granularity::Minute,
                h if h < 72.0 => Granularity::Hour,
                h if h < 1440.0 => Granularity::Day,
                h if h < 8760.0 => Granularity::Week,
                _ => Granularity::Month,
            }
        }
        other => {
            return Err(invalid(format!(
                "unknown granularity {other:?}; use auto, minute, hour, day, week or month"
            )));
        }
    })
}

impl Granularity {
    /// Start of the bucket `micros` falls in (weeks start on Monday, UTC).
    pub fn truncate(self, micros: i64) -> i64 {
        match self {
            Granularity::Minute => micros.div_euclid(60_000_000) * 60_000_000,
            Granularity::Hour => Gran::Hour.bucket(micros),
            Granularity::Day => Gran::Day.bucket(micros),
            // 1970-01-01 was a Thursday: shift so weeks start on Monday.
            Granularity::Week => {
                let shift = 3 * DAY_US;
                (micros + shift).div_euclid(7 * DAY_US) * 7 * DAY_US - shift
            }
            Granularity::Month => {
                let Ok(dt) =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
                else {
                    return Gran::Day.bucket(micros);
                };
                let first = dt
                    .date()
                    .replace_day(1)
                    .map(|d| d.midnight().assume_utc())
                    .unwrap_or(dt);
                i64::try_from(first.unix_timestamp_nanos() / 1000).unwrap_or(micros)
            }
        }
    }

    fn next(self, bucket: i64) -> i64 {
        match self {
            Granularity::Minute => bucket + 60_000_000,
            Granularity::Hour => bucket + HOUR_US,
            Granularity::Day => bucket + DAY_US,
            Granularity::Week => bucket + 7 * DAY_US,
            // Any day in the next month, truncated.
            Granularity::Month => Granularity::Month.truncate(bucket + 32 * DAY_US),
        }
    }
}

/// Parses the `query` parameter.
/// A string member every `what` (dimension, metric) of a query must have.
fn required<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a str, QueryError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("each {what} needs a {key}")))
}

fn one_of(value: &str, allowed: &[&str], what: &str) -> Result<(), QueryError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {what} {value}; must be one of {}",
            allowed.join(", ")
        )))
    }
}

pub fn parse(raw: &str, version: Version) -> Result<Query, QueryError> {
    let v: Value =
        serde_json::from_str(raw).map_err(|e| invalid(format!("query is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("query must be a JSON object"))?;
    let str_of = |k: &str| obj.get(k).and_then(Value::as_str);
    let view = View::parse(
        str_of("view").ok_or_else(|| invalid("query.view is required"))?,
        version,
    )?;
    let time = |k: &str| -> Result<Timestamp, QueryError> {
        let s = str_of(k).ok_or_else(|| invalid(format!("query.{k} is required")))?;
        Timestamp::parse(s)
            .ok_or_else(|| invalid(format!("query.{k} must be an ISO-8601 datetime, got {s:?}")))
    };
    let (from, to) = (time("fromTimestamp")?, time("toTimestamp")?);
    if to <= from {
        return Err(invalid("query.toTimestamp must be after fromTimestamp"));
    }
    let list = |k: &str| {
        obj.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut dimensions = Vec::new();
    for d in list("dimensions") {
        let field = required(&d, "field", "dimension")?;
        one_of(field, view.dimensions(), "dimension")?;
        dimensions.push(field.to_string());
    }
    let mut metrics = Vec::new();
    for m in list("metrics") {
        let measure = required(&m, "measure", "metric")?;
        let agg = required(&m, "aggregation", "metric")?;
        one_of(measure, view.measures(), "metric")?;
        let aggregation = match agg {
            "sum" => Aggregation::Sum,
            "avg" => Aggregation::Avg,
            "count" => Aggregation::Count,
            "max" => Aggregation::Max,
            "min" => Aggregation::Min,
            "p50" => Aggregation::Quantile(0.5),
            "p75" => Aggregation::Quantile(0.75),
            "p90" => Aggregation::Quantile(0.9),
            "p95" => Aggregation::Quantile(0.95),
            "p99" => Aggregation::Quantile(0.99),
            "histogram" => Aggregation::Histogram,
            other => {
                return Err(invalid(format!(
                    "invalid aggregation {other:?}; use sum, avg, count, max, min, p50, p75, p90, p95, p99 or histogram"
                )));
            }
        };
        metrics.push(Metric {
            measure: measure.to_string(),
            aggregation,
            alias: format!("{agg}_{measure}"),
        });
    }
    if metrics.is_empty() {
        return Err(invalid("query.metrics needs at least one metric"));
    }
    let mut filters = Vec::new();
    for f in list("filters") {
        let column = f
            .get("column")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("each filter needs a column"))?;
        let operator = f
            .get("operator")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("each filter needs an operator"))?;
        if column != view.time_column() && !view.dimensions().contains(&column) {
            return Err(invalid(format!(
                "invalid filter column {column}; must be one of {} or {}",
                view.dimensions().join(", "),
                view.time_column()
            )));
        }
        filters.push(Filter {
            column: column.to_string(),
            operator: operator.to_string(),
            value: f.get("value").cloned().unwrap_or(Value::Null),
        });
    }
    let granularity = match obj.get("timeDimension") {
        None | Some(Value::Null) => None,
        Some(t) => Some(granularity(
            t.get("granularity")
                .and_then(Value::as_str)
                .unwrap_or("auto"),
            from,
            to,
        )?),
    };
    let mut order = Vec::new();
    for o in list("orderBy") {
        let field = o
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("each orderBy needs a field"))?;
        let known = field == "time_dimension" && granularity.is_some()
            || dimensions.iter().any(|d| d == field)
            || metrics.iter().any(|m| m.alias == field);
        if !known {
            return Err(invalid(format!(
                "invalid orderBy field {field}; must be one of the dimension or metric fields"
            )));
        }
        let desc = match o.get("direction").and_then(Value::as_str).unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(invalid(format!(
                    "orderBy direction must be asc or desc, got {other:?}"
                )));
            }
        };
        order.push((field.to_string(), desc));
    }
    let config = obj.get("config");
    let num = |k: &str| config.and_then(|c| c.get(k)).and_then(Value::as_u64);
    let bins = num("bins").unwrap_or(10);
    if !(1..=100).contains(&bins) {
        return Err(invalid("config.bins must be between 1 and 100"));
    }
    let row_limit = match num("row_limit") {
        Some(n) if (1..=1000).contains(&n) => Some(n as usize),
        Some(_) => return Err(invalid("config.row_limit must be between 1 and 1000")),
        None if version == Version::V2 => Some(V2_ROW_LIMIT),
        None => None,
    };
    Ok(Query {
        view,
        dimensions,
        metrics,
        filters,
        granularity,
        from,
        to,
        order,
        bins: bins as usize,
        row_limit,
    })
}

/// Everything a group knows about one measure: enough for every aggregation. Rollups fill
/// `n`, `sum` and `hist`; scans also keep the values themselves (exact min, max, quantiles).
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub n: u64,
    pub sum: f64,
    pub hist: Option<Hist>,
    pub values: Option<Vec<f64>>,
}

impl Stat {
    pub fn push(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.values.get_or_insert_with(Vec::new).push(v);
    }

    fn value(&self, agg: Aggregation, integer: bool, bins: usize) -> Value {
        let num = |x: f64| -> Value {
            // ClickHouse answers 64-bit integers as strings; Langfuse passes them through.
            if integer && x.fract() == 0.0 && x.abs() < 9.0e15 {
                Value::String(format!("{}", x as i64))
            } else {
                json!(x)
            }
        };
        let values = self.values.as_deref().unwrap_or(&[]);
        match agg {
            Aggregation::Count => Value::String(self.n.to_string()),
            Aggregation::Sum => num(self.sum),
            Aggregation::Avg if self.n == 0 => Value::Null,
            Aggregation::Avg => json!(self.sum / self.n as f64),
            Aggregation::Min => values
                .iter()
                .copied()
                .reduce(f64::min)
                .map_or(Value::Null, num),
            Aggregation::Max => values
                .iter()
                .copied()
                .reduce(f64::max)
                .map_or(Value::Null, num),
            Aggregation::Quantile(q) => match &self.hist {
                Some(h) if self.values.is_none() => {
                    h.quantile_ms(q).map_or(Value::Null, |x| json!(x))
                }
                _ => quantile(values, q).map_or(Value::Null, |x| json!(x)),
            },
            Aggregation::Histogram => match &self.hist {
                Some(h) if self.values.is_none() => hist_bins(h, bins),
                _ => value_bins(values, bins),
            },
        }
    }
}

/// Linear interpolation between closest ranks.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// `[lower, upper, height]` bins of equal width between the smallest and largest value.
fn value_bins(values: &[f64], bins: usize) -> Value {
    let (Some(min), Some(max)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return json!([]);
    };
    let width = (max - min) / bins as f64;
    let mut counts = vec![0u64; bins];
    for v in values {
        let i = if width > 0.0 {
            ((v - min) / width) as usize
        } else {
            0
        };
        counts[i.min(bins - 1)] += 1;
    }
    let out: Vec<Value> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| json!([min + width * i as f64, min + width * (i + 1) as f64, n]))
        .collect();
    Value::Array(out)
}

/// The rollup histogram's logarithmic buckets, merged into at most `bins` bins.
fn hist_bins(h: &Hist, bins: usize) -> Value {
    let filled: Vec<(u8, i64)> = h.buckets.iter().map(|(b, n)| (*b, *n)).collect();
    let per = filled.len().div_ceil(bins.max(1)).max(1);
    let out: Vec<Value> = filled
        .chunks(per)
        .map(|c| {
            let lo = Hist::bounds_ms(c[0].0).0;
            let hi = Hist::bounds_ms(c[c.len() - 1].0).1;
            json!([lo, hi, c.iter().map(|(_, n)| n).sum::<i64>()])
        })
        .collect();
    Value::Array(out)
}

/// One group of the answer: its dimension values and a stat per metric.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub dims: Vec<Value>,
    pub stats: Vec<Stat>,
}

/// Groups by (dimension values, time bucket).
pub type Groups = BTreeMap<(Vec<String>, Option<i64>), Group>;

pub fn group_key(dims: &[Value]) -> Vec<String> {
    dims.iter().map(Value::to_string).collect()
}

/// Runs a query against one project.
pub fn run(store: &Store, project: &str, q: &Query) -> Result<Vec<Value>, QueryError> {
    let (from, to) = time_range(q);
    let groups = match rollup_plan(q) {
        Some(plan) => run_rollups(store, project, q, &plan, from, to)?,
        None => scan::run(store, project, q, from, to)?,
    };
    Ok(rows(q, groups, from, to))
}

/// The range after datetime filters on the view's time column narrowed it.
fn time_range(q: &Query) -> (i64, i64) {
    let (mut from, mut to) = (q.from.micros(), q.to.micros());
    for f in q
        .filters
        .iter()
        .filter(|f| f.column == q.view.time_column())
    {
        let Some(t) = f.value.as_str().and_then(Timestamp::parse) else {
            continue;
        };
        match f.operator.as_str() {
            ">" | ">=" => from = from.max(t.micros()),
            "<" | "<=" => to = to.min(t.micros()),
            _ => {}
        }
    }
    (from, to)
}

/// How a query is answered from rollups: which row kind, and which dimension its value is.
struct RollupPlan {
    dim: Dim,
    /// The query's name for the row value (`providedModelName`, `userId`, ...), if any.
    field: Option<&'static str>,
}

/// Dimensions that rollup rows carry, per view: (query field, row dimension).
fn rollup_fields(view: View) -> &'static [(&'static str, Dim)] {
    match view {
        View::Observations => &[
            ("providedModelName", Dim::Model),
            ("name", Dim::Name),
            ("type", Dim::Type),
        ],
        View::Traces => &[("name", Dim::TraceName), ("userId", Dim::User)],
        _ => &[],
    }
}

/// What each rollup row can say about a measure: (values counted, sum, histogram).
pub fn agg_stat<'a>(view: View, measure: &str, a: &'a Agg) -> Option<(i64, f64, Option<&'a Hist>)> {
    let obs = a.observations;
    Some(match (view, measure) {
        (View::Observations, "count") => (obs, obs as f64, None),
        (View::Observations, "latency") => (
            a.latency.count,
            a.latency.sum_us as f64 / 1000.0,
            Some(&a.latency),
        ),
        (View::Observations, "timeToFirstToken") => {
            (a.ttft.count, a.ttft.sum_us as f64 / 1000.0, Some(&a.ttft))
        }
        (View::Observations, "inputTokens") => (obs, a.usage_containing("input") as f64, None),
        (View::Observations, "outputTokens") => (obs, a.usage_containing("output") as f64, None),
        (View::Observations, "totalTokens") => (obs, a.usage_key("total") as f64, None),
        (View::Observations, "inputCost") => (obs, usd(a.input_cost), None),
        (View::Observations, "outputCost") => (obs, usd(a.output_cost), None),
        (View::Observations, "totalCost") => (a.costed, usd(a.total_cost), None),
        (View::Observations, "unpricedCount") => (obs, a.unpriced as f64, None),
        (View::Traces, "count") => (a.traces, a.traces as f64, None),
        (View::Traces, "observationsCount") => (a.traces, obs as f64, None),
        (View::Traces, "totalTokens") => (a.traces, a.usage_key("total") as f64, None),
        (View::Traces, "totalCost") => (a.traces, usd(a.total_cost), None),
        _ => return None,
    })
}

/// Filter operators the rollup path can apply to a row's value.
const ROLLUP_OPERATORS: [&str; 7] = [
    "=",
    "any of",
    "none of",
    "contains",
    "does not contain",
    "starts with",
    "ends with",
];

fn rollup_plan(q: &Query) -> Option<RollupPlan> {
    if !matches!(q.view, View::Observations | View::Traces) {
        return None;
    }
    if q.granularity == Some(Granularity::Minute) {
        return None;
    }
    let fields = rollup_fields(q.view);
    // Every column the query groups or filters by, except environment and the time column.
    let mut cols: Vec<&str> = q.dimensions.iter().map(String::as_str).collect();
    for f in &q.filters {
        if f.column == q.view.time_column() {
            continue;
        }
        if !ROLLUP_OPERATORS.contains(&f.operator.as_str()) {
            return None;
        }
        cols.push(&f.column);
    }
    cols.retain(|c| *c != "environment");
    cols.sort_unstable();
    cols.dedup();
    let (field, dim) = match cols.as_slice() {
        [] => (
            None,
            if q.view == View::Traces {
                Dim::Trace
            } else {
                Dim::Obs
            },
        ),
        [one] => {
            let (f, d) = fields.iter().find(|(f, _)| f == one)?;
            (Some(*f), *d)
        }
        _ => return None,
    };
    let probe = Agg::default();
    let fits = q.metrics.iter().all(|m| {
        let Some((_, _, hist)) = agg_stat(q.view, &m.measure, &probe) else {
            return false;
        };
        match m.aggregation {
            Aggregation::Sum | Aggregation::Avg | Aggregation::Count => true,
            Aggregation::Quantile(_) | Aggregation::Histogram => hist.is_some(),
            Aggregation::Min | Aggregation::Max => false,
        }
    });
    fits.then_some(RollupPlan { dim, field })
}

/// Whether a filter keeps a value (shared by both plans).
pub fn filter_keeps(f: &Filter, v: &Value) -> bool {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let list: Vec<String> = match &f.value {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
            .collect(),
        Value::String(x) => vec![x.clone()],
        other => vec![other.to_string()],
    };
    let target = list.first().cloned().unwrap_or_default();
    let num = |x: &Value| {
        x.as_f64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
    };
    let cmp = || Some((num(v)?, num(&f.value)?));
    match f.operator.as_str() {
        "=" => match (v, &f.value) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => cmp().map_or(s == target, |(a, b)| a == b),
        },
        "<>" | "!=" => s != target,
        "any of" => list.contains(&s),
        "none of" => !list.contains(&s),
        "contains" => s.contains(&target),
        "does not contain" => !s.contains(&target),
        "starts with" => s.starts_with(&target),
        "ends with" => s.ends_with(&target),
        "is null" => s.is_empty(),
        "is not null" => !s.is_empty(),
        ">" => cmp().is_some_and(|(a, b)| a > b),
        ">=" => cmp().is_some_and(|(a, b)| a >= b),
        "<" => cmp().is_some_and(|(a, b)| a < b),
        "<=" => cmp().is_some_and(|(a, b)| a <= b),
        _ => false,
    }
}

/// (granularity, [from, to)) segments that tile the range with whole rollup buckets: days
/// where whole days fit (unless the answer is hourly), hours at the edges. Buckets overlapping
/// the range count in full.
fn tiles(from: i64, to: i64, hourly: bool) -> Vec<(Gran, i64, i64)> {
    let (h0, h1) = (Gran::Hour.bucket(from), Gran::Hour.bucket(to - 1) + HOUR_US);
    let d0 = Gran::Day.bucket(h0 + DAY_US - 1);
    let d1 = Gran::Day.bucket(h1);
    if hourly || d0 >= d1 {
        return vec![(Gran::Hour, h0, h1)];
    }
    vec![
        (Gran::Hour, h0, d0),
        (Gran::Day, d0, d1),
        (Gran::Hour, d1, h1),
    ]
}

fn run_rollups(
    store: &Store,
    project: &str,
    q: &Query,
    plan: &RollupPlan,
    from: i64,
    to: i64,
) -> Result<Groups, QueryError> {
    let mut groups = Groups::new();
    if from >= to {
        return Ok(groups);
    }
    let tx = store.read_tx()?;
    let table = tx.open_table(tables::ROLLUPS)?;
    let hourly = q.granularity == Some(Granularity::Hour);
    for (gran, a, b) in tiles(from, to, hourly) {
        for row in rollup::rows(&table, project, rollup::kind(plan.dim, gran), a, b)? {
            let field = |name: &str| -> Value {
                let v = if name == "environment" {
                    &row.env
                } else if Some(name) == plan.field {
                    &row.value
                } else {
                    return Value::Null;
                };
                if v.is_empty() {
                    Value::Null
                } else {
                    Value::String(v.clone())
                }
            };
            if !q
                .filters
                .iter()
                .filter(|f| f.column != q.view.time_column())
                .all(|f| filter_keeps(f, &field(&f.column)))
            {
                continue;
            }
            let dims: Vec<Value> = q.dimensions.iter().map(|d| field(d)).collect();
            let bucket = q.granularity.map(|g| g.truncate(row.bucket));
            let group = groups
                .entry((group_key(&dims), bucket))
                .or_insert_with(|| Group {
                    dims,
                    stats: vec![Stat::default(); q.metrics.len()],
                });
            for (stat, m) in group.stats.iter_mut().zip(&q.metrics) {
                if let Some((n, sum, hist)) = agg_stat(q.view, &m.measure, &row.agg) {
                    stat.n += u64::try_from(n).unwrap_or(0);
                    stat.sum += sum;
                    if let Some(h) = hist {
                        let mut acc = stat.hist.take().unwrap_or_default();
                        for (b, c) in &h.buckets {
                            let slot = acc.buckets.entry(*b).or_insert(0);
                            *slot = slot.saturating_add(*c);
                        }
                        acc.count = acc.count.saturating_add(h.count);
                        acc.sum_us = acc.sum_us.saturating_add(h.sum_us);
                        stat.hist = Some(acc);
                    }
                }
            }
        }
    }
    Ok(groups)
}

/// Groups to Langfuse's rows: dimension fields, `time_dimension`, `<agg>_<measure>`; ordered,
/// limited, and with empty time buckets filled when the answer is a plain time series.
fn rows(q: &Query, mut groups: Groups, from: i64, to: i64) -> Vec<Value> {
    if let Some(g) = q.granularity
        && q.order.is_empty()
        && q.dimensions.is_empty()
        && from < to
    {
        let mut b = g.truncate(from);
        while b < to {
            groups
                .entry((Vec::new(), Some(b)))
                .or_insert_with(|| Group {
                    dims: Vec::new(),
                    stats: vec![Stat::default(); q.metrics.len()],
                });
            b = g.next(b);
        }
    }
    let mut out: Vec<Map<String, Value>> = groups
        .into_iter()
        .map(|((_, bucket), g)| {
            let mut m = Map::new();
            for (d, v) in q.dimensions.iter().zip(g.dims) {
                m.insert(d.clone(), v);
            }
            for (metric, stat) in q.metrics.iter().zip(&g.stats) {
                let integer = INTEGER_MEASURES.contains(&metric.measure.as_str());
                m.insert(
                    metric.alias.clone(),
                    stat.value(metric.aggregation, integer, q.bins),
                );
            }
            if let Some(b) = bucket {
                m.insert(
                    "time_dimension".into(),
                    Value::String(Timestamp::from_micros(b).to_iso()),
                );
            }
            m
        })
        .collect();
    let order: Vec<(String, bool)> = if !q.order.is_empty() {
        q.order.clone()
    } else if q.granularity.is_some() {
        vec![("time_dimension".into(), false)]
    } else {
        vec![(q.metrics[0].alias.clone(), true)]
    };
    out.sort_by(|a, b| {
        for (field, desc) in &order {
            let ord = compare(a.get(field), b.get(field));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    if let Some(n) = q.row_limit {
        out.truncate(n);
    }
    out.into_iter().map(Value::Object).collect()
}

/// Numbers (also numeric strings) by value, then text; nulls first.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    let num = |v: Option<&Value>| {
        v.and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok()))
        })
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let s = |v: Option<&Value>| {
                v.map_or(String::new(), |v| {
                    v.as_str().map_or_else(|| v.to_string(), String::from)
                })
            };
            s(a).cmp(&s(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_range_with_days_inside_and_hours_at_the_edges() {
        let t = |d: i64, h: i64| d * DAY_US + h * HOUR_US;
        assert_eq!(
            tiles(t(0, 5) + 7, t(3, 2) + 1, false),
            vec![
                (Gran::Hour, t(0, 5), t(1, 0)),
                (Gran::Day, t(1, 0), t(3, 0)),
                (Gran::Hour, t(3, 0), t(3, 3)),
            ]
        );
        assert_eq!(
            tiles(t(0, 5), t(0, 9), false),
            vec![(Gran::Hour, t(0, 5), t(0, 9))]
        );
        assert_eq!(
            tiles(t(0, 0), t(2, 0), false)[1],
            (Gran::Day, t(0, 0), t(2, 0))
        );
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        // 2026-01-07 (Wednesday) → Monday 2026-01-05; month → 2026-01-01.
        let wed = Timestamp::parse("2026-01-07T10:00:00Z").unwrap().micros();
        let week = Granularity::Week.truncate(wed);
        assert_eq!(
            Timestamp::from_micros(week).to_iso(),
            "2026-01-05T00:00:00.000Z"
        );
        let month = Granularity::Month.truncate(wed);
        assert_eq!(
            Timestamp::from_micros(month).to_iso(),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_micros(Granularity::Month.next(month)).to_iso(),
            "2026-02-01T00:00:00.000Z"
        );
    }

    #[test]
    fn unsupported_queries_are_refused_with_the_reason() {
        let q = |s: &str| parse(s, Version::V2).unwrap_err().to_string();
        assert!(q(r#"{"view":"traces","metrics":[{"measure":"count","aggregation":"count"}],"fromTimestamp":"2026-01-01T00:00:00Z","toTimestamp":"2026-01-02T00:00:00Z"}"#).contains("not available in v2"));
        assert!(q(r#"{"view":"observations","metrics":[{"measure":"nope","aggregation":"count"}],"fromTimestamp":"2026-01-01T00:00:00Z","toTimestamp":"2026-01-02T00:00:00Z"}"#).contains("invalid metric"));
        assert!(q(r#"{"view":"observations","metrics":[],"fromTimestamp":"2026-01-01T00:00:00Z","toTimestamp":"2026-01-02T00:00:00Z"}"#).contains("at least one"));
        assert!(q("not json").contains("not valid JSON"));
    }

    #[test]
    fn plans_use_rollups_only_when_they_fit() {
        let plan = |s: &str| rollup_plan(&parse(s, Version::V1).unwrap()).map(|p| p.dim);
        let base = r#""fromTimestamp":"2026-01-01T00:00:00Z","toTimestamp":"2026-01-08T00:00:00Z""#;
        assert_eq!(
            plan(&format!(
                r#"{{"view":"observations","dimensions":[{{"field":"providedModelName"}},{{"field":"environment"}}],"metrics":[{{"measure":"totalCost","aggregation":"sum"}},{{"measure":"latency","aggregation":"p95"}}],{base}}}"#
            )),
            Some(Dim::Model)
        );
        assert_eq!(
            plan(&format!(
                r#"{{"view":"observations","dimensions":[{{"field":"providedModelName"}},{{"field":"name"}}],"metrics":[{{"measure":"count","aggregation":"count"}}],{base}}}"#
            )),
            None
        );
        assert_eq!(
            plan(&format!(
                r#"{{"view":"observations","metrics":[{{"measure":"latency","aggregation":"max"}}],{base}}}"#
            )),
            None
        );
        assert_eq!(
            plan(&format!(
                r#"{{"view":"traces","dimensions":[{{"field":"userId"}}],"metrics":[{{"measure":"totalCost","aggregation":"sum"}}],{base}}}"#
            )),
            Some(Dim::User)
        );
    }
}
