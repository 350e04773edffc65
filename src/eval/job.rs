//! Evaluation jobs and what finishing one writes: the job row, the evaluator's running status,
//! the score, and the trace of the judge call itself.
//!
//! Ids are derived from (evaluator, target): a job that runs twice (a crash between the judge's
//! answer and the commit) writes the same score and the same judge trace again, never a second
//! one.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::JUDGE_ENVIRONMENT;
use super::def::Evaluator;
use crate::record::{
    Change, Level, ObservationPatch, ObservationType, Patch, ScoreRecord, ScoreSource, ScoreTarget,
    ScoreValue, TimedChange, TracePatch, UsageMap,
};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Pending,
    Done,
    Failed,
    /// The record was gone or no longer matched when its turn came; nothing was asked.
    Skipped,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Done => "DONE",
            JobState::Failed => "FAILED",
            JobState::Skipped => "SKIPPED",
        }
    }
}

/// One record to evaluate with one evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalJob {
    pub project: String,
    pub evaluator_id: String,
    pub trace_id: String,
    pub observation_id: Option<String>,
    pub state: JobState,
    pub due_at: Timestamp,
    pub enqueued_at: Timestamp,
    pub attempts: u32,
    pub error: Option<String>,
    pub finished_at: Option<Timestamp>,
    pub score_id: Option<String>,
}

impl EvalJob {
    pub fn new(
        evaluator: &Evaluator,
        trace_id: &str,
        observation_id: Option<&str>,
        now: Timestamp,
    ) -> EvalJob {
        let delay = i64::try_from(evaluator.delay_seconds).unwrap_or(0) * 1_000_000;
        EvalJob {
            project: evaluator.project_id.clone(),
            evaluator_id: evaluator.id.clone(),
            trace_id: trace_id.to_string(),
            observation_id: observation_id.map(String::from),
            state: JobState::Pending,
            due_at: Timestamp::from_micros(now.micros().saturating_add(delay)),
            enqueued_at: now,
            attempts: 0,
            error: None,
            finished_at: None,
            score_id: None,
        }
    }

    /// `t:<trace id>` or `o:<observation id>`: the job's key within its evaluator.
    pub fn target_key(&self) -> String {
        target_key(&self.trace_id, self.observation_id.as_deref())
    }
}

pub fn target_key(trace_id: &str, observation_id: Option<&str>) -> String {
    match observation_id {
        Some(o) => format!("o:{o}"),
        None => format!("t:{trace_id}"),
    }
}

/// An evaluator's running totals, kept by the writer as jobs are queued and finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStatus {
    pub pending: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Judge tokens (prompt + completion, every attempt) spent so far.
    pub used_tokens: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
}

/// What finishing a job writes, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOutcome {
    pub project: String,
    pub evaluator_id: String,
    pub target_key: String,
    pub state: JobState,
    pub attempts: u32,
    pub error: Option<String>,
    pub tokens: u64,
    pub score_id: Option<String>,
    /// The score and the judge trace (empty for a skipped job).
    pub changes: Vec<TimedChange>,
}

/// One HTTP exchange with the judge, as it is traced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Timestamp,
    pub ended: Timestamp,
    pub model: String,
    pub output: Value,
    pub usage: Option<UsageMap>,
    pub error: Option<String>,
}

/// A uuid-shaped id from SHA-256 of the parts: stable for the same job.
pub fn derived_id(kind: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The finished job's writes: the judge trace with one generation per attempt, and the score
/// when the judge gave a usable answer (`verdict` = value and reasoning).
pub fn outcome(
    ev: &Evaluator,
    job: &EvalJob,
    request_messages: &Value,
    model_parameters: &serde_json::Map<String, Value>,
    attempts: &[Attempt],
    verdict: Result<(ScoreValue, String), String>,
    environment: &str,
) -> EvalOutcome {
    let key = job.target_key();
    let trace_id = derived_id("judge-trace", &[&ev.project_id, &ev.id, &key]);
    let score_id = derived_id("eval-score", &[&ev.project_id, &ev.id, &key]);
    let now = Timestamp::now();
    let started = attempts.first().map_or(now, |a| a.started);
    let ok = verdict.is_ok();
    let output = match &verdict {
        Ok((value, reasoning)) => json!({"score": value_json(value), "reasoning": reasoning}),
        Err(e) => json!({"error": e}),
    };
    let mut changes = Vec::new();
    // No attempt, no call to trace (the job failed before asking).
    if !attempts.is_empty() {
        changes.push(TimedChange {
            at: now,
            change: Change::Trace(TracePatch {
                id: trace_id.clone(),
                timestamp: Some(started),
                name: Patch::Set(format!("eval: {}", ev.name)),
                input: Some(request_messages.clone()),
                output: Some(output),
                metadata: Some(json!({
                    "evaluatorId": ev.id,
                    "targetTraceId": job.trace_id,
                    "targetObservationId": job.observation_id,
                    "scoreId": ok.then_some(&score_id),
                })),
                tags: vec![JUDGE_ENVIRONMENT.to_string()],
                environment: Some(JUDGE_ENVIRONMENT.to_string()),
                ..Default::default()
            }),
        });
    }
    for (i, a) in attempts.iter().enumerate() {
        let mut g =
            ObservationPatch::new(format!("{trace_id}-{}", i + 1), ObservationType::Generation);
        g.trace_id = Some(trace_id.clone());
        g.name = Patch::Set(format!("judge attempt {}", i + 1));
        g.start_time = Some(a.started);
        g.end_time = Some(a.ended);
        g.model = Patch::Set(a.model.clone());
        g.model_parameters = Some(model_parameters.clone());
        g.input = Some(request_messages.clone());
        g.output = Some(a.output.clone());
        g.usage = a.usage.clone();
        g.environment = Some(JUDGE_ENVIRONMENT.to_string());
        if let Some(e) = &a.error {
            g.level = Patch::Set(Level::Error);
            g.status_message = Some(e.clone());
        }
        changes.push(TimedChange {
            at: now,
            change: Change::Observation(g),
        });
    }
    let tokens = attempts
        .iter()
        .filter_map(|a| a.usage.as_ref())
        .map(|u| {
            u.get("total").copied().unwrap_or_else(|| {
                u.get("input").copied().unwrap_or(0) + u.get("output").copied().unwrap_or(0)
            })
        })
        .sum();
    let (state, error) = match verdict {
        Ok((value, reasoning)) => {
            changes.push(TimedChange {
                at: now,
                change: Change::Score(Box::new(ScoreRecord {
                    id: score_id.clone(),
                    target: ScoreTarget::Trace {
                        trace_id: job.trace_id.clone(),
                        observation_id: job.observation_id.clone(),
                    },
                    name: ev.output.score_name.clone(),
                    value,
                    source: ScoreSource::Eval,
                    comment: Some(reasoning).filter(|r| !r.is_empty()),
                    metadata: json!({
                        "evaluatorId": ev.id,
                        "evaluatorName": ev.name,
                        "executionTraceId": trace_id,
                    }),
                    config_id: ev.output.config_id.clone(),
                    queue_id: None,
                    author_user_id: None,
                    environment: environment.to_string(),
                    timestamp: now,
                    created_at: now,
                    updated_at: now,
                })),
            });
            (JobState::Done, None)
        }
        Err(e) => (JobState::Failed, Some(e)),
    };
    EvalOutcome {
        project: ev.project_id.clone(),
        evaluator_id: ev.id.clone(),
        target_key: key,
        state,
        attempts: attempts.len() as u32,
        error,
        tokens,
        score_id: (state == JobState::Done).then_some(score_id),
        changes,
    }
}

/// A job that was not run: no judge call, nothing but the job row and a counter.
pub fn skipped(job: &EvalJob, why: &str) -> EvalOutcome {
    EvalOutcome {
        project: job.project.clone(),
        evaluator_id: job.evaluator_id.clone(),
        target_key: job.target_key(),
        state: JobState::Skipped,
        attempts: 0,
        error: Some(why.to_string()),
        tokens: 0,
        score_id: None,
        changes: Vec::new(),
    }
}

fn value_json(v: &ScoreValue) -> Value {
    match v {
        ScoreValue::Numeric(n) => json!(n),
        ScoreValue::Boolean(b) => json!(b),
        ScoreValue::Categorical { label, .. } => json!(label),
        ScoreValue::Text(s) | ScoreValue::Correction(s) => json!(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("x", &["p", "e", "t:1"]);
        assert_eq!(a, derived_id("x", &["p", "e", "t:1"]));
        assert_ne!(a, derived_id("x", &["p", "e", "t:2"]));
        assert_ne!(a, derived_id("x", &["pe", "", "t:1"]));
        assert_eq!(a.len(), 36);
    }
}
