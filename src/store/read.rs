//! Read queries over the record store. Each runs in its own read transaction (a consistent
//! snapshot that never blocks the writer); callers run them off the async runtime.

use std::collections::HashMap;

use redb::ReadTransaction;
use serde::{Deserialize, Serialize};

use super::codec::{self, Io, ObsSummary};
use super::{Store, StoreError, tables, values};
use crate::cost::ModelDef;
use crate::record::{Level, ObservationRecord, ObservationType, ScoreRecord, TraceRecord};
use crate::time::Timestamp;

/// A session row: created the first time a trace names the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub created_at: Timestamp,
    pub first_trace_at: Timestamp,
    pub environment: String,
}

/// One page of results plus the total number of matches (Langfuse's `meta.totalItems`).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// Which slice of a result set to return.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub skip: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceOrder {
    #[default]
    TimestampDesc,
    TimestampAsc,
    /// Any other `orderBy` field: sorted after collecting (field, descending).
    Field(TraceField, bool),
    /// Keep the order of `TraceQuery::ids` (full-text search relevance).
    Relevance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceField {
    Id,
    Name,
    UserId,
    Release,
    Version,
    Public,
    Bookmarked,
    SessionId,
}

#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub session_id: Option<String>,
    pub tags: Vec<String>,
    pub environments: Vec<String>,
    pub release: Option<String>,
    pub version: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub order: TraceOrder,
    /// Restrict to these ids (e.g. full-text search hits); `None` = all. Rows are still
    /// ordered by `order`, except with `TraceOrder::Relevance`, which keeps this order.
    pub ids: Option<Vec<String>>,
}

impl TraceQuery {
    fn matches(&self, t: &TraceRecord) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&self.user_id, &t.user_id)
            && eq(&self.name, &t.name)
            && eq(&self.session_id, &t.session_id)
            && eq(&self.release, &t.release)
            && eq(&self.version, &t.version)
            && self.tags.iter().all(|tag| t.tags.contains(tag))
            && (self.environments.is_empty() || self.environments.contains(&t.environment))
            && self.from.is_none_or(|f| t.timestamp >= f)
            && self.to.is_none_or(|to| t.timestamp < to)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ObservationQuery {
    pub trace_id: Option<String>,
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub kind: Option<ObservationType>,
    pub level: Option<Level>,
    pub parent_observation_id: Option<String>,
    pub environments: Vec<String>,
    pub version: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Only roots (`true`) or only non-roots (`false`).
    pub is_root: Option<bool>,
    /// Keyset cursor: continue strictly after this (start time, id) in descending order.
    pub after: Option<(i64, String)>,
    /// Restrict to these ids (e.g. full-text search hits); `None` = all. Rows are still
    /// ordered by start time, newest first, unless `keep_id_order` is set.
    pub ids: Option<Vec<String>>,
    /// Keep the order of `ids` (full-text search relevance) instead of start-time order.
    pub keep_id_order: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ScoreQuery {
    pub trace_id: Option<String>,
    pub observation_ids: Vec<String>,
    pub session_id: Option<String>,
    pub score_ids: Vec<String>,
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub source: Option<String>,
    pub data_type: Option<String>,
    pub config_id: Option<String>,
    pub queue_id: Option<String>,
    pub environments: Vec<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// (operator, value) comparison on the numeric value.
    pub value: Option<(String, f64)>,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub after: Option<(i64, String)>,
}

fn get<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    table: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    let t = tx.open_table(table)?;
    t.get((project, id))?
        .map(|v| codec::decode_row(&values::resolve_in(tx, v.value())?))
        .transpose()
}

fn get_io(
    tx: &ReadTransaction,
    table: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
) -> Result<Io, StoreError> {
    let t = tx.open_table(table)?;
    Ok(t.get((project, id))?
        .map(|v| codec::decode_io(v.value()))
        .transpose()?
        .unwrap_or_default())
}

/// An observation's input/output: attached to its row, or (written before schema version 2, or
/// too large to attach) in `observation_io`.
pub(super) fn observation_io(
    tx: &ReadTransaction,
    project: &str,
    id: &str,
) -> Result<Io, StoreError> {
    record_io(tx, tables::OBSERVATIONS, tables::OBS_IO, project, id)
}

/// A trace's input/output: attached to its row, or (written before schema version 3, or too
/// large to attach) in `trace_io`.
pub(super) fn trace_io(tx: &ReadTransaction, project: &str, id: &str) -> Result<Io, StoreError> {
    record_io(tx, tables::TRACES, tables::TRACE_IO, project, id)
}

fn record_io(
    tx: &ReadTransaction,
    rows: redb::TableDefinition<(&str, &str), &[u8]>,
    payloads: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
) -> Result<Io, StoreError> {
    {
        let t = tx.open_table(rows)?;
        if let Some(v) = t.get((project, id))?
            && let Some(io) = codec::attached_io(&values::resolve_in(tx, v.value())?)?
        {
            return Ok(io);
        }
    }
    get_io(tx, payloads, project, id)
}

/// A row and its payload's JSON (empty when it has none) from one lookup of the row: the row
/// usually carries its payload in the same zstd frame, so one decompression serves both.
/// Payloads written before schema version 3, or too large to attach, are in `payloads`.
pub(super) fn row_with_io_json<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    rows: redb::TableDefinition<(&str, &str), &[u8]>,
    payloads: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
) -> Result<Option<(T, Vec<u8>)>, StoreError> {
    let rec = {
        let t = tx.open_table(rows)?;
        let Some(v) = t.get((project, id))? else {
            return Ok(None);
        };
        let (row, io) = codec::json_parts(&values::resolve_in(tx, v.value())?)?;
        let rec: T = codec::parse(&row)?;
        if let Some(io) = io {
            return Ok(Some((rec, io)));
        }
        rec
    };
    let t = tx.open_table(payloads)?;
    let io = match t.get((project, id))? {
        Some(v) => codec::io_json_of(v.value())?,
        None => Vec::new(),
    };
    Ok(Some((rec, io)))
}

/// `row_with_io_json` with the payload decoded.
fn record_with_io<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    rows: redb::TableDefinition<(&str, &str), &[u8]>,
    payloads: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
) -> Result<Option<(T, Io)>, StoreError> {
    row_with_io_json(tx, rows, payloads, project, id)?
        .map(|(rec, json)| {
            let io = if json.is_empty() {
                Io::default()
            } else {
                codec::parse(&json)?
            };
            Ok((rec, io))
        })
        .transpose()
}

/// Rows of one (project, id)-keyed table in id order, strictly after `after`, at most `limit`.
fn rows_after<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    table: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    use std::ops::Bound;
    let start = match after {
        Some(id) => Bound::Excluded((project, id)),
        None => Bound::Included((project, "")),
    };
    let t = tx.open_table(table)?;
    let mut values = values::Resolver::new(tx);
    let mut out = Vec::new();
    for e in t.range((start, Bound::<(&str, &str)>::Unbounded))? {
        let (k, v) = e?;
        if k.value().0 != project || out.len() >= limit {
            break;
        }
        out.push(codec::decode_row(&values.resolve(v.value())?)?);
    }
    Ok(out)
}

/// Collects a window of matches from an id stream while counting all matches.
fn paginate<T>(
    candidates: impl Iterator<Item = Result<Option<T>, StoreError>>,
    mut keep: impl FnMut(&T) -> bool,
    window: Window,
) -> Result<Page<T>, StoreError> {
    let mut items = Vec::new();
    let mut total = 0u64;
    for c in candidates {
        let Some(row) = c? else { continue };
        if !keep(&row) {
            continue;
        }
        if total as usize >= window.skip && items.len() < window.limit {
            items.push(row);
        }
        total += 1;
    }
    Ok(Page { items, total })
}

impl Store {
    /// Change-log entries with sequence numbers greater than `after`, oldest first.
    pub fn changes_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, tables::ChangeRef)>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::CHANGES)?;
        let mut out = Vec::new();
        for e in t.range(after.saturating_add(1)..)? {
            let (k, v) = e?;
            out.push((k.value(), codec::decode_change(v.value())?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Traces matching `q` in ascending (timestamp, id) order, strictly after the key `after`,
    /// at most `limit`: a keyset page, so an export walks any number of traces in bounded
    /// memory and in linear time (offset windows would rescan from the start every page).
    pub fn traces_ascending(
        &self,
        project: &str,
        q: &TraceQuery,
        after: Option<&(i64, String)>,
        limit: usize,
    ) -> Result<Vec<TraceRecord>, StoreError> {
        use std::ops::Bound;
        let tx = self.read_tx()?;
        let from = q.from.map_or(i64::MIN, Timestamp::micros);
        let to = q.to.map_or(i64::MAX, Timestamp::micros);
        let start = match after {
            Some((ts, id)) if *ts >= from => Bound::Excluded((project, *ts, id.as_str())),
            _ => Bound::Included((project, from, "")),
        };
        let index = tx.open_table(tables::TRACES_BY_TIME)?;
        let mut out = Vec::new();
        for e in index.range((start, Bound::Excluded((project, to, ""))))? {
            let (k, _) = e?;
            let id = k.value().2;
            if let Some(t) = get::<TraceRecord>(&tx, tables::TRACES, project, id)?
                && q.matches(&t)
            {
                out.push(t);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A keyset page of every observation of the project in id order, strictly after `after`.
    pub fn observations_after(
        &self,
        project: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObservationRecord>, StoreError> {
        rows_after(
            &*self.read_tx()?,
            tables::OBSERVATIONS,
            project,
            after,
            limit,
        )
    }

    /// A keyset page of every score of the project in id order, strictly after `after`.
    pub fn scores_after(
        &self,
        project: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScoreRecord>, StoreError> {
        rows_after(&*self.read_tx()?, tables::SCORES, project, after, limit)
    }

    pub fn trace(&self, project: &str, id: &str) -> Result<Option<TraceRecord>, StoreError> {
        get(&*self.read_tx()?, tables::TRACES, project, id)
    }

    pub fn trace_io(&self, project: &str, id: &str) -> Result<Io, StoreError> {
        trace_io(&*self.read_tx()?, project, id)
    }

    pub fn observation(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<ObservationRecord>, StoreError> {
        get(&*self.read_tx()?, tables::OBSERVATIONS, project, id)
    }

    pub fn observation_io(&self, project: &str, id: &str) -> Result<Io, StoreError> {
        observation_io(&*self.read_tx()?, project, id)
    }

    /// `trace` and `trace_io` from one lookup and one decompression of the row.
    pub fn trace_with_io(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<(TraceRecord, Io)>, StoreError> {
        let tx = self.read_tx()?;
        record_with_io(&tx, tables::TRACES, tables::TRACE_IO, project, id)
    }

    /// `observation` and `observation_io` from one lookup and one decompression of the row.
    pub fn observation_with_io(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<(ObservationRecord, Io)>, StoreError> {
        let tx = self.read_tx()?;
        record_with_io(&tx, tables::OBSERVATIONS, tables::OBS_IO, project, id)
    }

    /// Ids of the project's observations starting at or after `since` (all when None), oldest
    /// first: what `sightline recost` walks.
    pub fn observation_ids_since(
        &self,
        project: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::OBS_BY_TIME)?;
        let from = since.map_or(i64::MIN, Timestamp::micros);
        let mut ids = Vec::new();
        for e in t.range((project, from, "")..(project, i64::MAX, ""))? {
            ids.push(e?.0.value().2.to_string());
        }
        Ok(ids)
    }

    /// The project's observations starting in `[from, to)` µs, oldest first; `None` when there
    /// are more than `cap` (callers refuse such scans rather than load them).
    pub fn observations_between(
        &self,
        project: &str,
        from: i64,
        to: i64,
        cap: usize,
    ) -> Result<Option<Vec<ObservationRecord>>, StoreError> {
        self.rows_between(
            tables::OBS_BY_TIME,
            tables::OBSERVATIONS,
            project,
            from,
            to,
            cap,
        )
    }

    /// Traces with a timestamp in `[from, to)` µs; `None` when more than `cap`.
    pub fn traces_between(
        &self,
        project: &str,
        from: i64,
        to: i64,
        cap: usize,
    ) -> Result<Option<Vec<TraceRecord>>, StoreError> {
        self.rows_between(
            tables::TRACES_BY_TIME,
            tables::TRACES,
            project,
            from,
            to,
            cap,
        )
    }

    /// Scores with a timestamp in `[from, to)` µs; `None` when more than `cap`.
    pub fn scores_between(
        &self,
        project: &str,
        from: i64,
        to: i64,
        cap: usize,
    ) -> Result<Option<Vec<ScoreRecord>>, StoreError> {
        self.rows_between(
            tables::SCORES_BY_TIME,
            tables::SCORES,
            project,
            from,
            to,
            cap,
        )
    }

    fn rows_between<T: serde::de::DeserializeOwned>(
        &self,
        index: redb::TableDefinition<(&str, i64, &str), ()>,
        rows: redb::TableDefinition<(&str, &str), &[u8]>,
        project: &str,
        from: i64,
        to: i64,
        cap: usize,
    ) -> Result<Option<Vec<T>>, StoreError> {
        let tx = self.read_tx()?;
        let idx = tx.open_table(index)?;
        let mut ids = Vec::new();
        for e in idx.range((project, from, "")..(project, to, ""))? {
            if ids.len() >= cap {
                return Ok(None);
            }
            ids.push(e?.0.value().2.to_string());
        }
        // Up to `cap` rows: the tables are opened once, not per row.
        let rows = tx.open_table(rows)?;
        let mut values = values::Resolver::new(&tx);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = rows.get((project, id.as_str()))? {
                out.push(codec::decode_row(&values.resolve(v.value())?)?);
            }
        }
        Ok(Some(out))
    }

    /// A project model created through the API (never a built-in or config-file model).
    pub fn model(&self, project: &str, id: &str) -> Result<Option<ModelDef>, StoreError> {
        get(&*self.read_tx()?, tables::MODELS, project, id)
    }

    /// Every model the project created through the API.
    pub fn project_models(&self, project: &str) -> Result<Vec<ModelDef>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::MODELS)?;
        let mut out = Vec::new();
        for row in t.range((project, "")..)? {
            let (k, v) = row?;
            if k.value().0 != project {
                break;
            }
            out.push(codec::decode_row(v.value())?);
        }
        Ok(out)
    }

    pub fn score(&self, project: &str, id: &str) -> Result<Option<ScoreRecord>, StoreError> {
        get(&*self.read_tx()?, tables::SCORES, project, id)
    }

    pub fn session(&self, project: &str, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        get(&*self.read_tx()?, tables::SESSIONS, project, id)
    }

    /// Start/end/cost of every observation of a trace, from the index alone.
    pub fn trace_summaries(
        &self,
        project: &str,
        trace_id: &str,
    ) -> Result<Vec<(String, ObsSummary)>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::OBS_BY_TRACE)?;
        let mut out = Vec::new();
        for entry in t.range((project, trace_id, "")..)? {
            let (k, v) = entry?;
            let (p, tr, id) = k.value();
            if p != project || tr != trace_id {
                break;
            }
            out.push((id.to_string(), ObsSummary::decode(v.value())?));
        }
        Ok(out)
    }

    /// Every observation of a trace, ordered by start time.
    pub fn trace_observations(
        &self,
        project: &str,
        trace_id: &str,
    ) -> Result<Vec<ObservationRecord>, StoreError> {
        self.trace_observations_as(
            project,
            trace_id,
            |o| o,
            |tx, id| get(tx, tables::OBSERVATIONS, project, id),
        )
    }

    /// `trace_observations` with each one's input/output, read with its row.
    pub fn trace_observations_with_io(
        &self,
        project: &str,
        trace_id: &str,
    ) -> Result<Vec<(ObservationRecord, Io)>, StoreError> {
        self.trace_observations_as(
            project,
            trace_id,
            |(o, _)| o,
            |tx, id| record_with_io(tx, tables::OBSERVATIONS, tables::OBS_IO, project, id),
        )
    }

    fn trace_observations_as<R>(
        &self,
        project: &str,
        trace_id: &str,
        record: impl Fn(&R) -> &ObservationRecord,
        read: impl Fn(&ReadTransaction, &str) -> Result<Option<R>, StoreError>,
    ) -> Result<Vec<R>, StoreError> {
        let ids = self.trace_summaries(project, trace_id)?;
        let tx = self.read_tx()?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            out.extend(read(&tx, &id)?);
        }
        out.sort_by(|a, b| {
            let (a, b) = (record(a), record(b));
            (a.start_time, &a.id).cmp(&(b.start_time, &b.id))
        });
        Ok(out)
    }

    pub fn trace_scores(
        &self,
        project: &str,
        trace_id: &str,
    ) -> Result<Vec<ScoreRecord>, StoreError> {
        self.scores_by_target(project, &format!("t:{trace_id}"))
    }

    pub fn session_scores(
        &self,
        project: &str,
        session_id: &str,
    ) -> Result<Vec<ScoreRecord>, StoreError> {
        self.scores_by_target(project, &format!("s:{session_id}"))
    }

    fn scores_by_target(
        &self,
        project: &str,
        target: &str,
    ) -> Result<Vec<ScoreRecord>, StoreError> {
        let tx = self.read_tx()?;
        let idx = tx.open_multimap_table(tables::SCORES_BY_TARGET)?;
        let mut out = Vec::new();
        for id in idx.get((project, target))? {
            let id = id?;
            if let Some(s) = get::<ScoreRecord>(&tx, tables::SCORES, project, id.value())? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        Ok(out)
    }

    pub fn list_traces(
        &self,
        project: &str,
        q: &TraceQuery,
        window: Window,
    ) -> Result<Page<TraceRecord>, StoreError> {
        let tx = self.read_tx()?;
        let from = q.from.map_or(i64::MIN, Timestamp::micros);
        let to = q.to.map_or(i64::MAX, Timestamp::micros);
        if let Some(page) = self.traces_by_index_only(&tx, project, q, window, from, to)? {
            return Ok(page);
        }
        let ids: Vec<String> = if let Some(ids) = &q.ids {
            ids.clone()
        } else {
            // The narrowest index that the query pins down; the rest is filtered row by row.
            let secondary = [
                (tables::TRACES_BY_SESSION, &q.session_id),
                (tables::TRACES_BY_USER, &q.user_id),
                (tables::TRACES_BY_NAME, &q.name),
            ]
            .into_iter()
            .find_map(|(t, v)| v.as_deref().map(|v| (t, v)));
            let mut ids = Vec::new();
            if let Some((table, value)) = secondary {
                let t = tx.open_table(table)?;
                for e in t.range((project, value, from, "")..(project, value, to, ""))? {
                    ids.push(e?.0.value().3.to_string());
                }
            } else {
                let t = tx.open_table(tables::TRACES_BY_TIME)?;
                for e in t.range((project, from, "")..(project, to, ""))? {
                    ids.push(e?.0.value().2.to_string());
                }
            }
            if q.order != TraceOrder::TimestampAsc {
                ids.reverse();
            }
            ids
        };
        let rows = ids
            .iter()
            .map(|id| get::<TraceRecord>(&tx, tables::TRACES, project, id));
        match q.order {
            TraceOrder::Field(field, desc) => {
                let mut all = paginate(
                    rows,
                    |t| q.matches(t),
                    Window {
                        skip: 0,
                        limit: usize::MAX,
                    },
                )?;
                all.items.sort_by(|a, b| {
                    let ord = trace_field(a, field).cmp(&trace_field(b, field));
                    if desc { ord.reverse() } else { ord }
                });
                let items = all
                    .items
                    .into_iter()
                    .skip(window.skip)
                    .take(window.limit)
                    .collect();
                Ok(Page {
                    items,
                    total: all.total,
                })
            }
            TraceOrder::TimestampDesc | TraceOrder::TimestampAsc if q.ids.is_some() => {
                // An id list (search hits) comes in no particular time order: sort the matches.
                let mut all = paginate(
                    rows,
                    |t| q.matches(t),
                    Window {
                        skip: 0,
                        limit: usize::MAX,
                    },
                )?;
                all.items
                    .sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
                if q.order == TraceOrder::TimestampDesc {
                    all.items.reverse();
                }
                let items = all
                    .items
                    .into_iter()
                    .skip(window.skip)
                    .take(window.limit)
                    .collect();
                Ok(Page {
                    items,
                    total: all.total,
                })
            }
            _ => paginate(rows, |t| q.matches(t), window),
        }
    }

    /// A time-ordered trace page whose filters one index answers on its own (a time range,
    /// plus at most one of user, session, name): every index entry in range matches, so the
    /// total is a count of keys and only the page's records are read. Without this, the newest
    /// 50 of 250,000 traces decoded all 250,000 to count them (seconds instead of
    /// milliseconds). With no user, session or name the rollups give the total, so only the
    /// page's keys are read at all. `None` when the query needs its rows filtered.
    fn traces_by_index_only(
        &self,
        tx: &ReadTransaction,
        project: &str,
        q: &TraceQuery,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Option<Page<TraceRecord>>, StoreError> {
        let pinned = [&q.session_id, &q.user_id, &q.name];
        let covered = q.ids.is_none()
            && matches!(
                q.order,
                TraceOrder::TimestampDesc | TraceOrder::TimestampAsc
            )
            && q.tags.is_empty()
            && q.release.is_none()
            && q.version.is_none()
            && pinned.iter().filter(|v| v.is_some()).count() <= 1;
        if !covered || (!q.environments.is_empty() && pinned.iter().any(|v| v.is_some())) {
            return Ok(None);
        }
        if !q.environments.is_empty() {
            return self.traces_in_environments(tx, project, q, window, from, to);
        }
        let desc = q.order == TraceOrder::TimestampDesc;
        let wanted = window.skip.saturating_add(window.limit);
        let secondary = [
            (tables::TRACES_BY_SESSION, &q.session_id),
            (tables::TRACES_BY_USER, &q.user_id),
            (tables::TRACES_BY_NAME, &q.name),
        ]
        .into_iter()
        .find_map(|(t, v)| v.as_deref().map(|v| (t, v)));
        // Without a secondary filter the rollups know the total: only the page's keys are read.
        let known = match secondary {
            None => super::trace_count::count(tx, project, &[], from, to, |_| Ok(true))?,
            Some(_) => None,
        };
        let mut total = 0u64;
        let mut ids: Vec<String> = Vec::new();
        let mut take = |id: &str| {
            if ids.len() < wanted {
                ids.push(id.to_owned());
            }
            total += 1;
            known.is_none() || ids.len() < wanted
        };
        if let Some((table, value)) = secondary {
            let t = tx.open_table(table)?;
            let range = t.range((project, value, from, "")..(project, value, to, ""))?;
            walk(range, desc, |key| Ok(take(key.3)))?;
        } else {
            let t = tx.open_table(tables::TRACES_BY_TIME)?;
            let range = t.range((project, from, "")..(project, to, ""))?;
            walk(range, desc, |key| Ok(take(key.2)))?;
        }
        let total = known.unwrap_or(total);
        let mut items = Vec::with_capacity(window.limit.min(ids.len()));
        for id in ids.iter().skip(window.skip) {
            if let Some(t) = get::<TraceRecord>(tx, tables::TRACES, project, id)? {
                items.push(t);
            }
        }
        Ok(Some(Page { items, total }))
    }

    /// A time-ordered page of the traces in some environments (and a time range): the total
    /// from the rollups, the page by reading records in order until it is full — so a page
    /// costs its own records plus those of other environments between them, not the range.
    fn traces_in_environments(
        &self,
        tx: &ReadTransaction,
        project: &str,
        q: &TraceQuery,
        window: Window,
        from: i64,
        to: i64,
    ) -> Result<Option<Page<TraceRecord>>, StoreError> {
        let in_env = |id: &str| -> Result<Option<TraceRecord>, StoreError> {
            Ok(get::<TraceRecord>(tx, tables::TRACES, project, id)?
                .filter(|t| q.environments.contains(&t.environment)))
        };
        let known = super::trace_count::count(tx, project, &q.environments, from, to, |id| {
            Ok(in_env(id)?.is_some())
        })?;
        let Some(total) = known else {
            return Ok(None);
        };
        let index = tx.open_table(tables::TRACES_BY_TIME)?;
        let range = index.range((project, from, "")..(project, to, ""))?;
        let (mut matched, mut items) = (0usize, Vec::new());
        if window.limit > 0 {
            walk(range, q.order == TraceOrder::TimestampDesc, |key| {
                if let Some(t) = in_env(key.2)? {
                    matched += 1;
                    if matched > window.skip {
                        items.push(t);
                    }
                }
                Ok(items.len() < window.limit)
            })?;
        }
        Ok(Some(Page { items, total }))
    }

    pub fn list_observations(
        &self,
        project: &str,
        q: &ObservationQuery,
        window: Window,
    ) -> Result<Page<ObservationRecord>, StoreError> {
        let tx = self.read_tx()?;
        let mut traces: HashMap<String, Option<TraceRecord>> = HashMap::new();
        let needs_trace = q.user_id.is_some() || q.session_id.is_some();
        let keep = |o: &ObservationRecord, traces: &mut HashMap<String, Option<TraceRecord>>| {
            let eq =
                |w: &Option<String>, h: Option<&String>| w.as_ref().is_none_or(|w| h == Some(w));
            let basic = eq(&q.name, o.name.as_ref())
                && q.kind.is_none_or(|k| k == o.kind)
                && q.level.is_none_or(|l| l == o.level)
                && eq(&q.parent_observation_id, o.parent_observation_id.as_ref())
                && eq(&q.version, o.version.as_ref())
                && eq(&q.trace_id, Some(&o.trace_id))
                && (q.environments.is_empty() || q.environments.contains(&o.environment))
                && q.from.is_none_or(|f| o.start_time >= f)
                && q.to.is_none_or(|t| o.start_time < t)
                && q.is_root.is_none_or(|r| r == o.is_root())
                && q.after.as_ref().is_none_or(|(ts, id)| {
                    (o.start_time.micros(), o.id.as_str()) < (*ts, id.as_str())
                });
            if !basic || !needs_trace {
                return basic;
            }
            let trace = traces.entry(o.trace_id.clone()).or_insert_with(|| {
                get::<TraceRecord>(&tx, tables::TRACES, project, &o.trace_id)
                    .ok()
                    .flatten()
            });
            let t = trace.as_ref();
            eq(&q.user_id, t.and_then(|t| t.user_id.as_ref()))
                && eq(&q.session_id, t.and_then(|t| t.session_id.as_ref()))
        };
        if let Some(ids) = &q.ids {
            let mut kept = Vec::new();
            for id in ids {
                if let Some(o) = get::<ObservationRecord>(&tx, tables::OBSERVATIONS, project, id)?
                    && keep(&o, &mut traces)
                {
                    kept.push(o);
                }
            }
            if !q.keep_id_order {
                kept.sort_by(|a, b| (b.start_time, &b.id).cmp(&(a.start_time, &a.id)));
            }
            let total = kept.len() as u64;
            let items = kept
                .into_iter()
                .skip(window.skip)
                .take(window.limit)
                .collect();
            return Ok(Page { items, total });
        }
        let mut ids: Vec<String> = if let Some(trace_id) = &q.trace_id {
            let mut by_start: Vec<(i64, String)> = self
                .trace_summaries(project, trace_id)?
                .into_iter()
                .map(|(id, s)| (s.start, id))
                .collect();
            by_start.sort();
            by_start.into_iter().map(|(_, id)| id).collect()
        } else {
            let from = q.from.map_or(i64::MIN, Timestamp::micros);
            let to = q.to.map_or(i64::MAX, Timestamp::micros);
            let t = tx.open_table(tables::OBS_BY_TIME)?;
            let mut ids = Vec::new();
            for e in t.range((project, from, "")..(project, to, ""))? {
                ids.push(e?.0.value().2.to_string());
            }
            ids
        };
        ids.reverse();
        let rows = ids
            .iter()
            .map(|id| get::<ObservationRecord>(&tx, tables::OBSERVATIONS, project, id));
        paginate(rows, |o| keep(o, &mut traces), window)
    }

    pub fn list_sessions(
        &self,
        project: &str,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        environments: &[String],
        window: Window,
    ) -> Result<Page<SessionRecord>, StoreError> {
        let tx = self.read_tx()?;
        let from = from.map_or(i64::MIN, Timestamp::micros);
        let to = to.map_or(i64::MAX, Timestamp::micros);
        let t = tx.open_table(tables::SESSIONS_BY_TIME)?;
        let mut ids = Vec::new();
        for e in t.range((project, from, "")..(project, to, ""))? {
            ids.push(e?.0.value().2.to_string());
        }
        ids.reverse();
        let rows = ids
            .iter()
            .map(|id| get::<SessionRecord>(&tx, tables::SESSIONS, project, id));
        paginate(
            rows,
            |s| environments.is_empty() || environments.contains(&s.environment),
            window,
        )
    }

    pub fn list_scores(
        &self,
        project: &str,
        q: &ScoreQuery,
        window: Window,
    ) -> Result<Page<ScoreRecord>, StoreError> {
        let tx = self.read_tx()?;
        let candidates: Vec<ScoreRecord> = if !q.score_ids.is_empty() {
            let mut v = Vec::new();
            for id in &q.score_ids {
                if let Some(s) = get::<ScoreRecord>(&tx, tables::SCORES, project, id)? {
                    v.push(s);
                }
            }
            v
        } else if let Some(trace) = &q.trace_id {
            self.trace_scores(project, trace)?
        } else if let Some(session) = &q.session_id {
            self.session_scores(project, session)?
        } else {
            let from = q.from.map_or(i64::MIN, Timestamp::micros);
            let to = q.to.map_or(i64::MAX, Timestamp::micros);
            let t = tx.open_table(tables::SCORES_BY_TIME)?;
            let mut v = Vec::new();
            for e in t.range((project, from, "")..(project, to, ""))? {
                let id = e?.0.value().2.to_string();
                if let Some(s) = get::<ScoreRecord>(&tx, tables::SCORES, project, &id)? {
                    v.push(s);
                }
            }
            v
        };
        let mut candidates = candidates;
        candidates.sort_by(|a, b| (b.timestamp, &b.id).cmp(&(a.timestamp, &a.id)));
        let mut users: HashMap<String, Option<String>> = HashMap::new();
        let keep = |s: &ScoreRecord, users: &mut HashMap<String, Option<String>>| {
            let eq =
                |w: &Option<String>, h: Option<&str>| w.as_deref().is_none_or(|w| h == Some(w));
            let value = s.value.numeric();
            let basic = eq(&q.name, Some(&s.name))
                && eq(&q.trace_id, s.trace_id())
                && eq(&q.session_id, s.session_id())
                && (q.observation_ids.is_empty()
                    || s.observation_id()
                        .is_some_and(|o| q.observation_ids.iter().any(|w| w == o)))
                && eq(&q.source, Some(s.source.as_str()))
                && eq(&q.data_type, Some(s.value.data_type().as_str()))
                && eq(&q.config_id, s.config_id.as_deref())
                && eq(&q.queue_id, s.queue_id.as_deref())
                && (q.environments.is_empty() || q.environments.contains(&s.environment))
                && q.from.is_none_or(|f| s.timestamp >= f)
                && q.to.is_none_or(|t| s.timestamp < t)
                && q.value_min.is_none_or(|m| value >= m)
                && q.value_max.is_none_or(|m| value <= m)
                && q.value
                    .as_ref()
                    .is_none_or(|(op, v)| compare(value, op, *v))
                && q.after.as_ref().is_none_or(|(ts, id)| {
                    (s.timestamp.micros(), s.id.as_str()) < (*ts, id.as_str())
                });
            if !basic || q.user_id.is_none() {
                return basic;
            }
            let Some(trace_id) = s.trace_id() else {
                return false;
            };
            let user = users.entry(trace_id.to_string()).or_insert_with(|| {
                get::<TraceRecord>(&tx, tables::TRACES, project, trace_id)
                    .ok()
                    .flatten()
                    .and_then(|t| t.user_id)
            });
            user.as_deref() == q.user_id.as_deref()
        };
        paginate(
            candidates.into_iter().map(|s| Ok(Some(s))),
            |s| keep(s, &mut users),
            window,
        )
    }

    /// Traces of a session, oldest first (Langfuse's session view).
    pub fn session_traces(
        &self,
        project: &str,
        session_id: &str,
    ) -> Result<Vec<TraceRecord>, StoreError> {
        let q = TraceQuery {
            session_id: Some(session_id.to_string()),
            order: TraceOrder::TimestampAsc,
            ..Default::default()
        };
        Ok(self
            .list_traces(
                project,
                &q,
                Window {
                    skip: 0,
                    limit: usize::MAX,
                },
            )?
            .items)
    }
}

fn compare(a: f64, op: &str, b: f64) -> bool {
    match op {
        ">" => a > b,
        ">=" => a >= b,
        "<" => a < b,
        "<=" => a <= b,
        "!=" | "<>" => a != b,
        _ => a == b,
    }
}

fn trace_field(t: &TraceRecord, f: TraceField) -> String {
    match f {
        TraceField::Id => t.id.clone(),
        TraceField::Name => t.name.clone().unwrap_or_default(),
        TraceField::UserId => t.user_id.clone().unwrap_or_default(),
        TraceField::Release => t.release.clone().unwrap_or_default(),
        TraceField::Version => t.version.clone().unwrap_or_default(),
        TraceField::Public => t.public.to_string(),
        TraceField::Bookmarked => t.bookmarked.to_string(),
        TraceField::SessionId => t.session_id.clone().unwrap_or_default(),
    }
}

/// Feeds `take` the keys of `range`, newest first when `desc`, until it returns false.
fn walk<K: redb::Key + 'static>(
    range: redb::Range<'_, K, ()>,
    desc: bool,
    mut take: impl FnMut(K::SelfType<'_>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let entries: Box<dyn Iterator<Item = _>> = if desc {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    for e in entries {
        if !take(e?.0.value())? {
            break;
        }
    }
    Ok(())
}
