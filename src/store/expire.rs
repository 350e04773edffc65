//! Retention's side of the store: finding records older than a cutoff (reads), deleting them
//! with everything derived from them (the `Expire` write operation), and removing change-log
//! entries that point at nothing any more (`TrimChanges`).
//!
//! A trace is as old as its timestamp and takes its observations and scores with it, however
//! new they are. Observations whose trace record was never sent form a group under their trace
//! id, which expires when its newest observation does. A score expires by its own timestamp
//! unless it hangs on a trace that still exists. Sessions go when their last trace goes.
//!
//! The writer checks every candidate against the cutoff again inside its transaction, so a
//! record that became newer between the read and the delete (an update that moved a trace's
//! timestamp) is kept: nothing at or after the cutoff is ever deleted.

use std::collections::BTreeSet;
use std::sync::Mutex;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::codec::{self, ObsSummary};
use super::handoff::RecordKind;
use super::read::SessionRecord;
use super::tables::{self, ChangeRef};
use super::write::Tx;
use super::{Store, StoreError, values};
use crate::record::{ObservationRecord, ScoreRecord, ScoreTarget, TraceRecord};
use crate::time::Timestamp;

/// What an expiry (or a log trim) deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpireCounts {
    pub traces: u64,
    pub observations: u64,
    pub scores: u64,
    pub sessions: u64,
    /// Change-log entries removed.
    pub changes: u64,
}

impl ExpireCounts {
    pub fn add(&mut self, o: &ExpireCounts) {
        self.traces += o.traces;
        self.observations += o.observations;
        self.scores += o.scores;
        self.sessions += o.sessions;
        self.changes += o.changes;
    }

    /// Records deleted (change-log entries are not records).
    pub fn records(&self) -> u64 {
        self.traces + self.observations + self.scores + self.sessions
    }
}

/// Where the writer leaves what one operation deleted. Set (not added to) each time the
/// operation is applied, so an operation retried alone after a failed group commit counts once.
#[derive(Debug, Default)]
pub struct Tally(Mutex<ExpireCounts>);

impl Tally {
    pub fn get(&self) -> ExpireCounts {
        self.0.lock().map(|c| *c).unwrap_or_default()
    }

    pub(super) fn set(&self, counts: ExpireCounts) {
        if let Ok(mut c) = self.0.lock() {
            *c = counts;
        }
    }
}

/// A position in a (project, time µs, id) index, to continue a scan after.
pub type TimeKey = (i64, String);

/// One page of candidates and where the next page starts (None: the range is exhausted).
#[derive(Debug, Default)]
pub struct Candidates {
    pub ids: Vec<String>,
    pub next: Option<TimeKey>,
}

impl Store {
    /// Up to `limit` ids of the project's traces with a timestamp before `cutoff`, oldest first,
    /// strictly after `after`.
    pub fn traces_before(
        &self,
        project: &str,
        cutoff: Timestamp,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Candidates, StoreError> {
        let tx = self.read_tx()?;
        scan_before(
            &tx,
            tables::TRACES_BY_TIME,
            project,
            cutoff,
            after,
            limit,
            |id| Ok(Some(id.to_string())),
        )
    }

    /// Trace ids of observation groups without a trace record that have an observation starting
    /// before `cutoff` (the writer checks that all of the group's do), scanning at most `limit`
    /// observations after `after`.
    pub fn orphan_groups_before(
        &self,
        project: &str,
        cutoff: Timestamp,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Candidates, StoreError> {
        let tx = self.read_tx()?;
        let obs = tx.open_table(tables::OBSERVATIONS)?;
        let traces = tx.open_table(tables::TRACES)?;
        let mut values = values::Resolver::new(&tx);
        let mut page = scan_before(
            &tx,
            tables::OBS_BY_TIME,
            project,
            cutoff,
            after,
            limit,
            |id| {
                let Some(o) = obs
                    .get((project, id))?
                    .map(|v| codec::decode_row::<ObservationRecord>(&values.resolve(v.value())?))
                    .transpose()?
                else {
                    return Ok(None);
                };
                let orphan = traces.get((project, o.trace_id.as_str()))?.is_none();
                Ok(orphan.then_some(o.trace_id))
            },
        )?;
        let unique: BTreeSet<String> = page.ids.drain(..).collect();
        page.ids = unique.into_iter().collect();
        Ok(page)
    }

    /// Ids of scores with a timestamp before `cutoff` that hang on no existing trace, scanning
    /// at most `limit` scores after `after`.
    pub fn scores_before(
        &self,
        project: &str,
        cutoff: Timestamp,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Candidates, StoreError> {
        let tx = self.read_tx()?;
        let scores = tx.open_table(tables::SCORES)?;
        let traces = tx.open_table(tables::TRACES)?;
        scan_before(
            &tx,
            tables::SCORES_BY_TIME,
            project,
            cutoff,
            after,
            limit,
            |id| {
                let Some(s) = scores
                    .get((project, id))?
                    .map(|v| codec::decode_row::<ScoreRecord>(v.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                let on_live_trace = match s.trace_id() {
                    Some(t) => traces.get((project, t))?.is_some(),
                    None => false,
                };
                Ok((!on_live_trace).then_some(s.id))
            },
        )
    }

    /// The timestamp of the `n`-th oldest trace over all projects (1-based; the newest when
    /// there are fewer): deleting everything before it + 1 µs deletes at least `n` traces.
    pub fn nth_oldest_trace_time(&self, n: usize) -> Result<Option<i64>, StoreError> {
        let tx = self.read_tx()?;
        let projects: Vec<String> = {
            let t = tx.open_table(tables::PROJECTS)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                out.push(e?.0.value().to_string());
            }
            out
        };
        let index = tx.open_table(tables::TRACES_BY_TIME)?;
        let mut times: Vec<i64> = Vec::new();
        for p in &projects {
            for e in index
                .range((p.as_str(), i64::MIN, "")..(p.as_str(), i64::MAX, ""))?
                .take(n)
            {
                times.push(e?.0.value().1);
            }
        }
        if times.is_empty() {
            return Ok(None);
        }
        let i = n.clamp(1, times.len()) - 1;
        let (_, nth, _) = times.select_nth_unstable(i);
        Ok(Some(*nth))
    }

    /// Traces, observations and scores stored, over all projects (constant time).
    pub fn record_count(&self) -> Result<u64, StoreError> {
        let tx = self.read_tx()?;
        Ok(tx.open_table(tables::TRACES)?.len()?
            + tx.open_table(tables::OBSERVATIONS)?.len()?
            + tx.open_table(tables::SCORES)?.len()?)
    }

    pub fn trace_count(&self) -> Result<u64, StoreError> {
        Ok(self.read_tx()?.open_table(tables::TRACES)?.len()?)
    }

    /// Change-log entries after `after` (at most `limit` looked at) that `TrimChanges` would
    /// remove, and the last sequence looked at (None: the end of the log was reached).
    pub fn changes_to_trim(
        &self,
        after: u64,
        limit: usize,
        indexed: u64,
    ) -> Result<(Vec<u64>, Option<u64>), StoreError> {
        let tx = self.read_tx()?;
        let log = tx.open_table(tables::CHANGES)?;
        let (traces, obs, scores) = (
            tx.open_table(tables::TRACES)?,
            tx.open_table(tables::OBSERVATIONS)?,
            tx.open_table(tables::SCORES)?,
        );
        let exists = |kind: Kind, p: &str, id: &str| -> Result<bool, StoreError> {
            let t = match kind {
                Kind::Trace => &traces,
                Kind::Observation => &obs,
                Kind::Score => &scores,
            };
            Ok(t.get((p, id))?.is_some())
        };
        let mut out = Vec::new();
        let mut seen = 0usize;
        for e in log.range(after.saturating_add(1)..)? {
            let (k, v) = e?;
            let seq = k.value();
            if dead(seq, &codec::decode_change(v.value())?, indexed, &exists)? {
                out.push(seq);
            }
            seen += 1;
            if seen >= limit {
                return Ok((out, Some(seq)));
            }
        }
        Ok((out, None))
    }
}

/// Scans `(project, time, id)` entries before `cutoff`, after `after`, through `pick`.
fn scan_before(
    tx: &ReadTransaction,
    index: redb::TableDefinition<(&str, i64, &str), ()>,
    project: &str,
    cutoff: Timestamp,
    after: Option<&TimeKey>,
    limit: usize,
    mut pick: impl FnMut(&str) -> Result<Option<String>, StoreError>,
) -> Result<Candidates, StoreError> {
    use std::ops::Bound;
    let t = tx.open_table(index)?;
    let start = match after {
        Some((ts, id)) => Bound::Excluded((project, *ts, id.as_str())),
        None => Bound::Included((project, i64::MIN, "")),
    };
    let end = Bound::Excluded((project, cutoff.micros(), ""));
    let mut page = Candidates::default();
    let mut seen = 0usize;
    for e in t.range((start, end))? {
        let (k, _) = e?;
        let (_, ts, id) = k.value();
        if let Some(c) = pick(id)? {
            page.ids.push(c);
        }
        seen += 1;
        if seen >= limit {
            page.next = Some((ts, id.to_string()));
            return Ok(page);
        }
    }
    Ok(page)
}

/// The record tables a change-log entry can name.
#[derive(Clone, Copy)]
enum Kind {
    Trace,
    Observation,
    Score,
}

/// Whether a change-log entry can go: it names a record that no longer exists (every follower
/// skips such an entry, and the record's delete entry, if it was deleted, is kept), or it is a
/// retention delete the search index has already applied (forwards never replay those).
/// `exists` looks a record up, in the reader's snapshot or the writer's transaction.
fn dead(
    seq: u64,
    change: &ChangeRef,
    indexed: u64,
    exists: &dyn Fn(Kind, &str, &str) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    Ok(match change {
        ChangeRef::Trace { project, id, .. } => !exists(Kind::Trace, project, id)?,
        ChangeRef::Observation { project, id, .. } => !exists(Kind::Observation, project, id)?,
        ChangeRef::Score { project, id } => !exists(Kind::Score, project, id)?,
        ChangeRef::TraceDeleted { expired, .. } | ChangeRef::ScoreDeleted { expired, .. } => {
            *expired && seq <= indexed
        }
    })
}

impl Tx<'_> {
    /// The `Expire` operation: see the module comment for what expires.
    pub(super) fn expire(
        &mut self,
        project: &str,
        cutoff: Timestamp,
        traces: &[String],
        scores: &[String],
    ) -> Result<ExpireCounts, StoreError> {
        let mut counts = ExpireCounts::default();
        let mut sessions = BTreeSet::new();
        for id in traces {
            let rec: Option<TraceRecord> = self.stored_row(RecordKind::Trace, project, id)?;
            let old = match &rec {
                Some(t) => t.timestamp < cutoff,
                None => self.group_older_than(project, id, cutoff)?,
            };
            if !old {
                continue;
            }
            if let Some(s) = rec.and_then(|t| t.session_id) {
                sessions.insert(s);
            }
            self.delete_trace(project, id, true, &mut counts)?;
        }
        for id in scores {
            let rec: Option<ScoreRecord> = {
                let t = self.tx.open_table(tables::SCORES)?;
                t.get((project, id.as_str()))?
                    .map(|v| codec::decode_row(v.value()))
                    .transpose()?
            };
            let Some(rec) = rec else { continue };
            let on_live_trace = match &rec.target {
                ScoreTarget::Trace { trace_id, .. } => self
                    .tx
                    .open_table(tables::TRACES)?
                    .get((project, trace_id.as_str()))?
                    .is_some(),
                _ => false,
            };
            if rec.timestamp < cutoff && !on_live_trace && self.delete_score(project, id, true)? {
                counts.scores += 1;
            }
        }
        for s in sessions {
            if self.drop_session_if_empty(project, &s)? {
                counts.sessions += 1;
            }
        }
        Ok(counts)
    }

    /// True when the observations filed under trace id `id` (which has no trace record) exist
    /// and all start before `cutoff`.
    fn group_older_than(
        &mut self,
        project: &str,
        id: &str,
        cutoff: Timestamp,
    ) -> Result<bool, StoreError> {
        let t = self.tx.open_table(tables::OBS_BY_TRACE)?;
        let mut any = false;
        for e in t.range((project, id, "")..)? {
            let (k, v) = e?;
            let (p, tr, _) = k.value();
            if p != project || tr != id {
                break;
            }
            if ObsSummary::decode(v.value())?.start >= cutoff.micros() {
                return Ok(false);
            }
            any = true;
        }
        Ok(any)
    }

    /// Removes the session row once no trace names the session any more.
    fn drop_session_if_empty(&mut self, project: &str, session: &str) -> Result<bool, StoreError> {
        let has_traces = {
            let t = self.tx.open_table(tables::TRACES_BY_SESSION)?;
            let mut r = t.range((project, session, i64::MIN, "")..)?;
            match r.next() {
                Some(e) => {
                    let (k, _) = e?;
                    let (p, s, _, _) = k.value();
                    p == project && s == session
                }
                None => false,
            }
        };
        if has_traces {
            return Ok(false);
        }
        let removed: Option<SessionRecord> = {
            let mut t = self.tx.open_table(tables::SESSIONS)?;
            let v = t.remove((project, session))?;
            v.map(|v| codec::decode_row(v.value())).transpose()?
        };
        let Some(rec) = removed else {
            return Ok(false);
        };
        self.tx.open_table(tables::SESSIONS_BY_TIME)?.remove((
            project,
            rec.created_at.micros(),
            session,
        ))?;
        Ok(true)
    }

    /// The `TrimChanges` operation: removes each entry that is still dead (see `dead`).
    pub(super) fn trim_changes(&mut self, seqs: &[u64], indexed: u64) -> Result<u64, StoreError> {
        let mut log = self.tx.open_table(tables::CHANGES)?;
        let (traces, obs, scores) = (
            self.tx.open_table(tables::TRACES)?,
            self.tx.open_table(tables::OBSERVATIONS)?,
            self.tx.open_table(tables::SCORES)?,
        );
        let exists = |kind: Kind, p: &str, id: &str| -> Result<bool, StoreError> {
            let t = match kind {
                Kind::Trace => &traces,
                Kind::Observation => &obs,
                Kind::Score => &scores,
            };
            Ok(t.get((p, id))?.is_some())
        };
        let mut removed = 0;
        for &seq in seqs {
            let change: Option<ChangeRef> = log
                .get(seq)?
                .map(|v| codec::decode_change(v.value()))
                .transpose()?;
            if let Some(change) = change
                && dead(seq, &change, indexed, &exists)?
            {
                log.remove(seq)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
