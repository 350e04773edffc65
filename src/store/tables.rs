//! Table definitions and key layout. Every record key starts with the project id, so one
//! project's data is contiguous and no query can wander into another project's range.
//!
//! Times in keys are `i64` microseconds (UTC), so ranges over time are key ranges.

use redb::{Database, MultimapTableDefinition, ReadableTable, TableDefinition};

use super::{SCHEMA_VERSION, StoreError, UPGRADES_FROM};

/// `META_SCHEMA` → schema version (u64 LE); `META_SEQ` → next change sequence number.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const META_SCHEMA: &str = "schema_version";
pub const META_SEQ: &str = "next_seq";
/// Last health-check write (µs); only proves a commit works.
pub const META_PROBE: &str = "health_probe";
/// Rollup format the rollup tables were built with (u64 LE); when it differs from
/// `analytics::rollup::ROLLUP_VERSION` (or is absent: a file from before rollups), every rollup
/// is rebuilt from the records on open.
pub const META_ROLLUPS: &str = "rollups_version";
/// Last change-log sequence the evaluation runner has turned into jobs (u64 LE).
pub const META_EVAL_CURSOR: &str = "eval_cursor";
/// `META_DICT` → id (u64 LE) of the trained dictionary new values are compressed with (`dict`).
pub const META_DICT: &str = "dict";

pub const PROJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("projects");
/// Public key → key record (salted secret hash).
pub const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Hex SHA-256 of a dashboard session token → `WebSessionRecord`. The token itself is never
/// stored, so a copy of the file does not let anyone resume a session.
pub const WEB_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("web_sessions");

/// (project, trace id) → `TraceRecord`: since schema version 5 a reference to its value in
/// `RECORD_VALUES` (codec tag 9); older rows hold the value itself.
pub const TRACES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("traces");
/// (project, trace id) → `Io`, compressed when large.
pub const TRACE_IO: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("trace_io");
/// (project, timestamp, trace id).
pub const TRACES_BY_TIME: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("traces_by_time");
/// (project, user id / session id / name, timestamp, trace id).
pub const TRACES_BY_USER: TableDefinition<(&str, &str, i64, &str), ()> =
    TableDefinition::new("traces_by_user");
pub const TRACES_BY_SESSION: TableDefinition<(&str, &str, i64, &str), ()> =
    TableDefinition::new("traces_by_session");
pub const TRACES_BY_NAME: TableDefinition<(&str, &str, i64, &str), ()> =
    TableDefinition::new("traces_by_name");

/// (project, observation id) → `ObservationRecord`: since schema version 5 a reference to its
/// value in `RECORD_VALUES` (as `TRACES`); older rows hold the value itself.
pub const OBSERVATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("observations");
pub const OBS_IO: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("observation_io");
/// (project, trace id, observation id) → `ObsSummary` (start, end, cost).
pub const OBS_BY_TRACE: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("observations_by_trace");
/// (project, start time, observation id).
pub const OBS_BY_TIME: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("observations_by_time");

/// (project, session id) → `SessionRecord`.
pub const SESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sessions");
pub const SESSIONS_BY_TIME: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("sessions_by_time");

/// (project, score id) → `ScoreRecord`.
pub const SCORES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("scores");
/// (project, trace id) → score ids; session scores are keyed by session id with a `s:` prefix.
pub const SCORES_BY_TARGET: MultimapTableDefinition<(&str, &str), &str> =
    MultimapTableDefinition::new("scores_by_target");
pub const SCORES_BY_TIME: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("scores_by_time");

/// (project, model id) → `cost::ModelDef` (JSON): the project's own model prices, created with
/// `POST /api/public/models`. Built-in and config-file models are never stored.
pub const MODELS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("models");

/// (project, prompt name, version) → `prompt::PromptVersion` (JSON): prompt management. A
/// prompt's versions are one contiguous range, so numbering and label moves read only it.
pub const PROMPTS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("prompts");
/// (project, config id) → `score_config::ScoreConfig` (JSON).
pub const SCORE_CONFIGS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("score_configs");

/// (project, evaluator id) → `eval::Evaluator` (JSON).
pub const EVALUATORS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("evaluators");
/// (project, evaluator id) → `eval::EvalStatus`: counters kept as jobs are queued and finished.
pub const EVAL_STATUS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("eval_status");
/// (project, evaluator id, `t:<trace>` / `o:<observation>`) → `eval::EvalJob`. One row per
/// record an evaluator ever took: a record is judged at most once per evaluator.
pub const EVAL_JOBS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("eval_jobs");
/// (due µs, project, evaluator id, target key): the pending jobs, oldest due first.
pub const EVAL_DUE: TableDefinition<(i64, &str, &str, &str), ()> = TableDefinition::new("eval_due");

/// Analytics rollups, derived state kept by the writer in the same transaction as the record
/// change (see `analytics::rollup`), and rebuildable from the records:
///
/// (project, kind, bucket start µs (UTC hour or day), environment, value) → `analytics::Agg`
/// (binary, varints; see `Agg::encode`). `kind` = dimension × 2 + granularity (0 hour, 1 day);
/// dimensions 0–3 are observation rows bucketed by start time (all, model, name, type), 4–6
/// trace rows bucketed by trace timestamp (all, user id, trace name). Keys sort by kind, then
/// time, so "cost by model over 7 days" is one contiguous range of 7 × models rows.
pub const ROLLUPS: TableDefinition<(&str, u8, i64, &str, &str), &[u8]> =
    TableDefinition::new("rollups");
/// (project, trace id) → `analytics::rollup::TraceRollup`: the sum of the trace's observations
/// (so the trace's rows can be moved when its user, name, timestamp or environment change) and
/// its observations per day, environment and model (when one goes 0 ↔ 1 the model's
/// distinct-trace count for the day changes). One value per trace, so an observation dirties one
/// entry of its trace here, not one per total and membership.
pub const TRACE_ROLLUPS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("trace_rollups");
/// Rollup versions 1 and 2 kept the memberships (by day first in version 1, by trace first in
/// version 2) and the totals as rows of their own. Not in `visit_all`: the rollup rebuild such
/// files get on open drops them.
pub const LEGACY_ROLLUP_TRACE_MODELS: TableDefinition<(&str, i64, &str, &str, &str), u64> =
    TableDefinition::new("rollup_trace_models");
pub const LEGACY_ROLLUP_TRACE_MEMBERS: TableDefinition<(&str, &str, i64, &str, &str), u64> =
    TableDefinition::new("rollup_trace_members");
pub const LEGACY_TRACE_TOTALS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("trace_totals");

/// Sequence number → `ChangeRef`: the log that derived state (search index, rollups, forwarding)
/// follows. Written in the same transaction as the change, so it can never miss one.
pub const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// Sequence number → the value of a trace or observation row (`values`): appended in the order
/// written, so its pages fill up, while the row tables keyed by random ids hold short
/// references.
pub const RECORD_VALUES: TableDefinition<u64, &[u8]> = TableDefinition::new("record_values");

/// Dictionary id → zstd dictionary trained from the store's values (`dict`). Never deleted:
/// values anywhere in the file may name any of them.
pub const DICTS: TableDefinition<u64, &[u8]> = TableDefinition::new("dicts");

/// Creates every table and checks the schema version on open.
pub fn init(db: &Database) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        let mut meta = tx.open_table(META)?;
        let found = meta
            .get(META_SCHEMA)?
            .map(|v| read_u64(v.value()))
            .transpose()?;
        match found {
            None => {
                meta.insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                meta.insert(META_SEQ, 1u64.to_le_bytes().as_slice())?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) if UPGRADES_FROM.contains(&v) => {
                meta.insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(found) => {
                return Err(StoreError::SchemaMismatch {
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        drop(meta);
        struct Create<'a>(&'a redb::WriteTransaction);
        impl TableVisitor for Create<'_> {
            fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
                &mut self,
                def: TableDefinition<K, V>,
            ) -> Result<(), StoreError> {
                self.0.open_table(def)?;
                Ok(())
            }
            fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
                &mut self,
                def: MultimapTableDefinition<K, V>,
            ) -> Result<(), StoreError> {
                self.0.open_multimap_table(def)?;
                Ok(())
            }
        }
        visit_all(&mut Create(&tx))?;
    }
    tx.commit()?;
    Ok(())
}

/// Something done to every table; `visit_all` is the one list of tables, so creating them on
/// open and copying them in a backup can never disagree.
pub trait TableVisitor {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError>;
    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<K, V>,
    ) -> Result<(), StoreError>;
}

pub fn visit_all(v: &mut impl TableVisitor) -> Result<(), StoreError> {
    v.table(META)?;
    v.table(PROJECTS)?;
    v.table(API_KEYS)?;
    v.table(USERS)?;
    v.table(WEB_SESSIONS)?;
    v.table(TRACES)?;
    v.table(TRACE_IO)?;
    v.table(TRACES_BY_TIME)?;
    v.table(TRACES_BY_USER)?;
    v.table(TRACES_BY_SESSION)?;
    v.table(TRACES_BY_NAME)?;
    v.table(OBSERVATIONS)?;
    v.table(OBS_IO)?;
    v.table(OBS_BY_TRACE)?;
    v.table(OBS_BY_TIME)?;
    v.table(SESSIONS)?;
    v.table(SESSIONS_BY_TIME)?;
    v.table(SCORES)?;
    v.multimap(SCORES_BY_TARGET)?;
    v.table(SCORES_BY_TIME)?;
    v.table(CHANGES)?;
    v.table(RECORD_VALUES)?;
    v.table(DICTS)?;
    v.table(MODELS)?;
    v.table(ROLLUPS)?;
    v.table(TRACE_ROLLUPS)?;
    v.table(PROMPTS)?;
    v.table(SCORE_CONFIGS)?;
    v.table(EVALUATORS)?;
    v.table(EVAL_STATUS)?;
    v.table(EVAL_JOBS)?;
    v.table(EVAL_DUE)?;
    Ok(())
}

pub fn read_u64(b: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt("expected an 8-byte integer".into()))?;
    Ok(u64::from_le_bytes(arr))
}

/// What a change-log entry points at.
///
/// `expired` marks a delete made by retention rather than asked for: followers that mirror
/// the store (the search index) apply it like any delete, but a forward does not replay it
/// upstream, whose own retention decides how long it keeps data. `created` marks the change
/// that wrote a record where none was (the first write, or the first after a delete): a
/// follower that has applied every change before it knows it holds nothing of that record
/// (the search index then adds its document without deleting an old one first). Both are
/// absent in older entries and never written when false, so files stay readable both ways.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeRef {
    Trace {
        project: String,
        id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        created: bool,
    },
    Observation {
        project: String,
        id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        created: bool,
    },
    Score {
        project: String,
        id: String,
    },
    TraceDeleted {
        project: String,
        id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        expired: bool,
    },
    ScoreDeleted {
        project: String,
        id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        expired: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub fn score_target_key(score: &crate::record::ScoreRecord) -> String {
    match &score.target {
        crate::record::ScoreTarget::Trace { trace_id, .. } => format!("t:{trace_id}"),
        crate::record::ScoreTarget::Session { session_id } => format!("s:{session_id}"),
        crate::record::ScoreTarget::DatasetRun { dataset_run_id } => format!("d:{dataset_run_id}"),
    }
}
