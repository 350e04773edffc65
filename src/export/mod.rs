//! Export: a project's traces, observations and scores as JSONL Langfuse ingestion events or as
//! a CSV of observations, written to any `Write` as it is read — the command line writes a file,
//! the HTTP endpoint a streamed response body; both call [`export`].
//!
//! Owns: the mapping of stored records back to ingestion events ([`event`], shared with import
//! and forward), the CSV columns, and the walk over a project (traces in time order, each
//! followed by its observations and scores; then, in an unfiltered export, observations and
//! scores whose trace was never sent). Must not touch: writes to the store — it reads through
//! `Store` queries only, so it runs against a read-only handle beside a live server — or HTTP.

mod csv;
pub mod event;

use std::io::Write;
use std::str::FromStr;

use crate::record::{ObservationRecord, ScoreRecord, TraceRecord};
use crate::store::{Store, StoreError, TraceQuery};
use crate::time::Timestamp;

/// Traces read per store query: bounds memory whatever the size of the project.
const PAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export failed: {0}")]
    Write(#[from] std::io::Error),
    #[error("could not encode an event: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Langfuse ingestion event per line; POST-able to any Langfuse ingestion API.
    Jsonl,
    /// One row per observation with its trace's columns.
    Csv,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown export format {other:?}; use jsonl or csv")),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub traces: u64,
    pub observations: u64,
    pub scores: u64,
}

struct Out<'a> {
    format: Format,
    w: &'a mut dyn Write,
    project: &'a str,
    stats: ExportStats,
}

impl Out<'_> {
    fn line(&mut self, event: &serde_json::Value) -> Result<(), ExportError> {
        serde_json::to_writer(&mut *self.w, event)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    fn trace(&mut self, store: &Store, t: &TraceRecord) -> Result<(), ExportError> {
        self.stats.traces += 1;
        if self.format == Format::Jsonl {
            let io = store.trace_io(self.project, &t.id)?;
            self.line(&event::trace(self.project, t, &io))?;
        }
        Ok(())
    }

    fn observation(
        &mut self,
        store: &Store,
        o: &ObservationRecord,
        trace: Option<&TraceRecord>,
    ) -> Result<(), ExportError> {
        self.stats.observations += 1;
        match self.format {
            Format::Jsonl => {
                let io = store.observation_io(self.project, &o.id)?;
                self.line(&event::observation(self.project, o, &io))
            }
            Format::Csv => Ok(csv::row(self.w, &csv::observation_row(o, trace))?),
        }
    }

    fn score(&mut self, s: &ScoreRecord) -> Result<(), ExportError> {
        self.stats.scores += 1;
        match self.format {
            Format::Jsonl => self.line(&event::score(self.project, s)),
            Format::Csv => Ok(()),
        }
    }
}

/// True when the query selects traces by more than time: then only matching traces (with their
/// observations and scores) are exported, not records that belong to no trace.
fn selects_traces(q: &TraceQuery) -> bool {
    q.user_id.is_some()
        || q.name.is_some()
        || q.session_id.is_some()
        || q.release.is_some()
        || q.version.is_some()
        || !q.tags.is_empty()
        || !q.environments.is_empty()
        || q.ids.is_some()
}

fn in_window(q: &TraceQuery, t: Timestamp) -> bool {
    q.from.is_none_or(|f| t >= f) && q.to.is_none_or(|to| t < to)
}

/// Writes the project's records selected by `q` (the traces list filters; `from`/`to` bound
/// trace timestamps, and the start/score time of records that belong to no trace).
pub fn export(
    store: &Store,
    project: &str,
    q: &TraceQuery,
    format: Format,
    w: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    let mut out = Out {
        format,
        w,
        project,
        stats: ExportStats::default(),
    };
    if format == Format::Csv {
        csv::row(out.w, &csv::HEADER.map(String::from))?;
    }
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = store.traces_ascending(project, q, after.as_ref(), PAGE)?;
        for t in &page {
            out.trace(store, t)?;
            for o in store.trace_observations(project, &t.id)? {
                out.observation(store, &o, Some(t))?;
            }
            for s in store.trace_scores(project, &t.id)? {
                out.score(&s)?;
            }
        }
        match page.last() {
            Some(t) if page.len() == PAGE => after = Some((t.timestamp.micros(), t.id.clone())),
            _ => break,
        }
    }
    if !selects_traces(q) {
        export_loose(store, project, q, &mut out)?;
    }
    out.w.flush()?;
    Ok(out.stats)
}

/// Observations and scores whose trace does not exist (sent without a `trace-create`, or
/// session and dataset-run scores), which the walk over traces cannot reach.
fn export_loose(
    store: &Store,
    project: &str,
    q: &TraceQuery,
    out: &mut Out,
) -> Result<(), ExportError> {
    let orphan = |trace_id: &str| -> Result<bool, StoreError> {
        Ok(store.trace(project, trace_id)?.is_none())
    };
    let mut after: Option<String> = None;
    loop {
        let page = store.observations_after(project, after.as_deref(), PAGE)?;
        for o in &page {
            if in_window(q, o.start_time) && orphan(&o.trace_id)? {
                out.observation(store, o, None)?;
            }
        }
        match page.last() {
            Some(o) if page.len() == PAGE => after = Some(o.id.clone()),
            _ => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.scores_after(project, after.as_deref(), PAGE)?;
        for s in &page {
            let loose = match s.trace_id() {
                Some(t) => orphan(t)?,
                None => true,
            };
            if loose && in_window(q, s.timestamp) {
                out.score(s)?;
            }
        }
        match page.last() {
            Some(s) if page.len() == PAGE => after = Some(s.id.clone()),
            _ => break,
        }
    }
    Ok(())
}
