//! `POST /api/public/ingestion` and `POST /api/public/scores` bodies: bytes → JSON → envelope →
//! changes, for both access levels. Every input must end in changes or per-event errors; the
//! two lists together account for each event at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::auth::AccessLevel;
use sightline::ingest::{parse_batch, parse_scores};
use sightline::score_config::NoConfigs;
use sightline::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let events = value
        .get("batch")
        .and_then(|b| b.as_array())
        .map_or(0, Vec::len);
    for access in [AccessLevel::Full, AccessLevel::ScoresOnly] {
        if let Ok(batch) = parse_batch(&value, access, &NoConfigs) {
            assert_eq!(batch.successes.len(), batch.changes.len());
            assert!(batch.successes.len() + batch.errors.len() <= events);
        }
    }
    let _ = parse_scores(&value, Timestamp::from_micros(0), &NoConfigs);
});
