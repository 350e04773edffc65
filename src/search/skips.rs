//! What the indexer does about failures. A change-log entry, or a trace or observation it
//! names, whose stored bytes do not decode fails its batch like any error; after
//! `DECODE_ATTEMPTS` failures of the same entry and record it is skipped — logged by sequence
//! number and key (never content), counted in `sightline_index_skipped_records_total` — and
//! the index goes on without it. A later write of the record logs a new entry, which indexes it
//! again. Without this, one corrupt row would hold search back for good.
//!
//! Transient failures (storage I/O, the index itself) never lead to a skip: they are retried,
//! with `Backoff` between attempts, for as long as they last.
//!
//! Owns: the attempt counts, the skip list and the retry pauses. Must not touch the index or
//! the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// Failures of one entry before it is skipped. A retry reads a fresh snapshot, so a record
/// rewritten meanwhile is indexed rather than skipped.
pub const DECODE_ATTEMPTS: u32 = 3;

/// What did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unreadable {
    /// The change-log entry `seq` itself (what it names is unknown).
    Change { seq: u64 },
    /// A record (its row or its input/output) read while applying the entry `seq`.
    Record {
        seq: u64,
        kind: &'static str,
        project: String,
        id: String,
    },
}

impl std::fmt::Display for Unreadable {
    /// Sequence number and key only: never content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Change { seq } => write!(f, "change-log entry {seq}"),
            Unreadable::Record {
                seq,
                kind,
                project,
                id,
            } => write!(f, "{kind} {project}/{id} of change-log entry {seq}"),
        }
    }
}

impl Unreadable {
    fn seq(&self) -> u64 {
        match self {
            Unreadable::Change { seq } | Unreadable::Record { seq, .. } => *seq,
        }
    }

    /// Logs that it is left out of the index and counts it.
    pub fn report_skipped(&self, skipped: &Counter) {
        skipped.inc();
        match self {
            Unreadable::Change { seq } => tracing::error!(
                seq,
                "search index skips a change-log entry that does not decode"
            ),
            Unreadable::Record {
                seq,
                kind,
                project,
                id,
            } => tracing::error!(
                seq,
                kind,
                project = %project,
                id = %id,
                "search index skips a record that does not decode; it is not searchable until it is written again"
            ),
        }
    }
}

/// Undecodable entries seen since the last commit: how often each failed, and which are
/// skipped. Both forget an entry once a commit has moved past it.
#[derive(Default)]
pub struct Skips {
    attempts: HashMap<Unreadable, u32>,
    skipped: HashSet<Unreadable>,
}

impl Skips {
    pub fn is_skipped(&self, what: &Unreadable) -> bool {
        self.skipped.contains(what)
    }

    /// Notes one more failure to decode `what`; on the last allowed one it is skipped from
    /// now on (and reported, once). True when it is skipped.
    pub fn failed(&mut self, what: Unreadable, skipped: &Counter) -> bool {
        let n = self.attempts.entry(what.clone()).or_insert(0);
        *n += 1;
        if *n < DECODE_ATTEMPTS {
            tracing::warn!(
                seq = what.seq(),
                attempt = *n,
                of = DECODE_ATTEMPTS,
                "search indexing met stored bytes that do not decode; retrying"
            );
            return false;
        }
        self.skip_now(what, skipped);
        true
    }

    /// Skips `what` from now on, reporting it unless it already was.
    pub fn skip_now(&mut self, what: Unreadable, skipped: &Counter) {
        if !self.skipped.contains(&what) {
            what.report_skipped(skipped);
            self.skipped.insert(what);
        }
    }

    /// A commit covers every entry up to `seq`: they will not be read again.
    pub fn committed(&mut self, seq: u64) {
        self.attempts.retain(|w, _| w.seq() > seq);
        self.skipped.retain(|w| w.seq() > seq);
    }
}

/// Pauses between retries of a failing batch: `FIRST`, doubling up to `MAX`; a success starts
/// over. Short first pauses let a blip pass unnoticed; the cap keeps a long outage from
/// spinning (each retry redoes the work since the last commit) while still recovering soon
/// after it ends.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(8);

    /// The pause before the next retry.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> Unreadable {
        Unreadable::Record {
            seq,
            kind: "trace",
            project: "p".into(),
            id: "t".into(),
        }
    }

    #[test]
    fn an_entry_is_skipped_on_its_last_attempt_and_counted_once() {
        let counter = Counter::default();
        let mut s = Skips::default();
        for _ in 1..DECODE_ATTEMPTS {
            assert!(!s.failed(record(5), &counter));
            assert!(!s.is_skipped(&record(5)));
        }
        assert!(s.failed(record(5), &counter));
        assert!(s.is_skipped(&record(5)));
        // The same record named by a later entry is a new case (it may have been rewritten).
        assert!(!s.is_skipped(&record(6)));
        assert!(s.failed(record(5), &counter));
        assert_eq!(counter.get(), 1);
        s.committed(4);
        assert!(s.is_skipped(&record(5)));
        s.committed(5);
        assert!(!s.is_skipped(&record(5)));
        assert!(!s.failed(Unreadable::Change { seq: 5 }, &counter));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let pauses: Vec<Duration> = (0..8).map(|_| b.pause()).collect();
        assert_eq!(pauses[0], Backoff::FIRST);
        assert_eq!(pauses[1], Backoff::FIRST * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap_or(&Duration::ZERO), Backoff::MAX);
        b.reset();
        assert_eq!(b.pause(), Backoff::FIRST);
    }
}
