//! The runner: a dispatcher thread and `concurrency` worker threads, off the request path.
//!
//! The dispatcher follows the change log from the cursor kept in the store (`eval_cursor`,
//! moved in the same commit as the jobs it produced, so a restart neither loses nor repeats a
//! record), queues a job for every new trace or observation an active evaluator takes, and
//! hands due jobs to the workers within each evaluator's token budget. A worker renders the
//! prompt, calls the judge under the shared rate limit with retries and backoff, and commits
//! the outcome. A job is finished exactly once: its row says so, and a repeated run (after a
//! crash mid-call) writes the same ids.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::job::{self, Attempt, EvalJob, EvalOutcome};
use super::judge::{self, CallError, Judge, RateLimit};
use super::template;
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
/// Longest wait between attempts, whatever the backoff or `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long shutdown waits for judge calls in flight; an unfinished one runs again next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed store read or write before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A batch that queues no job moves the stored cursor at most this often: re-reading a few
/// seconds of log after a crash is free (jobs are keyed, so nothing is queued twice), a commit
/// per ingest batch is not.
const CURSOR_EVERY: Duration = Duration::from_secs(5);

type JobKey = (String, String, String);

fn key_of(job: &EvalJob) -> JobKey {
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

struct Work {
    job: EvalJob,
    evaluator: Evaluator,
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
                tokio::select! {
                    r = committed.changed(), if !writer_gone => writer_gone = r.is_err(),
                    _ = kick.changed() => {}
                    k = done_rx.recv() => { if let Some(k) = k { in_flight.remove(&k); } }
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
        let changes = snap.changes_since(self.cursor, CHANGES_PER_BATCH)?;
        let Some(&(last, _)) = changes.last() else {
            return Ok(false);
        };
        let active: Vec<Evaluator> = snap
            .all_evaluators()?
            .into_iter()
            .filter(|e| !e.paused)
            .collect();
        if active.is_empty() {
            // Nothing can match; the stored cursor stays behind, which costs a re-read only.
            self.cursor = last;
            return Ok(true);
        }
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
            ChangeRef::Trace { project, id } => (true, project, id),
            ChangeRef::Observation { project, id } => (false, project, id),
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

struct WorkerCtx {
    store: Store,
    judge: Judge,
    limit: RateLimit,
    cfg: JudgeConfig,
    stop: watch::Receiver<bool>,
}

fn worker(
    rx: Arc<Mutex<Receiver<Work>>>,
    ctx: Arc<WorkerCtx>,
    done: mpsc::UnboundedSender<JobKey>,
) {
    loop {
        let work = {
            let Ok(rx) = rx.lock() else { return };
            rx.recv()
        };
        let Ok(work) = work else { return };
        let key = key_of(&work.job);
        match run(&ctx, &work) {
            Ok(Some(outcome)) => {
                if let Err(e) = ctx
                    .store
                    .writer()
                    .submit_blocking(WriteOp::EvalComplete(Box::new(outcome)))
                {
                    // The job stays pending and runs again (to the same ids).
                    tracing::warn!(error = %e, "could not record an evaluation; it will run again");
                    std::thread::sleep(RETRY_AFTER);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "evaluation could not read its record; it will run again");
                std::thread::sleep(RETRY_AFTER);
            }
        }
        let _ = done.send(key);
    }
}

/// Runs one job. `None` when shutdown interrupted it (it stays pending).
fn run(ctx: &WorkerCtx, work: &Work) -> Result<Option<EvalOutcome>, StoreError> {
    let (ev, j) = (&work.evaluator, &work.job);
    let (context, environment) = {
        let snap = ctx.store.snapshot()?;
        match &j.observation_id {
            None => {
                let Some(t) = snap.trace(&j.project, &j.trace_id)? else {
                    return Ok(Some(job::skipped(j, "the trace no longer exists")));
                };
                if !ev.matches_trace(&t) {
                    return Ok(Some(job::skipped(
                        j,
                        "the trace no longer matches the filter",
                    )));
                }
                let io = snap.trace_io(&j.project, &t.id)?;
                (template::trace_context(&t, &io), t.environment)
            }
            Some(o) => {
                let Some(obs) = snap.observation(&j.project, o)? else {
                    return Ok(Some(job::skipped(j, "the observation no longer exists")));
                };
                let trace = snap.trace(&j.project, &obs.trace_id)?;
                if !ev.matches_observation(&obs, trace.as_ref()) {
                    return Ok(Some(job::skipped(
                        j,
                        "the observation no longer matches the filter",
                    )));
                }
                let io = snap.observation_io(&j.project, &obs.id)?;
                let trace_ctx = match &trace {
                    Some(t) => Some(template::trace_context(
                        t,
                        &snap.trace_io(&j.project, &t.id)?,
                    )),
                    None => None,
                };
                (
                    template::observation_context(&obs, &io, trace_ctx),
                    obs.environment,
                )
            }
        }
    };
    let rendered = template::render(&ev.prompt, &ev.variable_mapping, &context);
    let messages = json!([
        {"role": "system", "content": judge::instructions(&ev.output)},
        {"role": "user", "content": rendered},
    ]);
    let model = ev.model.clone().unwrap_or_else(|| ctx.cfg.model.clone());
    let body = ctx.judge.body(&model, &messages, &ev.model_parameters);
    let mut params = body.as_object().cloned().unwrap_or_default();
    params.retain(|k, _| k != "model" && k != "messages");
    let config = match &ev.output.config_id {
        None => None,
        Some(id) => match ctx.store.writer().score_configs().get(&j.project, id) {
            Some(c) => Some(c.clone()),
            None => {
                let why = format!("score config {id} no longer exists");
                return Ok(Some(job::outcome(
                    ev,
                    j,
                    &messages,
                    &params,
                    &[],
                    Err(why),
                    &environment,
                )));
            }
        },
    };
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut verdict = Err(String::new());
    for n in 1..=ctx.cfg.max_attempts {
        if *ctx.stop.borrow() {
            return Ok(None);
        }
        ctx.limit.wait();
        let started = Timestamp::now();
        let reply = ctx.judge.call(&body);
        let ended = Timestamp::now();
        let mut retry_after = None;
        match reply {
            Ok(r) => {
                let v = judge::verdict(&r.content, &ev.output, config.as_ref());
                attempts.push(Attempt {
                    started,
                    ended,
                    model: r.model.unwrap_or_else(|| model.clone()),
                    output: Value::String(r.content),
                    usage: r.usage,
                    error: v.as_ref().err().cloned(),
                });
                let ok = v.is_ok();
                verdict = v;
                if ok {
                    break;
                }
            }
            Err(e) => {
                attempts.push(Attempt {
                    started,
                    ended,
                    model: model.clone(),
                    output: Value::Null,
                    usage: None,
                    error: Some(e.message().to_string()),
                });
                verdict = Err(e.message().to_string());
                match e {
                    CallError::Fatal(_) => break,
                    CallError::Retry { after, .. } => retry_after = after,
                }
            }
        }
        if n < ctx.cfg.max_attempts {
            let backoff = ctx.cfg.retry_backoff.saturating_mul(1 << (n - 1).min(16));
            if sleep_unless_stopped(retry_after.unwrap_or(backoff).min(MAX_BACKOFF), &ctx.stop) {
                return Ok(None);
            }
        }
    }
    let verdict = verdict.map_err(|e| match attempts.len() {
        1 => e,
        n => format!("{e} (after {n} attempts)"),
    });
    Ok(Some(job::outcome(
        ev,
        j,
        &messages,
        &params,
        &attempts,
        verdict,
        &environment,
    )))
}

/// Sleeps `d` in short steps; true if shutdown began meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if *stop.borrow() {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    *stop.borrow()
}

/// Sleeps up to `d`; true if stop was requested meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
