//! The writer's side of evaluations: definitions, the job queue and finishing a job. A job row
//! and its due-index entry are written together; finishing a job writes the score, the judge
//! trace, the job row and the evaluator's counters in one transaction, so a crash leaves the job
//! either pending (it runs again, to the same ids) or finished, never half of each.

use redb::ReadableTable;

use super::super::{StoreError, codec, tables};
use super::Tx;
use crate::eval::{EvalJob, EvalOutcome, EvalStatus, Evaluator, JobState};
use crate::record::Change;
use crate::time::Timestamp;

impl Tx<'_> {
    pub(super) fn put_evaluator(&mut self, e: &Evaluator) -> Result<(), StoreError> {
        self.tx.open_table(tables::EVALUATORS)?.insert(
            (e.project_id.as_str(), e.id.as_str()),
            codec::encode_row(e)?.as_slice(),
        )?;
        Ok(())
    }

    pub(super) fn delete_evaluator(&mut self, project: &str, id: &str) -> Result<(), StoreError> {
        self.tx
            .open_table(tables::EVALUATORS)?
            .remove((project, id))?;
        self.tx
            .open_table(tables::EVAL_STATUS)?
            .remove((project, id))?;
        let jobs: Vec<(String, EvalJob)> = {
            let t = self.tx.open_table(tables::EVAL_JOBS)?;
            let mut out = Vec::new();
            for e in t.range((project, id, "")..)? {
                let (k, v) = e?;
                let (p, ev, key) = k.value();
                if p != project || ev != id {
                    break;
                }
                out.push((key.to_string(), codec::decode_row(v.value())?));
            }
            out
        };
        let mut t = self.tx.open_table(tables::EVAL_JOBS)?;
        let mut due = self.tx.open_table(tables::EVAL_DUE)?;
        for (key, job) in &jobs {
            t.remove((project, id, key.as_str()))?;
            if job.state == JobState::Pending {
                due.remove((job.due_at.micros(), project, id, key.as_str()))?;
            }
        }
        Ok(())
    }

    fn eval_status(&self, project: &str, id: &str) -> Result<EvalStatus, StoreError> {
        let t = self.tx.open_table(tables::EVAL_STATUS)?;
        Ok(t.get((project, id))?
            .map(|v| codec::decode_row(v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    fn put_eval_status(
        &mut self,
        project: &str,
        id: &str,
        s: &EvalStatus,
    ) -> Result<(), StoreError> {
        self.tx
            .open_table(tables::EVAL_STATUS)?
            .insert((project, id), codec::encode_row(s)?.as_slice())?;
        Ok(())
    }

    pub(super) fn eval_enqueue(
        &mut self,
        jobs: &[EvalJob],
        cursor: Option<u64>,
        requeue_failed: bool,
    ) -> Result<(), StoreError> {
        for job in jobs {
            let (p, ev, key) = (
                job.project.as_str(),
                job.evaluator_id.as_str(),
                job.target_key(),
            );
            let exists = self
                .tx
                .open_table(tables::EVALUATORS)?
                .get((p, ev))?
                .is_some();
            if !exists {
                continue;
            }
            let old: Option<EvalJob> = self
                .tx
                .open_table(tables::EVAL_JOBS)?
                .get((p, ev, key.as_str()))?
                .map(|v| codec::decode_row(v.value()))
                .transpose()?;
            let mut status = self.eval_status(p, ev)?;
            match old.as_ref().map(|o| o.state) {
                None => {}
                Some(JobState::Failed | JobState::Skipped) if requeue_failed => {}
                Some(_) => continue,
            }
            let mut row = job.clone();
            row.state = JobState::Pending;
            self.tx
                .open_table(tables::EVAL_JOBS)?
                .insert((p, ev, key.as_str()), codec::encode_row(&row)?.as_slice())?;
            self.tx
                .open_table(tables::EVAL_DUE)?
                .insert((row.due_at.micros(), p, ev, key.as_str()), ())?;
            status.pending += 1;
            if let Some(old) = old {
                // A failed or skipped job queued again leaves its old tally.
                match old.state {
                    JobState::Failed => status.failed = status.failed.saturating_sub(1),
                    JobState::Skipped => status.skipped = status.skipped.saturating_sub(1),
                    JobState::Pending | JobState::Done => {}
                }
            }
            self.put_eval_status(p, ev, &status)?;
        }
        if let Some(c) = cursor {
            self.tx
                .open_table(tables::META)?
                .insert(tables::META_EVAL_CURSOR, c.to_le_bytes().as_slice())?;
        }
        Ok(())
    }

    pub(super) fn eval_complete(&mut self, o: &EvalOutcome) -> Result<(), StoreError> {
        let (p, ev, key) = (
            o.project.as_str(),
            o.evaluator_id.as_str(),
            o.target_key.as_str(),
        );
        let job: Option<EvalJob> = self
            .tx
            .open_table(tables::EVAL_JOBS)?
            .get((p, ev, key))?
            .map(|v| codec::decode_row(v.value()))
            .transpose()?;
        // Deleted evaluator, or already finished by an earlier run: nothing to write.
        let Some(mut job) = job.filter(|j| j.state == JobState::Pending) else {
            return Ok(());
        };
        self.tx
            .open_table(tables::EVAL_DUE)?
            .remove((job.due_at.micros(), p, ev, key))?;
        let now = Timestamp::now();
        job.state = o.state;
        job.attempts = o.attempts;
        job.error = o.error.clone();
        job.finished_at = Some(now);
        job.score_id = o.score_id.clone();
        self.tx
            .open_table(tables::EVAL_JOBS)?
            .insert((p, ev, key), codec::encode_row(&job)?.as_slice())?;
        let mut status = self.eval_status(p, ev)?;
        status.pending = status.pending.saturating_sub(1);
        status.used_tokens = status.used_tokens.saturating_add(o.tokens);
        match o.state {
            JobState::Done => {
                status.succeeded += 1;
                status.last_success_at = Some(now);
            }
            JobState::Failed => {
                status.failed += 1;
                status.last_error = o.error.clone();
                status.last_error_at = Some(now);
            }
            JobState::Skipped | JobState::Pending => status.skipped += 1,
        }
        self.put_eval_status(p, ev, &status)?;
        for c in &o.changes {
            match &c.change {
                Change::Trace(t) => self.trace(p, t.clone(), c.at)?,
                Change::Observation(ob) => self.observation(p, ob, c.at)?,
                Change::Score(s) => self.score(p, s)?,
            }
        }
        self.flush_traces(p)
    }
}
