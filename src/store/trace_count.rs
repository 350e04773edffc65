//! Exact trace counts for a time range without walking the range: the analytics rollups hold
//! the number of traces per hour and day, so a count costs a few dozen rollup rows plus the
//! index keys of the partial hours at the two ends.
//!
//! Owns: only this arithmetic over `TRACES_BY_TIME` and the trace rollup rows. Must not: write
//! anything. It relies on the writer's invariant that a trace's rollup rows change in the same
//! transaction as the trace row, so the count equals the number of `TRACES_BY_TIME` keys.

use redb::ReadTransaction;

use super::{StoreError, tables};

/// Timestamps a rollup bucket is computed for without overflow; a trace outside them (a client
/// sending the year −290,000) makes the range be counted key by key instead.
const SANE_MICROS: i64 = 1 << 62;

/// Traces of `project` with a timestamp in `[from, to)` and in one of `environments` (any when
/// empty): `None` when the rollups cannot answer (the caller then counts keys). `in_env` tells
/// whether the trace with this id is in one of them, for the partial hours at the ends.
pub(super) fn count(
    tx: &ReadTransaction,
    project: &str,
    environments: &[String],
    from: i64,
    to: i64,
    mut in_env: impl FnMut(&str) -> Result<bool, StoreError>,
) -> Result<Option<u64>, StoreError> {
    let index = tx.open_table(tables::TRACES_BY_TIME)?;
    let mut range = index.range((project, from, "")..(project, to, ""))?;
    // An open end is bounded by the data, so every bucket summed holds real timestamps.
    let Some(first) = range.next() else {
        return Ok(Some(0));
    };
    let lo = first?.0.value().1;
    let hi = match range.next_back() {
        Some(last) => last?.0.value().1,
        None => lo,
    };
    if lo < -SANE_MICROS || hi >= SANE_MICROS {
        return Ok(None);
    }
    let hi = hi + 1;
    let rollups = tx.open_table(tables::ROLLUPS)?;
    let (counted, covered) =
        crate::analytics::rollup::trace_count(&rollups, project, environments, lo, hi)?;
    let mut edges = 0u64;
    for (a, b) in [(lo, covered.start), (covered.end, hi)] {
        for key in index.range((project, a, "")..(project, b, ""))? {
            if environments.is_empty() || in_env(key?.0.value().2)? {
                edges += 1;
            }
        }
    }
    Ok(Some(counted + edges))
}
