//! Rollups against a brute-force recomputation over the same records, after random merges,
//! updates, deletes and re-pricing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::agg::{Agg, femto};
use super::rollup::{self, Dim, Gran};
use crate::record::{
    Change, CostMap, ObservationPatch, ObservationRecord, ObservationType, Patch, PricingRef,
    TimedChange, TracePatch, UsageMap,
};
use crate::store::{Pricer, Store, WriteOp};
use crate::time::Timestamp;

/// Prices the model "priced" at a per-unit price that a test can change (to re-price), and
/// leaves every other model unpriced, as the real price book does for an unknown model.
struct TestPrices(AtomicU64);

impl Pricer for TestPrices {
    fn apply(
        &self,
        _: &str,
        o: &mut ObservationRecord,
        _: Option<&serde_json::Value>,
        _: Option<&serde_json::Value>,
    ) {
        o.usage_details = o.provided_usage.clone().unwrap_or_default();
        let provided: CostMap = o.provided_cost.clone().unwrap_or_default();
        if o.model.as_deref() == Some("priced") {
            let price = self.0.load(Ordering::Relaxed) as f64 * 1e-9;
            let units: u64 = o.usage_details.values().sum();
            o.pricing = Some(PricingRef {
                model_id: "m".into(),
                tier_id: None,
                tier_name: None,
                input_price: Some(price),
                output_price: None,
                total_price: None,
            });
            o.cost_details = if provided.is_empty() {
                CostMap::from([
                    ("input".into(), units as f64 * price),
                    ("total".into(), units as f64 * price),
                ])
            } else {
                provided
            };
        } else {
            o.pricing = None;
            o.cost_details = provided;
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Trace {
        id: u8,
        user: Option<u8>,
        name: u8,
        env: u8,
        hour: u8,
        at: u8,
    },
    Obs {
        id: u8,
        trace: u8,
        model: u8,
        name: u8,
        env: u8,
        hour: u8,
        dur_ms: u32,
        ttft: bool,
        units: Option<u16>,
        cost: Option<u16>,
        at: u8,
    },
    DeleteTrace(u8),
    Recost(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..4,
            proptest::option::of(0u8..3),
            0u8..2,
            0u8..2,
            0u8..60,
            0u8..20
        )
            .prop_map(|(id, user, name, env, hour, at)| Op::Trace {
                id,
                user,
                name,
                env,
                hour,
                at
            }),
        (
            (0u8..8, 0u8..4, 0u8..3, 0u8..2, 0u8..2, 0u8..60),
            (0u32..5000, any::<bool>(), proptest::option::of(0u16..2000)),
            (proptest::option::weighted(0.2, 1u16..100), 0u8..20)
        )
            .prop_map(
                |((id, trace, model, name, env, hour), (dur_ms, ttft, units), (cost, at))| {
                    Op::Obs {
                        id,
                        trace,
                        model,
                        name,
                        env,
                        hour,
                        dur_ms,
                        ttft,
                        units,
                        cost,
                        at,
                    }
                }
            ),
        (0u8..4).prop_map(Op::DeleteTrace),
        (1u8..5).prop_map(Op::Recost),
    ]
}

const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn change(op: &Op) -> Option<TimedChange> {
    let at = |a: u8| Timestamp::from_micros(BASE + i64::from(a) * 1_000);
    let start = |h: u8| Timestamp::from_micros(BASE + i64::from(h) * 3_600_000_000 + 1_234);
    match op {
        Op::Trace {
            id,
            user,
            name,
            env,
            hour,
            at: a,
        } => Some(TimedChange {
            at: at(*a),
            change: Change::Trace(TracePatch {
                id: format!("t{id}"),
                timestamp: Some(start(*hour)),
                name: Patch::Set(format!("trace-{name}")),
                user_id: user.map_or(Patch::Clear, |u| Patch::Set(format!("u{u}"))),
                environment: Some(format!("env{env}")),
                ..Default::default()
            }),
        }),
        Op::Obs {
            id,
            trace,
            model,
            name,
            env,
            hour,
            dur_ms,
            ttft,
            units,
            cost,
            at: a,
        } => {
            let mut p = ObservationPatch::new(format!("o{id}"), ObservationType::Generation);
            p.trace_id = Some(format!("t{trace}"));
            p.start_time = Some(start(*hour));
            p.end_time = Some(Timestamp::from_micros(
                start(*hour).micros() + i64::from(*dur_ms) * 1000,
            ));
            if *ttft {
                p.completion_start_time = Some(Timestamp::from_micros(start(*hour).micros() + 500));
            }
            p.name = Patch::Set(format!("gen-{name}"));
            p.environment = Some(format!("env{env}"));
            p.model = match model {
                0 => Patch::Set("priced".into()),
                1 => Patch::Set("unknown".into()),
                _ => Patch::Absent,
            };
            p.usage = units
                .map(|u| UsageMap::from([("input".into(), u64::from(u)), ("output".into(), 3)]));
            p.cost = cost.map(|c| CostMap::from([("total".into(), f64::from(c) * 1e-4)]));
            Some(TimedChange {
                at: at(*a),
                change: Change::Observation(p),
            })
        }
        _ => None,
    }
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let prices = Arc::new(TestPrices(AtomicU64::new(2500)));
    let store = Store::open(dir.path(), 64, prices.clone()).unwrap();
    let w = store.writer();
    // Consecutive record changes go in one request, as a batch would.
    let mut pending = Vec::new();
    let flush = |pending: &mut Vec<TimedChange>| {
        if !pending.is_empty() {
            w.submit_blocking(WriteOp::Changes {
                project: "p".into(),
                changes: std::mem::take(pending),
            })
            .unwrap();
        }
    };
    for op in ops {
        if let Some(c) = change(op) {
            pending.push(c);
            if pending.len() >= 3 {
                flush(&mut pending);
            }
            continue;
        }
        flush(&mut pending);
        match op {
            Op::DeleteTrace(t) => w
                .submit_blocking(WriteOp::DeleteTraces {
                    project: "p".into(),
                    ids: vec![format!("t{t}")],
                })
                .unwrap(),
            Op::Recost(factor) => {
                prices.0.store(2500 * u64::from(*factor), Ordering::Relaxed);
                w.submit_blocking(WriteOp::Reprice {
                    project: "p".into(),
                    ids: (0..8).map(|i| format!("o{i}")).collect(),
                })
                .unwrap();
            }
            _ => {}
        }
    }
    flush(&mut pending);
    let diffs = super::verify(&store).unwrap();
    assert!(
        diffs.is_empty(),
        "rollups differ from the records:\n{}",
        diffs.join("\n")
    );
    independent_sums(&store);
    // The streaming rebuild (one trace at a time) writes what the whole-store definition says.
    w.submit_blocking(WriteOp::RebuildRollups).unwrap();
    let diffs = super::verify(&store).unwrap();
    assert!(
        diffs.is_empty(),
        "rebuilt rollups differ from the records:\n{}",
        diffs.join("\n")
    );
    store.shutdown();
}

/// Totals computed with no rollup code at all: cost and distinct traces per model, day and
/// environment.
fn independent_sums(store: &Store) {
    type Key = (i64, String, String);
    let mut want: BTreeMap<Key, (i128, i64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    let all = crate::store::Window {
        skip: 0,
        limit: usize::MAX,
    };
    for o in store
        .list_observations("p", &Default::default(), all)
        .unwrap()
        .items
    {
        let e = want
            .entry((
                Gran::Day.bucket(o.start_time.micros()),
                o.environment.clone(),
                o.model.clone().unwrap_or_default(),
            ))
            .or_default();
        e.0 += o.cost_details.get("total").map_or(0, |c| femto(*c));
        e.1 += 1;
        e.2.insert(o.trace_id.clone());
    }
    let tx = store.read_tx().unwrap();
    let t = tx.open_table(crate::store::tables::ROLLUPS).unwrap();
    let rows = rollup::rows(
        &t,
        "p",
        rollup::kind(Dim::Model, Gran::Day),
        i64::MIN,
        i64::MAX,
    )
    .unwrap();
    let mut have: BTreeMap<Key, Agg> = BTreeMap::new();
    for r in rows {
        have.entry((r.bucket, r.env, r.value))
            .or_default()
            .add(&r.agg);
    }
    assert_eq!(have.len(), want.len());
    for (k, (cost, n, traces)) in want {
        let a = &have[&k];
        assert_eq!(
            (a.total_cost, a.observations, a.traces),
            (cost, n, traces.len() as i64),
            "{k:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rollups_equal_a_recomputation_from_the_records(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

#[test]
fn moving_a_trace_to_another_user_moves_its_cost() {
    run(&[
        Op::Obs {
            id: 1,
            trace: 0,
            model: 0,
            name: 0,
            env: 0,
            hour: 1,
            dur_ms: 10,
            ttft: true,
            units: Some(1000),
            cost: None,
            at: 1,
        },
        Op::Trace {
            id: 0,
            user: Some(1),
            name: 0,
            env: 0,
            hour: 1,
            at: 2,
        },
        Op::Trace {
            id: 0,
            user: Some(2),
            name: 1,
            env: 1,
            hour: 30,
            at: 3,
        },
        Op::Recost(3),
        Op::DeleteTrace(0),
    ]);
}

/// Trace t0 (user 1, hour 1) and one observation per entry of `models` (ids o1, o2, ...), all in
/// the same hour and environment.
fn one_trace(models: &[u8]) -> Vec<Op> {
    let trace = Op::Trace {
        id: 0,
        user: Some(1),
        name: 0,
        env: 0,
        hour: 1,
        at: 1,
    };
    let observations = models.iter().zip(1..).map(|(&model, id)| Op::Obs {
        id,
        trace: 0,
        model,
        name: 0,
        env: 0,
        hour: 1,
        dur_ms: 10,
        ttft: false,
        units: Some(10),
        cost: None,
        at: 2,
    });
    std::iter::once(trace).chain(observations).collect()
}

/// Writes `ops` as one request into the store in `dir`, then closes it, so a test can rewrite
/// the file as an older version left it.
fn write_and_close(dir: &std::path::Path, ops: &[Op]) {
    let store = Store::open(dir, 8, Arc::new(TestPrices(AtomicU64::new(1)))).unwrap();
    store
        .writer()
        .submit_blocking(WriteOp::Changes {
            project: "p".into(),
            changes: ops.iter().filter_map(change).collect(),
        })
        .unwrap();
    store.shutdown();
}

/// A data directory written before rollups existed (no `rollups_version`, no rows) gets them
/// rebuilt when it is opened.
#[test]
fn stale_rollups_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let ops = one_trace(&[0]);
    write_and_close(dir.path(), &ops);
    {
        let db = redb::Database::open(dir.path().join("sightline.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(crate::store::tables::ROLLUPS).unwrap();
        tx.open_table(crate::store::tables::META)
            .unwrap()
            .remove(crate::store::tables::META_ROLLUPS)
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path(), 8, Arc::new(TestPrices(AtomicU64::new(1)))).unwrap();
    assert_eq!(super::verify(&store).unwrap(), Vec::<String>::new());
    let tx = store.read_tx().unwrap();
    let t = tx.open_table(crate::store::tables::ROLLUPS).unwrap();
    let rows = rollup::rows(
        &t,
        "p",
        rollup::kind(Dim::Model, Gran::Day),
        i64::MIN,
        i64::MAX,
    )
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].agg.observations, 1);
}

/// A file whose rollups were built by version 2 (totals and memberships as rows of their own
/// tables) gets them rebuilt into one `trace_rollups` value per trace on open, and the old
/// tables are dropped.
#[test]
fn version_2_rollup_tables_are_folded_into_one_value_per_trace_on_open() {
    use crate::store::tables;
    use redb::ReadableTable;
    let dir = tempfile::tempdir().unwrap();
    let ops = one_trace(&[0, 1, 1]);
    write_and_close(dir.path(), &ops);
    let folded = {
        // Rewritten as version 2 kept them.
        let db = redb::Database::open(dir.path().join("sightline.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        let rows: Vec<((String, String), rollup::TraceRollup)> = tx
            .open_table(tables::TRACE_ROLLUPS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (p, t) = k.value();
                let v = rollup::TraceRollup::decode(v.value()).unwrap();
                ((p.to_string(), t.to_string()), v)
            })
            .collect();
        assert_eq!(rows.len(), 1, "one value for the one trace");
        assert_eq!(rows[0].1.members.len(), 2, "two models that day");
        {
            let mut totals = tx.open_table(tables::LEGACY_TRACE_TOTALS).unwrap();
            let mut members = tx.open_table(tables::LEGACY_ROLLUP_TRACE_MEMBERS).unwrap();
            for ((p, t), v) in &rows {
                totals
                    .insert((p.as_str(), t.as_str()), v.totals.encode().as_slice())
                    .unwrap();
                for ((day, env, model), n) in &v.members {
                    members
                        .insert(
                            (p.as_str(), t.as_str(), *day, env.as_str(), model.as_str()),
                            *n,
                        )
                        .unwrap();
                }
            }
        }
        tx.delete_table(tables::TRACE_ROLLUPS).unwrap();
        tx.open_table(tables::META)
            .unwrap()
            .insert(tables::META_ROLLUPS, 2u64.to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
        rows
    };
    let store = Store::open(dir.path(), 8, Arc::new(TestPrices(AtomicU64::new(1)))).unwrap();
    assert_eq!(super::verify(&store).unwrap(), Vec::<String>::new());
    let tx = store.read_tx().unwrap();
    let t = tx.open_table(tables::TRACE_ROLLUPS).unwrap();
    let (p, id) = &folded[0].0;
    assert_eq!(
        rollup::TraceRollup::get(&t, p, id).unwrap(),
        folded[0].1,
        "the rebuilt value is the one the writer kept"
    );
    assert!(matches!(
        tx.open_table(tables::LEGACY_TRACE_TOTALS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
    assert!(matches!(
        tx.open_table(tables::LEGACY_ROLLUP_TRACE_MEMBERS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
}

#[test]
fn trace_rollup_values_round_trip_and_reject_garbage() {
    use rollup::{DAY_US, TraceRollup};
    let mut t = TraceRollup {
        totals: Agg {
            observations: 3,
            total_cost: femto(0.02),
            ..Agg::default()
        },
        members: BTreeMap::new(),
    };
    // Days before the epoch, several environments and models, one model named "".
    t.members
        .insert((-3 * DAY_US, "production".into(), "gpt-4o".into()), 2);
    t.members
        .insert((20_000 * DAY_US, "default".into(), "".into()), 1);
    t.members.insert(
        (
            20_000 * DAY_US,
            "default".into(),
            "claude-3-5-sonnet".into(),
        ),
        u64::MAX,
    );
    let bytes = t.encode();
    assert_eq!(TraceRollup::decode(&bytes).unwrap(), t);
    assert!(TraceRollup::decode(&[]).is_err());
    assert!(TraceRollup::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(TraceRollup::decode(&trailing).is_err());
    let mut other_format = bytes;
    other_format[0] = 9;
    assert!(TraceRollup::decode(&other_format).is_err());
    assert!(TraceRollup::default().is_empty());
    assert!(
        TraceRollup::decode(&TraceRollup::default().encode())
            .unwrap()
            .is_empty()
    );
}

/// Format 1 values (written before the environment table) still read, without the histograms
/// they carried; format 2 names a trace's one environment once, however many models it used.
#[test]
fn trace_rollup_format_1_values_read_and_format_2_is_smaller() {
    use super::agg::{Hist, put_ivar, put_str, put_uvar};
    use rollup::{DAY_US, TraceRollup};
    let totals = Agg {
        observations: 4,
        total_cost: femto(0.0042),
        latency: Hist::single(285_000),
        ..Agg::default()
    };
    let env = "production-eu-west-1";
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet"];
    let mut v1 = vec![1];
    totals.encode_into(&mut v1);
    put_uvar(&mut v1, models.len() as u128);
    for m in models {
        put_ivar(&mut v1, 20_000);
        put_str(&mut v1, env);
        put_str(&mut v1, m);
        put_uvar(&mut v1, 1);
    }
    let t = TraceRollup::decode(&v1).unwrap();
    assert_eq!(t.totals.observations, 4);
    assert_eq!(t.totals.total_cost, femto(0.0042));
    assert_eq!(
        t.totals.latency,
        Hist::default(),
        "trace totals carry no histograms"
    );
    let members: Vec<_> = t
        .members
        .keys()
        .map(|(d, e, m)| (*d, e.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        members,
        [
            (20_000 * DAY_US, env, "claude-3-5-sonnet"),
            (20_000 * DAY_US, env, "gpt-4o"),
            (20_000 * DAY_US, env, "gpt-4o-mini"),
        ]
    );
    let v2 = t.encode();
    assert_eq!(v2[0], 2);
    assert_eq!(TraceRollup::decode(&v2).unwrap(), t);
    assert!(
        v2.len() + 2 * env.len() <= v1.len(),
        "format 2 took {} bytes, format 1 {}",
        v2.len(),
        v1.len()
    );
    // A member naming an environment the value does not list is corruption. The last member
    // ends [environment index][model length]["gpt-4o-mini"][count].
    let mut bad = v2.clone();
    let at = bad.len() - (1 + "gpt-4o-mini".len() + 1) - 1;
    bad[at] = 7;
    assert!(TraceRollup::decode(&bad).is_err());
}
