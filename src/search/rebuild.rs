//! The indexer's rebuild: empties the index and re-adds every trace and observation of one
//! store snapshot, committing with that snapshot's sequence. Intermediate commits of a rebuild
//! are marked incomplete, so a rebuild interrupted by a crash starts over.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::watch;

use super::SearchError;
use super::indexer::{Indexer, Interrupted, undecodable};
use super::schema::{DocText, KIND_OBSERVATION, KIND_TRACE};
use super::skips::Unreadable;
use super::view::{ObservationView, TraceView};
use crate::store::StoreError;

/// Records read per chunk during a rebuild scan.
const RECORDS_PER_CHUNK: usize = 1024;

impl Indexer {
    /// Empties the index and re-adds every record of one store snapshot.
    pub(super) fn rebuild(&mut self, stop: &watch::Receiver<bool>) -> Result<(), Interrupted> {
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
        self.horizon = self.horizon.max(seq);
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
            let chunk = snap.traces_with_io_json_after(after.as_ref(), RECORDS_PER_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            for (key, read) in chunk {
                let read = read.and_then(|(mut t, io): (TraceView, _)| {
                    let texts = DocText::of_trace_view(&mut t, &io).map_err(undecodable)?;
                    Ok((t, texts))
                });
                let Some((t, texts)) = self.scanned(seq, KIND_TRACE, &key, read)? else {
                    continue;
                };
                self.writer
                    .add_document(self.fields.trace_doc(&key.0, &key.1, &t, &texts))?;
                self.dirty = true;
                docs += 1;
            }
            progress(self, docs)?;
        }
        let mut after = None;
        loop {
            let chunk = snap.observations_with_io_json_after(after.as_ref(), RECORDS_PER_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            // Observations come in id order, not by trace: keep the chunk's traces at hand.
            let mut traces: HashMap<(String, String), Option<TraceView>> = HashMap::new();
            for (key, read) in chunk {
                let read = read.and_then(|(mut o, io): (ObservationView, _)| {
                    let texts = DocText::of_view(&mut o, &io).map_err(undecodable)?;
                    Ok((o, texts))
                });
                let Some((o, texts)) = self.scanned(seq, KIND_OBSERVATION, &key, read)? else {
                    continue;
                };
                let (project, id) = (key.0.as_str(), key.1.as_str());
                let trace_key = (project.to_string(), o.trace_id.clone());
                if let std::collections::hash_map::Entry::Vacant(e) =
                    traces.entry(trace_key.clone())
                {
                    // An undecodable trace was skipped (and counted) by the trace scan: its
                    // observations are indexed without its context.
                    let t = match snap.trace_as(project, &o.trace_id) {
                        Ok(t) => t,
                        Err(StoreError::Corrupt(_)) => None,
                        Err(e) => return Err(e.into()),
                    };
                    e.insert(t);
                }
                let trace = traces.get(&trace_key).and_then(Option::as_ref);
                self.writer
                    .add_document(self.fields.observation_doc(project, id, &o, &texts, trace))?;
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

    /// A record a rebuild scan read from the snapshot at `seq`, or `None` when its bytes do not
    /// decode. The scan reads one snapshot throughout, so such a row would not decode on a retry
    /// either (and a retry would redo the whole scan): it is skipped when first met.
    fn scanned<T>(
        &mut self,
        seq: u64,
        kind: &'static str,
        (project, id): &(String, String),
        read: Result<T, StoreError>,
    ) -> Result<Option<T>, Interrupted> {
        match read {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Corrupt(_)) => {
                let what = Unreadable::Record {
                    seq,
                    kind,
                    project: project.clone(),
                    id: id.clone(),
                };
                self.skips.skip_now(what, &self.shared.skipped);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
