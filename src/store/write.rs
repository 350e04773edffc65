//! The single writer: every write to redb goes through one thread that group-commits whatever
//! requests are queued, then answers each request only after its commit is durable.
//!
//! Why one thread: redb allows one write transaction at a time anyway, and batching many
//! requests into one fsync is what makes durable acknowledgement cheap. The queue is bounded so a
//! flood answers "busy" (503 + Retry-After at the edge) instead of growing memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::codec::{self, Io, ObsSummary};
use super::dict;
use super::handoff::{Batch, Handoff, RecordKind};
use super::read::SessionRecord;
use super::tables::{self, ChangeRef};
use super::values;
use super::{
    ApiKeyRecord, ProjectRecord, StoreError, UserRecord, WebSessionRecord, observation_total_cost,
};
use crate::analytics::rollup::Pending;
use crate::cost::ModelDef;
use crate::record::{
    Change, ObservationPatch, ObservationRecord, ScoreRecord, TimedChange, TracePatch, TraceRecord,
    is_truthy,
};
use crate::score_config::{ConfigSet, ScoreConfig};
use crate::time::Timestamp;

mod eval;

/// Prices nothing: for tests whose subject is not cost.
#[cfg(test)]
pub struct NoPrices;

#[cfg(test)]
impl Pricer for NoPrices {
    fn apply(
        &self,
        _: &str,
        _: &mut ObservationRecord,
        _: Option<&serde_json::Value>,
        _: Option<&serde_json::Value>,
    ) {
    }
}

/// Computes usage and cost of an observation after each merge. Implemented by `cost`; the store
/// only calls it, so it never needs to know about prices.
pub trait Pricer: Send + Sync {
    fn apply(
        &self,
        project: &str,
        obs: &mut ObservationRecord,
        input: Option<&serde_json::Value>,
        output: Option<&serde_json::Value>,
    );

    /// Replaces the stored project models prices come from (all projects). The writer calls it
    /// on start and right after committing a model change, before answering the request that
    /// made it, so every later observation is priced with the new models.
    fn set_project_models(&self, _models: Vec<ModelDef>) {}
}

/// Most requests one commit may carry: bounds the latency the first request in a group pays.
const MAX_GROUP: usize = 256;

/// One unit of work for the writer.
#[derive(Debug)]
pub enum WriteOp {
    Changes {
        project: String,
        changes: Vec<TimedChange>,
    },
    DeleteTraces {
        project: String,
        ids: Vec<String>,
    },
    DeleteScore {
        project: String,
        id: String,
    },
    /// Re-prices these stored observations with the current prices (`sightline recost`).
    Reprice {
        project: String,
        ids: Vec<String>,
    },
    /// Creates or replaces a project model (`POST /api/public/models`).
    PutModel(Box<ModelDef>),
    /// Deletes a project model; absent is not an error.
    DeleteModel {
        project: String,
        id: String,
    },
    /// Creates a prompt version, moves labels or deletes versions (`/api/public/v2/prompts`).
    Prompt(Box<super::PromptWrite>),
    /// Recomputes every rollup from the records (`sightline rollups rebuild`).
    RebuildRollups,
    /// Writes one small meta value: proves the store can still commit (health check).
    Probe,
    /// Starts a dashboard session and drops every session that expired before `now`.
    PutWebSession {
        token_hash: String,
        session: WebSessionRecord,
        now: Timestamp,
    },
    /// Ends a dashboard session (logout).
    DeleteWebSession {
        token_hash: String,
    },
    /// Adds an API key (dashboard settings).
    PutApiKey(ApiKeyRecord),
    /// Revokes an API key of `project`; a key of another project is left alone.
    DeleteApiKey {
        project: String,
        public_key: String,
    },
    /// Creates a project and makes the dashboard user `member` (who asked for it) a member,
    /// in one transaction: a project nobody can open never exists.
    PutProject {
        project: ProjectRecord,
        member: String,
    },
    /// Retention: deletes these traces (or groups of observations without a trace) and scores
    /// of `project` if they are still older than `cutoff` (see `store::expire`). What it
    /// deleted is left in `tally`.
    Expire {
        project: String,
        cutoff: Timestamp,
        traces: Vec<String>,
        scores: Vec<String>,
        tally: Arc<super::expire::Tally>,
    },
    /// Removes change-log entries that point at nothing any more (see `store::expire`); expired
    /// deletes only once the search index has applied them (`indexed`).
    TrimChanges {
        seqs: Vec<u64>,
        indexed: u64,
        tally: Arc<super::expire::Tally>,
    },
    /// Creates or replaces a score config; the in-memory config set is swapped before the
    /// request is answered, so the next score is checked against it.
    PutScoreConfig(Box<ScoreConfig>),
    /// Creates or replaces an evaluator definition (`/api/evaluators`).
    PutEvaluator(Box<crate::eval::Evaluator>),
    /// Deletes an evaluator with its status and jobs.
    DeleteEvaluator {
        project: String,
        id: String,
    },
    /// Queues evaluation jobs not queued before (and, with `requeue_failed`, failed ones again)
    /// and moves the runner's change-log cursor, atomically.
    EvalEnqueue {
        jobs: Vec<crate::eval::EvalJob>,
        cursor: Option<u64>,
        requeue_failed: bool,
    },
    /// Finishes a pending job: its row, the evaluator's counters, the score and judge trace.
    EvalComplete(Box<crate::eval::EvalOutcome>),
    /// Stores bytes that bypass encoding (tests of what reads a corrupt row).
    #[cfg(test)]
    Raw(super::faults::RawWrite),
}

enum Job {
    Write {
        op: WriteOp,
        reply: Reply,
    },
    /// Gives the file's free pages back to the file system (see `store::compact`).
    Compact(oneshot::Sender<Result<super::Compaction, StoreError>>),
    /// A dictionary trained from sampled values (see `tend_dictionary`).
    Dictionary(Result<Vec<u8>, StoreError>),
    Shutdown,
}

/// Counters the metrics endpoint reads.
pub struct WriterStats {
    pub queued: AtomicUsize,
    pub commits: AtomicU64,
    pub ops_committed: AtomicU64,
    pub commit_failures: AtomicU64,
    pub last_commit_micros: AtomicU64,
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Wall-clock µs of the last failed commit and of the last commit that stored data (not a
    /// health probe): a probe fits where real data may not, so health compares these.
    pub last_failure_at: AtomicU64,
    pub last_data_commit_at: AtomicU64,
}

impl WriterStats {
    /// True while the newest data commit attempt failed, within the last `window`.
    pub fn failing(&self, window: std::time::Duration) -> bool {
        let failed = self.last_failure_at.load(Ordering::Relaxed);
        let ok = self.last_data_commit_at.load(Ordering::Relaxed);
        let now = u64::try_from(Timestamp::now().micros()).unwrap_or(0);
        failed > ok && now.saturating_sub(failed) < window.as_micros() as u64
    }
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            queued: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            ops_committed: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            last_commit_micros: AtomicU64::new(0),
            commit_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
            last_failure_at: AtomicU64::new(0),
            last_data_commit_at: AtomicU64::new(0),
        }
    }
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    closed: Arc<AtomicBool>,
    handle: Arc<Mutex<Option<JoinHandle<()>>>>,
    stats: Arc<WriterStats>,
    committed: watch::Receiver<u64>,
    configs: Arc<ConfigSlot>,
    handoff: Arc<Handoff>,
}

/// The score configs of every project, replaced whole by the writer after a config commit.
#[derive(Default)]
struct ConfigSlot(std::sync::RwLock<Arc<ConfigSet>>);

impl ConfigSlot {
    fn get(&self) -> Arc<ConfigSet> {
        // A poisoned lock still holds a whole `Arc` (replacement is one store), so use it.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, set: ConfigSet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }
}

impl Writer {
    /// `dicts`: the trained dictionary new values use and how many the file holds
    /// (`dict::load_all`).
    pub(super) fn start(
        db: Arc<super::DbSlot>,
        capacity: usize,
        pricer: Arc<dyn Pricer>,
        dicts: (Option<u64>, usize),
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let next_seq = {
            let r = db.begin_read()?;
            let meta = r.open_table(tables::META)?;
            meta.get(tables::META_SEQ)?
                .map(|v| tables::read_u64(v.value()))
                .transpose()?
                .unwrap_or(1)
        };
        pricer.set_project_models(stored_models(&db)?);
        let configs = Arc::new(ConfigSlot::default());
        configs.set(stored_configs(&db)?);
        let (committed_tx, committed) = watch::channel(next_seq.saturating_sub(1));
        let handoff = Arc::new(Handoff::default());
        let mut state = WriterLoop {
            db,
            rx,
            pricer,
            next_seq,
            stats: stats.clone(),
            committed: committed_tx,
            configs: configs.clone(),
            handoff: handoff.clone(),
            dicts,
            queue: tx.downgrade(),
        };
        let handle = std::thread::Builder::new()
            .name("sightline-writer".into())
            .spawn(move || state.run())
            .map_err(|e| StoreError::Io(format!("cannot start writer thread: {e}")))?;
        Ok(Writer {
            tx,
            closed: Arc::new(AtomicBool::new(false)),
            handle: Arc::new(Mutex::new(Some(handle))),
            stats,
            committed,
            configs,
            handoff,
        })
    }

    /// A writer for a read-only store: no thread, every write refused as `Closed`.
    pub(super) fn refusing() -> Writer {
        let (tx, _) = mpsc::channel(1);
        let (_, committed) = watch::channel(0);
        Writer {
            tx,
            closed: Arc::new(AtomicBool::new(true)),
            handle: Arc::new(Mutex::new(None)),
            stats: Arc::new(WriterStats::default()),
            committed,
            configs: Arc::new(ConfigSlot::default()),
            handoff: Arc::new(Handoff::default()),
        }
    }

    /// Every project's score configs as of the last committed config change.
    pub fn score_configs(&self) -> Arc<ConfigSet> {
        self.configs.get()
    }

    /// Queues a write and resolves once it is durably committed.
    pub async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, done) = oneshot::channel();
        match self.tx.try_send(Job::Write { op, reply }) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(StoreError::Closed),
        }
        done.await
            .map_or(Err(StoreError::Closed), |(result, _op)| result)
    }

    /// Compacts the file on the writer thread, after everything queued before it has committed.
    /// Blocking: call it from a background thread.
    pub fn compact_blocking(&self) -> Result<super::Compaction, StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .blocking_send(Job::Compact(reply))
            .map_err(|_| StoreError::Closed)?;
        done.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Blocking variant for command-line tools and tests outside the async runtime.
    pub fn submit_blocking(&self, op: WriteOp) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .blocking_send(Job::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        done.blocking_recv()
            .map_or(Err(StoreError::Closed), |(result, _op)| result)
    }

    /// Where committed records are handed to the search indexer (`store::handoff`).
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }

    /// The sequence number of the newest durable change; derived state (search index, rollups)
    /// waits on this to catch up without polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// False once shutdown began: new writes are refused.
    pub fn is_accepting(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// False when the writer thread has died (it never should; health reports it).
    pub fn is_alive(&self) -> bool {
        self.handle
            .lock()
            .map(|h| h.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Refuses new writes, lets the writer commit everything already queued, and joins it.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        // The marker queues behind every accepted job, so they all commit first.
        let _ = self.tx.blocking_send(Job::Shutdown);
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

struct WriterLoop {
    db: Arc<super::DbSlot>,
    rx: mpsc::Receiver<Job>,
    pricer: Arc<dyn Pricer>,
    next_seq: u64,
    stats: Arc<WriterStats>,
    committed: watch::Sender<u64>,
    configs: Arc<ConfigSlot>,
    handoff: Arc<Handoff>,
    /// The current trained dictionary and how many the file holds.
    dicts: (Option<u64>, usize),
    /// The writer's own queue, for a trained dictionary to come back through.
    queue: mpsc::WeakSender<Job>,
}

/// The outcome of a write, with the write itself: the requester's thread frees it. Its values
/// were allocated there; freed on the writer thread, each large one took the lock of another
/// thread's allocator arena.
type Reply = oneshot::Sender<(Result<(), StoreError>, WriteOp)>;

impl WriterLoop {
    fn run(&mut self) {
        dict::attach_writer(self.dicts.0, self.dicts.1);
        let mut stop = false;
        while !stop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group: Vec<(WriteOp, Reply)> = Vec::new();
            let mut compact = None;
            let mut trained = None;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Write { op, reply } => group.push((op, reply)),
                    // Runs after the group gathered so far, outside any transaction.
                    Job::Compact(reply) => compact = Some(reply),
                    Job::Dictionary(result) => trained = Some(result),
                    Job::Shutdown => stop = true,
                }
                if !stop && compact.is_none() && group.len() < MAX_GROUP {
                    next = self.rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.stats.queued.fetch_sub(group.len(), Ordering::Relaxed);
                self.commit_group(group);
                self.tend_dictionary();
            }
            match trained {
                Some(Ok(bytes)) => self.install_dictionary(&bytes),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "training a compression dictionary failed");
                    dict::failed();
                }
                None => {}
            }
            if let Some(reply) = compact {
                let _ = reply.send(self.compact());
            }
        }
        tracing::debug!("writer stopped");
    }

    fn commit_group(&mut self, group: Vec<(WriteOp, Reply)>) {
        let started = std::time::Instant::now();
        let ops: Vec<&WriteOp> = group.iter().map(|(op, _)| op).collect();
        match self.commit(&ops) {
            Ok(()) => {
                self.record_commit(started, group.len());
                for (op, reply) in group {
                    let _ = reply.send((Ok(()), op));
                }
            }
            Err(e)
                if group.len() > 1
                    && !matches!(
                        e,
                        StoreError::Io(_) | StoreError::DiskFull(_) | StoreError::Unavailable
                    ) =>
            {
                // One bad request must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %e, "group commit failed; retrying requests one by one");
                for (op, reply) in group {
                    let started = std::time::Instant::now();
                    let result = self.commit(&[&op]);
                    if result.is_ok() {
                        self.record_commit(started, 1);
                    }
                    let _ = reply.send((result, op));
                }
            }
            Err(e) => {
                self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "commit failed");
                for (op, reply) in group {
                    let _ = reply.send((Err(e.clone()), op));
                }
            }
        }
    }

    /// Starts training a dictionary once enough values are sampled, on a thread of its own so
    /// that writes go on; the dictionary comes back through the queue, even to an idle writer.
    fn tend_dictionary(&mut self) {
        let Some(samples) = dict::take_samples() else {
            return;
        };
        let queue = self.queue.clone();
        let spawned = std::thread::Builder::new()
            .name("sightline-dict".into())
            .spawn(move || {
                let trained = dict::train(&samples);
                // A writer that stopped meanwhile simply never uses it.
                if let Some(q) = queue.upgrade() {
                    let _ = q.blocking_send(Job::Dictionary(trained));
                }
            });
        if spawned.is_err() {
            dict::failed();
        }
    }

    /// Commits a trained dictionary on its own, and only then compresses with it: no value
    /// can name a dictionary the file does not hold.
    fn install_dictionary(&mut self, bytes: &[u8]) {
        let t = dict::register(bytes);
        let stored = (|| -> Result<(), StoreError> {
            let tx = self.db.writable()?.begin_write()?;
            tx.open_table(tables::DICTS)?.insert(t.id, bytes)?;
            tx.open_table(tables::META)?
                .insert(tables::META_DICT, t.id.to_le_bytes().as_slice())?;
            tx.commit()?;
            Ok(())
        })();
        match stored {
            Ok(()) => {
                self.dicts = (Some(t.id), self.dicts.1 + 1);
                dict::installed(t, self.dicts.1);
                tracing::info!(
                    id = %format!("{:016x}", t.id),
                    bytes = bytes.len(),
                    "compressing with a dictionary trained from stored values"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "storing a compression dictionary failed");
                dict::failed();
            }
        }
    }

    fn record_commit(&self, started: std::time::Instant, n: usize) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .ops_committed
            .fetch_add(n as u64, Ordering::Relaxed);
        let elapsed = started.elapsed();
        self.stats.last_commit_micros.store(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.stats.commit_seconds.observe(elapsed.as_secs_f64());
    }

    /// Commits, and after a storage failure reopens the file (redb refuses everything after an
    /// I/O error until then) so the next request can succeed once the cause is gone.
    fn commit(&mut self, ops: &[&WriteOp]) -> Result<(), StoreError> {
        let result = self.try_commit(ops);
        let now = u64::try_from(Timestamp::now().micros()).unwrap_or(0);
        match &result {
            Ok(()) if ops.iter().any(|op| !matches!(op, WriteOp::Probe)) => {
                self.stats.last_data_commit_at.store(now, Ordering::Relaxed)
            }
            Ok(()) => {}
            Err(_) => self.stats.last_failure_at.store(now, Ordering::Relaxed),
        }
        if let Err(e @ (StoreError::Io(_) | StoreError::DiskFull(_) | StoreError::Unavailable)) =
            &result
        {
            tracing::error!(error = %e, "storage write failed; reopening the database file");
            match self.db.reopen().and_then(|()| self.reload_seq()) {
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "reopening the database file failed"),
            }
        }
        result
    }

    fn compact(&mut self) -> Result<super::Compaction, StoreError> {
        let result = self.db.compact(super::compact::READERS_WAIT);
        if let Err(e @ (StoreError::Io(_) | StoreError::DiskFull(_))) = &result {
            tracing::error!(error = %e, "compaction failed; reopening the database file");
            if let Err(e) = self.db.reopen().and_then(|()| self.reload_seq()) {
                tracing::error!(error = %e, "reopening the database file failed");
            }
        }
        result
    }

    /// A commit that failed at fsync may still have reached the file; never reuse its sequence
    /// numbers.
    fn reload_seq(&mut self) -> Result<(), StoreError> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(tables::META)?;
        if let Some(v) = meta.get(tables::META_SEQ)? {
            self.next_seq = self.next_seq.max(tables::read_u64(v.value())?);
        }
        Ok(())
    }

    fn try_commit(&mut self, ops: &[&WriteOp]) -> Result<(), StoreError> {
        let tx = self.db.writable()?.begin_write()?;
        let mut seq = self.next_seq;
        let handed;
        {
            let mut w = Tx {
                tx: &tx,
                seq: &mut seq,
                pricer: self.pricer.as_ref(),
                rollups: Pending::default(),
                traces: PendingTraces::default(),
                hot: None,
                values: values::Appender::default(),
                by_time: Default::default(),
                handed: self.handoff.is_active().then(|| self.handoff.batch()),
            };
            // A bug that panics while merging one request must fail that request (its
            // transaction is dropped, so aborted), not kill the only writer thread and with it
            // every later write.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ops.iter().try_for_each(|op| w.apply(op))?;
                w.flush_by_time()?;
                w.rollups.apply(&tx)
            }))
            .map_err(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "applying a write panicked; it was not committed");
                StoreError::Internal(what)
            })??;
            handed = w.handed.take();
            drop(w);
            let mut meta = tx.open_table(tables::META)?;
            meta.insert(tables::META_SEQ, seq.to_le_bytes().as_slice())?;
        }
        tx.commit()?;
        if ops
            .iter()
            .any(|op| matches!(op, WriteOp::PutModel(_) | WriteOp::DeleteModel { .. }))
        {
            self.pricer.set_project_models(stored_models(&self.db)?);
        }
        if ops
            .iter()
            .any(|op| matches!(op, WriteOp::PutScoreConfig(_)))
        {
            self.configs.set(stored_configs(&self.db)?);
        }
        // Before the indexer wakes for these changes.
        if let Some(handed) = handed {
            self.handoff.publish(handed);
        }
        // Sessions and keys write no change-log entry; followers wake only for new changes.
        if seq != self.next_seq {
            self.committed.send_replace(seq.saturating_sub(1));
        }
        self.next_seq = seq;
        Ok(())
    }
}

/// Every stored project model, for the pricer.
fn stored_models(db: &super::DbSlot) -> Result<Vec<ModelDef>, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(tables::MODELS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        out.push(codec::decode_row(row?.1.value())?);
    }
    Ok(out)
}

/// Every stored score config, for the ingest path's checks.
fn stored_configs(db: &super::DbSlot) -> Result<ConfigSet, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(tables::SCORE_CONFIGS)?;
    let mut out: Vec<ScoreConfig> = Vec::new();
    for row in t.iter()? {
        out.push(codec::decode_row(row?.1.value())?);
    }
    Ok(ConfigSet::new(out))
}

/// One write transaction with the helpers that keep rows and indexes in step.
pub(super) struct Tx<'a> {
    pub(super) tx: &'a WriteTransaction,
    seq: &'a mut u64,
    pricer: &'a dyn Pricer,
    /// Rollup deltas of every record in the transaction, written once before the commit.
    rollups: Pending,
    /// Traces merged by the current request, written once at its end (`flush_traces`).
    traces: PendingTraces,
    /// While a `Changes` request is applied: the tables nearly every span writes, kept open.
    hot: Option<Hot<'a>>,
    /// Where trace and observation values are appended in `record_values`.
    values: values::Appender,
    /// Time-index entries new in this transaction, inserted in key order just before the
    /// commit (`flush_by_time`). Times mostly grow, so sorted they mostly land past the
    /// table's last key, where redb keeps full leaves packed; inserted as spans arrived, each
    /// request's interleaved with the last one's and every full leaf was split in half
    /// (`observations_by_time` pages were 44 % full).
    by_time: std::collections::BTreeSet<(TimeIndex, String, i64, String)>,
    /// Records written, for the search indexer (`store::handoff`), when one takes them.
    handed: Option<Batch>,
}

/// The tables keyed (project, time µs, id) whose inserts `Tx::by_time` holds back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimeIndex {
    Observations,
    Traces,
}

impl TimeIndex {
    fn table(self) -> redb::TableDefinition<'static, (&'static str, i64, &'static str), ()> {
        match self {
            TimeIndex::Observations => tables::OBS_BY_TIME,
            TimeIndex::Traces => tables::TRACES_BY_TIME,
        }
    }
}

type Tbl<'t, K, V> = redb::Table<'t, K, V>;
/// A table of encoded values.
type ValueTbl<'t, K> = Tbl<'t, K, &'static [u8]>;
type Id2 = (&'static str, &'static str);
type Id3 = (&'static str, &'static str, &'static str);

/// The tables written for nearly every span, opened once per `Changes` request instead of at
/// each use: opening a redb table looks it up in the table tree and checks its types, and
/// closing it writes its root back, which cost the writer about a tenth of its time when done
/// five times per span. Held only while a `Changes` request is applied, during which nothing
/// else opens them (redb refuses a table open twice).
#[derive(Default)]
struct Hot<'t> {
    observations: Option<ValueTbl<'t, Id2>>,
    by_time: Option<Tbl<'t, (&'static str, i64, &'static str), ()>>,
    by_trace: Option<ValueTbl<'t, Id3>>,
    changes: Option<ValueTbl<'t, u64>>,
    values: Option<ValueTbl<'t, u64>>,
}

impl<'a> Tx<'a> {
    /// Runs `f` on a table: the held-open one while a `Changes` request is applied (`pick`
    /// chooses it in `Hot`), else one opened for this call.
    fn with_table<K: redb::Key + 'static, V: redb::Value + 'static, R>(
        &mut self,
        pick: for<'h> fn(&'h mut Hot<'a>) -> &'h mut Option<Tbl<'a, K, V>>,
        def: redb::TableDefinition<K, V>,
        f: impl FnOnce(&mut Tbl<'a, K, V>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.tx;
        match self.hot.as_mut() {
            Some(hot) => {
                let slot = pick(hot);
                if slot.is_none() {
                    *slot = Some(tx.open_table(def)?);
                }
                match slot.as_mut() {
                    Some(t) => f(t),
                    None => Err(StoreError::Internal("held table vanished".into())),
                }
            }
            None => f(&mut tx.open_table(def)?),
        }
    }

    /// Runs `f` on a row table together with `record_values` (where its values are) and the
    /// transaction's `Appender`: held open while a `Changes` request is applied, else opened
    /// for this call.
    fn with_rows<R>(
        &mut self,
        which: RecordKind,
        f: impl FnOnce(
            &mut ValueTbl<'a, Id2>,
            &mut ValueTbl<'a, u64>,
            &mut values::Appender,
        ) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.tx;
        let def = match which {
            RecordKind::Trace => tables::TRACES,
            RecordKind::Observation => tables::OBSERVATIONS,
        };
        let appender = &mut self.values;
        let Some(hot) = self.hot.as_mut() else {
            return f(
                &mut tx.open_table(def)?,
                &mut tx.open_table(tables::RECORD_VALUES)?,
                appender,
            );
        };
        let Hot {
            observations,
            values,
            ..
        } = hot;
        let values = match values {
            Some(v) => v,
            None => values.insert(tx.open_table(tables::RECORD_VALUES)?),
        };
        match which {
            RecordKind::Trace => f(&mut tx.open_table(def)?, values, appender),
            RecordKind::Observation => {
                let rows = match observations {
                    Some(t) => t,
                    None => observations.insert(tx.open_table(def)?),
                };
                f(rows, values, appender)
            }
        }
    }

    /// Adds a time-index entry at the commit (`flush_by_time`).
    fn index_by_time(&mut self, index: TimeIndex, project: &str, time: i64, id: &str) {
        self.by_time
            .insert((index, project.to_owned(), time, id.to_owned()));
    }

    /// Removes a time-index entry, stored or still pending in this transaction.
    fn unindex_by_time(
        &mut self,
        index: TimeIndex,
        project: &str,
        time: i64,
        id: &str,
    ) -> Result<(), StoreError> {
        self.by_time
            .remove(&(index, project.to_owned(), time, id.to_owned()));
        let key = (project, time, id);
        match index {
            TimeIndex::Observations => self.with_table(
                |h| &mut h.by_time,
                tables::OBS_BY_TIME,
                |t| Ok(t.remove(key).map(|_| ())?),
            ),
            TimeIndex::Traces => Ok(self.tx.open_table(index.table())?.remove(key).map(|_| ())?),
        }
    }

    /// Inserts the transaction's new time-index entries, each table's in key order.
    fn flush_by_time(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.by_time);
        for index in [TimeIndex::Observations, TimeIndex::Traces] {
            let mut keys = pending.iter().filter(|k| k.0 == index).peekable();
            if keys.peek().is_none() {
                continue;
            }
            let mut t = self.tx.open_table(index.table())?;
            for (_, project, time, id) in keys {
                t.insert((project.as_str(), *time, id.as_str()), ())?;
            }
        }
        Ok(())
    }

    /// A stored trace or observation value (resolved), read by `decode`.
    fn stored<R>(
        &mut self,
        which: RecordKind,
        project: &str,
        id: &str,
        decode: impl FnOnce(&[u8]) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        self.with_rows(which, |rows, values, _| {
            rows.get((project, id))?
                .map(|v| decode(&values::resolve(values, v.value())?))
                .transpose()
        })
    }

    /// A stored trace or observation as its row JSON and attached payload.
    fn stored_parts(
        &mut self,
        which: RecordKind,
        project: &str,
        id: &str,
    ) -> Result<Option<codec::JsonParts>, StoreError> {
        self.stored(which, project, id, codec::json_parts)
    }

    /// A stored trace or observation, decoded.
    pub(super) fn stored_row<T: serde::de::DeserializeOwned>(
        &mut self,
        which: RecordKind,
        project: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.stored(which, project, id, codec::decode_row)
    }

    /// Writes a trace or observation value (in `record_values`, referenced from its row).
    fn put_row(
        &mut self,
        which: RecordKind,
        project: &str,
        id: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.with_rows(which, |rows, values, appender| {
            appender.put(rows, values, (project, id), value)
        })
    }

    /// Removes a trace or observation row and its value; returns the decoded record.
    fn take_row<T: serde::de::DeserializeOwned>(
        &mut self,
        which: RecordKind,
        project: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.with_rows(which, |rows, values, _| {
            values::take(rows, values, (project, id))?
                .map(|v| codec::decode_row(&v))
                .transpose()
        })
    }
}

/// The traces one request touched, merged in memory. Every span of an OTLP export carries a
/// patch of its trace, so a request of 200 spans patches each of its ~50 traces about four
/// times; merging them here reads, re-indexes and writes each trace once per request instead
/// of once per span. Nothing else in the request reads the trace row (rollups read the stored
/// version and `trace_changed` at the flush moves them to the merged one).
#[derive(Default)]
struct PendingTraces {
    order: Vec<String>,
    by_id: HashMap<String, PendingTrace>,
}

struct PendingTrace {
    /// The stored version before the request.
    old: Option<TraceRecord>,
    rec: TraceRecord,
    /// Where the stored payload is.
    place: IoPlace,
    /// The payload as merged so far, once a patch carried input or output.
    io: Option<Payload<'static>>,
    io_changed: bool,
    /// The change-log entry the request took for the trace.
    seq: u64,
}

/// A record's input and output while a request merges them: the stored ones owned, a patch's
/// borrowed from the request. Serializes exactly as `Io` does.
#[derive(Default, serde::Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Cow<'a, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Cow<'a, serde_json::Value>>,
}

impl From<Io> for Payload<'_> {
    fn from(io: Io) -> Self {
        Payload {
            input: io.input.map(Cow::Owned),
            output: io.output.map(Cow::Owned),
        }
    }
}

impl Tx<'_> {
    fn apply(&mut self, op: &WriteOp) -> Result<(), StoreError> {
        match op {
            WriteOp::Changes { project, changes } => {
                let mut ordered: Vec<&TimedChange> = changes.iter().collect();
                // Langfuse applies events in envelope-time order; the merge handles the rest.
                ordered.sort_by_key(|c| c.at);
                self.hot = Some(Hot::default());
                let result = ordered
                    .into_iter()
                    .try_for_each(|c| match &c.change {
                        Change::Trace(p) => self.trace(project, p.clone(), c.at),
                        // Borrowed: a failed group is retried request by request from `op`.
                        Change::Observation(p) => self.observation(project, p, c.at),
                        Change::Score(s) => self.score(project, s),
                    })
                    .and_then(|()| self.flush_traces(project));
                self.hot = None;
                result
            }
            WriteOp::DeleteTraces { project, ids } => {
                let mut counts = super::expire::ExpireCounts::default();
                for id in ids {
                    self.delete_trace(project, id, false, &mut counts)?;
                }
                Ok(())
            }
            WriteOp::DeleteScore { project, id } => {
                self.delete_score(project, id, false)?;
                Ok(())
            }
            WriteOp::Expire {
                project,
                cutoff,
                traces,
                scores,
                tally,
            } => {
                let counts = self.expire(project, *cutoff, traces, scores)?;
                tally.set(counts);
                Ok(())
            }
            WriteOp::TrimChanges {
                seqs,
                indexed,
                tally,
            } => {
                let changes = self.trim_changes(seqs, *indexed)?;
                tally.set(super::expire::ExpireCounts {
                    changes,
                    ..Default::default()
                });
                Ok(())
            }
            WriteOp::Reprice { project, ids } => {
                for id in ids {
                    self.reprice(project, id)?;
                }
                Ok(())
            }
            WriteOp::RebuildRollups => {
                self.rollups.apply(self.tx)?;
                crate::analytics::rollup::rebuild(self.tx)?;
                Ok(())
            }
            WriteOp::PutModel(model) => {
                let project = model.project_id.as_deref().unwrap_or_default();
                self.tx.open_table(tables::MODELS)?.insert(
                    (project, model.id.as_str()),
                    codec::encode_row(model.as_ref())?.as_slice(),
                )?;
                Ok(())
            }
            WriteOp::DeleteModel { project, id } => {
                self.tx
                    .open_table(tables::MODELS)?
                    .remove((project.as_str(), id.as_str()))?;
                Ok(())
            }
            WriteOp::Prompt(w) => super::prompts::apply(self.tx, w),
            WriteOp::Probe => {
                let mut meta = self.tx.open_table(tables::META)?;
                meta.insert(
                    tables::META_PROBE,
                    Timestamp::now().micros().to_le_bytes().as_slice(),
                )?;
                Ok(())
            }
            WriteOp::PutWebSession {
                token_hash,
                session,
                now,
            } => self.put_web_session(token_hash, session, *now),
            WriteOp::DeleteWebSession { token_hash } => {
                self.tx
                    .open_table(tables::WEB_SESSIONS)?
                    .remove(token_hash.as_str())?;
                Ok(())
            }
            WriteOp::PutApiKey(key) => {
                self.tx
                    .open_table(tables::API_KEYS)?
                    .insert(key.public_key.as_str(), codec::encode_row(key)?.as_slice())?;
                Ok(())
            }
            WriteOp::DeleteApiKey {
                project,
                public_key,
            } => {
                let mut t = self.tx.open_table(tables::API_KEYS)?;
                let owned = t
                    .get(public_key.as_str())?
                    .map(|v| codec::decode_row::<ApiKeyRecord>(v.value()))
                    .transpose()?
                    .is_some_and(|k| k.project_id == *project);
                if owned {
                    t.remove(public_key.as_str())?;
                }
                Ok(())
            }
            WriteOp::PutProject { project, member } => {
                let mut users = self.tx.open_table(tables::USERS)?;
                let user = users
                    .get(member.as_str())?
                    .map(|v| codec::decode_row::<UserRecord>(v.value()))
                    .transpose()?;
                // The member is the logged-in user who asked; users are never deleted.
                if let Some(mut user) = user
                    && !user.project_ids.contains(&project.id)
                {
                    user.project_ids.push(project.id.clone());
                    users.insert(member.as_str(), codec::encode_row(&user)?.as_slice())?;
                }
                self.tx
                    .open_table(tables::PROJECTS)?
                    .insert(project.id.as_str(), codec::encode_row(project)?.as_slice())?;
                Ok(())
            }
            WriteOp::PutScoreConfig(c) => {
                self.tx.open_table(tables::SCORE_CONFIGS)?.insert(
                    (c.project_id.as_str(), c.id.as_str()),
                    codec::encode_row(c.as_ref())?.as_slice(),
                )?;
                Ok(())
            }
            WriteOp::PutEvaluator(e) => self.put_evaluator(e),
            WriteOp::DeleteEvaluator { project, id } => self.delete_evaluator(project, id),
            WriteOp::EvalEnqueue {
                jobs,
                cursor,
                requeue_failed,
            } => self.eval_enqueue(jobs, *cursor, *requeue_failed),
            WriteOp::EvalComplete(outcome) => self.eval_complete(outcome),
            #[cfg(test)]
            WriteOp::Raw(raw) => self.raw(raw),
        }
    }

    fn put_web_session(
        &mut self,
        token_hash: &str,
        session: &WebSessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(tables::WEB_SESSIONS)?;
        // Logins are rare and the table is small, so a full sweep here keeps it from growing
        // without a background task.
        let mut expired = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            let s: WebSessionRecord = codec::decode_row(v.value())?;
            if s.expires_at <= now {
                expired.push(k.value().to_string());
            }
        }
        for k in expired {
            t.remove(k.as_str())?;
        }
        t.insert(token_hash, codec::encode_row(session)?.as_slice())?;
        Ok(())
    }

    pub(super) fn log(&mut self, change: ChangeRef) -> Result<(), StoreError> {
        self.log_bytes(&codec::encode_change(&change)?)
    }

    /// Appends an encoded change-log entry.
    pub(super) fn log_bytes(&mut self, entry: &[u8]) -> Result<(), StoreError> {
        let seq = *self.seq;
        self.with_table(
            |h| &mut h.changes,
            tables::CHANGES,
            |t| Ok(t.insert(seq, entry).map(|_| ())?),
        )?;
        *self.seq += 1;
        Ok(())
    }

    /// A trace's or observation's value. Its plain JSON goes to the indexer's hand-over when
    /// one takes it, under the change-log entry `seq` the write goes with, unless its payload
    /// is kept in a table of its own (then it is read from there).
    fn encode_record<T: serde::Serialize>(
        &mut self,
        seq: u64,
        kind: RecordKind,
        project: &str,
        id: &str,
        rec: &T,
        place: &IoPlace,
    ) -> Result<Vec<u8>, StoreError> {
        let io = match place {
            IoPlace::Attached(io) => Some(io.as_slice()),
            IoPlace::None | IoPlace::Separate => None,
        };
        let handed = self
            .handed
            .as_mut()
            .filter(|_| !matches!(place, IoPlace::Separate));
        codec::encode_record(rec, io, |json, row_len| {
            if let Some(batch) = handed {
                batch.push(seq, kind, project, id, json, row_len);
            }
        })
    }

    /// A stored observation: its row and where its payload is.
    fn stored_observation(
        &mut self,
        project: &str,
        id: &str,
    ) -> Result<Option<(ObservationRecord, IoPlace)>, StoreError> {
        let Some((row, io)) = self.stored_parts(RecordKind::Observation, project, id)? else {
            return Ok(None);
        };
        let place = match io {
            Some(json) => IoPlace::Attached(json),
            None => IoPlace::Separate,
        };
        let rec = serde_json::from_slice(&row).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((rec, place)))
    }

    /// Stores a changed payload: attached to the row when small enough (leaving `table`, the
    /// separate payload table, without an entry), else in `table`.
    fn place_io(
        &mut self,
        table: redb::TableDefinition<(&str, &str), &[u8]>,
        project: &str,
        id: &str,
        io: &Payload,
        old: &IoPlace,
    ) -> Result<IoPlace, StoreError> {
        let json = codec::io_json(io)?;
        let attach = json.len() <= codec::ATTACH_IO_MAX;
        // Nearly every payload is attached and was never separate: the table stays unopened.
        if attach && !matches!(old, IoPlace::Separate) {
            return Ok(IoPlace::Attached(json));
        }
        let mut t = self.tx.open_table(table)?;
        if attach {
            t.remove((project, id))?;
            Ok(IoPlace::Attached(json))
        } else {
            t.insert((project, id), codec::encode_io_json(&json)?.as_slice())?;
            Ok(IoPlace::Separate)
        }
    }

    /// Merges a trace patch into the request's pending version of the trace; the change-log
    /// entry is taken at the first patch (it names the trace, the row is written by the flush
    /// in the same transaction).
    fn trace(
        &mut self,
        project: &str,
        mut patch: TracePatch,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let id = patch.id.clone();
        let first_touch = !self.traces.by_id.contains_key(&id);
        if first_touch {
            let (old, place) = match self.stored_parts(RecordKind::Trace, project, &id)? {
                Some((row, io)) => {
                    let old: TraceRecord = serde_json::from_slice(&row)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    (Some(old), io.map_or(IoPlace::Separate, IoPlace::Attached))
                }
                None => (None, IoPlace::None),
            };
            let rec = old
                .clone()
                .unwrap_or_else(|| TraceRecord::empty(id.clone(), at));
            self.traces.order.push(id.clone());
            let created = old.is_none();
            self.traces.by_id.insert(
                id.clone(),
                PendingTrace {
                    old,
                    rec,
                    place,
                    io: None,
                    io_changed: false,
                    seq: *self.seq,
                },
            );
            self.log(ChangeRef::Trace {
                project: project.into(),
                id: id.clone(),
                created,
            })?;
        }
        let tx = self.tx;
        let Some(p) = self.traces.by_id.get_mut(&id) else {
            return Err(StoreError::Internal("pending trace vanished".into()));
        };
        let newer = at >= p.rec.last_event;
        let (input, output) = (patch.input.take(), patch.output.take());
        if input.is_some() || output.is_some() {
            let mut io = match p.io.take() {
                Some(io) => io,
                None => load_io(tx, tables::TRACE_IO, project, &id, &p.place)?.into(),
            };
            let changed = merge_payload(
                &mut io,
                input.map(Cow::Owned),
                output.map(Cow::Owned),
                newer,
            );
            p.io = Some(io);
            p.io_changed |= changed;
        }
        p.rec.merge(patch, at);
        Ok(())
    }

    /// Writes every trace the request merged: its row with its payload, index entries (moved
    /// only when their keys changed), session and rollup rows.
    fn flush_traces(&mut self, project: &str) -> Result<(), StoreError> {
        let mut pending = std::mem::take(&mut self.traces);
        for id in &pending.order {
            let Some(PendingTrace {
                old,
                rec,
                mut place,
                io,
                io_changed,
                seq,
            }) = pending.by_id.remove(id)
            else {
                continue;
            };
            match &old {
                Some(old) if trace_index_keys_equal(old, &rec) => {}
                Some(old) => {
                    self.unindex_trace(project, old)?;
                    self.index_trace(project, &rec)?;
                }
                None => self.index_trace(project, &rec)?,
            }
            if let Some(session) = &rec.session_id {
                self.ensure_session(project, session, &rec)?;
            }
            if let Some(io) = io.filter(|_| io_changed) {
                place = self.place_io(tables::TRACE_IO, project, id, &io, &place)?;
            }
            let value = self.encode_record(seq, RecordKind::Trace, project, id, &rec, &place)?;
            self.put_row(RecordKind::Trace, project, id, &value)?;
            // Rollup hook: the trace's rows move when its time, environment, user or name changed.
            crate::analytics::rollup::trace_changed(
                self.tx,
                &mut self.rollups,
                project,
                old.as_ref(),
                Some(&rec),
            )?;
        }
        Ok(())
    }

    fn index_trace(&mut self, project: &str, rec: &TraceRecord) -> Result<(), StoreError> {
        let ts = rec.timestamp.micros();
        let id = rec.id.as_str();
        self.index_by_time(TimeIndex::Traces, project, ts, id);
        for (table, value) in trace_secondary(rec) {
            self.tx
                .open_table(table)?
                .insert((project, value, ts, id), ())?;
        }
        Ok(())
    }

    fn unindex_trace(&mut self, project: &str, rec: &TraceRecord) -> Result<(), StoreError> {
        let ts = rec.timestamp.micros();
        let id = rec.id.as_str();
        self.unindex_by_time(TimeIndex::Traces, project, ts, id)?;
        for (table, value) in trace_secondary(rec) {
            self.tx
                .open_table(table)?
                .remove((project, value, ts, id))?;
        }
        Ok(())
    }

    fn ensure_session(
        &mut self,
        project: &str,
        session: &str,
        trace: &TraceRecord,
    ) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(tables::SESSIONS)?;
        if t.get((project, session))?.is_some() {
            return Ok(());
        }
        let rec = SessionRecord {
            id: session.to_string(),
            created_at: Timestamp::now(),
            first_trace_at: trace.timestamp,
            environment: trace.environment.clone(),
        };
        t.insert((project, session), codec::encode_row(&rec)?.as_slice())?;
        self.tx
            .open_table(tables::SESSIONS_BY_TIME)?
            .insert((project, rec.created_at.micros(), session), ())?;
        Ok(())
    }

    fn observation(
        &mut self,
        project: &str,
        patch: &ObservationPatch,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let id = patch.id.clone();
        let (old, mut place) = match self.stored_observation(project, &id)? {
            Some((rec, place)) => (Some(rec), place),
            None => (None, IoPlace::None),
        };
        // The trace id is immutable after the first write; an update without one finds it here.
        let trace_id = old
            .as_ref()
            .map(|o| o.trace_id.clone())
            .or_else(|| patch.trace_id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut rec = old
            .clone()
            .unwrap_or_else(|| ObservationRecord::empty(patch, trace_id.clone(), at));
        let newer = at >= rec.last_event;
        let mut io = Payload::from(load_io(self.tx, tables::OBS_IO, project, &id, &place)?);
        let (input, output) = (patch.input.as_ref(), patch.output.as_ref());
        if merge_payload(
            &mut io,
            input.map(Cow::Borrowed),
            output.map(Cow::Borrowed),
            newer,
        ) {
            place = self.place_io(tables::OBS_IO, project, &id, &io, &place)?;
        }
        rec.merge(patch.without_payload(), at);
        self.pricer
            .apply(project, &mut rec, io.input.as_deref(), io.output.as_deref());
        self.put_observation(project, old.as_ref(), &rec, &place)
    }

    /// Re-prices one stored observation with the current prices; rewrites it (and moves its
    /// rollups) only when its usage, cost or pricing changed.
    fn reprice(&mut self, project: &str, id: &str) -> Result<(), StoreError> {
        let Some((old, place)) = self.stored_observation(project, id)? else {
            return Ok(());
        };
        let io = load_io(self.tx, tables::OBS_IO, project, id, &place)?;
        let mut rec = old.clone();
        self.pricer
            .apply(project, &mut rec, io.input.as_ref(), io.output.as_ref());
        if rec == old {
            return Ok(());
        }
        rec.updated_at = Timestamp::now();
        self.put_observation(project, Some(&old), &rec, &place)
    }

    /// Writes a merged or re-priced observation with its indexes, rollups and change-log entry.
    fn put_observation(
        &mut self,
        project: &str,
        old: Option<&ObservationRecord>,
        rec: &ObservationRecord,
        place: &IoPlace,
    ) -> Result<(), StoreError> {
        let id = rec.id.as_str();
        let start = rec.start_time.micros();
        let moved = old.map(|o| o.start_time.micros()).filter(|&t| t != start);
        if let Some(before) = moved {
            self.unindex_by_time(TimeIndex::Observations, project, before, id)?;
        }
        if old.is_none() || moved.is_some() {
            self.index_by_time(TimeIndex::Observations, project, start, id);
        }
        let summary = ObsSummary {
            start,
            end: rec.end_time.map(Timestamp::micros),
            total_cost: observation_total_cost(rec),
        };
        self.with_table(
            |h| &mut h.by_trace,
            tables::OBS_BY_TRACE,
            |t| {
                t.insert(
                    (project, rec.trace_id.as_str(), id),
                    summary.encode().as_slice(),
                )?;
                Ok(())
            },
        )?;
        // The change-log entry this write takes, below.
        let seq = *self.seq;
        let kind = RecordKind::Observation;
        let value = self.encode_record(seq, kind, project, id, rec, place)?;
        self.put_row(kind, project, id, &value)?;
        // Rollup hook: derived aggregates move in the same transaction as the record.
        crate::analytics::rollup::observation_changed(
            self.tx,
            self.hot.as_ref().and_then(|h| h.values.as_ref()),
            &mut self.rollups,
            project,
            old,
            Some(rec),
        )?;
        self.log(ChangeRef::Observation {
            project: project.into(),
            id: id.into(),
            created: old.is_none(),
        })
    }

    fn score(&mut self, project: &str, score: &ScoreRecord) -> Result<(), StoreError> {
        let id = score.id.as_str();
        let old: Option<ScoreRecord> = {
            let t = self.tx.open_table(tables::SCORES)?;
            t.get((project, id))?
                .map(|v| codec::decode_row(v.value()))
                .transpose()?
        };
        let mut rec = score.clone();
        if let Some(old) = &old {
            // Score id, timestamp and target are immutable after the first write.
            rec.created_at = old.created_at;
            rec.timestamp = old.timestamp;
            rec.target = old.target.clone();
            rec.environment = old.environment.clone();
            self.unindex_score(project, old)?;
        }
        rec.updated_at = Timestamp::now();
        self.tx
            .open_multimap_table(tables::SCORES_BY_TARGET)?
            .insert((project, tables::score_target_key(&rec).as_str()), id)?;
        self.tx
            .open_table(tables::SCORES_BY_TIME)?
            .insert((project, rec.timestamp.micros(), id), ())?;
        self.tx
            .open_table(tables::SCORES)?
            .insert((project, id), codec::encode_row(&rec)?.as_slice())?;
        self.log(ChangeRef::Score {
            project: project.into(),
            id: id.into(),
        })
    }

    fn unindex_score(&mut self, project: &str, old: &ScoreRecord) -> Result<(), StoreError> {
        self.tx
            .open_multimap_table(tables::SCORES_BY_TARGET)?
            .remove(
                (project, tables::score_target_key(old).as_str()),
                old.id.as_str(),
            )?;
        self.tx.open_table(tables::SCORES_BY_TIME)?.remove((
            project,
            old.timestamp.micros(),
            old.id.as_str(),
        ))?;
        Ok(())
    }

    /// Deletes a score; true when there was one. `expired`: retention deleted it (see `ChangeRef`).
    pub(super) fn delete_score(
        &mut self,
        project: &str,
        id: &str,
        expired: bool,
    ) -> Result<bool, StoreError> {
        let old: Option<ScoreRecord> = {
            let mut t = self.tx.open_table(tables::SCORES)?;
            let removed = t.remove((project, id))?;
            removed.map(|v| codec::decode_row(v.value())).transpose()?
        };
        let Some(old) = old else {
            return Ok(false);
        };
        self.unindex_score(project, &old)?;
        self.log(ChangeRef::ScoreDeleted {
            project: project.into(),
            id: id.into(),
            expired,
        })?;
        Ok(true)
    }

    /// Deletes a trace with its observations (also when the trace record itself was never
    /// sent), their scores, index entries and rollup contributions, counting into `counts`.
    pub(super) fn delete_trace(
        &mut self,
        project: &str,
        id: &str,
        expired: bool,
        counts: &mut super::expire::ExpireCounts,
    ) -> Result<(), StoreError> {
        let old: Option<TraceRecord> = self.take_row(RecordKind::Trace, project, id)?;
        if let Some(old) = &old {
            self.unindex_trace(project, old)?;
            // Rollup hook, before the observations go: their deletes then touch no trace rows.
            crate::analytics::rollup::trace_changed(
                self.tx,
                &mut self.rollups,
                project,
                Some(old),
                None,
            )?;
        }
        self.tx
            .open_table(tables::TRACE_IO)?
            .remove((project, id))?;
        // Observations of the trace, through the by-trace index.
        let obs_ids: Vec<String> = {
            let t = self.tx.open_table(tables::OBS_BY_TRACE)?;
            let mut ids = Vec::new();
            for entry in t.range((project, id, "")..)? {
                let (k, _) = entry?;
                let (p, tr, o) = k.value();
                if p != project || tr != id {
                    break;
                }
                ids.push(o.to_string());
            }
            ids
        };
        for obs in &obs_ids {
            let rec: Option<ObservationRecord> =
                self.take_row(RecordKind::Observation, project, obs)?;
            if let Some(rec) = rec {
                counts.observations += 1;
                self.unindex_by_time(
                    TimeIndex::Observations,
                    project,
                    rec.start_time.micros(),
                    obs,
                )?;
                crate::analytics::rollup::observation_changed(
                    self.tx,
                    self.hot.as_ref().and_then(|h| h.values.as_ref()),
                    &mut self.rollups,
                    project,
                    Some(&rec),
                    None,
                )?;
            }
            self.tx
                .open_table(tables::OBS_IO)?
                .remove((project, obs.as_str()))?;
            self.tx
                .open_table(tables::OBS_BY_TRACE)?
                .remove((project, id, obs.as_str()))?;
        }
        // Scores on the trace (and on its observations: they carry the trace id).
        let target = format!("t:{id}");
        let score_ids: Vec<String> = {
            let t = self.tx.open_multimap_table(tables::SCORES_BY_TARGET)?;
            let mut ids = Vec::new();
            for v in t.get((project, target.as_str()))? {
                ids.push(v?.value().to_string());
            }
            ids
        };
        for s in &score_ids {
            if self.delete_score(project, s, expired)? {
                counts.scores += 1;
            }
        }
        if old.is_some() {
            counts.traces += 1;
        }
        if old.is_some() || !obs_ids.is_empty() {
            self.log(ChangeRef::TraceDeleted {
                project: project.into(),
                id: id.into(),
                expired,
            })?;
        }
        Ok(())
    }
}

/// Where an observation's or trace's payload is stored (see `codec`, tags 4 and 5).
enum IoPlace {
    /// Nowhere yet: a new record.
    None,
    /// Attached to the row: the payload's JSON.
    Attached(Vec<u8>),
    /// In `observation_io` / `trace_io` (or nowhere): written before schema version 2 (3 for
    /// traces), or larger than `ATTACH_IO_MAX`.
    Separate,
}

/// A record's stored payload; `table` holds the payloads not attached to their rows.
fn load_io(
    tx: &WriteTransaction,
    table: redb::TableDefinition<(&str, &str), &[u8]>,
    project: &str,
    id: &str,
    place: &IoPlace,
) -> Result<Io, StoreError> {
    match place {
        IoPlace::None => Ok(Io::default()),
        IoPlace::Attached(json) => codec::io_from_json(json),
        IoPlace::Separate => {
            let t = tx.open_table(table)?;
            Ok(t.get((project, id))?
                .map(|v| codec::decode_io(v.value()))
                .transpose()?
                .unwrap_or_default())
        }
    }
}

/// Merges "latest truthy wins" input/output into `io`; true when anything changed.
fn merge_payload<'a>(
    io: &mut Payload<'a>,
    input: Option<Cow<'a, serde_json::Value>>,
    output: Option<Cow<'a, serde_json::Value>>,
    newer: bool,
) -> bool {
    let mut changed = false;
    for (slot, value) in [(&mut io.input, input), (&mut io.output, output)] {
        if let Some(v) = value
            && is_truthy(&v)
            && (newer || slot.is_none())
        {
            *slot = Some(v);
            changed = true;
        }
    }
    changed
}

/// Whether two versions of a trace have the same index keys (time, user, session, name).
fn trace_index_keys_equal(a: &TraceRecord, b: &TraceRecord) -> bool {
    a.timestamp == b.timestamp
        && a.user_id == b.user_id
        && a.session_id == b.session_id
        && a.name == b.name
}

type TraceIndex =
    redb::TableDefinition<'static, (&'static str, &'static str, i64, &'static str), ()>;

/// The secondary trace indexes a record belongs in: (table, indexed value).
fn trace_secondary(rec: &TraceRecord) -> Vec<(TraceIndex, &str)> {
    [
        (tables::TRACES_BY_USER, &rec.user_id),
        (tables::TRACES_BY_SESSION, &rec.session_id),
        (tables::TRACES_BY_NAME, &rec.name),
    ]
    .into_iter()
    .filter_map(|(t, v)| v.as_deref().map(|v| (t, v)))
    .collect()
}
