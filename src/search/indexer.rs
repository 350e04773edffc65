//! The indexer: one dedicated thread that owns the `IndexWriter` and follows the store's change
//! log. It wakes on the writer's commit notification, applies every new change (re-reading the
//! record from a store snapshot: delete the old document by its key, add the current one),
//! commits with the last applied sequence in the commit payload, and reloads the reader.
//!
//! A rebuild scans every trace and observation in one store snapshot, commits with that
//! snapshot's sequence, then catches up from the log like any restart. Intermediate commits of a
//! rebuild are marked incomplete, so a rebuild interrupted by a crash starts over.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};
use tokio::sync::watch;

use super::schema::{Fields, KIND_OBSERVATION, KIND_TRACE, SCHEMA_VERSION, trace_context_hash};
use super::text::{index_analyzer, keyword_analyzer};
use super::{SearchError, Shared};
use crate::record::TraceRecord;
use crate::store::{ChangeRef, Snapshot, Store};

/// A change is searchable at most this long (plus one commit) after its store commit: the
/// indexer never commits more often, so a flood of small writes makes few segments.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(150);
/// Change-log entries read per store snapshot while catching up.
const CHANGES_PER_BATCH: usize = 2048;
/// Records read per chunk during a rebuild scan.
const RECORDS_PER_CHUNK: usize = 1024;
/// While catching up or rebuilding, commit (and log progress) at least this often, so searches
/// see the index fill up and a crash loses little work.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Indexing memory: tantivy flushes a segment when its buffer reaches this size.
const WRITER_MEMORY_BYTES: usize = 48 * 1024 * 1024;
/// Pause after a failed batch before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A segment with this share of deleted documents is merged (which drops them) even when the
/// merge policy would not merge it for its size: after retention deletes, the index shrinks
/// instead of carrying dead documents until their segments happen to merge.
const DELETED_SHARE_BEFORE_MERGE: f32 = 0.2;

/// What the last commit says about the index (stored as JSON in the commit payload).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub schema: u64,
    /// Every change-log entry up to this sequence is reflected.
    pub seq: u64,
    /// False while a rebuild is under way.
    pub complete: bool,
}

/// How an opened index must be brought up to date.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Resume(u64),
    Rebuild(String),
}

/// Opens the index in `dir`, or wipes and recreates it when it is missing, unreadable, of
/// another schema version, or left by an unfinished rebuild.
pub fn open_index(dir: &Path, fields: &Fields) -> Result<(Index, Start), SearchError> {
    let start = if dir.join("meta.json").exists() {
        match Index::open_in_dir(dir) {
            Ok(index) => match check(&index, fields) {
                Ok(seq) => Some((index, Start::Resume(seq))),
                Err(reason) => {
                    drop(index);
                    wipe(dir)?;
                    Some((create(dir, fields)?, Start::Rebuild(reason)))
                }
            },
            Err(e) => {
                wipe(dir)?;
                Some((
                    create(dir, fields)?,
                    Start::Rebuild(format!("the index is unreadable ({e})")),
                ))
            }
        }
    } else {
        None
    };
    let (index, start) = match start {
        Some(s) => s,
        None => {
            wipe(dir)?;
            (
                create(dir, fields)?,
                Start::Rebuild("there is no index yet".into()),
            )
        }
    };
    index
        .tokenizers()
        .register(super::schema::TEXT_TOKENIZER, index_analyzer());
    index
        .tokenizers()
        .register(super::schema::KEYWORD_TOKENIZER, keyword_analyzer());
    Ok((index, start))
}

/// The sequence an existing index resumes from, or why it must be rebuilt.
fn check(index: &Index, fields: &Fields) -> Result<u64, String> {
    let metas = index
        .load_metas()
        .map_err(|e| format!("its metadata is unreadable ({e})"))?;
    let payload: Payload = metas
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or("it has no commit payload")?;
    if payload.schema != SCHEMA_VERSION {
        return Err(format!(
            "it has schema version {}, this binary writes {SCHEMA_VERSION}",
            payload.schema
        ));
    }
    if index.schema() != fields.schema {
        return Err("its fields differ from this binary's".into());
    }
    if !payload.complete {
        return Err("a previous rebuild did not finish".into());
    }
    Ok(payload.seq)
}

fn wipe(dir: &Path) -> Result<(), SearchError> {
    let err = |e: std::io::Error| SearchError::Dir {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

fn create(dir: &Path, fields: &Fields) -> Result<Index, SearchError> {
    Ok(Index::create_in_dir(dir, fields.schema.clone())?)
}

pub fn reader(index: &Index) -> Result<IndexReader, SearchError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?)
}

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
    /// Documents added or deleted since the last commit.
    pub dirty: bool,
    /// The last commit's payload said `complete` (false while a rebuild is under way).
    pub complete: bool,
    /// How often a long catch-up or rebuild commits and logs progress.
    pub progress_every: Duration,
    /// (project, trace) → `trace_context_hash` that every observation document of the trace
    /// carries (in the writer, committed or not). A trace update that leaves the context alone
    /// (the usual case: output, metadata, a later span) then costs one document, not one per
    /// observation. Unknown traces are rewritten once; bounded by `CONTEXT_CACHE_MAX`.
    contexts: HashMap<(String, String), u64>,
}

/// Traces whose observation context the indexer remembers before it starts over.
const CONTEXT_CACHE_MAX: usize = 200_000;

/// Why a long run of work ended early.
enum Interrupted {
    Stop,
    Failed(SearchError),
}

impl From<SearchError> for Interrupted {
    fn from(e: SearchError) -> Self {
        Interrupted::Failed(e)
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
        let writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let mut policy = tantivy::indexer::LogMergePolicy::default();
        policy.set_del_docs_ratio_before_merge(DELETED_SHARE_BEFORE_MERGE);
        writer.set_merge_policy(Box::new(policy));
        Ok(Indexer {
            store,
            fields,
            writer,
            reader,
            shared,
            seq,
            committed_seq: seq,
            dirty: false,
            complete: true,
            progress_every: PROGRESS_EVERY,
            contexts: HashMap::new(),
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
                    Ok(()) => break,
                    Err(Interrupted::Stop) => return,
                    Err(Interrupted::Failed(e)) => {
                        tracing::error!(error = %e, "search index rebuild failed; retrying");
                        if rt.block_on(pause(RETRY_AFTER, &mut stop)) {
                            return;
                        }
                    }
                }
            }
        }
        let mut last_commit = Instant::now() - MIN_COMMIT_INTERVAL;
        let mut writer_gone = false;
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
                    Ok(()) | Err(Interrupted::Stop) => last_commit = Instant::now(),
                    Err(Interrupted::Failed(e)) => {
                        tracing::error!(error = %e, "search indexing failed; retrying from the last commit");
                        self.recover();
                        if rt.block_on(pause(RETRY_AFTER, &mut stop)) {
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
            rt.block_on(async {
                tokio::select! {
                    r = committed.changed() => writer_gone = r.is_err(),
                    _ = stop.changed() => {}
                }
            });
        }
        tracing::debug!(seq = self.committed_seq, "search indexer stopped");
    }

    /// Applies every change after `self.seq` and commits.
    fn catch_up(&mut self, stop: &watch::Receiver<bool>) -> Result<(), Interrupted> {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let mut applied = 0usize;
        loop {
            let snap = self.store.snapshot().map_err(SearchError::from)?;
            let changes = snap
                .changes_since(self.seq, CHANGES_PER_BATCH)
                .map_err(SearchError::from)?;
            let Some(&(last, _)) = changes.last() else {
                break;
            };
            self.apply(&snap, &changes)?;
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
    fn apply(&mut self, snap: &Snapshot, changes: &[(u64, ChangeRef)]) -> Result<(), SearchError> {
        let mut last: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (i, (_, c)) in changes.iter().enumerate() {
            match c {
                ChangeRef::Trace { project, id } => {
                    last.insert((KIND_TRACE, project.as_str(), id.as_str()), i);
                }
                ChangeRef::Observation { project, id } => {
                    last.insert((KIND_OBSERVATION, project.as_str(), id.as_str()), i);
                }
                _ => {}
            }
        }
        // Observations rewritten in this batch because their trace's context changed.
        let mut rewritten: HashSet<(&str, String)> = HashSet::new();
        let mut traces: HashMap<(String, String), Option<TraceRecord>> = HashMap::new();
        for (i, (_, c)) in changes.iter().enumerate() {
            match c {
                ChangeRef::Trace { project, id }
                    if last.get(&(KIND_TRACE, project.as_str(), id.as_str())) == Some(&i) =>
                {
                    self.writer
                        .delete_term(self.fields.key_term(project, KIND_TRACE, id));
                    let t = snap.trace(project, id)?;
                    if let Some(t) = &t {
                        let io = snap.trace_io(project, id)?;
                        self.writer
                            .add_document(self.fields.trace_doc(project, t, &io))?;
                        let key = (project.clone(), id.clone());
                        let ctx = trace_context_hash(t);
                        if self.contexts.get(&key) != Some(&ctx) {
                            for oid in snap.trace_observation_ids(project, id)? {
                                self.index_observation(snap, project, &oid, Some(t))?;
                                rewritten.insert((project.as_str(), oid));
                            }
                            if self.contexts.len() >= CONTEXT_CACHE_MAX {
                                self.contexts.clear();
                            }
                            self.contexts.insert(key.clone(), ctx);
                        }
                    }
                    traces.insert((project.clone(), id.clone()), t);
                    self.dirty = true;
                }
                ChangeRef::Observation { project, id }
                    if last.get(&(KIND_OBSERVATION, project.as_str(), id.as_str())) == Some(&i)
                        && !rewritten.contains(&(project.as_str(), id.clone())) =>
                {
                    let Some(o) = snap.observation(project, id)? else {
                        self.writer.delete_term(self.fields.key_term(
                            project,
                            KIND_OBSERVATION,
                            id,
                        ));
                        self.dirty = true;
                        continue;
                    };
                    let key = (project.clone(), o.trace_id.clone());
                    if !traces.contains_key(&key) {
                        traces.insert(key.clone(), snap.trace(project, &o.trace_id)?);
                    }
                    let trace = traces.get(&key).and_then(Option::as_ref);
                    // A document carrying another context than the cached one would make the
                    // cache lie about the trace's other documents.
                    if trace.map(trace_context_hash) != self.contexts.get(&key).copied() {
                        self.contexts.remove(&key);
                    }
                    self.index_observation(snap, project, id, trace)?;
                }
                ChangeRef::TraceDeleted { project, id, .. } => {
                    self.writer
                        .delete_term(self.fields.trace_key_term(project, id));
                    self.contexts.remove(&(project.clone(), id.clone()));
                    traces.remove(&(project.clone(), id.clone()));
                    self.dirty = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Replaces one observation's document with its current state (or removes it).
    fn index_observation(
        &mut self,
        snap: &Snapshot,
        project: &str,
        id: &str,
        trace: Option<&TraceRecord>,
    ) -> Result<(), SearchError> {
        self.writer
            .delete_term(self.fields.key_term(project, KIND_OBSERVATION, id));
        if let Some(o) = snap.observation(project, id)? {
            let io = snap.observation_io(project, id)?;
            self.writer
                .add_document(self.fields.observation_doc(project, &o, &io, trace))?;
        }
        self.dirty = true;
        Ok(())
    }

    /// Empties the index and re-adds every record of one store snapshot.
    fn rebuild(&mut self, stop: &watch::Receiver<bool>) -> Result<(), Interrupted> {
        let started = Instant::now();
        self.shared.rebuilding.store(true, Ordering::Release);
        self.contexts.clear();
        self.writer
            .delete_all_documents()
            .map_err(SearchError::from)?;
        self.dirty = true;
        self.complete = false;
        let snap = self.store.snapshot().map_err(SearchError::from)?;
        let seq = snap.last_seq().map_err(SearchError::from)?;
        self.seq = seq;
        let mut docs = 0u64;
        let mut last_progress = Instant::now();
        let mut progress = |ix: &mut Indexer, docs: u64| -> Result<(), Interrupted> {
            if *stop.borrow() {
                return Err(Interrupted::Stop);
            }
            if last_progress.elapsed() >= ix.progress_every {
                tracing::info!(docs, "search index rebuild in progress");
                ix.commit(false)?;
                last_progress = Instant::now();
            }
            Ok(())
        };
        let mut after = None;
        loop {
            let chunk = snap
                .traces_after(after.as_ref(), RECORDS_PER_CHUNK)
                .map_err(SearchError::from)?;
            let Some((p, t)) = chunk.last() else { break };
            after = Some((p.clone(), t.id.clone()));
            for (project, t) in &chunk {
                let io = snap.trace_io(project, &t.id).map_err(SearchError::from)?;
                self.writer
                    .add_document(self.fields.trace_doc(project, t, &io))
                    .map_err(SearchError::from)?;
                self.dirty = true;
                docs += 1;
            }
            progress(self, docs)?;
        }
        let mut after = None;
        loop {
            let chunk = snap
                .observations_after(after.as_ref(), RECORDS_PER_CHUNK)
                .map_err(SearchError::from)?;
            let Some((p, o)) = chunk.last() else { break };
            after = Some((p.clone(), o.id.clone()));
            // Observations come in id order, not by trace: keep the chunk's traces at hand.
            let mut traces: HashMap<(&str, &str), Option<TraceRecord>> = HashMap::new();
            for (project, o) in &chunk {
                let io = snap
                    .observation_io(project, &o.id)
                    .map_err(SearchError::from)?;
                let key = (project.as_str(), o.trace_id.as_str());
                if let std::collections::hash_map::Entry::Vacant(e) = traces.entry(key) {
                    e.insert(
                        snap.trace(project, &o.trace_id)
                            .map_err(SearchError::from)?,
                    );
                }
                let trace = traces.get(&key).and_then(Option::as_ref);
                self.writer
                    .add_document(self.fields.observation_doc(project, o, &io, trace))
                    .map_err(SearchError::from)?;
                self.dirty = true;
                docs += 1;
            }
            progress(self, docs)?;
        }
        drop(snap);
        self.commit(true)?;
        self.shared.rebuilding.store(false, Ordering::Release);
        tracing::info!(
            docs,
            seq,
            seconds = started.elapsed().as_secs_f64(),
            "search index rebuilt"
        );
        Ok(())
    }

    /// Commits what the writer holds with `self.seq` in the payload and makes it searchable.
    fn commit(&mut self, complete: bool) -> Result<(), SearchError> {
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
            self.committed_seq = self.seq;
            self.shared.indexed_seq.store(self.seq, Ordering::Release);
        }
        Ok(())
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
        let done = |r: Result<(), Interrupted>| match r {
            Ok(()) => Ok(()),
            Err(Interrupted::Failed(e)) => Err(e),
            Err(Interrupted::Stop) => Err(SearchError::Closed),
        };
        done(self.rebuild(&stop))?;
        done(self.catch_up(&stop))
    }
}

/// Sleeps for `d`; true if `stop` fired (or its sender is gone) meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
