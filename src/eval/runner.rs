//! The runner: a dispatcher thread and `concurrency` worker threads (`worker`), off the
//! request path.
//!
//! The dispatcher follows the change log from the cursor kept in the store (`eval_cursor`,
//! moved in the same commit as the jobs it produced, so a restart neither loses nor repeats a
//! record), queues a job for every new trace or observation an active evaluator takes, and
//! hands due jobs to the workers within each evaluator's token budget. A job is finished
//! exactly once: its row says so, and a repeated run (after a crash mid-call) writes the same
//! ids.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::job::{self, EvalJob};
use super::judge::{Judge, RateLimit};
use super::worker::{Work, WorkerCtx, worker};
use super::{Evaluator, Target};
use crate::config::JudgeConfig;
use crate::store::{ChangeRef, Snapshot, Store, StoreError, WriteOp};
use crate::time::Timestamp;

/// Change-log entries read per snapshot.
const CHANGES_PER_BATCH: usize = 2048;
/// Pending jobs the dispatcher looks at per round; beyond them, jobs wait for a later round.
const PENDING_SCAN: usize = 10_000;
/// Longest sleep while nothing happens (due times and new commits wake it earlier).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long shutdown waits for judge calls in flight; an unfinished one runs again next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed store read or write before trying again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A batch that queues no job moves the stored cursor at most this often: re-reading a few
/// seconds of log after a crash is free (jobs are keyed, so nothing is queued twice), a commit
/// per ingest batch is not.
const CURSOR_EVERY: Duration = Duration::from_secs(5);

pub(super) type JobKey = (String, String, String);

pub(super) fn key_of(job: &EvalJob) -> JobKey {
    (
        job.project.clone(),
        job.evaluator_id.clone(),
        job.target_key(),
    )
}

/// Handle to the runner; cheap to clone.
#[derive(Clone)]
pub struct Evals {
    inner: Arc<Inner>,
}

struct Inner {
    kick: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    judge_configured: bool,
    default_budget: u64,
}

impl Evals {
    /// Starts the dispatcher, and the workers when a judge is configured.
    pub fn start(store: Store, cfg: &JudgeConfig) -> Result<Evals, String> {
        let judge = Judge::new(cfg)?;
        let (kick, kick_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut threads = Vec::new();
        let jobs_tx = match judge {
            Some(judge) => {
                let (tx, rx) = sync_channel::<Work>(cfg.concurrency);
                let rx = Arc::new(Mutex::new(rx));
                let ctx = Arc::new(WorkerCtx {
                    store: store.clone(),
                    judge,
                    limit: RateLimit::per_minute(cfg.requests_per_minute),
                    cfg: cfg.clone(),
                    stop: stop_rx.clone(),
                });
                for i in 0..cfg.concurrency {
                    let (rx, ctx, done) = (rx.clone(), ctx.clone(), done_tx.clone());
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("sightline-judge-{i}"))
                            .spawn(move || worker(rx, ctx, done))
                            .map_err(|e| format!("cannot start a judge worker: {e}"))?,
                    );
                }
                Some(tx)
            }
            None => None,
        };
        let dispatcher = Dispatcher {
            store,
            cursor: 0,
            cursor_saved: Instant::now(),
            in_flight: HashSet::new(),
            jobs_tx,
            done_rx,
            default_budget: cfg.budget_tokens,
            capacity: cfg.concurrency * 2,
        };
        threads.insert(
            0,
            std::thread::Builder::new()
                .name("sightline-evals".into())
                .spawn(move || dispatcher.run(kick_rx, stop_rx))
                .map_err(|e| format!("cannot start the evaluation runner: {e}"))?,
        );
        Ok(Evals {
            inner: Arc::new(Inner {
                kick,
                stop,
                threads: Mutex::new(threads),
                judge_configured: cfg.base_url.is_some(),
                default_budget: cfg.budget_tokens,
            }),
        })
    }

    /// Wakes the dispatcher: jobs were queued or an evaluator changed.
    pub fn kick(&self) {
        self.inner.kick.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn judge_configured(&self) -> bool {
        self.inner.judge_configured
    }

    /// The budget of an evaluator that sets none (0 = unlimited).
    pub fn default_budget(&self) -> u64 {
        self.inner.default_budget
    }

    /// Stops dispatching, waits briefly for judge calls in flight, and returns. Call before the
    /// store shuts down so finished calls can still commit.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let threads: Vec<JoinHandle<()>> = self
            .inner
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

struct Dispatcher {
    store: Store,
    cursor: u64,
    cursor_saved: Instant,
    in_flight: HashSet<JobKey>,
    jobs_tx: Option<SyncSender<Work>>,
    done_rx: mpsc::UnboundedReceiver<JobKey>,
    default_budget: u64,
    /// Jobs the workers and their queue can hold; beyond it there is nothing to hand out.
    capacity: usize,
}

impl Dispatcher {
    fn run(mut self, mut kick: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "evaluation runner cannot start; evaluators stay idle");
                return;
            }
        };
        let mut committed = self.store.writer().subscribe();
        let mut writer_gone = false;
        let mut kick_gone = false;
        let mut workers_gone = false;
        loop {
            match self.store.snapshot().and_then(|s| s.eval_cursor()) {
                Ok(c) => {
                    self.cursor = c.unwrap_or(0);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "evaluation runner cannot read its cursor; retrying");
                    if rt.block_on(pause(RETRY_AFTER, &mut stop)) {
                        return;
                    }
                }
            }
        }
        while !*stop.borrow() {
            while let Ok(k) = self.done_rx.try_recv() {
                self.in_flight.remove(&k);
            }
            let more = match self.follow() {
                Ok(more) => more,
                Err(e) => {
                    tracing::error!(error = %e, "evaluation runner could not queue jobs; retrying");
                    if rt.block_on(pause(RETRY_AFTER, &mut stop)) {
                        break;
                    }
                    continue;
                }
            };
            let next_due = match self.dispatch() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "evaluation runner could not read due jobs; retrying");
                    Some(Instant::now() + RETRY_AFTER)
                }
            };
            if more {
                continue;
            }
            let wait = next_due
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            let done_rx = &mut self.done_rx;
            let in_flight = &mut self.in_flight;
            rt.block_on(async {
                // A closed channel is ready at once, every time: without a judge there are no
                // workers (no done senders), and waiting on it would spin this thread at full
                // speed, taking a core from ingestion.
                tokio::select! {
                    r = committed.changed(), if !writer_gone => writer_gone = r.is_err(),
                    r = kick.changed(), if !kick_gone => kick_gone = r.is_err(),
                    k = done_rx.recv(), if !workers_gone => match k {
                        Some(k) => { in_flight.remove(&k); }
                        None => workers_gone = true,
                    },
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            });
        }
        // Dropping the sender ends the workers once they finish what they hold.
        self.jobs_tx = None;
        tracing::debug!(cursor = self.cursor, "evaluation runner stopped");
    }

    /// Queues jobs for the next batch of change-log entries; true when there may be more.
    fn follow(&mut self) -> Result<bool, StoreError> {
        let snap = self.store.snapshot()?;
        let active: Vec<Evaluator> = snap
            .all_evaluators()?
            .into_iter()
            .filter(|e| !e.paused)
            .collect();
        if active.is_empty() {
            // Nothing can match, so the log is not read at all: at start on a large store that
            // read was millions of entries, and the pages it pulled in stayed resident. The
            // stored cursor stays behind, which costs a re-read only.
            self.cursor = self.cursor.max(snap.last_seq()?);
            return Ok(false);
        }
        let changes = snap.changes_since(self.cursor, CHANGES_PER_BATCH)?;
        let Some(&(last, _)) = changes.last() else {
            return Ok(false);
        };
        let jobs = jobs_for(&snap, &changes, &active)?;
        drop(snap);
        if !jobs.is_empty() || self.cursor_saved.elapsed() >= CURSOR_EVERY {
            self.store.writer().submit_blocking(WriteOp::EvalEnqueue {
                jobs,
                cursor: Some(last),
                requeue_failed: false,
            })?;
            self.cursor_saved = Instant::now();
        }
        self.cursor = last;
        Ok(true)
    }

    /// Hands due jobs to idle workers; returns when the next not-yet-due job is due.
    fn dispatch(&mut self) -> Result<Option<Instant>, StoreError> {
        let Some(tx) = &self.jobs_tx else {
            return Ok(None);
        };
        if self.in_flight.len() >= self.capacity {
            // A finishing job wakes the dispatcher.
            return Ok(None);
        }
        let snap = self.store.snapshot()?;
        let pending = snap.pending_jobs(PENDING_SCAN)?;
        if pending.is_empty() {
            return Ok(None);
        }
        let evaluators: HashMap<(String, String), Evaluator> = snap
            .all_evaluators()?
            .into_iter()
            .map(|e| ((e.project_id.clone(), e.id.clone()), e))
            .collect();
        let now = Timestamp::now();
        let mut busy: HashSet<(String, String)> = self
            .in_flight
            .iter()
            .map(|(p, e, _)| (p.clone(), e.clone()))
            .collect();
        for job in pending {
            if job.due_at > now {
                let wait = u64::try_from(job.due_at.micros() - now.micros()).unwrap_or(0);
                return Ok(Some(Instant::now() + Duration::from_micros(wait)));
            }
            let k = key_of(&job);
            if self.in_flight.contains(&k) {
                continue;
            }
            let ev_key = (job.project.clone(), job.evaluator_id.clone());
            let Some(ev) = evaluators.get(&ev_key) else {
                continue;
            };
            if ev.paused {
                continue;
            }
            let budget = ev.budget_tokens.unwrap_or(self.default_budget);
            if budget > 0 {
                // One call at a time under a budget, so the budget is checked against what
                // every earlier call really spent.
                if busy.contains(&ev_key) {
                    continue;
                }
                if snap
                    .eval_status(&job.project, &job.evaluator_id)?
                    .used_tokens
                    >= budget
                {
                    continue;
                }
            }
            match tx.try_send(Work {
                job,
                evaluator: ev.clone(),
            }) {
                Ok(()) => {
                    self.in_flight.insert(k);
                    busy.insert(ev_key);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => break,
            }
        }
        Ok(None)
    }
}

/// The jobs a batch of changes yields: each record once, for each active evaluator created
/// before the record that takes it.
fn jobs_for(
    snap: &Snapshot,
    changes: &[(u64, ChangeRef)],
    active: &[Evaluator],
) -> Result<Vec<EvalJob>, StoreError> {
    let now = Timestamp::now();
    let mut seen: HashSet<(bool, &str, &str)> = HashSet::new();
    let mut jobs = Vec::new();
    for (_, c) in changes {
        let (is_trace, project, id) = match c {
            ChangeRef::Trace { project, id, .. } => (true, project, id),
            ChangeRef::Observation { project, id, .. } => (false, project, id),
            _ => continue,
        };
        if !seen.insert((is_trace, project, id)) {
            continue;
        }
        let target = if is_trace {
            Target::Trace
        } else {
            Target::Observation
        };
        let evs: Vec<&Evaluator> = active
            .iter()
            .filter(|e| e.project_id == *project && e.target == target)
            .collect();
        if evs.is_empty() {
            continue;
        }
        if is_trace {
            let Some(t) = snap.trace(project, id)? else {
                continue;
            };
            let key = job::target_key(&t.id, None);
            for ev in evs {
                if t.created_at >= ev.created_at && ev.matches_trace(&t) && ev.samples(&key) {
                    jobs.push(EvalJob::new(ev, &t.id, None, now));
                }
            }
        } else {
            let Some(o) = snap.observation(project, id)? else {
                continue;
            };
            let trace = snap.trace(project, &o.trace_id)?;
            let key = job::target_key(&o.trace_id, Some(&o.id));
            for ev in evs {
                if o.created_at >= ev.created_at
                    && ev.matches_observation(&o, trace.as_ref())
                    && ev.samples(&key)
                {
                    jobs.push(EvalJob::new(ev, &o.trace_id, Some(&o.id), now));
                }
            }
        }
    }
    Ok(jobs)
}

/// Sleeps up to `d`; true if stop was requested meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Change, TimedChange, TracePatch};
    use crate::store::NoPrices;

    #[test]
    fn without_an_active_evaluator_the_log_is_skipped_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8, Arc::new(NoPrices)).unwrap();
        // More entries than one batch: reading them would take several turns.
        let changes = (0..CHANGES_PER_BATCH + 500)
            .map(|i| TimedChange {
                at: Timestamp::from_micros(i as i64),
                change: Change::Trace(TracePatch {
                    id: format!("t{i}"),
                    ..Default::default()
                }),
            })
            .collect();
        store
            .writer()
            .submit_blocking(WriteOp::Changes {
                project: "p".into(),
                changes,
            })
            .unwrap();
        let last = store.snapshot().unwrap().last_seq().unwrap();
        assert!(last > CHANGES_PER_BATCH as u64);
        let (_done_tx, done_rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher {
            store: store.clone(),
            cursor: 0,
            cursor_saved: Instant::now(),
            in_flight: HashSet::new(),
            jobs_tx: None,
            done_rx,
            default_budget: 0,
            capacity: 0,
        };
        assert!(!d.follow().unwrap(), "nothing more to follow");
        assert_eq!(d.cursor, last);
        store.shutdown();
    }
}
