//! Reads of evaluation state: definitions, counters and jobs for the API, and for the runner
//! (through a snapshot) the job queue and its change-log cursor.

use redb::{ReadTransaction, ReadableTable};

use super::snapshot::Snapshot;
use super::{Store, StoreError, codec, tables};
use crate::eval::{EvalJob, EvalStatus, Evaluator, JobState};

/// Most job rows one listing reads.
const JOB_SCAN_CAP: usize = 100_000;

fn evaluators_of(
    tx: &ReadTransaction,
    project: Option<&str>,
) -> Result<Vec<Evaluator>, StoreError> {
    let t = tx.open_table(tables::EVALUATORS)?;
    let mut out = Vec::new();
    let rows = match project {
        Some(p) => t.range((p, "")..)?,
        None => t.range::<(&str, &str)>(..)?,
    };
    for e in rows {
        let (k, v) = e?;
        if project.is_some_and(|p| k.value().0 != p) {
            break;
        }
        out.push(codec::decode_row(v.value())?);
    }
    Ok(out)
}

fn status_of(tx: &ReadTransaction, project: &str, id: &str) -> Result<EvalStatus, StoreError> {
    let t = tx.open_table(tables::EVAL_STATUS)?;
    Ok(t.get((project, id))?
        .map(|v| codec::decode_row(v.value()))
        .transpose()?
        .unwrap_or_default())
}

impl Store {
    /// A project's evaluators, oldest first.
    pub fn evaluators(&self, project: &str) -> Result<Vec<Evaluator>, StoreError> {
        let mut v = evaluators_of(&*self.read_tx()?, Some(project))?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    pub fn evaluator(&self, project: &str, id: &str) -> Result<Option<Evaluator>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::EVALUATORS)?;
        t.get((project, id))?
            .map(|v| codec::decode_row(v.value()))
            .transpose()
    }

    pub fn eval_status(&self, project: &str, id: &str) -> Result<EvalStatus, StoreError> {
        status_of(&*self.read_tx()?, project, id)
    }

    /// An evaluator's jobs, optionally of one state, most recently finished (then queued)
    /// first, at most `limit`.
    pub fn eval_jobs(
        &self,
        project: &str,
        id: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<EvalJob>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::EVAL_JOBS)?;
        let mut out: Vec<EvalJob> = Vec::new();
        for (n, e) in t.range((project, id, "")..)?.enumerate() {
            let (k, v) = e?;
            let (p, ev, _) = k.value();
            if p != project || ev != id || n >= JOB_SCAN_CAP {
                break;
            }
            let job: EvalJob = codec::decode_row(v.value())?;
            if state.is_none_or(|s| s == job.state) {
                out.push(job);
            }
        }
        out.sort_by_key(|j| std::cmp::Reverse((j.finished_at, j.enqueued_at)));
        out.truncate(limit);
        Ok(out)
    }
}

impl Snapshot {
    /// Every evaluator of every project.
    pub fn all_evaluators(&self) -> Result<Vec<Evaluator>, StoreError> {
        evaluators_of(&self.tx, None)
    }

    pub fn eval_status(&self, project: &str, id: &str) -> Result<EvalStatus, StoreError> {
        status_of(&self.tx, project, id)
    }

    /// The change-log sequence the evaluation runner has fully turned into jobs.
    pub fn eval_cursor(&self) -> Result<Option<u64>, StoreError> {
        let meta = self.tx.open_table(tables::META)?;
        meta.get(tables::META_EVAL_CURSOR)?
            .map(|v| tables::read_u64(v.value()))
            .transpose()
    }

    /// Up to `limit` pending jobs, earliest due first.
    pub fn pending_jobs(&self, limit: usize) -> Result<Vec<EvalJob>, StoreError> {
        let due = self.tx.open_table(tables::EVAL_DUE)?;
        let jobs = self.tx.open_table(tables::EVAL_JOBS)?;
        let mut out = Vec::new();
        for e in due.iter()? {
            let (k, _) = e?;
            let (_, p, ev, key) = k.value();
            if let Some(v) = jobs.get((p, ev, key))? {
                out.push(codec::decode_row(v.value())?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
