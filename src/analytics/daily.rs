//! Langfuse's daily metrics (`GET /api/public/metrics/daily`): per UTC day, traces,
//! observations, cost, and usage per model.
//!
//! Without trace filters the answer comes from the day rollups (O(days × models)); with a
//! trace name, user or tags filter, traces are selected through their indexes and their
//! observations summed, bounded by `SCAN_CAP`.

use std::collections::{BTreeMap, BTreeSet};

use super::agg::Agg;
use super::query::{QueryError, SCAN_CAP};
use super::rollup::{self, DAY_US, Dim, Gran, obs_value};
use crate::store::{Store, TraceQuery, Window, tables};
use crate::time::Timestamp;

#[derive(Debug, Clone, Default)]
pub struct DailyQuery {
    pub trace_name: Option<String>,
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub environments: Vec<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// One model's usage on one day. `model` "" = observations without a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDay {
    pub model: String,
    pub agg: Agg,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day {
    /// Start of the UTC day, µs.
    pub day: i64,
    pub traces: i64,
    pub models: Vec<ModelDay>,
}

impl Day {
    pub fn observations(&self) -> i64 {
        self.models
            .iter()
            .map(|m| m.agg.observations)
            .fold(0, i64::saturating_add)
    }

    pub fn total_cost(&self) -> i128 {
        self.models
            .iter()
            .map(|m| m.agg.total_cost)
            .fold(0, i128::saturating_add)
    }

    pub fn unpriced(&self) -> i64 {
        self.models
            .iter()
            .map(|m| m.agg.unpriced)
            .fold(0, i64::saturating_add)
    }
}

/// Days with traces or observations, newest first.
pub fn daily(store: &Store, project: &str, q: &DailyQuery) -> Result<Vec<Day>, QueryError> {
    let by_trace = q.trace_name.is_some() || q.user_id.is_some() || !q.tags.is_empty();
    let days = if by_trace {
        from_records(store, project, q)?
    } else {
        from_rollups(store, project, q)?
    };
    let mut out: Vec<Day> = days
        .into_iter()
        .map(|(day, (traces, models))| Day {
            day,
            traces,
            models: models
                .into_iter()
                .map(|(model, agg)| ModelDay { model, agg })
                .collect(),
        })
        .collect();
    out.reverse();
    Ok(out)
}

type Days = BTreeMap<i64, (i64, BTreeMap<String, Agg>)>;

fn from_rollups(store: &Store, project: &str, q: &DailyQuery) -> Result<Days, QueryError> {
    // Whole days overlapping the range.
    let from = q.from.map_or(i64::MIN, |t| Gran::Day.bucket(t.micros()));
    let to = q.to.map_or(i64::MAX, |t| {
        Gran::Day
            .bucket(t.micros().saturating_sub(1))
            .saturating_add(DAY_US)
    });
    let tx = store.read_tx()?;
    let table = tx.open_table(tables::ROLLUPS)?;
    let env_ok = |env: &str| q.environments.is_empty() || q.environments.iter().any(|e| e == env);
    let mut days = Days::new();
    for row in rollup::rows(
        &table,
        project,
        rollup::kind(Dim::Trace, Gran::Day),
        from,
        to,
    )? {
        if env_ok(&row.env) {
            days.entry(row.bucket).or_default().0 += row.agg.traces;
        }
    }
    for row in rollup::rows(
        &table,
        project,
        rollup::kind(Dim::Model, Gran::Day),
        from,
        to,
    )? {
        if env_ok(&row.env) {
            days.entry(row.bucket)
                .or_default()
                .1
                .entry(row.value)
                .or_default()
                .add(&row.agg);
        }
    }
    Ok(days)
}

fn from_records(store: &Store, project: &str, q: &DailyQuery) -> Result<Days, QueryError> {
    let tq = TraceQuery {
        user_id: q.user_id.clone(),
        name: q.trace_name.clone(),
        tags: q.tags.clone(),
        environments: q.environments.clone(),
        from: q.from,
        to: q.to,
        ..Default::default()
    };
    let page = store.list_traces(
        project,
        &tq,
        Window {
            skip: 0,
            limit: SCAN_CAP,
        },
    )?;
    if page.total as usize > SCAN_CAP {
        return Err(QueryError::TooBroad(
            "no dimension here: narrow fromTimestamp/toTimestamp",
        ));
    }
    let mut days = Days::new();
    let mut traces_of: BTreeMap<(i64, String), BTreeSet<String>> = BTreeMap::new();
    for t in &page.items {
        days.entry(Gran::Day.bucket(t.timestamp.micros()))
            .or_default()
            .0 += 1;
        for o in store.trace_observations(project, &t.id)? {
            let day = Gran::Day.bucket(o.start_time.micros());
            let model = obs_value(&o, Dim::Model);
            let agg = Agg::of_observation(&o);
            let slot = days
                .entry(day)
                .or_default()
                .1
                .entry(model.clone())
                .or_default();
            slot.add(&agg);
            if traces_of
                .entry((day, model))
                .or_default()
                .insert(t.id.clone())
            {
                slot.traces += 1;
            }
        }
    }
    Ok(days)
}
