//! A judge worker: takes one job at a time from the dispatcher, re-reads its record, renders
//! the prompt, calls the judge under the shared rate limit with retries and backoff, and
//! commits the outcome through the writer.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::job::{self, Attempt, EvalJob, EvalOutcome};
use super::judge::{self, CallError, Judge, RateLimit};
use super::runner::{JobKey, RETRY_AFTER, key_of};
use super::{Evaluator, template};
use crate::config::JudgeConfig;
use crate::store::{Store, StoreError, WriteOp};
use crate::time::Timestamp;

/// Longest wait between attempts, whatever the backoff or `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A due job and the evaluator it belongs to, as the dispatcher read them.
pub(super) struct Work {
    pub job: EvalJob,
    pub evaluator: Evaluator,
}

pub(super) struct WorkerCtx {
    pub store: Store,
    pub judge: Judge,
    pub limit: RateLimit,
    pub cfg: JudgeConfig,
    pub stop: watch::Receiver<bool>,
}

pub(super) fn worker(
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
