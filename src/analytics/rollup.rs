//! Rollup rows: their keys, their maintenance as deltas inside the writer's transaction, their
//! rebuild from the records, and reading them back.
//!
//! Every record change is turned into "subtract what the old version contributed, add what the
//! new one contributes", summed per row key, so a re-merged observation, a re-priced one or a
//! deleted trace leaves exactly the rows a from-scratch rebuild would produce (the property test
//! in `analytics::tests` holds it to that).

use std::collections::{BTreeMap, HashMap};

use indexmap::IndexMap;

use redb::{ReadableTable, WriteTransaction};

use super::agg::{Agg, Reader, put_ivar, put_str, put_uvar};
use crate::record::{ObservationRecord, TraceRecord};
use crate::store::StoreError;
use crate::store::codec;
use crate::store::tables::{self, META, META_ROLLUPS, ROLLUPS, TRACE_ROLLUPS};
use crate::store::values::{self, Values};

/// Bumped when what a row means changes; a store with another version rebuilds on open.
/// 2: `rollup_trace_members` keyed by trace first (version 1: `rollup_trace_models`, by day).
/// 3: a trace's totals and memberships in one `trace_rollups` value, rows in varints.
pub const ROLLUP_VERSION: u64 = 3;

pub const HOUR_US: i64 = 3_600_000_000;
pub const DAY_US: i64 = 24 * HOUR_US;

/// Longest dimension value kept in a key; longer names are cut at a character boundary so one
/// pathological name cannot bloat the index.
const MAX_VALUE_BYTES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gran {
    Hour = 0,
    Day = 1,
}

impl Gran {
    pub fn width(self) -> i64 {
        match self {
            Gran::Hour => HOUR_US,
            Gran::Day => DAY_US,
        }
    }

    /// Start of the UTC hour or day `micros` falls in.
    pub fn bucket(self, micros: i64) -> i64 {
        micros.div_euclid(self.width()) * self.width()
    }
}

/// What a rollup row is grouped by. Observation rows are bucketed by observation start time,
/// trace rows by trace timestamp; both are also keyed by environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    /// Every observation (value "").
    Obs = 0,
    /// `providedModelName` (the raw model string; "" when none).
    Model = 1,
    /// Observation name.
    Name = 2,
    /// Observation type (`GENERATION`, ...).
    Type = 3,
    /// Every trace (value "").
    Trace = 4,
    /// Trace user id.
    User = 5,
    /// Trace name.
    TraceName = 6,
}

pub const OBS_DIMS: [Dim; 4] = [Dim::Obs, Dim::Model, Dim::Name, Dim::Type];
pub const TRACE_DIMS: [Dim; 3] = [Dim::Trace, Dim::User, Dim::TraceName];
const GRANS: [Gran; 2] = [Gran::Hour, Gran::Day];

/// The `kind` byte of a row key.
pub fn kind(dim: Dim, gran: Gran) -> u8 {
    dim as u8 * 2 + gran as u8
}

fn cap(s: &str) -> &str {
    if s.len() <= MAX_VALUE_BYTES {
        return s;
    }
    let mut end = MAX_VALUE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The dimension value of an observation ("" when absent).
pub fn obs_value(o: &ObservationRecord, dim: Dim) -> String {
    obs_value_str(o, dim).to_string()
}

fn obs_value_str(o: &ObservationRecord, dim: Dim) -> &str {
    let v = match dim {
        Dim::Model => o.model.as_deref().unwrap_or(""),
        Dim::Name => o.name.as_deref().unwrap_or(""),
        Dim::Type => o.kind.as_str(),
        _ => "",
    };
    cap(v)
}

fn trace_value_str(t: &TraceRecord, dim: Dim) -> &str {
    let v = match dim {
        Dim::User => t.user_id.as_deref().unwrap_or(""),
        Dim::TraceName => t.name.as_deref().unwrap_or(""),
        _ => "",
    };
    cap(v)
}

/// A row key without its project: (kind, bucket start, environment, value).
pub type RowKey = (u8, i64, String, String);

/// A row key borrowed from the record it belongs to. The writer moves ~14 rows per observation
/// and nearly all of them are already pending in the transaction: looking them up borrowed
/// allocates a key only for a row seen first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyRef<'a>(u8, i64, &'a str, &'a str);

impl<'a> KeyRef<'a> {
    fn of(k: &'a RowKey) -> KeyRef<'a> {
        KeyRef(k.0, k.1, &k.2, &k.3)
    }

    fn owned(self) -> RowKey {
        (self.0, self.1, self.2.to_owned(), self.3.to_owned())
    }
}

impl std::hash::Hash for KeyRef<'_> {
    /// Field by field, as the tuple `RowKey` hashes (a `String` hashes as its `str`).
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h);
        self.1.hash(h);
        self.2.hash(h);
        self.3.hash(h);
    }
}

impl indexmap::Equivalent<RowKey> for KeyRef<'_> {
    fn equivalent(&self, k: &RowKey) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2 && self.3 == k.3
    }
}

fn obs_key_refs(o: &ObservationRecord) -> Vec<KeyRef<'_>> {
    let start = o.start_time.micros();
    let mut keys = Vec::with_capacity(OBS_DIMS.len() * GRANS.len());
    for gran in GRANS {
        for dim in OBS_DIMS {
            keys.push(KeyRef(
                kind(dim, gran),
                gran.bucket(start),
                &o.environment,
                obs_value_str(o, dim),
            ));
        }
    }
    keys
}

fn trace_key_refs(t: &TraceRecord) -> Vec<KeyRef<'_>> {
    let ts = t.timestamp.micros();
    let mut keys = Vec::with_capacity(TRACE_DIMS.len() * GRANS.len());
    for gran in GRANS {
        for dim in TRACE_DIMS {
            keys.push(KeyRef(
                kind(dim, gran),
                gran.bucket(ts),
                &t.environment,
                trace_value_str(t, dim),
            ));
        }
    }
    keys
}

fn obs_keys(o: &ObservationRecord) -> Vec<RowKey> {
    obs_key_refs(o).into_iter().map(KeyRef::owned).collect()
}

fn trace_keys(t: &TraceRecord) -> Vec<RowKey> {
    trace_key_refs(t).into_iter().map(KeyRef::owned).collect()
}

/// (day, environment, model, trace id): an observation's membership in its model's distinct
/// traces of the day.
type Member = (i64, String, String, String);

fn member(o: &ObservationRecord) -> Member {
    (
        Gran::Day.bucket(o.start_time.micros()),
        o.environment.clone(),
        obs_value(o, Dim::Model),
        o.trace_id.clone(),
    )
}

/// A membership within its trace: (day, environment, model).
type MemberOfTrace = (i64, String, String);

/// What `trace_rollups` holds for one trace: the sum of its observations, so the trace's rows can
/// move when its user, name, timestamp or environment change, and its memberships (observations
/// per day, environment and model), so a model's distinct-trace count moves exactly when a
/// membership goes 0 ↔ 1. One value per trace instead of a row per total and per membership:
/// an observation touches one B-tree entry of its trace, not two to four.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceRollup {
    /// The observations' sum as trace rows carry it (`trace_share`: no histograms).
    pub totals: Agg,
    pub members: BTreeMap<MemberOfTrace, u64>,
}

/// Format of a `trace_rollups` value, numbers in varints, strings length-prefixed:
/// [2][`Agg` row, without histograms][environment count][environments][member count][per member:
/// day number (days since the epoch), environment index, model, count]. A trace's memberships
/// nearly always share one environment, which format 1 ([1][`Agg` row][member count][per member:
/// day number, environment, model, count]) repeated in each; its histograms were never read
/// (a trace's latency is not the sum of its observations'). Format 1 is still read.
const TRACE_ROLLUP_FORMAT: u8 = 2;
const TRACE_ROLLUP_FORMAT_1: u8 = 1;

impl TraceRollup {
    pub fn is_empty(&self) -> bool {
        self.totals.is_zero() && self.members.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.members.len() * 24);
        out.push(TRACE_ROLLUP_FORMAT);
        trace_share(&self.totals).encode_into(&mut out);
        let mut envs: Vec<&str> = Vec::new();
        for (_, env, _) in self.members.keys() {
            if !envs.contains(&env.as_str()) {
                envs.push(env);
            }
        }
        put_uvar(&mut out, envs.len() as u128);
        for env in &envs {
            put_str(&mut out, env);
        }
        put_uvar(&mut out, self.members.len() as u128);
        for ((day, env, model), n) in &self.members {
            put_ivar(&mut out, day.div_euclid(DAY_US).into());
            let index = envs.iter().position(|e| e == env).unwrap_or_default();
            put_uvar(&mut out, index as u128);
            put_str(&mut out, model);
            put_uvar(&mut out, (*n).into());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TraceRollup, StoreError> {
        let mut r = Reader(bytes);
        let format = r.u8()?;
        if format != TRACE_ROLLUP_FORMAT && format != TRACE_ROLLUP_FORMAT_1 {
            return Err(StoreError::Corrupt(format!(
                "trace rollup has format {format}, expected {TRACE_ROLLUP_FORMAT}"
            )));
        }
        let mut t = TraceRollup {
            totals: trace_share(&Agg::read(&mut r)?),
            members: BTreeMap::new(),
        };
        let mut envs = Vec::new();
        if format == TRACE_ROLLUP_FORMAT {
            for _ in 0..r.len()? {
                envs.push(r.string()?);
            }
        }
        for _ in 0..r.len()? {
            let day = i64::try_from(r.ivar()?)
                .ok()
                .and_then(|d| d.checked_mul(DAY_US))
                .ok_or_else(|| StoreError::Corrupt("trace rollup day out of range".into()))?;
            let env = if format == TRACE_ROLLUP_FORMAT {
                let index = r.len()?;
                envs.get(index).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("trace rollup names environment {index}"))
                })?
            } else {
                r.string()?
            };
            let model = r.string()?;
            let n = u64::try_from(r.uvar()?)
                .map_err(|_| StoreError::Corrupt("trace rollup count out of range".into()))?;
            t.members.insert((day, env, model), n);
        }
        r.finish("trace rollup")?;
        Ok(t)
    }

    /// The trace's stored state (empty when it has none).
    pub fn get<T>(t: &T, project: &str, trace: &str) -> Result<TraceRollup, StoreError>
    where
        T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    {
        t.get((project, trace))?
            .map(|v| TraceRollup::decode(v.value()))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

/// A trace's state inside one transaction, and whether it differs from what is stored.
struct TraceState {
    rollup: TraceRollup,
    dirty: bool,
}

fn model_day_key(m: &Member) -> KeyRef<'_> {
    KeyRef(kind(Dim::Model, Gran::Day), m.0, &m.1, &m.2)
}

/// A project's pending deltas, created on first use.
fn deltas_of<'a>(deltas: &'a mut IndexMap<String, Deltas>, project: &str) -> &'a mut Deltas {
    let i = match deltas.get_index_of(project) {
        Some(i) => i,
        None => deltas.insert_full(project.to_owned(), Deltas::default()).0,
    };
    &mut deltas[i]
}

/// The part of an observation's aggregate that trace rows carry: no histograms (a trace's
/// latency is not the sum of its observations') and no trace count.
fn trace_share(a: &Agg) -> Agg {
    let mut s = a.clone();
    s.latency = Default::default();
    s.ttft = Default::default();
    s.traces = 0;
    s
}

/// A trace's contribution to its rows: itself, plus its observations' sums.
fn trace_contribution(totals: &Agg) -> Agg {
    let mut c = trace_share(totals);
    c.traces = 1;
    c
}

/// Pending changes to rollup rows, summed per key before touching the table.
#[derive(Default)]
struct Deltas(IndexMap<RowKey, Agg, foldhash::fast::RandomState>);

/// Rollup deltas of one write transaction, per project, summed across all its records and
/// written once before the commit (`apply`). The records of one group commit mostly share
/// their rows (same hour, model, environment), so this turns ~14 row reads and writes per
/// observation into a few per group. Nothing reads rollup rows inside the writer's
/// transaction, so holding them back until the commit changes no answer.
///
/// It also remembers each trace's row keys for the transaction: every observation moves its
/// trace's rows too, and a trace's several observations would otherwise each read and decode
/// the trace record. `trace_changed` (called on every trace write and delete) keeps it current.
///
/// Each trace's totals and memberships (`TraceRollup`) are held the same way: read on first
/// touch, kept current in memory, written once at the commit when they changed. A trace's
/// observations mostly arrive in one request, so its value is written once instead of once per
/// observation.
#[derive(Default)]
pub(crate) struct Pending {
    deltas: IndexMap<String, Deltas>,
    trace_keys: HashMap<(String, String), Option<Vec<RowKey>>>,
    /// (project, trace) → the trace's rollup state as of now in the transaction.
    traces: HashMap<(String, String), TraceState>,
}

impl Pending {
    fn project(&mut self, project: &str) -> &mut Deltas {
        deltas_of(&mut self.deltas, project)
    }

    /// Adds `agg` to the rows of a trace (none when it does not exist); the trace's row keys
    /// are read once per transaction.
    fn add_to_trace_rows(
        &mut self,
        tx: &WriteTransaction,
        held: Option<&Values>,
        project: &str,
        trace_id: &str,
        agg: &Agg,
    ) -> Result<(), StoreError> {
        let key = (project.to_owned(), trace_id.to_owned());
        if !self.trace_keys.contains_key(&key) {
            let trace: Option<TraceRecord> = {
                let t = tx.open_table(tables::TRACES)?;
                t.get((project, trace_id))?
                    .map(|v| codec::decode_row(&values::resolve_write(tx, held, v.value())?))
                    .transpose()?
            };
            self.trace_keys
                .insert(key.clone(), trace.as_ref().map(trace_keys));
        }
        if let Some(Some(keys)) = self.trace_keys.get(&key) {
            deltas_of(&mut self.deltas, project).add(keys.iter().map(KeyRef::of), agg, false);
        }
        Ok(())
    }

    /// Writes every pending delta into `tx` and empties the set.
    pub(crate) fn apply(&mut self, tx: &WriteTransaction) -> Result<(), StoreError> {
        for (project, deltas) in std::mem::take(&mut self.deltas) {
            deltas.apply(tx, &project)?;
        }
        self.trace_keys.clear();
        let mut dirty: Vec<_> = self
            .traces
            .drain()
            .filter(|(_, state)| state.dirty)
            .collect();
        // Key order: neighbouring rows share pages, so sorted inserts touch each page once.
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut t = tx.open_table(TRACE_ROLLUPS)?;
        for ((project, trace), state) in dirty {
            let key = (project.as_str(), trace.as_str());
            if state.rollup.is_empty() {
                t.remove(key)?;
            } else {
                t.insert(key, state.rollup.encode().as_slice())?;
            }
        }
        Ok(())
    }

    /// A trace's rollup state as of now in the transaction, read from the table on first touch.
    fn trace(
        &mut self,
        tx: &WriteTransaction,
        project: &str,
        trace: &str,
    ) -> Result<&mut TraceState, StoreError> {
        let key = (project.to_owned(), trace.to_owned());
        let state = match self.traces.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let rollup = TraceRollup::get(&tx.open_table(TRACE_ROLLUPS)?, project, trace)?;
                e.insert(TraceState {
                    rollup,
                    dirty: false,
                })
            }
        };
        Ok(state)
    }

    /// Moves a membership count by `step`; true when the membership appeared or disappeared.
    fn step_member(
        &mut self,
        tx: &WriteTransaction,
        project: &str,
        m: &Member,
        step: i64,
    ) -> Result<bool, StoreError> {
        let state = self.trace(tx, project, &m.3)?;
        let key = (m.0, m.1.clone(), m.2.clone());
        let before = state.rollup.members.get(&key).copied().unwrap_or(0);
        let now = before.saturating_add_signed(step);
        if now != before {
            state.dirty = true;
            if now == 0 {
                state.rollup.members.remove(&key);
            } else {
                state.rollup.members.insert(key, now);
            }
        }
        Ok((before == 0) != (now == 0))
    }
}

impl Deltas {
    fn add<'k>(&mut self, keys: impl IntoIterator<Item = KeyRef<'k>>, agg: &Agg, negative: bool) {
        for k in keys {
            let slot = match self.0.get_index_of(&k) {
                Some(i) => &mut self.0[i],
                None => self.0.entry(k.owned()).or_default(),
            };
            if negative {
                slot.sub(agg);
            } else {
                slot.add(agg);
            }
        }
    }

    fn add_traces(&mut self, key: KeyRef<'_>, n: i64) {
        self.add(
            [key],
            &Agg {
                traces: n,
                ..Agg::default()
            },
            false,
        );
    }

    fn apply(mut self, tx: &WriteTransaction, project: &str) -> Result<(), StoreError> {
        // Key order: neighbouring rows share pages.
        self.0.sort_unstable_keys();
        let mut t = tx.open_table(ROLLUPS)?;
        for ((kind, bucket, env, value), delta) in self.0 {
            if delta.is_zero() {
                continue;
            }
            let key = (project, kind, bucket, env.as_str(), value.as_str());
            let mut row = match t.get(key)? {
                Some(v) => Agg::decode(v.value())?,
                None => Agg::default(),
            };
            row.add(&delta);
            if row.is_zero() {
                t.remove(key)?;
            } else {
                t.insert(key, row.encode().as_slice())?;
            }
        }
        Ok(())
    }
}

/// Keeps the rollups in step with one observation write: `old` is the stored version before
/// it (None when new), `new` the version written (None when deleted). Called by the writer in
/// the transaction that writes the record.
pub(crate) fn observation_changed(
    tx: &WriteTransaction,
    held: Option<&Values>,
    pending: &mut Pending,
    project: &str,
    old: Option<&ObservationRecord>,
    new: Option<&ObservationRecord>,
) -> Result<(), StoreError> {
    let old_agg = old.map(Agg::of_observation);
    let new_agg = new.map(Agg::of_observation);
    let old_keys = old.map(obs_key_refs);
    let new_keys = new.map(obs_key_refs);
    let old_member = old.map(member);
    let new_member = new.map(member);
    if old_agg == new_agg && old_keys == new_keys && old_member == new_member {
        // The common re-merge that changed nothing rollups see.
        return Ok(());
    }
    let mut change = new_agg.clone().unwrap_or_default();
    if let Some(a) = &old_agg {
        change.sub(a);
    }
    let trace_id = new.or(old).map(|o| o.trace_id.as_str()).unwrap_or("");
    let trace_change = (!change.is_zero()).then(|| trace_share(&change));
    if let Some(share) = &trace_change {
        let state = pending.trace(tx, project, trace_id)?;
        state.rollup.totals.add(share);
        state.dirty = true;
    }
    if old_member != new_member {
        if let Some(m) = &old_member
            && pending.step_member(tx, project, m, -1)?
        {
            pending.project(project).add_traces(model_day_key(m), -1);
        }
        if let Some(m) = &new_member
            && pending.step_member(tx, project, m, 1)?
        {
            pending.project(project).add_traces(model_day_key(m), 1);
        }
    }
    let d = pending.project(project);
    if let (Some(keys), Some(agg)) = (&old_keys, &old_agg) {
        d.add(keys.iter().copied(), agg, true);
    }
    if let (Some(keys), Some(agg)) = (&new_keys, &new_agg) {
        d.add(keys.iter().copied(), agg, false);
    }
    if let Some(share) = &trace_change {
        pending.add_to_trace_rows(tx, held, project, trace_id, share)?;
    }
    Ok(())
}

/// Keeps the rollups in step with one trace write (or delete, `new` = None). The trace's rows
/// move only when its bucket, environment, user or name changed.
pub(crate) fn trace_changed(
    tx: &WriteTransaction,
    pending: &mut Pending,
    project: &str,
    old: Option<&TraceRecord>,
    new: Option<&TraceRecord>,
) -> Result<(), StoreError> {
    let old_keys = old.map(trace_key_refs);
    let new_keys = new.map(trace_key_refs);
    let Some(id) = new.or(old).map(|t| t.id.as_str()) else {
        return Ok(());
    };
    pending
        .trace_keys
        .insert((project.to_owned(), id.to_owned()), new.map(trace_keys));
    if old_keys == new_keys {
        return Ok(());
    }
    let c = trace_contribution(&pending.trace(tx, project, id)?.rollup.totals);
    let d = pending.project(project);
    if let Some(keys) = &old_keys {
        d.add(keys.iter().copied(), &c, true);
    }
    if let Some(keys) = &new_keys {
        d.add(keys.iter().copied(), &c, false);
    }
    Ok(())
}

/// Every rollup table's contents, as a from-scratch computation over the records gives them.
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    pub rollups: BTreeMap<(String, RowKey), Agg>,
    pub members: BTreeMap<(String, Member), u64>,
    pub totals: BTreeMap<(String, String), Agg>,
}

/// Computes the rollups from the records alone: the definition the incremental maintenance
/// must agree with, and what `rebuild` writes.
pub fn expected<O, T, V>(observations: &O, traces: &T, values: &V) -> Result<Expected, StoreError>
where
    O: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    V: ReadableTable<u64, &'static [u8]>,
{
    let mut e = Expected::default();
    let put = |e: &mut Expected, project: &str, keys: &[RowKey], agg: &Agg| {
        for k in keys {
            e.rollups
                .entry((project.to_string(), k.clone()))
                .or_default()
                .add(agg);
        }
    };
    for row in observations.iter()? {
        let (k, v) = row?;
        let (project, _) = k.value();
        let o: ObservationRecord = codec::decode_row(&values::resolve(values, v.value())?)?;
        let agg = Agg::of_observation(&o);
        put(&mut e, project, &obs_keys(&o), &agg);
        let m = member(&o);
        let count = e
            .members
            .entry((project.to_string(), m.clone()))
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            e.rollups
                .entry((project.to_string(), model_day_key(&m).owned()))
                .or_default()
                .traces += 1;
        }
        e.totals
            .entry((project.to_string(), o.trace_id.clone()))
            .or_default()
            .add(&trace_share(&agg));
    }
    for row in traces.iter()? {
        let (k, v) = row?;
        let (project, id) = k.value();
        let t: TraceRecord = codec::decode_row(&values::resolve(values, v.value())?)?;
        let totals = e
            .totals
            .get(&(project.to_string(), id.to_string()))
            .cloned()
            .unwrap_or_default();
        put(
            &mut e,
            project,
            &trace_keys(&t),
            &trace_contribution(&totals),
        );
    }
    e.rollups.retain(|_, a| !a.is_zero());
    e.totals.retain(|_, a| !a.is_zero());
    Ok(e)
}

/// What the rollup tables hold now.
pub fn stored<R, T>(rollups: &R, traces: &T) -> Result<Expected, StoreError>
where
    R: ReadableTable<(&'static str, u8, i64, &'static str, &'static str), &'static [u8]>,
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let mut e = Expected::default();
    for row in rollups.iter()? {
        let (k, v) = row?;
        let (p, kind, bucket, env, value) = k.value();
        e.rollups.insert(
            (
                p.to_string(),
                (kind, bucket, env.to_string(), value.to_string()),
            ),
            Agg::decode(v.value())?,
        );
    }
    for row in traces.iter()? {
        let (k, v) = row?;
        let (p, trace) = k.value();
        let t = TraceRollup::decode(v.value())?;
        for ((day, env, model), n) in t.members {
            e.members
                .insert((p.to_string(), (day, env, model, trace.to_string())), n);
        }
        if !t.totals.is_zero() {
            e.totals
                .insert((p.to_string(), trace.to_string()), t.totals);
        }
    }
    Ok(e)
}

/// Replaces every rollup row with what the records say, in the caller's transaction, and marks
/// them as built by this `ROLLUP_VERSION`. Returns the number of rollup rows written.
///
/// Streams one trace at a time: `observations_by_trace` and `traces` are both in (project,
/// trace) order, so walking them side by side gives each trace with its observations (and the
/// observations whose trace was never sent), and only the rollup rows, which are per bucket,
/// stay in memory. (`expected`, which holds every membership and total at once, took 1.1 GB at
/// 1M observations; a file upgraded to a new rollup version runs this on open.) What it
/// computes per record is what `expected` computes; the property tests hold the two equal.
pub(crate) fn rebuild(tx: &WriteTransaction) -> Result<usize, StoreError> {
    tx.delete_table(ROLLUPS)?;
    tx.delete_table(TRACE_ROLLUPS)?;
    tx.delete_table(tables::LEGACY_ROLLUP_TRACE_MODELS)?;
    tx.delete_table(tables::LEGACY_ROLLUP_TRACE_MEMBERS)?;
    tx.delete_table(tables::LEGACY_TRACE_TOTALS)?;
    let mut rows: BTreeMap<(String, RowKey), Agg> = BTreeMap::new();
    let mut put = |project: &str, keys: Vec<RowKey>, agg: &Agg| {
        for k in keys {
            rows.entry((project.to_owned(), k)).or_default().add(agg);
        }
    };
    {
        let observations = tx.open_table(tables::OBSERVATIONS)?;
        let by_trace = tx.open_table(tables::OBS_BY_TRACE)?;
        let traces = tx.open_table(tables::TRACES)?;
        let values = tx.open_table(tables::RECORD_VALUES)?;
        let mut out = tx.open_table(TRACE_ROLLUPS)?;
        let mut obs_iter = by_trace.iter()?;
        let mut trace_iter = traces.iter()?;
        let mut next_obs = || -> Result<Option<(String, String, String)>, StoreError> {
            obs_iter
                .next()
                .transpose()?
                .map(|(k, _)| {
                    let (p, t, o) = k.value();
                    Ok((p.to_owned(), t.to_owned(), o.to_owned()))
                })
                .transpose()
        };
        type Keyed = Option<((String, String), TraceRecord)>;
        let mut next_trace = || -> Result<Keyed, StoreError> {
            trace_iter
                .next()
                .transpose()?
                .map(|(k, v)| {
                    let (p, id) = k.value();
                    let rec = codec::decode_row(&values::resolve(&values, v.value())?)?;
                    Ok(((p.to_owned(), id.to_owned()), rec))
                })
                .transpose()
        };
        let mut obs = next_obs()?;
        let mut trace = next_trace()?;
        loop {
            let key = match (&obs, &trace) {
                (None, None) => break,
                (Some((p, t, _)), None) => (p.clone(), t.clone()),
                (None, Some((k, _))) => k.clone(),
                (Some((p, t, _)), Some((k, _))) => {
                    if (p, t) <= (&k.0, &k.1) {
                        (p.clone(), t.clone())
                    } else {
                        k.clone()
                    }
                }
            };
            let (project, trace_id) = (key.0.as_str(), key.1.as_str());
            let mut state = TraceRollup::default();
            while let Some((_, _, id)) = obs.as_ref().filter(|o| o.0 == key.0 && o.1 == key.1) {
                let o: ObservationRecord = observations
                    .get((project, id.as_str()))?
                    .map(|v| codec::decode_row(&values::resolve(&values, v.value())?))
                    .transpose()?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "observations_by_trace names observation {id} of trace {trace_id}, \
                             which does not exist"
                        ))
                    })?;
                let agg = Agg::of_observation(&o);
                put(project, obs_keys(&o), &agg);
                let m = member(&o);
                let count = state
                    .members
                    .entry((m.0, m.1.clone(), m.2.clone()))
                    .or_insert(0);
                *count += 1;
                if *count == 1 {
                    let one = Agg {
                        traces: 1,
                        ..Agg::default()
                    };
                    put(project, vec![model_day_key(&m).owned()], &one);
                }
                state.totals.add(&trace_share(&agg));
                obs = next_obs()?;
            }
            if let Some((_, t)) = trace.as_ref().filter(|(k, _)| *k == key) {
                put(project, trace_keys(t), &trace_contribution(&state.totals));
                trace = next_trace()?;
            }
            if !state.is_empty() {
                out.insert((project, trace_id), state.encode().as_slice())?;
            }
        }
    }
    rows.retain(|_, a| !a.is_zero());
    let mut t = tx.open_table(ROLLUPS)?;
    for ((p, (kind, bucket, env, value)), agg) in &rows {
        t.insert(
            (p.as_str(), *kind, *bucket, env.as_str(), value.as_str()),
            agg.encode().as_slice(),
        )?;
    }
    tx.open_table(META)?
        .insert(META_ROLLUPS, ROLLUP_VERSION.to_le_bytes().as_slice())?;
    Ok(rows.len())
}

/// One rollup row as queries see it.
#[derive(Debug, Clone)]
pub struct Row {
    pub bucket: i64,
    pub env: String,
    pub value: String,
    pub agg: Agg,
}

/// Rows of one kind whose bucket starts in `[from, to)`, in key order.
pub fn rows<R>(t: &R, project: &str, kind: u8, from: i64, to: i64) -> Result<Vec<Row>, StoreError>
where
    R: ReadableTable<(&'static str, u8, i64, &'static str, &'static str), &'static [u8]>,
{
    let mut out = Vec::new();
    if from >= to {
        return Ok(out);
    }
    for row in t.range((project, kind, from, "", "")..(project, kind, to, "", ""))? {
        let (k, v) = row?;
        let (_, _, bucket, env, value) = k.value();
        out.push(Row {
            bucket,
            env: env.to_string(),
            value: value.to_string(),
            agg: Agg::decode(v.value())?,
        });
    }
    Ok(out)
}

/// Traces of `project` with a timestamp in `[from, to)` (in one of `environments`, or in any
/// when it is empty), counted from the trace rows of the whole hours inside the range — whole
/// days from the day rows, the hours around them from the hour rows, so the cost is a few
/// dozen rows whatever the range holds. Returns the count and the hour-aligned part of the
/// range it covers (empty when no whole hour fits); the caller counts the uncovered edges,
/// `[from, covered.start)` and `[covered.end, to)`, itself. Both ends must be real bucket
/// positions (no open `i64::MIN`/`i64::MAX` end): the caller bounds an open range by its data.
pub fn trace_count<R>(
    t: &R,
    project: &str,
    environments: &[String],
    from: i64,
    to: i64,
) -> Result<(u64, std::ops::Range<i64>), StoreError>
where
    R: ReadableTable<(&'static str, u8, i64, &'static str, &'static str), &'static [u8]>,
{
    let ceil = |g: Gran, x: i64| {
        let b = g.bucket(x);
        if b < x { b + g.width() } else { b }
    };
    let (h0, h1) = (ceil(Gran::Hour, from), Gran::Hour.bucket(to));
    if h0 >= h1 {
        return Ok((0, from..from));
    }
    let (d0, d1) = (ceil(Gran::Day, from), Gran::Day.bucket(to));
    let hour = kind(Dim::Trace, Gran::Hour);
    let spans = if d0 < d1 {
        vec![
            (hour, h0, d0),
            (kind(Dim::Trace, Gran::Day), d0, d1),
            (hour, d1, h1),
        ]
    } else {
        vec![(hour, h0, h1)]
    };
    let mut n: i64 = 0;
    for (kind, a, b) in spans {
        for row in rows(t, project, kind, a, b)? {
            if environments.is_empty() || environments.contains(&row.env) {
                n += row.agg.traces;
            }
        }
    }
    let n = u64::try_from(n).map_err(|_| {
        StoreError::Corrupt(format!(
            "trace rollup rows of project {project} sum to a negative count ({n})"
        ))
    })?;
    Ok((n, h0..h1))
}
