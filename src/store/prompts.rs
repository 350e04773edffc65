//! Prompt versions on disk (`prompts`: (project, name, version) → `PromptVersion` JSON): the
//! read queries, and the writer's half of a prompt write.
//!
//! A write reads the prompt's versions, runs `prompt::plan` and writes its result, all in the
//! writer's transaction: two concurrent creates get consecutive versions and a label is never on
//! two versions. Prompts are not records: no change-log entry, nothing derived follows them.

use std::sync::{Arc, Mutex};

use redb::{ReadableTable, WriteTransaction};

use super::{Store, StoreError, codec, tables};
use crate::prompt::{self, Action, PromptError, PromptVersion};
use crate::time::Timestamp;

/// What a prompt write came to: the version it created or relabelled, or why it was refused.
pub type PromptResult = Result<Option<PromptVersion>, PromptError>;

/// Where the writer leaves a prompt write's result for the request that made it. Filled inside
/// the transaction; read only after the commit succeeded, so it never reports a rolled-back
/// write (a group retried op by op fills it again).
#[derive(Debug, Clone, Default)]
pub struct PromptOutcome(Arc<Mutex<Option<PromptResult>>>);

impl PromptOutcome {
    fn set(&self, r: PromptResult) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(r);
        }
    }

    /// The result, once the write committed; `None` if the writer never ran it.
    pub fn take(&self) -> Option<PromptResult> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// One write to the versions of prompt `name` in `project`.
#[derive(Debug)]
pub struct PromptWrite {
    pub project: String,
    pub name: String,
    pub action: Action,
    pub outcome: PromptOutcome,
}

fn versions_of(
    t: &impl ReadableTable<(&'static str, &'static str, u32), &'static [u8]>,
    project: &str,
    name: &str,
) -> Result<Vec<PromptVersion>, StoreError> {
    let mut out = Vec::new();
    for row in t.range((project, name, 0u32)..=(project, name, u32::MAX))? {
        out.push(codec::decode_row(row?.1.value())?);
    }
    Ok(out)
}

/// Runs inside the writer's transaction. A refused write (bad type, unknown version) writes
/// nothing and is not a storage error: the request answers 400/404, its neighbours commit.
pub(super) fn apply(tx: &WriteTransaction, w: &PromptWrite) -> Result<(), StoreError> {
    let mut t = tx.open_table(tables::PROMPTS)?;
    let existing = versions_of(&t, &w.project, &w.name)?;
    let plan = match prompt::plan(&w.name, &existing, &w.action, Timestamp::now()) {
        Ok(plan) => plan,
        Err(e) => {
            w.outcome.set(Err(e));
            return Ok(());
        }
    };
    for v in &plan.remove {
        t.remove((w.project.as_str(), w.name.as_str(), *v))?;
    }
    for v in &plan.put {
        t.insert(
            (w.project.as_str(), w.name.as_str(), v.version),
            codec::encode_row(v)?.as_slice(),
        )?;
    }
    w.outcome.set(Ok(plan.result));
    Ok(())
}

impl Store {
    /// Every version of one prompt, oldest first.
    pub fn prompt_versions(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<PromptVersion>, StoreError> {
        let tx = self.read_tx()?;
        versions_of(&tx.open_table(tables::PROMPTS)?, project, name)
    }

    /// Every version of every prompt of the project, by name then version.
    pub fn prompts(&self, project: &str) -> Result<Vec<PromptVersion>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::PROMPTS)?;
        let mut out = Vec::new();
        for row in t.range((project, "", 0u32)..)? {
            let (k, v) = row?;
            if k.value().0 != project {
                break;
            }
            out.push(codec::decode_row(v.value())?);
        }
        Ok(out)
    }

    /// The id of one prompt version, if it exists: a point lookup, cheap enough per observation.
    pub fn prompt_id(
        &self,
        project: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<String>, StoreError> {
        let Ok(version) = u32::try_from(version) else {
            return Ok(None);
        };
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::PROMPTS)?;
        t.get((project, name, version))?
            .map(|v| codec::decode_row::<PromptVersion>(v.value()).map(|p| p.id))
            .transpose()
    }
}
