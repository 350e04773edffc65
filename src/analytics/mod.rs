//! Usage analytics: rollups of cost, tokens, counts and latency, and the metrics queries that
//! read them (Langfuse's daily metrics and metrics query API).
//!
//! Owns: the rollup tables' contents (`rollups`, `trace_rollups`; keys in
//! `store::tables`), what each record contributes to them ([`Agg`]), their maintenance as
//! deltas — called by the store's writer inside the transaction that changes the record, so a
//! rollup is never behind or ahead of the records — their rebuild and verification, and query
//! planning: a query that fits the rollups costs O(buckets); one that does not falls back to a
//! bounded scan of the records, or is refused with a 400 that says why.
//!
//! Must not touch: records. It never writes a trace, observation or score, never prices (it
//! reads the cost the writer stored), never opens a transaction itself (the writer hands it
//! one; reads use a snapshot the store opens), and never answers HTTP (the `api` module maps
//! its results and errors to Langfuse's shapes).
//!
//! Deliberate differences from Langfuse: time ranges of rollup-backed queries are honoured at
//! hour resolution (a bucket counts when it overlaps the range); per-model daily rows include
//! observations whose trace was never sent; percentiles of latency come from fixed logarithmic
//! buckets (within ~9 %), as Langfuse's own `quantile` is approximate too.

pub mod agg;
pub mod daily;
pub mod query;
pub mod rollup;
mod scan;

#[cfg(test)]
mod tests;

pub use agg::{Agg, Hist, is_unpriced};

use crate::store::{Store, StoreError};

/// Why the stored rollups differ from a recomputation over the records; empty when they agree.
pub fn verify(store: &Store) -> Result<Vec<String>, StoreError> {
    use crate::store::tables;
    let tx = store.read_tx()?;
    let expected = rollup::expected(
        &tx.open_table(tables::OBSERVATIONS)?,
        &tx.open_table(tables::TRACES)?,
        &tx.open_table(tables::RECORD_VALUES)?,
    )?;
    let stored = rollup::stored(
        &tx.open_table(tables::ROLLUPS)?,
        &tx.open_table(tables::TRACE_ROLLUPS)?,
    )?;
    let mut diffs = Vec::new();
    diff_maps("rollup", &expected.rollups, &stored.rollups, &mut diffs);
    diff_maps(
        "trace-model membership",
        &expected.members,
        &stored.members,
        &mut diffs,
    );
    diff_maps("trace totals", &expected.totals, &stored.totals, &mut diffs);
    Ok(diffs)
}

fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    want: &std::collections::BTreeMap<K, V>,
    have: &std::collections::BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    for (k, v) in want {
        match have.get(k) {
            None => out.push(format!("{what} {k:?} is missing; expected {v:?}")),
            Some(h) if h != v => out.push(format!("{what} {k:?} is {h:?}; expected {v:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in have {
        if !want.contains_key(k) {
            out.push(format!("{what} {k:?} should not exist; it holds {v:?}"));
        }
    }
}
