//! Retention: deletes data older than each project's configured age, deletes the oldest data
//! when the data directory outgrows its disk cap, and gives the freed space back.
//!
//! Owns: the retention thread, turning the policy into cutoffs, the order of a run (age, cap,
//! change-log trim, compaction) and its counters for `/metrics`. Must not touch: transactions.
//! It finds candidates with store reads and deletes through the writer in small operations
//! (`WriteOp::Expire`, `WriteOp::TrimChanges`), so ingestion interleaves with a run instead of
//! waiting for it; rollups move in the same transactions and the search index follows the
//! change log, as for any delete. See `store::expire` for what expires with what, and
//! `store::compact` for why compaction is a short pause and when it gives up.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::background::{StopSignal, Task};
use crate::config;
use crate::search::Search;
use crate::store::{Compaction, ExpireCounts, Store, StoreError, Tally, TimeKey, WriteOp};
use crate::time::Timestamp;

/// Candidates per delete operation: bounds one commit, so ingestion queued behind it waits
/// milliseconds, not seconds.
const BATCH: usize = 200;
/// Change-log entries looked at per read while trimming, and removed per operation.
const TRIM_SCAN: usize = 10_000;
const TRIM_BATCH: usize = 2_000;
/// Compact once the records deleted since the last compaction are this share of all records:
/// below it, redb reusing the freed pages for new data is cheaper than a pause.
const COMPACT_SHARE: f64 = 0.1;
/// Over the disk cap, delete down to this share of it, so the next run does not start over.
const CAP_TARGET: f64 = 0.95;
/// Delete-and-measure rounds per run at most when over the cap.
const CAP_ROUNDS: usize = 8;
/// Traces deleted per cap round at most (the estimate is proportional; rounds correct it).
const CAP_MAX_TRACES: usize = 1_000_000;
/// Longest wait for the search index to apply a run's deletes.
const INDEX_WAIT: Duration = Duration::from_secs(30);
/// The first run comes this long after start at most (sooner with a shorter interval).
const FIRST_RUN_DELAY: Duration = Duration::from_secs(60);
const DAY_MICROS: i64 = 86_400_000_000;

/// What `sightline_retention_deleted_total` counts, by `kind`.
const KINDS: [&str; 5] = ["trace", "observation", "score", "session", "change"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// trace, observation, score, session or change (change-log entry).
    pub kind: &'static str,
}

/// What `/metrics` shows of retention.
#[derive(Clone, Default)]
pub struct Stats {
    pub runs: Counter,
    pub failures: Counter,
    pub deleted: Family<KindLabel, Counter>,
    pub compactions: Counter,
    /// Bytes the database file shrank by, over all compactions.
    pub reclaimed_bytes: Counter,
    /// Unix time (seconds) the last run ended.
    pub last_run_timestamp: Gauge<f64, AtomicU64>,
    pub last_run_seconds: Gauge<f64, AtomicU64>,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunReport {
    pub deleted: ExpireCounts,
    pub compactions: u32,
    /// Bytes the database file shrank by.
    pub reclaimed_bytes: u64,
    /// A compaction was wanted but readers held transactions open too long.
    pub compaction_deferred: bool,
    /// Database file + search index bytes before and after the run.
    pub disk_before: u64,
    pub disk_after: u64,
}

/// The retention worker: the policy and what it remembers between runs.
pub struct Retention {
    policy: config::Retention,
    store: Store,
    search: Search,
    stats: Stats,
    /// Records deleted since the last compaction.
    since_compaction: u64,
}

impl Retention {
    pub fn new(policy: config::Retention, store: Store, search: Search, stats: Stats) -> Self {
        // Every series exists from the start, at zero, so a dashboard sees no gap before a run.
        for kind in KINDS {
            stats.deleted.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        Retention {
            policy,
            store,
            search,
            stats,
            since_compaction: 0,
        }
    }

    /// Starts the background thread, or returns None when retention is off.
    pub fn start(mut self) -> std::io::Result<Option<Task>> {
        if !self.policy.is_enabled() {
            return Ok(None);
        }
        let interval = self.policy.check_interval;
        tracing::info!(
            max_age_days = self.policy.max_age_days,
            projects = ?self.policy.projects,
            max_disk_bytes = self.policy.max_disk_bytes,
            interval_s = interval.as_secs(),
            "retention enabled"
        );
        Task::spawn("retention", move |stop| {
            if stop.sleep(interval.min(FIRST_RUN_DELAY)) {
                return;
            }
            loop {
                // Errors are logged and counted in `run_once`; the next run tries again.
                let _ = self.run_once(&stop);
                if stop.sleep(interval) {
                    return;
                }
            }
        })
        .map(Some)
    }

    /// One run: expire by age, enforce the disk cap, trim the change log, compact when enough
    /// was deleted. Returns early (with what it did so far) when `stop` is given.
    pub fn run_once(&mut self, stop: &StopSignal) -> Result<RunReport, StoreError> {
        let started = Instant::now();
        let mut report = RunReport {
            disk_before: self.disk_bytes(),
            ..Default::default()
        };
        let result = self.run(&mut report, stop);
        report.disk_after = self.disk_bytes();
        let s = &self.stats;
        s.runs.inc();
        let d = &report.deleted;
        for (kind, n) in
            KINDS
                .into_iter()
                .zip([d.traces, d.observations, d.scores, d.sessions, d.changes])
        {
            s.deleted.get_or_create(&KindLabel { kind }).inc_by(n);
        }
        s.last_run_seconds.set(started.elapsed().as_secs_f64());
        s.last_run_timestamp
            .set(Timestamp::now().micros() as f64 / 1e6);
        match &result {
            Ok(()) if d.records() > 0 || report.compactions > 0 => tracing::info!(
                traces = d.traces,
                observations = d.observations,
                scores = d.scores,
                sessions = d.sessions,
                log_entries = d.changes,
                reclaimed_bytes = report.reclaimed_bytes,
                disk_bytes = report.disk_after,
                seconds = started.elapsed().as_secs_f64(),
                "retention run deleted expired data"
            ),
            Ok(()) => tracing::debug!("retention run: nothing expired"),
            Err(e) => {
                s.failures.inc();
                tracing::error!(error = %e, "retention run failed; retrying next interval");
            }
        }
        result.map(|()| report)
    }

    fn run(&mut self, report: &mut RunReport, stop: &StopSignal) -> Result<(), StoreError> {
        let now = Timestamp::now().micros();
        for project in self.store.projects()? {
            if let Some(days) = self.policy.max_age_days_for(&project.id) {
                let cutoff =
                    Timestamp::from_micros(now.saturating_sub(i64::from(days) * DAY_MICROS));
                let n = self.expire_before(&project.id, cutoff, stop)?;
                report.deleted.add(&n);
            }
            if stop.is_stopped() {
                return Ok(());
            }
        }
        self.enforce_cap(report, stop)?;
        if report.deleted.records() > 0 {
            report.deleted.changes += self.trim_log(stop)?;
        }
        let records = self.store.record_count()?;
        let share = self.since_compaction as f64 / (records + self.since_compaction).max(1) as f64;
        if self.policy.compact && self.since_compaction > 0 && share >= COMPACT_SHARE {
            self.compact(report)?;
        }
        Ok(())
    }

    /// Deletes everything of `project` that expires at `cutoff`: traces, then observation groups
    /// without a trace, then scores on no trace.
    fn expire_before(
        &mut self,
        project: &str,
        cutoff: Timestamp,
        stop: &StopSignal,
    ) -> Result<ExpireCounts, StoreError> {
        let mut total = ExpireCounts::default();
        for pass in [Pass::Traces, Pass::Groups, Pass::Scores] {
            let mut after: Option<TimeKey> = None;
            loop {
                if stop.is_stopped() {
                    return Ok(total);
                }
                let page = match pass {
                    Pass::Traces => {
                        self.store
                            .traces_before(project, cutoff, after.as_ref(), BATCH)
                    }
                    Pass::Groups => {
                        self.store
                            .orphan_groups_before(project, cutoff, after.as_ref(), BATCH)
                    }
                    Pass::Scores => {
                        self.store
                            .scores_before(project, cutoff, after.as_ref(), BATCH)
                    }
                }?;
                if !page.ids.is_empty() {
                    let tally = Arc::new(Tally::default());
                    let (traces, scores) = match pass {
                        Pass::Scores => (Vec::new(), page.ids),
                        _ => (page.ids, Vec::new()),
                    };
                    self.store.writer().submit_blocking(WriteOp::Expire {
                        project: project.to_string(),
                        cutoff,
                        traces,
                        scores,
                        tally: tally.clone(),
                    })?;
                    let n = tally.get();
                    self.since_compaction += n.records();
                    total.add(&n);
                }
                match page.next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
        }
        Ok(total)
    }

    /// Over the cap: deletes the oldest traces of all projects (and whatever else is older than
    /// the newest of them), compacts, measures again, until under `CAP_TARGET` of the cap.
    fn enforce_cap(&mut self, report: &mut RunReport, stop: &StopSignal) -> Result<(), StoreError> {
        let cap = self.policy.max_disk_bytes;
        if cap == 0 || self.disk_bytes() <= cap {
            return Ok(());
        }
        let target = (cap as f64 * CAP_TARGET) as u64;
        // Space freed by earlier deletes (this run's age pass) counts only once compacted.
        let mut unsettled = self.since_compaction > 0;
        for _ in 0..CAP_ROUNDS {
            if stop.is_stopped() {
                return Ok(());
            }
            if unsettled {
                report.deleted.changes += self.trim_log(stop)?;
                if !self.compact(report)? {
                    // Without a compaction the file cannot shrink: measuring now would only
                    // delete more. The next run goes on.
                    return Ok(());
                }
            }
            let used = self.disk_bytes();
            if used <= target {
                return Ok(());
            }
            let traces = self.store.trace_count()?;
            if traces == 0 {
                tracing::warn!(
                    used,
                    cap,
                    "the data directory is over its disk cap with no traces left to delete"
                );
                return Ok(());
            }
            let share = (used - target) as f64 / used as f64;
            let n = ((traces as f64 * share).ceil() as usize).clamp(1, CAP_MAX_TRACES);
            let Some(oldest) = self.store.nth_oldest_trace_time(n)? else {
                return Ok(());
            };
            let cutoff = Timestamp::from_micros(oldest.saturating_add(1));
            let mut deleted = ExpireCounts::default();
            for project in self.store.projects()? {
                deleted.add(&self.expire_before(&project.id, cutoff, stop)?);
            }
            tracing::info!(
                used,
                cap,
                traces = deleted.traces,
                before = %cutoff.to_iso(),
                "over the disk cap: deleted the oldest traces"
            );
            report.deleted.add(&deleted);
            if deleted.records() == 0 {
                return Ok(());
            }
            unsettled = true;
        }
        Ok(())
    }

    /// Removes change-log entries that point at nothing any more, after giving the search index
    /// a moment to apply this run's deletes (only then can their entries go too).
    fn trim_log(&mut self, stop: &StopSignal) -> Result<u64, StoreError> {
        let target = *self.store.writer().subscribe().borrow();
        let deadline = Instant::now() + INDEX_WAIT;
        while self.search.status().indexed_seq < target && Instant::now() < deadline {
            if stop.sleep(Duration::from_millis(50)) {
                return Ok(0);
            }
        }
        let indexed = self.search.status().indexed_seq;
        let mut after = 0;
        let mut removed = 0;
        loop {
            if stop.is_stopped() {
                return Ok(removed);
            }
            let (seqs, next) = self.store.changes_to_trim(after, TRIM_SCAN, indexed)?;
            for chunk in seqs.chunks(TRIM_BATCH) {
                let tally = Arc::new(Tally::default());
                self.store.writer().submit_blocking(WriteOp::TrimChanges {
                    seqs: chunk.to_vec(),
                    indexed,
                    tally: tally.clone(),
                })?;
                removed += tally.get().changes;
            }
            match next {
                Some(n) => after = n,
                None => return Ok(removed),
            }
        }
    }

    /// Compacts the database file; false when readers kept it from happening.
    fn compact(&mut self, report: &mut RunReport) -> Result<bool, StoreError> {
        if !self.policy.compact {
            return Ok(false);
        }
        let started = Instant::now();
        match self.store.writer().compact_blocking()? {
            Compaction::Done { before, after } => {
                let reclaimed = before.saturating_sub(after);
                tracing::info!(
                    before,
                    after,
                    seconds = started.elapsed().as_secs_f64(),
                    "compacted the database file"
                );
                report.compactions += 1;
                report.reclaimed_bytes += reclaimed;
                self.stats.compactions.inc();
                self.stats.reclaimed_bytes.inc_by(reclaimed);
                self.since_compaction = 0;
                Ok(true)
            }
            Compaction::Busy => {
                tracing::warn!(
                    "compaction deferred: a reader kept a transaction open; retrying next run"
                );
                report.compaction_deferred = true;
                Ok(false)
            }
        }
    }

    /// What the cap limits: the database file and the search index.
    fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes() + self.search.disk_bytes()
    }
}

#[derive(Clone, Copy)]
enum Pass {
    Traces,
    Groups,
    Scores,
}
