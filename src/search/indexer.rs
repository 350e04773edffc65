//! The indexer: one dedicated thread that owns the `IndexWriter` and follows the store's change
//! log. It wakes on the writer's commit notification, applies every new change (re-reading the
//! record from a store snapshot: delete the old document by its key, add the current one),
//! commits with the last applied sequence in the commit payload, and reloads the reader.
//!
//! A rebuild (`rebuild`) scans every trace and observation in one store snapshot, commits with
//! that snapshot's sequence, then catches up from the log like any restart.
//!
//! A failed batch is retried from the last commit after a pause (`skips::Backoff`); a record
//! whose stored bytes do not decode is skipped after a few attempts (`skips`), so it cannot
//! hold the rest of the log back.

use std::cell::RefCell;
// Every record of a batch is looked up in several of these maps by its (untrusted) ids: hashed
// with foldhash, seeded per process, as SipHash was ~7 % of the indexer thread.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument};
use tokio::sync::watch;

use super::merges::{BoundedMerges, MERGE_FACTOR, MERGE_MAX_DOCS, MERGE_THREADS};
use super::open::{Payload, Start};
use super::schema::{
    DocText, Fields, KIND_OBSERVATION, KIND_TRACE, SCHEMA_VERSION, trace_context_hash,
};
use super::skips::{Backoff, Skips, Unreadable};
use super::view::{ObservationView, TraceView};
use super::{SearchError, Shared};
use crate::store::{ChangeRef, LogEntry, RecordKind, Snapshot, Store, StoreError, Taken};

/// A change is searchable at most this long (plus one commit) after its store commit: the
/// indexer never commits more often, so a flood of small writes makes few segments.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(150);
/// After a commit, how long idle turns keep collecting merged-away segment files, and how
/// often. Merges that the commit started end within this window on all but huge indexes (those
/// get collected at the next commit).
const TIDY_FOR: Duration = Duration::from_secs(120);
const TIDY_EVERY: Duration = Duration::from_secs(2);
/// Change-log entries read per store snapshot while catching up. A batch that reaches the end
/// of its snapshot keeps the next batch's new records fresh (see `Indexer::horizon`), so this
/// is well above what arrives between two commits at full ingest speed.
const CHANGES_PER_BATCH: usize = 8192;
/// While catching up or rebuilding, commit (and log progress) at least this often, so searches
/// see the index fill up and a crash loses little work.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Indexing memory: tantivy flushes a segment when its buffer reaches this size.
const WRITER_MEMORY_BYTES: usize = 48 * 1024 * 1024;
/// A segment with this share of deleted documents is merged (which drops them) even when the
/// merge policy would not merge it for its size: after retention deletes, the index shrinks
/// instead of carrying dead documents until their segments happen to merge.
const DELETED_SHARE_BEFORE_MERGE: f32 = 0.2;

pub struct Indexer {
    pub store: Store,
    pub fields: Fields,
    pub writer: IndexWriter<TantivyDocument>,
    pub reader: IndexReader,
    pub shared: Arc<Shared>,
    /// Last change-log sequence applied to the writer (committed or not).
    pub seq: u64,
    /// Last sequence in a complete commit.
    pub committed_seq: u64,
    /// No document in the writer was read from a store state later than this sequence, but
    /// for those in `ahead`: a record created by a change after it has no document yet, so
    /// adding its first one needs no delete (each delete is a term lookup in every segment at
    /// commit). Set at start (what earlier runs read is not known) and by rebuilds.
    pub(super) horizon: u64,
    /// Records whose documents were read from the store (not handed over) in a batch whose
    /// snapshot went past the batch's last change: `ahead_key` → that snapshot's sequence. The
    /// document may hold a state created after the batch, so a creation up to that sequence
    /// still needs its delete. Once the indexer has applied past the sequence, it is dropped.
    ///
    /// Moving `horizon` to each such snapshot instead made every record of the next batches
    /// "maybe indexed": once the indexer fell behind the writer, each new record cost a delete
    /// in every segment, which put it further behind (a 1M load ended 80 s behind at 512 MiB).
    ahead: HashMap<String, u64>,
    /// `ahead_key`s of the records the current batch read from the store.
    store_reads: RefCell<Vec<String>>,
    /// Delete terms issued, for tests and diagnostics.
    pub(super) deletes: u64,
    /// Documents added or deleted since the last commit.
    pub dirty: bool,
    /// The last commit's payload said `complete` (false while a rebuild is under way).
    pub complete: bool,
    /// How often a long catch-up or rebuild commits and logs progress.
    pub progress_every: Duration,
    /// Change-log entries applied per store snapshot.
    pub(super) changes_per_batch: usize,
    /// (project, trace) → `trace_context_hash` that every observation document of the trace
    /// carries (in the writer, committed or not). A trace update that leaves the context alone
    /// (the usual case: output, metadata, a later span) then costs one document, not one per
    /// observation. Unknown traces are rewritten once; bounded by `CONTEXT_CACHE_MAX`.
    pub(super) contexts: HashMap<(String, String), u64>,
    /// Change-log entries and records that did not decode since the last commit.
    pub(super) skips: Skips,
}

/// Traces whose observation context the indexer remembers before it starts over.
const CONTEXT_CACHE_MAX: usize = 200_000;

/// Records remembered in `Indexer::ahead` at most (a few seconds of full-speed ingest behind
/// the writer). Past it, `horizon` moves past all of them instead: correct, but every record
/// up to it then costs a delete.
const AHEAD_MAX: usize = 100_000;

fn ahead_key(kind: &str, project: &str, id: &str) -> String {
    format!("{kind}\u{1f}{project}\u{1f}{id}")
}

/// Why a long run of work ended early.
pub(super) enum Interrupted {
    Stop,
    /// Transient (storage I/O, the index): retried for as long as it lasts.
    Failed(SearchError),
    /// Stored bytes that do not decode: retried a few times, then skipped.
    Undecodable(Unreadable),
}

impl From<SearchError> for Interrupted {
    fn from(e: SearchError) -> Self {
        Interrupted::Failed(e)
    }
}

impl From<StoreError> for Interrupted {
    fn from(e: StoreError) -> Self {
        Interrupted::Failed(e.into())
    }
}

impl From<tantivy::TantivyError> for Interrupted {
    fn from(e: tantivy::TantivyError) -> Self {
        Interrupted::Failed(e.into())
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interrupted::Stop => f.write_str("stopped"),
            Interrupted::Failed(e) => e.fmt(f),
            Interrupted::Undecodable(what) => write!(f, "stored bytes do not decode ({what})"),
        }
    }
}

/// A stored payload whose JSON does not parse.
pub(super) fn undecodable(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A failed read of `what`: undecodable bytes are its own fault, anything else is transient.
fn read_failure(e: StoreError, what: Unreadable) -> Interrupted {
    match e {
        StoreError::Corrupt(_) => Interrupted::Undecodable(what),
        other => other.into(),
    }
}

impl Indexer {
    pub fn new(
        index: &Index,
        store: Store,
        fields: Fields,
        reader: IndexReader,
        shared: Arc<Shared>,
        seq: u64,
    ) -> Result<Indexer, SearchError> {
        // Documents committed before a restart were read from states the store has now.
        let horizon = store.snapshot()?.last_seq()?.max(seq);
        store.writer().handoff().activate();
        let writer: IndexWriter<TantivyDocument> = index.writer_with_options(
            tantivy::indexer::IndexWriterOptions::builder()
                .num_worker_threads(1)
                .memory_budget_per_thread(WRITER_MEMORY_BYTES)
                .num_merge_threads(MERGE_THREADS)
                .build(),
        )?;
        writer.set_merge_policy(Box::new(BoundedMerges::new(
            MERGE_MAX_DOCS,
            MERGE_FACTOR,
            DELETED_SHARE_BEFORE_MERGE,
        )));
        Ok(Indexer {
            store,
            fields,
            writer,
            reader,
            shared,
            seq,
            committed_seq: seq,
            horizon,
            ahead: HashMap::new(),
            store_reads: RefCell::new(Vec::new()),
            deletes: 0,
            dirty: false,
            complete: true,
            progress_every: PROGRESS_EVERY,
            changes_per_batch: CHANGES_PER_BATCH,
            contexts: HashMap::new(),
            skips: Skips::default(),
        })
    }

    /// The thread body: bring the index up to date, then follow the change log until `stop`.
    pub fn run(
        mut self,
        start: Start,
        mut committed: watch::Receiver<u64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "search indexer cannot start; search stays empty");
                return;
            }
        };
        let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
        let mut backoff = Backoff::default();
        if let Start::Resume(seq) = start {
            tracing::info!(
                seq,
                "search index opened; following the change log after {seq}"
            );
        }
        if let Start::Rebuild(reason) = start {
            tracing::info!(%reason, "rebuilding the search index from the record store");
            loop {
                match self.rebuild(&stop) {
                    Ok(()) => {
                        backoff.reset();
                        break;
                    }
                    Err(Interrupted::Stop) => return,
                    Err(e @ (Interrupted::Failed(_) | Interrupted::Undecodable(_))) => {
                        tracing::error!(error = %e, "search index rebuild failed; retrying");
                        if rt.block_on(pause(backoff.pause(), &mut stop)) {
                            return;
                        }
                    }
                }
            }
        }
        let mut last_commit = Instant::now() - MIN_COMMIT_INTERVAL;
        let mut writer_gone = false;
        // Until then, idle turns collect the files of segments merged away since the commit.
        let mut tidy_until: Option<Instant> = None;
        loop {
            if stopped(&stop) {
                break;
            }
            let target = *committed.borrow_and_update();
            if target > self.seq {
                let wait = MIN_COMMIT_INTERVAL.saturating_sub(last_commit.elapsed());
                if !wait.is_zero() && rt.block_on(pause(wait, &mut stop)) {
                    break;
                }
                match self.catch_up(&stop) {
                    Ok(()) | Err(Interrupted::Stop) => {
                        last_commit = Instant::now();
                        tidy_until = Some(last_commit + TIDY_FOR);
                        backoff.reset();
                    }
                    Err(Interrupted::Failed(e)) => {
                        tracing::error!(error = %e, "search indexing failed; retrying from the last commit");
                        self.recover();
                        if rt.block_on(pause(backoff.pause(), &mut stop)) {
                            break;
                        }
                    }
                    Err(Interrupted::Undecodable(what)) => {
                        let skipped = self.skips.failed(what, &self.shared.skipped);
                        self.recover();
                        // Once it is skipped the next round goes past it: no reason to wait.
                        if !skipped && rt.block_on(pause(backoff.pause(), &mut stop)) {
                            break;
                        }
                    }
                }
                continue;
            }
            if writer_gone {
                // The store has shut down: nothing more will come.
                rt.block_on(async {
                    let _ = stop.changed().await;
                });
                continue;
            }
            let tidy = rt.block_on(async {
                tokio::select! {
                    r = committed.changed() => { writer_gone = r.is_err(); false }
                    _ = stop.changed() => false,
                    _ = tokio::time::sleep(TIDY_EVERY), if tidy_until.is_some() => true,
                }
            });
            if tidy {
                self.collect_merged_away();
                if tidy_until.is_some_and(|t| Instant::now() >= t) {
                    tidy_until = None;
                }
            }
        }
        tracing::debug!(seq = self.committed_seq, "search indexer stopped");
    }

    /// Applies every change after `self.seq` and commits.
    pub(super) fn catch_up(&mut self, stop: &watch::Receiver<bool>) -> Result<(), Interrupted> {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let mut applied = 0usize;
        loop {
            let snap = self.store.snapshot().map_err(SearchError::from)?;
            let changes = snap.change_entries_since(self.seq, self.changes_per_batch)?;
            let Some(&(last, _)) = changes.last() else {
                break;
            };
            let snap_seq = snap.last_seq().map_err(SearchError::from)?;
            self.apply(&snap, &changes)?;
            self.store.writer().handoff().forget_through(last);
            self.note_reads_ahead(snap_seq, last);
            applied += changes.len();
            self.seq = last;
            if *stop.borrow() {
                self.commit(true)?;
                return Err(Interrupted::Stop);
            }
            if last_progress.elapsed() >= self.progress_every {
                let target = snap.last_seq().map_err(SearchError::from)?;
                tracing::info!(
                    seq = self.seq,
                    target,
                    applied,
                    "search index catching up with the record store"
                );
                self.commit(true)?;
                last_progress = Instant::now();
            }
        }
        self.commit(true)?;
        if started.elapsed() >= self.progress_every {
            tracing::info!(seq = self.seq, applied, "search index caught up");
        }
        Ok(())
    }

    /// Re-indexes what a batch of change-log entries points at. Only the last mention of each
    /// record in the batch is applied (it reads the current state anyway); deletes apply in log
    /// order, so a trace deleted and then re-created ends up present.
    ///
    /// A record whose first mention in the batch created it, after `horizon`, has no document
    /// in the writer unless an earlier batch read it ahead (`ahead`): earlier incarnations were
    /// deleted by an earlier entry, applied in log order, and no other read before this batch
    /// saw it. Its first document goes in without a delete.
    fn apply(&mut self, snap: &Snapshot, changes: &[LogEntry]) -> Result<(), Interrupted> {
        self.store_reads.get_mut().clear();
        let mut last: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut fresh = Fresh::default();
        for (i, (seq, c)) in changes.iter().enumerate() {
            let (key, created) = match c {
                Ok(ChangeRef::Trace {
                    project,
                    id,
                    created,
                }) => ((KIND_TRACE, project.as_str(), id.as_str()), created),
                Ok(ChangeRef::Observation {
                    project,
                    id,
                    created,
                }) => ((KIND_OBSERVATION, project.as_str(), id.as_str()), created),
                _ => continue,
            };
            let first = last.insert(key, i).is_none();
            if first && *created && *seq > self.horizon && !self.read_ahead(key, *seq) {
                fresh.insert(key.0, key.1, key.2);
            }
        }
        // Observations rewritten in this batch because their trace's context changed.
        let mut rewritten: HashSet<(&str, String)> = HashSet::new();
        let mut traces: HashMap<(String, String), Option<TraceView>> = HashMap::new();
        for (i, (seq, c)) in changes.iter().enumerate() {
            let seq = *seq;
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    let what = Unreadable::Change { seq };
                    if self.skips.is_skipped(&what) {
                        continue;
                    }
                    return Err(read_failure(e.clone(), what));
                }
            };
            match c {
                ChangeRef::Trace { project, id, .. }
                    if last.get(&(KIND_TRACE, project.as_str(), id.as_str())) == Some(&i) =>
                {
                    if !fresh.take(KIND_TRACE, project, id) {
                        self.delete(self.fields.key_term(project, KIND_TRACE, id));
                    }
                    let found = self.read(seq, KIND_TRACE, project, id, || {
                        let Some((mut t, io)) =
                            self.record_json(snap, Some(seq), RecordKind::Trace, project, id)?
                        else {
                            return Ok(None);
                        };
                        let texts = DocText::of_trace_view(&mut t, &io).map_err(undecodable)?;
                        Ok(Some((t, texts)))
                    })?;
                    if let Some((t, texts)) = &found {
                        self.writer
                            .add_document(self.fields.trace_doc(project, id, t, texts))?;
                        let key = (project.clone(), id.clone());
                        let ctx = trace_context_hash(t);
                        if self.contexts.get(&key) != Some(&ctx) {
                            for oid in snap.trace_observation_ids(project, id)? {
                                let fresh = fresh.take(KIND_OBSERVATION, project, &oid);
                                // Its own last change in the batch, if any: what it was
                                // written with is handed over under that one.
                                let mention = last
                                    .get(&(KIND_OBSERVATION, project.as_str(), oid.as_str()))
                                    .map(|&i| changes[i].0);
                                let found =
                                    self.read_observation(snap, seq, mention, project, &oid)?;
                                self.index_observation(project, &oid, found, Some(t), fresh)?;
                                rewritten.insert((project.as_str(), oid));
                            }
                            if self.contexts.len() >= CONTEXT_CACHE_MAX {
                                self.contexts.clear();
                            }
                            self.contexts.insert(key.clone(), ctx);
                        }
                    }
                    traces.insert((project.clone(), id.clone()), found.map(|(t, _)| t));
                    self.dirty = true;
                }
                ChangeRef::Observation { project, id, .. }
                    if last.get(&(KIND_OBSERVATION, project.as_str(), id.as_str())) == Some(&i)
                        && !rewritten.contains(&(project.as_str(), id.clone())) =>
                {
                    let Some(found) = self.read_observation(snap, seq, Some(seq), project, id)?
                    else {
                        self.delete(self.fields.key_term(project, KIND_OBSERVATION, id));
                        self.dirty = true;
                        continue;
                    };
                    let trace_id = &found.0.trace_id;
                    let key = (project.clone(), trace_id.clone());
                    if !traces.contains_key(&key) {
                        let t = self.read(seq, KIND_TRACE, project, trace_id, || {
                            snap.trace_as(project, trace_id)
                        })?;
                        traces.insert(key.clone(), t);
                    }
                    let trace = traces.get(&key).and_then(Option::as_ref);
                    // A document carrying another context than the cached one would make the
                    // cache lie about the trace's other documents.
                    if trace.map(trace_context_hash) != self.contexts.get(&key).copied() {
                        self.contexts.remove(&key);
                    }
                    let fresh = fresh.take(KIND_OBSERVATION, project, id);
                    self.index_observation(project, id, Some(found), trace, fresh)?;
                }
                ChangeRef::TraceDeleted { project, id, .. } => {
                    self.delete(self.fields.trace_key_term(project, id));
                    self.contexts.remove(&(project.clone(), id.clone()));
                    traces.remove(&(project.clone(), id.clone()));
                    self.dirty = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Replaces one observation's document with its current state, `found` (`None`: removes
    /// it); `fresh`: it has none to replace.
    fn index_observation(
        &mut self,
        project: &str,
        id: &str,
        found: Option<(ObservationView, DocText)>,
        trace: Option<&TraceView>,
        fresh: bool,
    ) -> Result<(), Interrupted> {
        if !fresh {
            self.delete(self.fields.key_term(project, KIND_OBSERVATION, id));
        }
        if let Some((o, texts)) = found {
            self.writer
                .add_document(self.fields.observation_doc(project, id, &o, &texts, trace))?;
        }
        self.dirty = true;
        Ok(())
    }

    /// Deletes the documents `term` names, counting the delete.
    fn delete(&mut self, term: tantivy::Term) {
        self.writer.delete_term(term);
        self.deletes += 1;
    }

    /// An observation's view and text, for change `seq`; `mention`: the batch's last change of
    /// the observation itself.
    fn read_observation(
        &self,
        snap: &Snapshot,
        seq: u64,
        mention: Option<u64>,
        project: &str,
        id: &str,
    ) -> Result<Option<(ObservationView, DocText)>, Interrupted> {
        self.read(seq, KIND_OBSERVATION, project, id, || {
            let Some((mut o, io)) =
                self.record_json(snap, mention, RecordKind::Observation, project, id)?
            else {
                return Ok(None);
            };
            let texts = DocText::of_view(&mut o, &io).map_err(undecodable)?;
            Ok(Some((o, texts)))
        })
    }

    /// A record and its payload's JSON: as the writer handed it over with change `mention`
    /// (no read, no decompression), else as `snap` holds it.
    fn record_json<T: serde::de::DeserializeOwned>(
        &self,
        snap: &Snapshot,
        mention: Option<u64>,
        kind: RecordKind,
        project: &str,
        id: &str,
    ) -> Result<Option<(T, IoJson)>, StoreError> {
        let handoff = self.store.writer().handoff();
        if let Some(h) = mention.and_then(|seq| handoff.take(seq, kind, project, id)) {
            let rec = serde_json::from_slice(h.row()).map_err(undecodable)?;
            return Ok(Some((rec, IoJson::Handed(h))));
        }
        let (read, kind) = match kind {
            RecordKind::Trace => (snap.trace_with_io_json(project, id)?, KIND_TRACE),
            RecordKind::Observation => (
                snap.observation_with_io_json(project, id)?,
                KIND_OBSERVATION,
            ),
        };
        if read.is_some() {
            self.store_reads
                .borrow_mut()
                .push(ahead_key(kind, project, id));
        }
        Ok(read.map(|(rec, io)| (rec, IoJson::Read(io))))
    }

    /// Whether a document of the record may hold a state from its creation at `seq` or later.
    fn read_ahead(&self, (kind, project, id): (&str, &str, &str), seq: u64) -> bool {
        !self.ahead.is_empty()
            && self
                .ahead
                .get(&ahead_key(kind, project, id))
                .is_some_and(|&read_at| read_at >= seq)
    }

    /// After a batch up to `last` read from a snapshot at `snap_seq`: remembers what it read
    /// from the store when the snapshot went further, and forgets what the indexer has passed.
    fn note_reads_ahead(&mut self, snap_seq: u64, last: u64) {
        let reads = std::mem::take(self.store_reads.get_mut());
        self.ahead.retain(|_, read_at| *read_at > last);
        if snap_seq <= last || reads.is_empty() {
            return;
        }
        if self.ahead.len() + reads.len() > AHEAD_MAX {
            self.horizon = self
                .ahead
                .values()
                .fold(self.horizon.max(snap_seq), |h, &s| h.max(s));
            self.ahead.clear();
            return;
        }
        for key in reads {
            let read_at = self.ahead.entry(key).or_default();
            *read_at = (*read_at).max(snap_seq);
        }
    }

    /// Reads a record for the change-log entry `seq`: `None` when it is absent, or skipped
    /// because its bytes do not decode (it is then indexed as if it were gone).
    fn read<T>(
        &self,
        seq: u64,
        kind: &'static str,
        project: &str,
        id: &str,
        read: impl FnOnce() -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, Interrupted> {
        let what = Unreadable::Record {
            seq,
            kind,
            project: project.to_string(),
            id: id.to_string(),
        };
        if self.skips.is_skipped(&what) {
            return Ok(None);
        }
        #[cfg(test)]
        let read = {
            let fail = self.shared.take_injected_read_fault();
            move || {
                if fail {
                    return Err(StoreError::Io("injected read fault".into()));
                }
                read()
            }
        };
        read().map_err(|e| read_failure(e, what))
    }

    /// Commits what the writer holds with `self.seq` in the payload and makes it searchable.
    pub(super) fn commit(&mut self, complete: bool) -> Result<(), SearchError> {
        // A rebuild's last progress commit may have taken every document: it still needs a
        // commit that says it is complete.
        if self.dirty || (complete && !self.complete) {
            let payload = Payload {
                schema: SCHEMA_VERSION,
                seq: self.seq,
                complete,
            };
            let json = serde_json::to_string(&payload)
                .map_err(|e| SearchError::Index(format!("encoding the commit payload: {e}")))?;
            let mut prepared = self.writer.prepare_commit()?;
            prepared.set_payload(&json);
            prepared.commit()?;
            self.reader.reload()?;
            self.dirty = false;
            self.complete = complete;
        }
        if complete {
            self.skips.committed(self.seq);
            self.committed_seq = self.seq;
            self.shared.indexed_seq.store(self.seq, Ordering::Release);
        }
        Ok(())
    }

    /// Deletes the files of segments that merges have replaced, and lets searches drop them.
    /// tantivy collects them when a merge ends, but that collection gives up when a reader
    /// holds the index's meta lock at that moment (a reload after a commit), and the next
    /// chance is the next commit: on a quiet index — right after retention deleted most of
    /// it — the merged-away files stayed on disk, and the disk cap kept counting them.
    fn collect_merged_away(&mut self) {
        match self.writer.garbage_collect_files().wait() {
            Ok(r) if !r.deleted_files.is_empty() => {
                if let Err(e) = self.reader.reload() {
                    tracing::warn!(error = %e, "search reader reload after collecting files failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "search index file collection failed; retried"),
        }
    }

    /// Drops uncommitted work after a failure; the next round starts from the last commit.
    fn recover(&mut self) {
        if let Err(e) = self.writer.rollback() {
            tracing::error!(error = %e, "search index rollback failed");
        }
        self.seq = self.committed_seq;
        self.dirty = false;
        // The rolled-back documents may be the ones the cache vouched for.
        self.contexts.clear();
    }

    /// Rebuilds synchronously (for `sightline reindex`), then applies what came in meanwhile.
    pub fn rebuild_now(&mut self) -> Result<(), SearchError> {
        let (_keep, stop) = watch::channel(false);
        let step = |ix: &mut Indexer, rebuild: bool| loop {
            let r = if rebuild {
                ix.rebuild(&stop)
            } else {
                ix.catch_up(&stop)
            };
            match r {
                Ok(()) => return Ok(()),
                Err(Interrupted::Failed(e)) => return Err(e),
                Err(Interrupted::Stop) => return Err(SearchError::Closed),
                // Bounded: each round counts one more attempt until the entry is skipped.
                Err(Interrupted::Undecodable(what)) => {
                    ix.skips.failed(what, &ix.shared.skipped);
                    ix.recover();
                }
            }
        };
        step(self, true)?;
        step(self, false)
    }
}

/// A record's payload JSON: read back from the store, or shared with the writer's hand-over.
enum IoJson {
    Read(Vec<u8>),
    Handed(Taken),
}

impl std::ops::Deref for IoJson {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            IoJson::Read(bytes) => bytes,
            IoJson::Handed(taken) => taken.io(),
        }
    }
}

/// Records of a batch that have no document in the writer yet (see `Indexer::apply`), by kind,
/// project and id. Owned, as observations rewritten with their trace are looked up by ids read
/// from the store.
#[derive(Default)]
struct Fresh {
    traces: HashMap<String, HashSet<String>>,
    observations: HashMap<String, HashSet<String>>,
}

impl Fresh {
    fn of(&mut self, kind: &str) -> &mut HashMap<String, HashSet<String>> {
        if kind == KIND_TRACE {
            &mut self.traces
        } else {
            &mut self.observations
        }
    }

    fn insert(&mut self, kind: &str, project: &str, id: &str) {
        let projects = self.of(kind);
        match projects.get_mut(project) {
            Some(ids) => {
                ids.insert(id.to_string());
            }
            None => {
                let mut ids = HashSet::new();
                ids.insert(id.to_string());
                projects.insert(project.to_string(), ids);
            }
        }
    }

    /// Whether the record has no document yet; from now on it has one.
    fn take(&mut self, kind: &str, project: &str, id: &str) -> bool {
        self.of(kind)
            .get_mut(project)
            .is_some_and(|ids| ids.remove(id))
    }
}

/// Sleeps for `d`; true if `stop` fired (or its sender is gone) meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
