//! The record-scan side of metrics queries: for queries the rollups cannot answer (other
//! dimensions, several dimensions at once, min/max, score views), bounded by `SCAN_CAP`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::agg::{Agg, usd};
use super::query::{
    Group, Groups, Query, QueryError, SCAN_CAP, Stat, View, filter_keeps, group_key,
};
use crate::record::{ObservationRecord, ScoreDataType, ScoreRecord, TraceRecord};
use crate::store::{Store, StoreError, tables};
use crate::time::Timestamp;

/// One scanned record with what it needs from its trace.
enum Item<'a> {
    Obs(&'a ObservationRecord, Option<&'a TraceRecord>),
    Trace(&'a TraceRecord, &'a TraceFacts),
    Score(&'a ScoreRecord, Option<&'a TraceRecord>),
}

/// Trace measures that come from its observations and scores.
#[derive(Default)]
struct TraceFacts {
    totals: Agg,
    latency_ms: Option<f64>,
    scores: usize,
}

fn s(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |x| Value::String(x.to_string()))
}

fn month(t: Timestamp) -> Value {
    Value::String(t.to_iso()[..7].to_string())
}

fn ms(later: Timestamp, earlier: Timestamp) -> f64 {
    (later.micros() - earlier.micros()) as f64 / 1000.0
}

impl Item<'_> {
    fn time(&self) -> Timestamp {
        match self {
            Item::Obs(o, _) => o.start_time,
            Item::Trace(t, _) => t.timestamp,
            Item::Score(sc, _) => sc.timestamp,
        }
    }

    fn field(&self, name: &str) -> Value {
        match self {
            Item::Obs(o, t) => match name {
                "id" => json!(o.id),
                "traceId" => json!(o.trace_id),
                "environment" => json!(o.environment),
                "parentObservationId" => s(o.parent_observation_id.as_deref()),
                "type" => json!(o.kind.as_str()),
                "name" => s(o.name.as_deref()),
                "level" => json!(o.level.as_str()),
                "version" => s(o.version.as_deref()),
                "providedModelName" => s(o.model.as_deref()),
                "promptName" => s(o.prompt_name.as_deref()),
                "promptVersion" => o
                    .prompt_version
                    .map_or(Value::Null, |v| json!(v.to_string())),
                "startTimeMonth" => month(o.start_time),
                "isRootObservation" => json!(o.parent_observation_id.is_none()),
                "traceName" => s(t.and_then(|t| t.name.as_deref())),
                "userId" => s(t.and_then(|t| t.user_id.as_deref())),
                "sessionId" => s(t.and_then(|t| t.session_id.as_deref())),
                "release" | "traceRelease" => s(t.and_then(|t| t.release.as_deref())),
                "traceVersion" => s(t.and_then(|t| t.version.as_deref())),
                "tags" => json!(t.map(|t| t.tags.clone()).unwrap_or_default()),
                _ => Value::Null,
            },
            Item::Trace(t, _) => match name {
                "id" => json!(t.id),
                "name" => s(t.name.as_deref()),
                "tags" => json!(t.tags),
                "userId" => s(t.user_id.as_deref()),
                "sessionId" => s(t.session_id.as_deref()),
                "release" => s(t.release.as_deref()),
                "version" => s(t.version.as_deref()),
                "environment" => json!(t.environment),
                "timestampMonth" => month(t.timestamp),
                _ => Value::Null,
            },
            Item::Score(sc, t) => match name {
                "id" => json!(sc.id),
                "name" => json!(sc.name),
                "source" => json!(sc.source.as_str()),
                "dataType" => json!(sc.value.data_type().as_str()),
                "configId" => s(sc.config_id.as_deref()),
                "environment" => json!(sc.environment),
                "traceId" => s(sc.trace_id()),
                "observationId" => s(sc.observation_id()),
                "sessionId" => s(sc.session_id().or(t.and_then(|t| t.session_id.as_deref()))),
                "value" => json!(sc.value.numeric()),
                "stringValue" => s(sc.value.string().as_deref()),
                "booleanValue" => json!(sc.value.numeric() != 0.0),
                "timestampMonth" => month(sc.timestamp),
                "timestampDay" => json!(sc.timestamp.date()),
                "traceName" => s(t.and_then(|t| t.name.as_deref())),
                "userId" => s(t.and_then(|t| t.user_id.as_deref())),
                "tags" => json!(t.map(|t| t.tags.clone()).unwrap_or_default()),
                _ => Value::Null,
            },
        }
    }

    fn measure(&self, name: &str) -> Option<f64> {
        match self {
            Item::Obs(o, _) => {
                let a = Agg::of_observation(o);
                let secs = |from: Option<Timestamp>| -> Option<f64> {
                    let d = ms(o.end_time?, from?) / 1000.0;
                    (d > 0.0).then_some(d)
                };
                match name {
                    "count" => Some(1.0),
                    "latency" => o.end_time.map(|e| ms(e, o.start_time)),
                    "streamingLatency" => Some(ms(o.end_time?, o.completion_start_time?)),
                    "timeToFirstToken" => o.completion_start_time.map(|c| ms(c, o.start_time)),
                    "inputTokens" => Some(a.usage_containing("input") as f64),
                    "outputTokens" => Some(a.usage_containing("output") as f64),
                    "totalTokens" => Some(a.usage_key("total") as f64),
                    "outputTokensPerSecond" => {
                        Some(a.usage_containing("output") as f64 / secs(o.completion_start_time)?)
                    }
                    "tokensPerSecond" => {
                        Some(a.usage_key("total") as f64 / secs(Some(o.start_time))?)
                    }
                    "inputCost" => Some(usd(a.input_cost)),
                    "outputCost" => Some(usd(a.output_cost)),
                    "totalCost" => o.cost_details.get("total").copied(),
                    "unpricedCount" => Some(a.unpriced as f64),
                    _ => None,
                }
            }
            Item::Trace(_, f) => match name {
                "count" => Some(1.0),
                "observationsCount" => Some(f.totals.observations as f64),
                "scoresCount" => Some(f.scores as f64),
                "latency" => f.latency_ms,
                "totalTokens" => Some(f.totals.usage_key("total") as f64),
                "totalCost" => Some(usd(f.totals.total_cost)),
                _ => None,
            },
            Item::Score(sc, _) => match name {
                "count" => Some(1.0),
                "value" => Some(sc.value.numeric()),
                _ => None,
            },
        }
    }
}

/// Array filters (tags) by Langfuse's arrayOptions operators; everything else by value.
fn keeps(f: &super::query::Filter, v: &Value) -> bool {
    let Value::Array(have) = v else {
        return filter_keeps(f, v);
    };
    let want: Vec<&str> = match &f.value {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        Value::String(x) => vec![x.as_str()],
        _ => Vec::new(),
    };
    let has = |w: &str| have.iter().any(|h| h.as_str() == Some(w));
    match f.operator.as_str() {
        "any of" => want.iter().any(|w| has(w)),
        "all of" => want.iter().all(|w| has(w)),
        "none of" => !want.iter().any(|w| has(w)),
        _ => false,
    }
}

/// Dimension values of one item, one combination per element of an array dimension (Langfuse
/// explodes tags when grouping by them).
fn combinations(item: &Item<'_>, dims: &[String]) -> Vec<Vec<Value>> {
    let mut out = vec![Vec::new()];
    for d in dims {
        let values = match item.field(d) {
            Value::Array(a) if !a.is_empty() => a,
            Value::Array(_) => vec![Value::Null],
            v => vec![v],
        };
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    out
}

fn too_broad(view: View) -> QueryError {
    QueryError::TooBroad(match view {
        View::Observations => {
            "providedModelName, name or type (with sum, avg, count or percentiles)"
        }
        View::Traces => "name or userId (with sum, avg or count)",
        _ => "nothing for score views: narrow the time range",
    })
}

pub fn run(
    store: &Store,
    project: &str,
    q: &Query,
    from: i64,
    to: i64,
) -> Result<Groups, QueryError> {
    let mut groups = Groups::new();
    if from >= to {
        return Ok(groups);
    }
    let mut traces: HashMap<String, Option<TraceRecord>> = HashMap::new();
    let mut trace_of = |id: &str| -> Result<Option<TraceRecord>, StoreError> {
        if let Some(t) = traces.get(id) {
            return Ok(t.clone());
        }
        let t = store.trace(project, id)?;
        traces.insert(id.to_string(), t.clone());
        Ok(t)
    };
    let mut add = |item: &Item<'_>| {
        let time_col = q.view.time_column();
        let kept = q
            .filters
            .iter()
            .filter(|f| f.column != time_col)
            .all(|f| keeps(f, &item.field(&f.column)));
        if !kept {
            return;
        }
        let bucket = q.granularity.map(|g| g.truncate(item.time().micros()));
        let values: Vec<Option<f64>> = q.metrics.iter().map(|m| item.measure(&m.measure)).collect();
        for dims in combinations(item, &q.dimensions) {
            let group = groups
                .entry((group_key(&dims), bucket))
                .or_insert_with(|| Group {
                    dims,
                    stats: vec![Stat::default(); q.metrics.len()],
                });
            for (stat, v) in group.stats.iter_mut().zip(&values) {
                match v {
                    Some(v) => stat.push(*v),
                    // Present the group even when the measure has no value here.
                    None => {
                        stat.values.get_or_insert_with(Vec::new);
                    }
                }
            }
        }
    };
    match q.view {
        View::Observations => {
            let obs = store
                .observations_between(project, from, to, SCAN_CAP)?
                .ok_or_else(|| too_broad(q.view))?;
            let needs_trace = q
                .dimensions
                .iter()
                .chain(q.filters.iter().map(|f| &f.column))
                .any(|c| {
                    matches!(
                        c.as_str(),
                        "traceName"
                            | "userId"
                            | "sessionId"
                            | "release"
                            | "traceRelease"
                            | "traceVersion"
                            | "tags"
                    )
                });
            for o in &obs {
                let t = if needs_trace {
                    trace_of(&o.trace_id)?
                } else {
                    None
                };
                add(&Item::Obs(o, t.as_ref()));
            }
        }
        View::Traces => {
            let list = store
                .traces_between(project, from, to, SCAN_CAP)?
                .ok_or_else(|| too_broad(q.view))?;
            let wants = |m: &str| q.metrics.iter().any(|x| x.measure == m);
            let tx = store.read_tx()?;
            let rollups = tx.open_table(tables::TRACE_ROLLUPS)?;
            for t in &list {
                let totals = super::rollup::TraceRollup::get(&rollups, project, &t.id)?.totals;
                let latency_ms = if wants("latency") {
                    let summaries = store.trace_summaries(project, &t.id)?;
                    (!summaries.is_empty())
                        .then(|| crate::api::shape::trace_metrics(&summaries).0 * 1000.0)
                } else {
                    None
                };
                let scores = if wants("scoresCount") {
                    store.trace_scores(project, &t.id)?.len()
                } else {
                    0
                };
                let facts = TraceFacts {
                    totals,
                    latency_ms,
                    scores,
                };
                add(&Item::Trace(t, &facts));
            }
        }
        View::ScoresNumeric | View::ScoresBoolean | View::ScoresCategorical => {
            let list = store
                .scores_between(project, from, to, SCAN_CAP)?
                .ok_or_else(|| too_broad(q.view))?;
            for sc in &list {
                let fits = matches!(
                    (q.view, sc.value.data_type()),
                    (
                        View::ScoresNumeric,
                        ScoreDataType::Numeric | ScoreDataType::Boolean
                    ) | (View::ScoresBoolean, ScoreDataType::Boolean)
                        | (View::ScoresCategorical, ScoreDataType::Categorical)
                );
                if !fits {
                    continue;
                }
                let t = match sc.trace_id() {
                    Some(id) => trace_of(id)?,
                    None => None,
                };
                add(&Item::Score(sc, t.as_ref()));
            }
        }
    }
    Ok(groups)
}
