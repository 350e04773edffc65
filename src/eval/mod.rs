//! LLM-as-a-judge: evaluators that score new traces or observations by asking a judge model.
//!
//! Owns: evaluator definitions and their rules (`def`), which records they take (`filter`),
//! prompt templates (`template`), the judge client and verdict parsing (`judge`), jobs and what
//! finishing one writes (`job`), the runner (`runner`): a thread that follows the store's
//! change log like the search indexer and turns matching new records into jobs, and worker
//! threads (`worker`) that call the judge and write each score with the judge call's own
//! trace. Must not touch: redb (state goes through the writer's `Eval*` operations and is read
//! back through snapshots), HTTP serving, or the ingest path — nothing here runs while a
//! request waits.

mod def;
mod filter;
mod job;
pub mod judge;
mod runner;
pub mod template;
mod worker;

pub use def::{DEFAULT_DELAY_SECONDS, DefError, Evaluator, Output, Target};
pub use filter::{Filter, sampled};
pub use job::{EvalJob, EvalOutcome, EvalStatus, JobState, derived_id, target_key};
pub use runner::Evals;

/// Environment of every judge trace. Evaluators never take records of this environment, so a
/// judge call is never itself judged.
pub const JUDGE_ENVIRONMENT: &str = "sightline-eval";
