//! Records the writer has just committed, handed to the search indexer as plain JSON.
//!
//! The indexer applies each change-log entry moments after its commit, and reading the record
//! back meant two B-tree lookups and a zstd decompression of what the writer held in memory a
//! moment before (about a quarter of the indexer thread's time). Owns only that bounded,
//! short-lived set: the store stays the source of truth, and whatever is not found here is read
//! from a snapshot as before.
//!
//! An entry is keyed by the sequence number of the change-log entry it goes with, and holds the
//! record as it was written in that entry's transaction: the state a snapshot at that commit
//! reads. The writer publishes a transaction's entries after its commit and before it wakes the
//! indexer; a failed commit publishes nothing.
//!
//! A transaction's records share one buffer, so the indexer dropping them frees one allocation
//! per commit: buffers per record, allocated by the writer and freed by the indexer, made
//! glibc's allocator lock and consolidate the writer's arena (+10 µs per span in the writer;
//! measured before the binary moved to jemalloc, where a free from another thread is cheaper
//! but still one per record).
//! Applied buffers go back to the writer (`Handoff::batch`) rather than to the allocator: a
//! transaction's buffer is large enough to be a fresh mapping each time, and growing it and
//! faulting its pages in were 4 % of the writer's time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The two kinds of record whose values live in `record_values` and the indexer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Trace,
    Observation,
}

/// One transaction's records: their project, id, row JSON and payload JSON (empty when the
/// record has none) one after another in `bytes`.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    seq: u64,
    kind: RecordKind,
    at: usize,
    project: usize,
    id: usize,
    row: usize,
    io: usize,
}

impl Entry {
    fn end(&self) -> usize {
        self.at + self.project + self.id + self.row + self.io
    }
}

impl Batch {
    /// Adds a record written with change `seq`: `json` is its row's JSON followed by its
    /// payload's, the row's ending at `row_len`.
    pub(super) fn push(
        &mut self,
        seq: u64,
        kind: RecordKind,
        project: &str,
        id: &str,
        json: &[u8],
        row_len: usize,
    ) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(project.as_bytes());
        self.bytes.extend_from_slice(id.as_bytes());
        self.bytes.extend_from_slice(json);
        let row = row_len.min(json.len());
        self.entries.push(Entry {
            seq,
            kind,
            at,
            project: project.len(),
            id: id.len(),
            row,
            io: json.len() - row,
        });
    }

    fn part(&self, start: usize, len: usize) -> &[u8] {
        self.bytes.get(start..start + len).unwrap_or_default()
    }

    fn is(&self, e: &Entry, kind: RecordKind, project: &str, id: &str) -> bool {
        e.kind == kind
            && self.part(e.at, e.project) == project.as_bytes()
            && self.part(e.at + e.project, e.id) == id.as_bytes()
    }
}

/// A record taken from the hand-over: its row's JSON and its payload's.
pub struct Taken {
    batch: Arc<Batch>,
    entry: Entry,
}

impl Taken {
    pub fn row(&self) -> &[u8] {
        let e = &self.entry;
        self.batch.part(e.at + e.project + e.id, e.row)
    }

    pub fn io(&self) -> &[u8] {
        let e = &self.entry;
        self.batch.part(e.end() - e.io, e.io)
    }
}

/// Bytes held at most: at full ingest speed a few hundred milliseconds of records, more than
/// the indexer's wait between two commits. Past it the oldest transactions go (their records
/// are read from the store).
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// Applied batches kept for the writer's next transactions, and the largest buffer kept: at
/// full ingest speed a transaction's records take a few hundred KiB, and one unusually large
/// transaction should not pin its memory for good.
const SPARE_BATCHES: usize = 2;
const SPARE_MAX_BYTES: usize = 2 * 1024 * 1024;

#[derive(Default)]
pub struct Handoff {
    /// Set by the indexer that takes entries: without one, nothing is kept.
    active: AtomicBool,
    inner: Mutex<Inner>,
    /// Entries taken, for tests and diagnostics.
    taken: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// Published transactions, oldest first, each with which of its entries were taken.
    batches: VecDeque<(Arc<Batch>, Vec<bool>)>,
    bytes: usize,
    /// The last `forget_through`: the indexer has applied every change up to it.
    applied: u64,
    /// Emptied batches whose buffers the writer fills next.
    spare: Vec<Batch>,
}

impl Inner {
    /// Keeps the buffers of a batch nobody reads any more for a later transaction.
    fn recycle(&mut self, mut batch: Batch) {
        if self.spare.len() < SPARE_BATCHES && batch.bytes.capacity() <= SPARE_MAX_BYTES {
            batch.bytes.clear();
            batch.entries.clear();
            self.spare.push(batch);
        }
    }

    fn pop_front(&mut self) {
        if let Some((old, _)) = self.batches.pop_front() {
            self.bytes -= old.bytes.len();
            // A record still being indexed holds its batch: that one is freed when it is done.
            if let Ok(old) = Arc::try_unwrap(old) {
                self.recycle(old);
            }
        }
    }
}

impl Handoff {
    /// From now on the writer hands its records over.
    pub fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// An empty batch for the writer's next transaction, on an applied batch's buffers when
    /// one is spare.
    pub(super) fn batch(&self) -> Batch {
        self.inner().spare.pop().unwrap_or_default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the queue whole: a panic elsewhere cannot have broken it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a committed transaction's records, dropping the oldest transactions past the cap.
    pub(super) fn publish(&self, mut batch: Batch) {
        if batch.entries.is_empty() {
            return;
        }
        // A trace's entry is taken at its first patch and written at the request's end, after
        // its observations: sorted, a change's record is found by binary search.
        batch.entries.sort_unstable_by_key(|e| e.seq);
        let taken = vec![false; batch.entries.len()];
        let mut inner = self.inner();
        // The indexer may have read this commit from a snapshot before it was published: kept,
        // nothing would take or drop it until the next write.
        if batch.entries.last().is_some_and(|e| e.seq <= inner.applied) {
            inner.recycle(batch);
            return;
        }
        inner.bytes += batch.bytes.len();
        inner.batches.push_back((Arc::new(batch), taken));
        while inner.bytes > MAX_BYTES && !inner.batches.is_empty() {
            inner.pop_front();
        }
    }

    /// The record written with change `seq`, if it was handed over and is the one asked for.
    pub fn take(&self, seq: u64, kind: RecordKind, project: &str, id: &str) -> Option<Taken> {
        let mut inner = self.inner();
        let (batch, taken) = inner.batches.iter_mut().rev().find(|(b, _)| {
            b.entries.first().is_some_and(|e| e.seq <= seq)
                && b.entries.last().is_some_and(|e| e.seq >= seq)
        })?;
        let i = batch.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        let entry = batch.entries[i];
        if taken[i] || !batch.is(&entry, kind, project, id) {
            return None;
        }
        taken[i] = true;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(Taken {
            batch: batch.clone(),
            entry,
        })
    }

    /// Drops every transaction whose changes go no further than `seq`: the indexer has applied
    /// them (an entry it did not take was superseded in its batch, or read from the store).
    pub fn forget_through(&self, seq: u64) {
        let mut inner = self.inner();
        inner.applied = inner.applied.max(seq);
        while inner
            .batches
            .front()
            .is_some_and(|(b, _)| b.entries.last().is_none_or(|e| e.seq <= seq))
        {
            inner.pop_front();
        }
    }

    /// Entries taken so far.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Transactions held and their bytes.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let inner = self.inner();
        (inner.batches.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(u64, RecordKind, &str, usize)]) -> Batch {
        let mut b = Batch::default();
        for &(seq, kind, id, len) in records {
            let json: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            b.push(seq, kind, "p", id, &json, len / 2);
        }
        b
    }

    #[test]
    fn an_entry_is_taken_once_and_only_for_its_own_record() {
        let h = Handoff::default();
        // The trace's entry comes last, as the writer adds it, with the smallest sequence.
        h.publish(batch(&[
            (8, RecordKind::Observation, "o1", 10),
            (9, RecordKind::Observation, "o2", 0),
            (7, RecordKind::Trace, "t1", 6),
        ]));
        // Another record, or another kind, under that sequence: not this entry.
        assert!(h.take(8, RecordKind::Observation, "p", "o2").is_none());
        assert!(h.take(8, RecordKind::Trace, "p", "o1").is_none());
        assert!(h.take(8, RecordKind::Observation, "q", "o1").is_none());
        assert!(h.take(6, RecordKind::Trace, "p", "t1").is_none());
        let got = h
            .take(8, RecordKind::Observation, "p", "o1")
            .expect("handed over");
        assert_eq!((got.row(), got.io()), (&b"abcde"[..], &b"fghij"[..]));
        assert!(h.take(8, RecordKind::Observation, "p", "o1").is_none());
        let t = h
            .take(7, RecordKind::Trace, "p", "t1")
            .expect("handed over");
        assert_eq!((t.row(), t.io()), (&b"abc"[..], &b"def"[..]));
        let empty = h
            .take(9, RecordKind::Observation, "p", "o2")
            .expect("handed over");
        assert_eq!((empty.row(), empty.io()), (&b""[..], &b""[..]));
        assert_eq!(h.taken(), 3);
        // Still readable after its transaction is dropped.
        h.forget_through(9);
        assert_eq!(h.held(), (0, 0));
        assert_eq!(got.io(), b"fghij");
    }

    #[test]
    fn applied_buffers_go_back_to_the_writer_unless_a_record_of_theirs_is_still_read() {
        let h = Handoff::default();
        h.publish(batch(&[(1, RecordKind::Observation, "o1", 1000)]));
        h.publish(batch(&[(2, RecordKind::Observation, "o2", 1000)]));
        let still_read = h.take(2, RecordKind::Observation, "p", "o2").unwrap();
        h.forget_through(2);
        let next = h.batch();
        assert!(next.bytes.is_empty() && next.entries.is_empty());
        assert!(next.bytes.capacity() >= 1003, "the first batch's buffer");
        assert_eq!(h.batch().bytes.capacity(), 0, "the second is still read");
        assert_eq!(still_read.row().len(), 500);
        assert_eq!(still_read.io()[..3], *b"ghi");
        // A transaction published too late is emptied for reuse too.
        h.publish(batch(&[(2, RecordKind::Observation, "o3", 10)]));
        assert!(h.batch().bytes.capacity() >= 13);
    }

    #[test]
    fn applied_changes_are_forgotten_and_the_oldest_go_past_the_cap() {
        let h = Handoff::default();
        for s in 1..=4 {
            h.publish(batch(&[(s, RecordKind::Observation, "o", 100)]));
        }
        h.forget_through(2);
        assert!(h.take(2, RecordKind::Observation, "p", "o").is_none());
        assert_eq!(h.held().0, 2);
        // A flood nobody takes stays under the cap, keeping the newest.
        let big = MAX_BYTES / 4;
        for s in 10..20 {
            h.publish(batch(&[(s, RecordKind::Trace, "t", big)]));
        }
        let (n, bytes) = h.held();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert_eq!(n, 3);
        assert!(h.take(19, RecordKind::Trace, "p", "t").is_some());
        assert!(h.take(10, RecordKind::Trace, "p", "t").is_none());
    }

    #[test]
    fn a_transaction_published_after_the_indexer_applied_it_is_not_kept() {
        let h = Handoff::default();
        h.forget_through(5);
        h.publish(batch(&[
            (4, RecordKind::Observation, "o", 10),
            (5, RecordKind::Trace, "t", 10),
        ]));
        assert_eq!(h.held(), (0, 0));
        h.publish(batch(&[
            (5, RecordKind::Trace, "t", 10),
            (6, RecordKind::Observation, "o", 10),
        ]));
        assert_eq!(h.held().0, 1);
        assert!(h.take(6, RecordKind::Observation, "p", "o").is_some());
    }
}
