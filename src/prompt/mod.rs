//! Prompt management: named prompt templates (text or chat) kept as numbered versions, with
//! deployment labels (`production`, `staging`, …) that point at one version each, and Langfuse's
//! rules for them.
//!
//! Owns: the stored version type, validation of create requests (`validate`), and the pure
//! "apply this write to a prompt's existing versions" logic (`plan`): numbering, the `latest`
//! label, labels moving between versions, tags shared by every version, deletes. The writer runs
//! `plan` inside its transaction, so numbering and label moves are atomic under concurrent writes.
//! Must not touch: storage, HTTP, wire shapes.

mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;

pub use validate::{parse_create, parse_labels, validate_label};

/// Always on the newest version; managed here, never set by a client.
pub const LATEST: &str = "latest";
/// What a fetch without label or version serves.
pub const PRODUCTION: &str = "production";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// The request breaks a rule (400).
    #[error("{0}")]
    Invalid(String),
    /// No such prompt, version or label (404). The text is Langfuse's, which clients may show.
    #[error("{0}")]
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptType {
    Text,
    Chat,
}

impl PromptType {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptType::Text => "text",
            PromptType::Chat => "chat",
        }
    }
}

/// One stored version of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    pub id: String,
    pub name: String,
    pub version: u32,
    pub kind: PromptType,
    /// A string (text) or an array of messages and placeholders (chat), as validated on create.
    pub prompt: Value,
    pub config: Value,
    pub labels: Vec<String>,
    pub tags: Vec<String>,
    pub commit_message: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl PromptVersion {
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// A validated request for a new version.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrompt {
    pub name: String,
    pub kind: PromptType,
    pub prompt: Value,
    pub config: Value,
    pub labels: Vec<String>,
    /// `None` keeps the tags the prompt already has.
    pub tags: Option<Vec<String>>,
    pub commit_message: Option<String>,
    pub created_by: String,
}

/// Which version(s) a read or delete means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Label(String),
    Version(u32),
}

impl Selector {
    pub fn matches(&self, v: &PromptVersion) -> bool {
        match self {
            Selector::Label(l) => v.has_label(l),
            Selector::Version(n) => v.version == *n,
        }
    }

    /// Langfuse's 404 text for a prompt without such a version or label.
    pub fn not_found(&self, name: &str) -> PromptError {
        PromptError::NotFound(match self {
            Selector::Label(l) => format!("Prompt not found: '{name}' with label '{l}'"),
            Selector::Version(n) => format!("Prompt not found: '{name}' with version {n}"),
        })
    }
}

/// The version a fetch means: the one with the label or number, `production` when neither.
pub fn find<'a>(versions: &'a [PromptVersion], sel: &Selector) -> Option<&'a PromptVersion> {
    versions.iter().find(|v| sel.matches(v))
}

/// A write to one prompt (all versions of one name in one project).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new version with this id.
    Create { prompt: Box<NewPrompt>, id: String },
    /// Adds labels to a version, taking them from whichever versions had them.
    Relabel { version: u32, labels: Vec<String> },
    /// Deletes every version, or those the selector matches.
    Delete(Option<Selector>),
}

/// What a write does to the stored versions.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Versions to (re)write.
    pub put: Vec<PromptVersion>,
    /// Version numbers to remove.
    pub remove: Vec<u32>,
    /// What the request answers with: the created or relabelled version.
    pub result: Option<PromptVersion>,
}

/// Applies `action` to `existing` (every version of the prompt `name`, any order).
pub fn plan(
    name: &str,
    existing: &[PromptVersion],
    action: &Action,
    now: Timestamp,
) -> Result<Plan, PromptError> {
    match action {
        Action::Create { prompt, id } => plan_create(existing, prompt, id, now),
        Action::Relabel { version, labels } => plan_relabel(name, existing, *version, labels, now),
        Action::Delete(sel) => plan_delete(name, existing, sel.as_ref(), now),
    }
}

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// Drops `labels` from every version but `keep`; returns the versions that changed.
fn take_labels(
    existing: &[PromptVersion],
    labels: &[String],
    keep: Option<u32>,
    now: Timestamp,
) -> Vec<PromptVersion> {
    existing
        .iter()
        .filter(|v| Some(v.version) != keep && v.labels.iter().any(|l| labels.contains(l)))
        .map(|v| {
            let mut v = v.clone();
            v.labels.retain(|l| !labels.contains(l));
            v.updated_at = now;
            v
        })
        .collect()
}

fn plan_create(
    existing: &[PromptVersion],
    new: &NewPrompt,
    id: &str,
    now: Timestamp,
) -> Result<Plan, PromptError> {
    let latest = existing.iter().max_by_key(|v| v.version);
    if let Some(latest) = latest
        && latest.kind != new.kind
    {
        return Err(PromptError::Invalid(format!(
            "prompt {:?} is a {} prompt (version {}); a prompt keeps its type across versions, \
             so create the {} prompt under another name",
            new.name,
            latest.kind.as_str(),
            latest.version,
            new.kind.as_str()
        )));
    }
    let version = match latest {
        None => 1,
        Some(l) => l.version.checked_add(1).ok_or_else(|| {
            PromptError::Invalid(format!("prompt {:?} has no version numbers left", new.name))
        })?,
    };
    let labels = dedup(
        new.labels
            .iter()
            .cloned()
            .chain(std::iter::once(LATEST.to_string())),
    );
    let tags = dedup(
        new.tags
            .clone()
            .or_else(|| latest.map(|l| l.tags.clone()))
            .unwrap_or_default(),
    );
    let mut touched = take_labels(existing, &labels, None, now);
    if latest.is_some_and(|l| !same_set(&l.tags, &tags)) {
        for v in existing {
            match touched.iter_mut().find(|t| t.version == v.version) {
                Some(t) => t.tags = tags.clone(),
                None => {
                    let mut v = v.clone();
                    v.tags = tags.clone();
                    v.updated_at = now;
                    touched.push(v);
                }
            }
        }
    }
    let created = PromptVersion {
        id: id.to_string(),
        name: new.name.clone(),
        version,
        kind: new.kind,
        prompt: new.prompt.clone(),
        config: new.config.clone(),
        labels,
        tags,
        commit_message: new.commit_message.clone(),
        created_by: new.created_by.clone(),
        created_at: now,
        updated_at: now,
    };
    touched.push(created.clone());
    Ok(Plan {
        put: touched,
        remove: Vec::new(),
        result: Some(created),
    })
}

fn plan_relabel(
    name: &str,
    existing: &[PromptVersion],
    version: u32,
    labels: &[String],
    now: Timestamp,
) -> Result<Plan, PromptError> {
    let target = existing
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| Selector::Version(version).not_found(name))?;
    let labels = dedup(labels.iter().cloned());
    if labels.iter().any(|l| l == LATEST) {
        return Err(PromptError::Invalid(format!(
            "the {LATEST:?} label always marks the newest version and cannot be set; \
             leave it out of newLabels"
        )));
    }
    let mut put = take_labels(existing, &labels, Some(version), now);
    let mut updated = target.clone();
    updated.labels = dedup(target.labels.iter().cloned().chain(labels));
    updated.updated_at = now;
    put.push(updated.clone());
    Ok(Plan {
        put,
        remove: Vec::new(),
        result: Some(updated),
    })
}

fn plan_delete(
    name: &str,
    existing: &[PromptVersion],
    sel: Option<&Selector>,
    now: Timestamp,
) -> Result<Plan, PromptError> {
    let (gone, kept): (Vec<&PromptVersion>, Vec<&PromptVersion>) = existing
        .iter()
        .partition(|v| sel.is_none_or(|s| s.matches(v)));
    if gone.is_empty() {
        return Err(match sel {
            Some(s) => s.not_found(name),
            None => PromptError::NotFound(format!("Prompt not found: '{name}'")),
        });
    }
    let mut put = Vec::new();
    // The newest remaining version inherits `latest` when its holder goes.
    if gone.iter().any(|v| v.has_label(LATEST))
        && !kept.iter().any(|v| v.has_label(LATEST))
        && let Some(newest) = kept.iter().max_by_key(|v| v.version)
    {
        let mut v = (*newest).clone();
        v.labels.push(LATEST.to_string());
        v.updated_at = now;
        put.push(v);
    }
    Ok(Plan {
        put,
        remove: gone.iter().map(|v| v.version).collect(),
        result: None,
    })
}

/// One prompt in the list: its matching versions summarised (Langfuse's `PromptMeta`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSummary {
    pub name: String,
    pub kind: PromptType,
    pub versions: Vec<u32>,
    pub labels: Vec<String>,
    pub tags: Vec<String>,
    pub last_updated_at: Timestamp,
    pub last_config: Value,
}

/// Filters of the prompt list; each applies to versions, and a prompt is listed when any of its
/// versions match.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub name: Option<String>,
    pub label: Option<String>,
    pub tag: Option<String>,
    pub version: Option<u32>,
    pub from_updated: Option<Timestamp>,
    pub to_updated: Option<Timestamp>,
}

impl ListFilter {
    fn matches(&self, v: &PromptVersion) -> bool {
        self.name.as_ref().is_none_or(|n| *n == v.name)
            && self.label.as_ref().is_none_or(|l| v.has_label(l))
            && self.tag.as_ref().is_none_or(|t| v.tags.contains(t))
            && self.version.is_none_or(|n| v.version == n)
            && self.from_updated.is_none_or(|t| v.updated_at >= t)
            && self.to_updated.is_none_or(|t| v.updated_at < t)
    }
}

/// Summaries of the prompts with matching versions, ordered by name. `versions` must be sorted
/// by (name, version), as the store returns them.
pub fn summarize(versions: &[PromptVersion], filter: &ListFilter) -> Vec<PromptSummary> {
    let mut out: Vec<PromptSummary> = Vec::new();
    for v in versions.iter().filter(|v| filter.matches(v)) {
        match out.last_mut() {
            Some(s) if s.name == v.name => {
                s.versions.push(v.version);
                for l in &v.labels {
                    if !s.labels.contains(l) {
                        s.labels.push(l.clone());
                    }
                }
                if v.updated_at >= s.last_updated_at {
                    s.last_updated_at = v.updated_at;
                    s.last_config = v.config.clone();
                }
            }
            // Tags are shared by every version, so the first one's are the prompt's.
            _ => out.push(PromptSummary {
                name: v.name.clone(),
                kind: v.kind,
                versions: vec![v.version],
                labels: v.labels.clone(),
                tags: v.tags.clone(),
                last_updated_at: v.updated_at,
                last_config: v.config.clone(),
            }),
        }
    }
    for s in &mut out {
        s.labels.sort();
    }
    out
}
