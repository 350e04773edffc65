//! The indexer against stored bytes that do not decode and against transient read failures:
//! the first are skipped after a few attempts (and counted), the second are retried until
//! they pass, and neither keeps later records out of the index.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::skips::DECODE_ATTEMPTS;
use super::tests::{P, find, started, trace, wait_indexed, write};
use super::*;
use crate::store::WriteOp;
use crate::store::faults::RawWrite;

fn raw(store: &Store, w: RawWrite) {
    store.writer().submit_blocking(WriteOp::Raw(w)).unwrap();
}

/// A row tagged as JSON whose JSON is broken, as a damaged page would read.
const BROKEN_ROW: &[u8] = b"\x01{\"id\": \"t-bad\", \"na";

fn metric(search: &Search, store: &Store) -> String {
    crate::telemetry::Telemetry::new(store.clone(), search.clone()).render()
}

#[test]
fn records_that_do_not_decode_are_skipped_counted_and_do_not_block_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, vec![trace("t1", "alice", 1_000, json!("koala"))]);
    wait_indexed(&search, &store);

    raw(
        &store,
        RawWrite::Trace {
            project: P.into(),
            id: "t-bad".into(),
            bytes: BROKEN_ROW.to_vec(),
        },
    );
    write(&store, P, vec![trace("t2", "bob", 2_000, json!("quokka"))]);
    wait_indexed(&search, &store);
    assert_eq!(find(&search, Scope::Traces, "quokka"), ["t2"]);
    assert_eq!(find(&search, Scope::Traces, "koala"), ["t1"]);
    assert_eq!(search.skipped_records().get(), 1);
    assert!(
        metric(&search, &store).contains("\nsightline_index_skipped_records_total 1\n"),
        "{}",
        metric(&search, &store)
    );

    // A change-log entry that does not decode (unknown format tag) is skipped the same way.
    raw(&store, RawWrite::Change(vec![9, 9, 9]));
    write(
        &store,
        P,
        vec![trace("t3", "carol", 3_000, json!("wombat"))],
    );
    wait_indexed(&search, &store);
    assert_eq!(find(&search, Scope::Traces, "wombat"), ["t3"]);
    assert_eq!(search.skipped_records().get(), 2);
    search.shutdown();

    // A rebuild reads one snapshot: it skips the broken row when it meets it.
    std::fs::remove_dir_all(dir.path().join(DIR)).unwrap();
    let search = Search::start(dir.path(), store.clone()).unwrap();
    wait_indexed(&search, &store);
    assert_eq!(
        find(&search, Scope::Traces, "koala OR quokka OR wombat"),
        ["t1", "t2", "t3"]
    );
    assert_eq!(search.skipped_records().get(), 1);
    search.shutdown();
    store.shutdown();
}

#[test]
fn a_transient_read_failure_is_retried_past_the_decode_attempts_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    // Past the start-up rebuild, which reads by scanning rather than record by record.
    write(&store, P, vec![trace("t0", "alice", 500, json!("echidna"))]);
    wait_indexed(&search, &store);
    let faults = u64::from(DECODE_ATTEMPTS) + 1;
    search.shared.read_faults.store(faults, Ordering::Release);
    write(
        &store,
        P,
        vec![trace("t1", "alice", 1_000, json!("platypus"))],
    );
    wait_indexed(&search, &store);
    assert_eq!(search.shared.read_faults.load(Ordering::Acquire), 0);
    assert_eq!(find(&search, Scope::Traces, "platypus"), ["t1"]);
    assert_eq!(search.skipped_records().get(), 0);
    search.shutdown();
    store.shutdown();
}
