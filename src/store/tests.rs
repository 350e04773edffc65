//! Store tests against a real redb file in a temporary directory.

use std::sync::{Arc, Barrier, Mutex};

use super::*;
use crate::record::{
    Change, ObservationPatch, ObservationType, Patch, ScoreRecord, ScoreSource, ScoreTarget,
    ScoreValue, TimedChange, TracePatch,
};
use crate::time::Timestamp;
use redb::ReadableTableMetadata;

/// Blocks the writer inside its transaction until released, so the queue can be filled.
struct Gate(Mutex<Option<Arc<Barrier>>>);
impl Pricer for Gate {
    fn apply(
        &self,
        _: &str,
        _: &mut ObservationRecord,
        _: Option<&serde_json::Value>,
        _: Option<&serde_json::Value>,
    ) {
        let gate = self.0.lock().unwrap().take();
        if let Some(b) = gate {
            b.wait();
            b.wait();
        }
    }
}

fn trace(id: &str, session: Option<&str>, at: i64) -> TimedChange {
    TimedChange {
        at: Timestamp::from_micros(at),
        change: Change::Trace(TracePatch {
            id: id.into(),
            name: Patch::Set(format!("name-{id}")),
            session_id: session.map_or(Patch::Absent, |s| Patch::Set(s.into())),
            input: Some(serde_json::json!({"q": "x".repeat(2000)})),
            ..Default::default()
        }),
    }
}

fn obs(id: &str, trace: &str, at: i64) -> TimedChange {
    let mut p = ObservationPatch::new(id, ObservationType::Span);
    p.trace_id = Some(trace.into());
    p.start_time = Some(Timestamp::from_micros(at));
    p.end_time = Some(Timestamp::from_micros(at + 1_000_000));
    TimedChange {
        at: Timestamp::from_micros(at),
        change: Change::Observation(p),
    }
}

fn score(id: &str, trace: &str) -> TimedChange {
    let now = Timestamp::from_micros(5);
    TimedChange {
        at: now,
        change: Change::Score(Box::new(ScoreRecord {
            id: id.into(),
            target: ScoreTarget::Trace {
                trace_id: trace.into(),
                observation_id: None,
            },
            name: "s".into(),
            value: ScoreValue::Numeric(1.0),
            source: ScoreSource::Api,
            comment: None,
            metadata: serde_json::Value::Null,
            config_id: None,
            queue_id: None,
            author_user_id: None,
            environment: "default".into(),
            timestamp: now,
            created_at: now,
            updated_at: now,
        })),
    }
}

fn write(store: &Store, project: &str, changes: Vec<TimedChange>) {
    store
        .writer()
        .submit_blocking(WriteOp::Changes {
            project: project.into(),
            changes,
        })
        .unwrap();
}

fn delete_traces(store: &Store, ids: &[&str]) {
    store
        .writer()
        .submit_blocking(WriteOp::DeleteTraces {
            project: "p".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap();
}

#[test]
fn committed_writes_survive_reopen_and_stay_in_their_project() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        write(
            &store,
            "a",
            vec![trace("t1", Some("s1"), 1), obs("o1", "t1", 2)],
        );
        write(&store, "b", vec![trace("t1", None, 1)]);
        store.shutdown();
    }
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let t = store.trace("a", "t1").unwrap().unwrap();
    assert_eq!(t.session_id.as_deref(), Some("s1"));
    assert_eq!(
        store.trace_io("a", "t1").unwrap().input.unwrap()["q"]
            .as_str()
            .unwrap()
            .len(),
        2000
    );
    assert_eq!(store.trace_observations("a", "t1").unwrap().len(), 1);
    assert!(store.trace_observations("b", "t1").unwrap().is_empty());
    assert!(store.session("b", "s1").unwrap().is_none());
    assert!(store.session("a", "s1").unwrap().is_some());
    let all = Window {
        skip: 0,
        limit: 100,
    };
    assert_eq!(
        store
            .list_traces("b", &TraceQuery::default(), all)
            .unwrap()
            .total,
        1
    );
}

#[test]
fn a_pinned_handle_reads_the_state_its_first_read_saw() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    write(&store, "p", vec![trace("t1", None, 1), obs("o1", "t1", 2)]);
    let pinned = store.pinned();
    // The transaction opens with the first read, not with the handle.
    write(&store, "p", vec![obs("o2", "t1", 3)]);
    assert_eq!(pinned.trace_summaries("p", "t1").unwrap().len(), 2);
    write(&store, "p", vec![trace("t2", None, 4), obs("o3", "t1", 5)]);
    // Every later read through it, whatever it reads, sees that state...
    let all = Window {
        skip: 0,
        limit: 100,
    };
    assert!(pinned.trace("p", "t2").unwrap().is_none());
    assert_eq!(pinned.trace_observations("p", "t1").unwrap().len(), 2);
    let listed = pinned
        .list_traces("p", &TraceQuery::default(), all)
        .unwrap();
    assert_eq!(listed.total, 1);
    // ...while the store, and a handle pinned now, see the writes since.
    assert!(store.trace("p", "t2").unwrap().is_some());
    assert_eq!(store.pinned().trace_summaries("p", "t1").unwrap().len(), 3);
}

#[test]
fn full_queue_answers_busy_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let gate = Arc::new(Gate(Mutex::new(Some(barrier.clone()))));
    let store = Store::open(dir.path(), 1, gate).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = store.writer().clone();
        // First write: the writer takes it and blocks inside the transaction.
        let first = tokio::spawn({
            let w = w.clone();
            async move {
                w.submit(WriteOp::Changes {
                    project: "p".into(),
                    changes: vec![obs("o1", "t", 1)],
                })
                .await
            }
        });
        tokio::task::spawn_blocking({
            let b = barrier.clone();
            move || b.wait()
        })
        .await
        .unwrap();
        // Second fills the one queue slot; the third finds it full.
        let second = tokio::spawn({
            let w = w.clone();
            async move {
                w.submit(WriteOp::Changes {
                    project: "p".into(),
                    changes: vec![obs("o2", "t", 2)],
                })
                .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let third = w
            .submit(WriteOp::Changes {
                project: "p".into(),
                changes: vec![obs("o3", "t", 3)],
            })
            .await;
        assert!(matches!(third, Err(StoreError::Busy)), "{third:?}");
        tokio::task::spawn_blocking(move || barrier.wait())
            .await
            .unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    });
    assert!(store.observation("p", "o1").unwrap().is_some());
    assert!(store.observation("p", "o2").unwrap().is_some());
    assert!(store.observation("p", "o3").unwrap().is_none());
}

/// Panics on observations named `boom`: stands in for any bug in merge, pricing or rollups.
struct Boom;
impl Pricer for Boom {
    fn apply(
        &self,
        _: &str,
        o: &mut ObservationRecord,
        _: Option<&serde_json::Value>,
        _: Option<&serde_json::Value>,
    ) {
        assert!(o.id != "boom", "pricing bug");
    }
}

#[test]
fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(Boom)).unwrap();
    let submit = |changes| {
        store.writer().submit_blocking(WriteOp::Changes {
            project: "p".into(),
            changes,
        })
    };
    let err = submit(vec![trace("t1", None, 1), obs("boom", "t1", 2)]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Internal(m) if m.contains("pricing bug")),
        "{err}"
    );
    // Nothing of the failed request was committed; later writes go through.
    assert!(store.trace("p", "t1").unwrap().is_none());
    submit(vec![trace("t2", None, 3), obs("o2", "t2", 4)]).unwrap();
    assert!(store.observation("p", "o2").unwrap().is_some());
}

#[test]
fn deleting_a_trace_removes_its_observations_scores_and_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    write(
        &store,
        "p",
        vec![
            trace("t1", Some("s"), 1),
            obs("o1", "t1", 2),
            score("sc1", "t1"),
            trace("t2", Some("s"), 3),
        ],
    );
    let before = store.changes_since(0, 100).unwrap().len();
    delete_traces(&store, &["t1"]);
    assert!(store.trace("p", "t1").unwrap().is_none());
    assert!(store.observation("p", "o1").unwrap().is_none());
    assert!(store.score("p", "sc1").unwrap().is_none());
    let all = Window {
        skip: 0,
        limit: 100,
    };
    let list = store.list_traces("p", &TraceQuery::default(), all).unwrap();
    assert_eq!(
        list.items.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t2"]
    );
    assert_eq!(store.session_traces("p", "s").unwrap().len(), 1);
    assert_eq!(
        store
            .list_observations("p", &ObservationQuery::default(), all)
            .unwrap()
            .total,
        0
    );
    let log = store.changes_since(0, 100).unwrap();
    assert!(log.len() > before);
    assert!(
        log.iter()
            .any(|(_, c)| matches!(c, ChangeRef::TraceDeleted { id, .. } if id == "t1"))
    );
    // Sequence numbers are strictly increasing and resumable.
    let tail = store.changes_since(log[1].0, 100).unwrap();
    assert_eq!(tail.len(), log.len() - 2);
}

/// Every stored trace and observation refers to exactly one value in `record_values`: an
/// update replaces its value, a delete removes it, none is left behind.
#[test]
fn trace_and_observation_values_are_one_entry_each_through_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let check = |store: &Store, rows: u64| {
        let snap = store.snapshot().unwrap();
        let values = snap.tx.open_table(tables::RECORD_VALUES).unwrap();
        let mut seqs = std::collections::BTreeSet::new();
        for table in [tables::TRACES, tables::OBSERVATIONS] {
            for e in snap.tx.open_table(table).unwrap().iter().unwrap() {
                let (k, v) = e.unwrap();
                let seq = codec::value_ref(v.value()).unwrap();
                let seq = seq.unwrap_or_else(|| panic!("{:?} holds its value in place", k.value()));
                assert!(values.get(seq).unwrap().is_some(), "{:?}", k.value());
                assert!(seqs.insert(seq), "two rows share value {seq}");
            }
        }
        assert_eq!(seqs.len() as u64, rows);
        assert_eq!(values.len().unwrap(), rows, "values nothing refers to");
    };
    write(
        &store,
        "p",
        vec![
            trace("t1", None, 1),
            obs("o1", "t1", 2),
            obs("o2", "t1", 3),
            trace("t2", None, 4),
            obs("o3", "t2", 5),
        ],
    );
    check(&store, 5);
    // Updates, in one request and across requests.
    write(&store, "p", vec![obs("o1", "t1", 6), obs("o1", "t1", 7)]);
    write(
        &store,
        "p",
        vec![trace("t2", Some("s"), 8), obs("o3", "t2", 9)],
    );
    check(&store, 5);
    assert_eq!(
        store
            .trace("p", "t2")
            .unwrap()
            .unwrap()
            .session_id
            .as_deref(),
        Some("s")
    );
    delete_traces(&store, &["t1"]);
    check(&store, 2);
    store.shutdown();
    drop(store);
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    check(&store, 2);
    assert!(store.observation("p", "o3").unwrap().is_some());
}

/// A transaction's time-index entries go in sorted, so observations that arrive out of order
/// within each request still leave the index's pages full, and the index stays exact through
/// moves and deletes in the same transaction.
#[test]
fn time_index_pages_fill_up_when_spans_arrive_out_of_order() {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Each request holds several leaves' worth of entries, in random order.
    for batch in 0..8i64 {
        let mut times: Vec<i64> = (0..500).map(|i| (batch * 500 + i) * 1_000).collect();
        times.shuffle(&mut rng);
        // One event time per request, as an SDK flushing a batch sends: the writer applies
        // changes in event-time order, so equal times keep the shuffled order.
        let changes = times
            .iter()
            .map(|&t| {
                let mut c = obs(&format!("o{t}"), &format!("t{}", t / 4_000), t);
                c.at = Timestamp::from_micros(batch * 500_000);
                c
            })
            .collect();
        write(&store, "p", changes);
    }
    // One request creates an observation and moves it (an older event with an earlier start),
    // and creates a trace with an observation that a later transaction deletes.
    write(
        &store,
        "p",
        vec![
            obs("m", "t1", 9_600_000),
            obs("m", "t1", 9_500_000),
            trace("gone", None, 9_600_000),
            obs("g1", "gone", 9_700_000),
        ],
    );
    let mut batch = vec![trace("gone", None, 9_600_000)];
    batch.push(obs("g2", "gone", 9_800_000));
    write(&store, "p", batch);
    delete_traces(&store, &["gone"]);
    let listed = store
        .observations_between("p", i64::MIN, i64::MAX, 10_000)
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 4_001);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].start_time <= w[1].start_time)
    );
    assert_eq!(listed.last().unwrap().id, "m");
    assert_eq!(listed.last().unwrap().start_time.micros(), 9_500_000);
    let snap = store.snapshot().unwrap();
    let index = snap.tx.open_table(tables::OBS_BY_TIME).unwrap();
    assert_eq!(index.len().unwrap(), 4_001);
    // Unused page space; entries this small carry a large share of per-entry metadata, which
    // is not slack. Inserted as they arrived: 38 % unused.
    let s = index.stats().unwrap();
    let unused = s.fragmented_bytes() as f64
        / (s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes()) as f64;
    assert!(
        unused < 0.15,
        "{unused:.2} of the time index's pages unused"
    );
}

#[test]
fn reapplying_the_same_events_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let batch = vec![
        trace("t1", None, 10),
        obs("o1", "t1", 20),
        score("s1", "t1"),
    ];
    write(&store, "p", batch.clone());
    let first = (
        store.trace("p", "t1").unwrap().unwrap(),
        store.observation("p", "o1").unwrap().unwrap(),
    );
    write(&store, "p", batch);
    let second = (
        store.trace("p", "t1").unwrap().unwrap(),
        store.observation("p", "o1").unwrap().unwrap(),
    );
    assert_eq!(
        (
            first.0.name,
            first.0.timestamp,
            first.1.start_time,
            first.1.end_time
        ),
        (
            second.0.name,
            second.0.timestamp,
            second.1.start_time,
            second.1.end_time
        )
    );
    let all = Window {
        skip: 0,
        limit: 100,
    };
    assert_eq!(
        store
            .list_traces("p", &TraceQuery::default(), all)
            .unwrap()
            .total,
        1
    );
    assert_eq!(store.trace_scores("p", "t1").unwrap().len(), 1);
}

/// An empty store file that says it was written by schema `version`.
fn empty_store_of_schema(dir: &std::path::Path, version: u64) {
    let store = Store::open(dir, 8, Arc::new(NoPrices)).unwrap();
    store.shutdown();
    drop(store);
    let db = redb::Database::open(dir.join(DB_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(tables::META)
        .unwrap()
        .insert(tables::META_SCHEMA, version.to_le_bytes().as_slice())
        .unwrap();
    tx.commit().unwrap();
}

#[test]
fn schema_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    empty_store_of_schema(dir.path(), 99);
    let err = Store::open(dir.path(), 8, Arc::new(NoPrices))
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::SchemaMismatch { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_schema_version_1_file_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    empty_store_of_schema(dir.path(), 1);
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    store.shutdown();
    drop(store);
    let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(tables::META).unwrap();
    let version = tables::read_u64(meta.get(tables::META_SCHEMA).unwrap().unwrap().value());
    assert_eq!(version.unwrap(), SCHEMA_VERSION);
}

#[test]
fn full_disk_fails_the_write_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(faults::FaultPlan::default());
    let store =
        Store::open_with_faults(dir.path(), 8, Arc::new(NoPrices), Some(plan.clone())).unwrap();
    write(&store, "p", vec![trace("t1", None, 1)]);
    // Enough rows that the file must grow.
    let big: Vec<_> = (0..200)
        .map(|i| trace(&format!("big{i}"), None, 3))
        .collect();
    plan.disk_full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = store.writer().submit_blocking(WriteOp::Changes {
        project: "p".into(),
        changes: big.clone(),
    });
    assert!(matches!(r, Err(StoreError::DiskFull(_))), "{r:?}");
    assert!(store.trace("p", "t1").unwrap().is_some());
    assert!(store.trace("p", "big0").unwrap().is_none());
    plan.disk_full
        .store(false, std::sync::atomic::Ordering::SeqCst);
    write(&store, "p", big);
    assert!(store.trace("p", "big199").unwrap().is_some());
}

#[test]
fn trace_pages_answered_by_one_index_match_the_row_filtered_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16, Arc::new(NoPrices)).unwrap();
    let sessions = ["s0", "s1", "s2"];
    let changes = (0..30)
        .map(|i| {
            trace(
                &format!("t{i:02}"),
                Some(sessions[i % 3]),
                1_000 + i as i64 * 10,
            )
        })
        .collect();
    write(&store, "p", changes);
    // Another project's traces share the index tables and must never be counted.
    write(
        &store,
        "q",
        (0..5)
            .map(|i| trace(&format!("x{i}"), Some("s1"), 1_100))
            .collect(),
    );

    let queries = [
        TraceQuery::default(),
        TraceQuery {
            session_id: Some("s1".into()),
            ..Default::default()
        },
        TraceQuery {
            from: Some(Timestamp::from_micros(1_050)),
            to: Some(Timestamp::from_micros(1_200)),
            ..Default::default()
        },
        TraceQuery {
            session_id: Some("s2".into()),
            from: Some(Timestamp::from_micros(1_100)),
            order: TraceOrder::TimestampAsc,
            ..Default::default()
        },
    ];
    for q in queries {
        // The same query restricted to a list of every id takes the row-by-row path, so it
        // must give the same page and total.
        let filtered = TraceQuery {
            ids: Some((0..30).map(|i| format!("t{i:02}")).collect()),
            ..q.clone()
        };
        for (skip, limit) in [(0, 7), (5, 7), (8, 50), (28, 7)] {
            let w = Window { skip, limit };
            let fast = store.list_traces("p", &q, w).unwrap();
            let slow = store.list_traces("p", &filtered, w).unwrap();
            let ids = |p: &Page<crate::record::TraceRecord>| {
                p.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
            };
            assert_eq!(fast.total, slow.total, "{q:?} skip {skip}");
            assert_eq!(ids(&fast), ids(&slow), "{q:?} skip {skip}");
        }
    }
    let newest = store
        .list_traces("p", &TraceQuery::default(), Window { skip: 0, limit: 2 })
        .unwrap();
    assert_eq!(newest.total, 30);
    assert_eq!(
        newest
            .items
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["t29", "t28"]
    );
    store.shutdown();
}

#[test]
fn trace_totals_from_rollups_equal_the_rows_after_deletes_moves_and_retention() {
    const HOUR: i64 = 3_600_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16, Arc::new(NoPrices)).unwrap();
    let at = |i: i64| 1_700_000_000_000_000 + i * 47 * 60_000_000 + i * i * 1_000;
    let put = |id: String, ts: i64, env: &str| TimedChange {
        at: Timestamp::from_micros(ts),
        change: Change::Trace(TracePatch {
            id,
            timestamp: Some(Timestamp::from_micros(ts)),
            environment: Some(env.into()),
            ..Default::default()
        }),
    };
    let envs = ["default", "prod"];
    write(
        &store,
        "p",
        (0..80)
            .map(|i| put(format!("t{i:02}"), at(i), envs[i as usize % 2]))
            .collect(),
    );
    write(
        &store,
        "q",
        (0..20)
            .map(|i| put(format!("x{i}"), at(i * 3), "default"))
            .collect(),
    );
    let delete = |ids: &[&str]| delete_traces(&store, ids);
    delete(&["t10", "t11", "t40", "missing"]);
    // Timestamp moves: into another hour, another day, and before everything else.
    write(
        &store,
        "p",
        vec![
            put("t20".into(), at(20) + HOUR / 3, "default"),
            put("t21".into(), at(21) + 30 * HOUR, "prod"),
            put("t22".into(), at(0) - 5 * HOUR, "default"),
        ],
    );
    // Retention of the oldest traces.
    let cutoff = Timestamp::from_micros(at(4));
    let old = store.traces_before("p", cutoff, None, 100).unwrap().ids;
    assert!(old.len() >= 4, "{old:?}");
    store
        .writer()
        .submit_blocking(WriteOp::Expire {
            project: "p".into(),
            cutoff,
            traces: old,
            scores: vec![],
            tally: Default::default(),
        })
        .unwrap();
    assert_eq!(
        crate::analytics::verify(&store).unwrap(),
        Vec::<String>::new()
    );

    let t = |micros: i64| Some(Timestamp::from_micros(micros));
    let day_start = at(0) - at(0).rem_euclid(24 * HOUR);
    let ranges = [
        (None, None),
        (t(at(7)), None),
        (None, t(at(50))),
        (t(at(7) + 1), t(at(70) - 1)),
        // Aligned on hours and on days.
        (t(day_start + 3 * HOUR), t(day_start + 27 * HOUR)),
        (t(day_start), t(day_start + 48 * HOUR)),
        (t(day_start + 24 * HOUR), None),
        // Within one hour, and empty.
        (t(at(30)), t(at(30) + HOUR / 2)),
        (t(at(30)), t(at(30))),
        (t(at(79) + 1), None),
    ];
    let env_lists: [&[&str]; 4] = [&[], &["prod"], &["default", "prod"], &["staging"]];
    for ((from, to), environments) in ranges.into_iter().flat_map(|r| env_lists.map(|e| (r, e))) {
        for order in [TraceOrder::TimestampDesc, TraceOrder::TimestampAsc] {
            let q = TraceQuery {
                from,
                to,
                order,
                environments: environments.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            };
            // A list of every id ever written sends the same query down the row-by-row path.
            let filtered = TraceQuery {
                ids: Some((0..80).map(|i| format!("t{i:02}")).collect()),
                ..q.clone()
            };
            for (skip, limit) in [(0, 5), (3, 50), (70, 10)] {
                let w = Window { skip, limit };
                let fast = store.list_traces("p", &q, w).unwrap();
                let slow = store.list_traces("p", &filtered, w).unwrap();
                let ids = |p: &Page<crate::record::TraceRecord>| {
                    p.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
                };
                let what = format!("{from:?}..{to:?} {environments:?} {order:?} {w:?}");
                assert_eq!(fast.total, slow.total, "{what}");
                assert_eq!(ids(&fast), ids(&slow), "{what}");
            }
        }
    }
    let all = store
        .list_traces("p", &TraceQuery::default(), Window { skip: 0, limit: 1 })
        .unwrap();
    assert_eq!(all.total, store.trace_count().unwrap() - 20);
    store.shutdown();
}

#[test]
fn an_observation_payload_moves_between_its_row_and_its_own_table_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let with_input = |at: i64, input: &str| {
        let mut c = obs("o1", "t1", at);
        if let Change::Observation(p) = &mut c.change {
            p.input = Some(serde_json::json!(input));
        }
        c
    };
    let in_own_table = |store: &Store| {
        let snap = store.snapshot().unwrap();
        let t = snap.tx.open_table(tables::OBS_IO).unwrap();
        t.get(("p", "o1")).unwrap().is_some()
    };
    let input = |store: &Store| {
        let io = store.observation_io("p", "o1").unwrap();
        let snap = store.snapshot().unwrap().observation_io("p", "o1").unwrap();
        assert_eq!(io, snap);
        // Row and payload read together, wherever the payload is.
        let row = store.observation("p", "o1").unwrap().unwrap();
        let pair = (row, io);
        assert_eq!(
            store.observation_with_io("p", "o1").unwrap(),
            Some(pair.clone())
        );
        assert_eq!(
            store.trace_observations_with_io("p", "t1").unwrap(),
            vec![pair.clone()]
        );
        pair.1.input
    };
    write(
        &store,
        "p",
        vec![trace("t1", None, 1), with_input(1, "small question")],
    );
    assert_eq!(input(&store), Some(serde_json::json!("small question")));
    assert!(!in_own_table(&store));
    // Far over what is attached to a row.
    let big = incompressible(20_000);
    write(&store, "p", vec![with_input(2, &big)]);
    assert_eq!(input(&store), Some(serde_json::json!(big)));
    assert!(in_own_table(&store));
    write(&store, "p", vec![with_input(3, "short again")]);
    assert_eq!(input(&store), Some(serde_json::json!("short again")));
    assert!(
        !in_own_table(&store),
        "the large payload's entry stayed behind"
    );
    let row = store.observation("p", "o1").unwrap().unwrap();
    assert_eq!(row.trace_id, "t1");
    store.shutdown();
}

/// Text that compresses poorly (xorshift letters), so its size on disk is its length.
fn incompressible(len: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[test]
fn a_trace_payload_moves_between_its_row_and_its_own_table_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let with_output = |at: i64, output: &str| {
        let mut c = trace("t1", None, at);
        if let Change::Trace(p) = &mut c.change {
            p.output = Some(serde_json::json!(output));
        }
        c
    };
    let in_own_table = |store: &Store| {
        let snap = store.snapshot().unwrap();
        let t = snap.tx.open_table(tables::TRACE_IO).unwrap();
        t.get(("p", "t1")).unwrap().is_some()
    };
    let output = |store: &Store| {
        let direct = store.trace_io("p", "t1").unwrap();
        let snap = store.snapshot().unwrap().trace_io("p", "t1").unwrap();
        assert_eq!(direct, snap);
        let row = store.trace("p", "t1").unwrap().unwrap();
        assert_eq!(
            store.trace_with_io("p", "t1").unwrap(),
            Some((row, direct.clone()))
        );
        assert_eq!(
            direct.input,
            Some(serde_json::json!({"q": "x".repeat(2000)}))
        );
        direct.output
    };
    write(&store, "p", vec![with_output(1, "small answer")]);
    assert_eq!(output(&store), Some(serde_json::json!("small answer")));
    assert!(!in_own_table(&store));
    let big = incompressible(20_000);
    write(&store, "p", vec![with_output(2, &big)]);
    assert_eq!(output(&store), Some(serde_json::json!(big)));
    assert!(in_own_table(&store));
    // A patch without a payload keeps the stored one wherever it is.
    let mut rename = trace("t1", None, 3);
    if let Change::Trace(p) = &mut rename.change {
        p.input = None;
    }
    write(&store, "p", vec![rename]);
    assert_eq!(output(&store), Some(serde_json::json!(big)));
    write(&store, "p", vec![with_output(4, "short again")]);
    assert_eq!(output(&store), Some(serde_json::json!("short again")));
    assert!(
        !in_own_table(&store),
        "the large payload's entry stayed behind"
    );
    assert_eq!(
        store.trace("p", "t1").unwrap().unwrap().name.as_deref(),
        Some("name-t1")
    );
    store.shutdown();
}

/// A version 4 file holds values in its rows and has no `record_values`: read-only beside its
/// server (and `disk-usage`) it reads as it is; opened by the writer it is upgraded by number,
/// and what is written from then on goes to `record_values`.
#[test]
fn a_schema_version_4_file_reads_read_only_and_upgrades_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        write(&store, "p", vec![trace("t1", None, 1), obs("o1", "t1", 2)]);
        store.shutdown();
        drop(store);
        // Rewritten as version 4 wrote it: values in the rows, no values table.
        let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let values = tx.open_table(tables::RECORD_VALUES).unwrap();
            for table in [tables::TRACES, tables::OBSERVATIONS] {
                let mut rows = tx.open_table(table).unwrap();
                let all: Vec<(String, String, Vec<u8>)> = rows
                    .iter()
                    .unwrap()
                    .map(|e| {
                        let (k, v) = e.unwrap();
                        let (p, id) = k.value();
                        let value = super::values::resolve(&values, v.value()).unwrap();
                        (p.to_owned(), id.to_owned(), value.into_owned())
                    })
                    .collect();
                for (p, id, value) in all {
                    rows.insert((p.as_str(), id.as_str()), value.as_slice())
                        .unwrap();
                }
            }
        }
        tx.delete_table(tables::RECORD_VALUES).unwrap();
        tx.open_table(tables::META)
            .unwrap()
            .insert(tables::META_SCHEMA, 4u64.to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.trace("p", "t1").unwrap().unwrap().id, "t1");
    assert_eq!(
        reader.observation("p", "o1").unwrap().unwrap().trace_id,
        "t1"
    );
    let usage = reader.disk_usage().unwrap();
    assert!(usage.tables.iter().any(|t| t.table == "observations"));
    assert!(!usage.tables.iter().any(|t| t.table == "record_values"));
    drop(reader);

    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    write(&store, "p", vec![obs("o2", "t1", 3)]);
    assert_eq!(store.trace_observations("p", "t1").unwrap().len(), 2);
    let snap = store.snapshot().unwrap();
    let rows = snap.tx.open_table(tables::OBSERVATIONS).unwrap();
    let stored_as = |id: &str| {
        let v = rows.get(("p", id)).unwrap().unwrap();
        codec::value_ref(v.value()).unwrap()
    };
    assert_eq!(stored_as("o1"), None, "the old row keeps its value");
    assert!(stored_as("o2").is_some(), "a new row refers to its value");
    let version = snap
        .tx
        .open_table(tables::META)
        .unwrap()
        .get(tables::META_SCHEMA)
        .unwrap()
        .map(|v| tables::read_u64(v.value()).unwrap());
    assert_eq!(version, Some(SCHEMA_VERSION));
}

#[test]
fn a_schema_version_2_file_keeps_its_payloads_and_updates_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        let mut o = obs("o1", "t1", 2);
        if let Change::Observation(p) = &mut o.change {
            p.input = Some(serde_json::json!("what is it"));
        }
        write(&store, "p", vec![trace("t1", None, 1), o]);
        store.shutdown();
        drop(store);
        // Rewritten as version 2 wrote them: the trace's payload in `trace_io`, the
        // observation's attached as a tag-4 value.
        let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let values = tx.open_table(tables::RECORD_VALUES).unwrap();
            let mut traces = tx.open_table(tables::TRACES).unwrap();
            let (row, io) = {
                let v = traces.get(("p", "t1")).unwrap().unwrap();
                codec::json_parts(&super::values::resolve(&values, v.value()).unwrap()).unwrap()
            };
            let row: serde_json::Value = serde_json::from_slice(&row).unwrap();
            let io = codec::io_from_json(&io.unwrap()).unwrap();
            traces
                .insert(("p", "t1"), codec::encode_row(&row).unwrap().as_slice())
                .unwrap();
            tx.open_table(tables::TRACE_IO)
                .unwrap()
                .insert(("p", "t1"), codec::encode_io(&io).unwrap().as_slice())
                .unwrap();
            let mut observations = tx.open_table(tables::OBSERVATIONS).unwrap();
            let (row, io) = {
                let v = observations.get(("p", "o1")).unwrap().unwrap();
                codec::json_parts(&super::values::resolve(&values, v.value()).unwrap()).unwrap()
            };
            let row: serde_json::Value = serde_json::from_slice(&row).unwrap();
            let row = codec::encode_row(&row).unwrap();
            let io = codec::encode_io(&codec::io_from_json(&io.unwrap()).unwrap()).unwrap();
            let mut tag4 = vec![4];
            tag4.extend_from_slice(&(row.len() as u32).to_le_bytes());
            tag4.extend_from_slice(&row);
            tag4.extend_from_slice(&io);
            observations.insert(("p", "o1"), tag4.as_slice()).unwrap();
            tx.open_table(tables::META)
                .unwrap()
                .insert(tables::META_SCHEMA, 2u64.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
    let input = serde_json::json!({"q": "x".repeat(2000)});
    assert_eq!(
        store.trace_io("p", "t1").unwrap().input,
        Some(input.clone())
    );
    assert_eq!(
        store.observation_io("p", "o1").unwrap().input,
        Some(serde_json::json!("what is it"))
    );
    let mut t = trace("t1", None, 5);
    if let Change::Trace(p) = &mut t.change {
        p.input = None;
        p.output = Some(serde_json::json!("done"));
    }
    let mut o = obs("o1", "t1", 6);
    if let Change::Observation(p) = &mut o.change {
        p.output = Some(serde_json::json!("it is this"));
    }
    write(&store, "p", vec![t, o]);
    let io = store.trace_io("p", "t1").unwrap();
    assert_eq!(io.input, Some(input));
    assert_eq!(io.output, Some(serde_json::json!("done")));
    let io = store.observation_io("p", "o1").unwrap();
    assert_eq!(io.input, Some(serde_json::json!("what is it")));
    assert_eq!(io.output, Some(serde_json::json!("it is this")));
    {
        let snap = store.snapshot().unwrap();
        let t = snap.tx.open_table(tables::TRACE_IO).unwrap();
        assert!(
            t.get(("p", "t1")).unwrap().is_none(),
            "the merged payload moved onto the row"
        );
    }
    assert_eq!(
        store.observation("p", "o1").unwrap().unwrap().trace_id,
        "t1"
    );
    store.shutdown();
}
