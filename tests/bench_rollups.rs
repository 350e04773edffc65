//! Benchmark, not a timed test: a 7-day cost-by-model metrics query over 1M observations.
//! Run with `cargo test --release --test bench_rollups -- --ignored --nocapture`; the numbers
//! go to BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use sightline::analytics::query::{self, Version};
use sightline::cost::{LivePrices, PriceBook};
use sightline::record::{Change, ObservationPatch, ObservationType, Patch, TimedChange, UsageMap};
use sightline::store::{Store, WriteOp};
use sightline::time::Timestamp;

const OBSERVATIONS: usize = 1_000_000;
const BATCH: usize = 2_000;
const MODELS: [&str; 10] = [
    "gpt-4o",
    "gpt-4o-mini",
    "o3",
    "o4-mini",
    "claude-sonnet-4-20250514",
    "claude-3-5-haiku-20241022",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gpt-4.1",
    "acme-unpriced",
];
const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const SPAN: i64 = 7 * 24 * 3_600_000_000;

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn cost_by_model_over_7_days_at_1m_observations() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = PriceBook::builtin().unwrap();
    let prices = Arc::new(LivePrices::new(&builtin, Vec::new()));
    let store = Store::open(dir.path(), 64, prices).unwrap();
    let started = Instant::now();
    for b in 0..OBSERVATIONS / BATCH {
        let changes = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                let start = BASE + (n as i64 * 7_919_u64 as i64 * 104_729) % SPAN;
                let mut p = ObservationPatch::new(format!("o{n}"), ObservationType::Generation);
                p.trace_id = Some(format!("t{}", n / 4));
                p.start_time = Some(Timestamp::from_micros(start));
                p.end_time = Some(Timestamp::from_micros(
                    start + 200_000 + (n as i64 % 50) * 100_000,
                ));
                p.model = Patch::Set(MODELS[n % MODELS.len()].into());
                p.name = Patch::Set("llm".into());
                p.usage = Some(UsageMap::from([
                    ("input".into(), 500 + (n % 1000) as u64),
                    ("output".into(), 100 + (n % 300) as u64),
                ]));
                TimedChange {
                    at: Timestamp::from_micros(start),
                    change: Change::Observation(p),
                }
            })
            .collect();
        store
            .writer()
            .submit_blocking(WriteOp::Changes {
                project: "p".into(),
                changes,
            })
            .unwrap();
    }
    let ingest = started.elapsed();
    let q = query::parse(
        r#"{"view":"observations","dimensions":[{"field":"providedModelName"}],
            "metrics":[{"measure":"totalCost","aggregation":"sum"},{"measure":"count","aggregation":"count"}],
            "fromTimestamp":"2026-01-01T00:00:00.000Z","toTimestamp":"2026-01-08T00:00:00.000Z"}"#,
        Version::V2,
    )
    .unwrap();
    // The same query at an unaligned range (hour rows at both edges).
    let q_edges = query::parse(
        r#"{"view":"observations","dimensions":[{"field":"providedModelName"}],
            "metrics":[{"measure":"totalCost","aggregation":"sum"},{"measure":"latency","aggregation":"p95"}],
            "fromTimestamp":"2026-01-01T05:30:00.000Z","toTimestamp":"2026-01-07T20:10:00.000Z"}"#,
        Version::V2,
    )
    .unwrap();
    for (name, q) in [
        ("aligned 7 days", &q),
        ("unaligned, +p95 latency", &q_edges),
    ] {
        let mut times = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            rows = query::run(&store, "p", q).unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        let total: i64 = rows
            .iter()
            .map(|r| {
                r["count_count"]
                    .as_str()
                    .map_or(0, |s| s.parse::<i64>().unwrap())
            })
            .sum();
        println!(
            "{name}: {} rows, median {:?}, max {:?} (count {total})",
            rows.len(),
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    println!(
        "ingested {OBSERVATIONS} observations in {ingest:?} ({:.0}/s), file {} MB",
        OBSERVATIONS as f64 / ingest.as_secs_f64(),
        store.disk_bytes() / 1_000_000
    );
    store.shutdown();
}
