//! `sightline forward`: follows the change log of a data directory (read-only, beside the
//! running server) and sends each changed record's current state upstream.
//!
//! Resuming: the sequence number of the last change whose events the upstream acknowledged is
//! kept in a small cursor file in the data directory, replaced atomically (write, fsync,
//! rename) after every acknowledged batch. A forward killed at any point resends at most the
//! batch in flight, and replays are harmless: events carry whole records with deterministic ids,
//! and ingestion merges them idempotently.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ForwardError;
use super::client::{Batch, Rejected, Upstream};
use crate::export::event;
use crate::store::{ChangeRef, Store};

/// Change-log entries read per store query.
const CHANGES_PER_READ: usize = 1000;

#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// The project to forward: the upstream keys belong to exactly one.
    pub project: String,
    /// Stop once caught up instead of following new commits.
    pub once: bool,
    /// How often to look for new commits once caught up.
    pub poll: Duration,
    pub batch_bytes: usize,
    /// Stop after this many acknowledged batches (bounded runs, tests).
    pub max_batches: Option<u64>,
    /// Ends a following run between batches and polls (the server's forward at shutdown).
    pub stop: crate::background::StopSignal,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ForwardReport {
    /// Cursor: the last change-log sequence number fully acknowledged upstream.
    pub seq: u64,
    pub events: u64,
    pub batches: u64,
    pub deletes: u64,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CursorFile {
    seq: u64,
    upstream: String,
    project: String,
}

/// The cursor file of one (upstream, project) pair in `data_dir`: a new upstream starts from
/// the beginning instead of inheriting another's position.
pub fn cursor_path(
    data_dir: &Path,
    upstream_url: &str,
    public_key: &str,
    project: &str,
) -> PathBuf {
    let mut h = Sha256::new();
    for part in [upstream_url.trim_end_matches('/'), public_key, project] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let tag: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    data_dir.join(format!("forward-{tag}.cursor"))
}

fn load_cursor(path: &Path) -> Result<u64, ForwardError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let c: CursorFile = serde_json::from_slice(&bytes).map_err(|e| {
                ForwardError::file(
                    path,
                    format!("not a forward cursor ({e}); delete it to start over"),
                )
            })?;
            Ok(c.seq)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(ForwardError::file(path, e)),
    }
}

/// Replaces the cursor file so that a crash leaves the old one or the new one, never a torn one.
fn save_cursor(path: &Path, cursor: &CursorFile) -> Result<(), ForwardError> {
    let tmp = path.with_extension("cursor.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(cursor).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename is durable once the directory entry is.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| ForwardError::file(path, e))
}

struct Run<'a> {
    store: &'a Store,
    upstream: &'a Upstream,
    opts: &'a ForwardOptions,
    cursor_path: &'a Path,
    cursor: CursorFile,
    report: ForwardReport,
    batch: Batch,
    /// Records already in flight since the last delete: their current state is sent once.
    seen: HashSet<(u8, String)>,
    progress: &'a mut dyn FnMut(&ForwardReport),
}

impl Run<'_> {
    /// Sends the pending batch, then records `seq` as acknowledged.
    fn flush(&mut self, seq: u64) -> Result<(), ForwardError> {
        if !self.batch.is_empty() {
            let batch = self.batch.take();
            let rejected = self.upstream.send(&batch)?;
            for r in &rejected {
                tracing::warn!(event = %r.id, status = r.status, message = %r.message, "upstream rejected an event");
            }
            self.report.rejected.extend(rejected);
            self.report.events += batch.len() as u64;
            self.report.batches += 1;
        }
        if seq > self.cursor.seq {
            self.cursor.seq = seq;
            save_cursor(self.cursor_path, &self.cursor)?;
            self.report.seq = seq;
            (self.progress)(&self.report);
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.opts
            .max_batches
            .is_some_and(|max| self.report.batches >= max)
    }

    /// Adds one event, sending the pending batch first if it would overflow; the changes before
    /// `seq` are then acknowledged.
    fn push(&mut self, seq: u64, ev: serde_json::Value) -> Result<(), ForwardError> {
        let size = serde_json::to_vec(&ev)
            .map_err(|e| ForwardError::Encode(e.to_string()))?
            .len();
        if self.batch.would_overflow(size, self.opts.batch_bytes) {
            self.flush(seq - 1)?;
        }
        self.batch.push(&ev)?;
        Ok(())
    }

    /// Handles one change-log entry. Returns false when the run must stop (batch limit).
    fn change(&mut self, seq: u64, change: ChangeRef) -> Result<bool, ForwardError> {
        let project = self.opts.project.as_str();
        let (kind, p, id) = match &change {
            ChangeRef::Trace { project, id, .. } => (0u8, project, id),
            ChangeRef::Observation { project, id, .. } => (1, project, id),
            ChangeRef::Score { project, id } => (2, project, id),
            // Retention here is not a reason to delete upstream: the upstream keeps data as
            // long as its own retention says (it is often the long-term store).
            ChangeRef::TraceDeleted { expired: true, .. }
            | ChangeRef::ScoreDeleted { expired: true, .. } => return Ok(true),
            ChangeRef::TraceDeleted { project, id, .. } => (3, project, id),
            ChangeRef::ScoreDeleted { project, id, .. } => (4, project, id),
        };
        if p != project {
            return Ok(true);
        }
        if kind >= 3 {
            // Deletes go in order with the events around them: what was sent before is sent
            // first, and what is re-created after is sent again.
            self.flush(seq - 1)?;
            if self.done() {
                return Ok(false);
            }
            let path = if kind == 3 {
                format!("/api/public/traces/{}", encode_path(id))
            } else {
                format!("/api/public/scores/{}", encode_path(id))
            };
            self.upstream.delete(&path)?;
            self.report.deletes += 1;
            self.seen.clear();
            self.flush(seq)?;
            return Ok(true);
        }
        if !self.seen.insert((kind, id.clone())) {
            return Ok(true);
        }
        // The current state, not the state at `seq`: it includes every later change too. A
        // record deleted since is skipped; its delete entry follows in the log.
        let ev = match kind {
            0 => self
                .store
                .trace_with_io(project, id)?
                .map(|(t, io)| event::trace(project, &t, &io)),
            1 => self
                .store
                .observation_with_io(project, id)?
                .map(|(o, io)| event::observation(project, &o, &io)),
            _ => self
                .store
                .score(project, id)?
                .map(|s| event::score(project, &s)),
        };
        if let Some(ev) = ev {
            self.push(seq, ev)?;
        }
        Ok(!self.done())
    }
}

/// Percent-encodes an id for a url path segment.
fn encode_path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Forwards everything after the stored cursor, then (unless `once`) keeps following.
pub fn forward(
    store: &Store,
    cursor_path: &Path,
    upstream: &Upstream,
    upstream_url: &str,
    opts: &ForwardOptions,
    progress: &mut dyn FnMut(&ForwardReport),
) -> Result<ForwardReport, ForwardError> {
    let seq = load_cursor(cursor_path)?;
    let mut run = Run {
        store,
        upstream,
        opts,
        cursor_path,
        cursor: CursorFile {
            seq,
            upstream: upstream_url.to_string(),
            project: opts.project.clone(),
        },
        report: ForwardReport {
            seq,
            ..Default::default()
        },
        batch: Batch::default(),
        seen: HashSet::new(),
        progress,
    };
    loop {
        if opts.stop.is_stopped() {
            return Ok(run.report);
        }
        let changes = store.changes_since(run.cursor.seq, CHANGES_PER_READ)?;
        let Some(last) = changes.last().map(|(seq, _)| *seq) else {
            if opts.once || opts.stop.sleep(opts.poll) {
                return Ok(run.report);
            }
            continue;
        };
        for (seq, change) in changes {
            if !run.change(seq, change)? {
                // The batch limit is reached: what is pending was not acknowledged, so it stays
                // after the cursor and goes with the next run.
                return Ok(run.report);
            }
        }
        run.flush(last)?;
        run.seen.clear();
        if run.done() {
            return Ok(run.report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_survives_a_round_trip_and_is_per_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let a = cursor_path(dir.path(), "http://a:1", "pk", "p");
        assert_ne!(a, cursor_path(dir.path(), "http://b:1", "pk", "p"));
        assert_eq!(a, cursor_path(dir.path(), "http://a:1/", "pk", "p"));
        assert_eq!(load_cursor(&a).unwrap(), 0);
        let c = CursorFile {
            seq: 42,
            upstream: "http://a:1".into(),
            project: "p".into(),
        };
        save_cursor(&a, &c).unwrap();
        assert_eq!(load_cursor(&a).unwrap(), 42);
        std::fs::write(&a, b"garbage").unwrap();
        assert!(
            load_cursor(&a)
                .unwrap_err()
                .to_string()
                .contains("delete it")
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path("ok-1_2.3~"), "ok-1_2.3~");
    }
}
