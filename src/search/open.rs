//! Opening the index directory: whether an existing index can be resumed (its commit payload,
//! schema version and fields) or must be wiped and rebuilt.
//!
//! Owns: the commit payload format. Must not read the store or write documents (the indexer
//! does).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, ReloadPolicy};

use super::SearchError;
use super::schema::{Fields, SCHEMA_VERSION};
use super::text::{index_analyzer, keyword_analyzer};

/// What the last commit says about the index (stored as JSON in the commit payload).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub schema: u64,
    /// Every change-log entry up to this sequence is reflected.
    pub seq: u64,
    /// False while a rebuild is under way.
    pub complete: bool,
}

/// How an opened index must be brought up to date.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Resume(u64),
    Rebuild(String),
}

/// Opens the index in `dir`, or wipes and recreates it when it is missing, unreadable, of
/// another schema version, or left by an unfinished rebuild.
pub fn open_index(dir: &Path, fields: &Fields) -> Result<(Index, Start), SearchError> {
    let start = if dir.join("meta.json").exists() {
        match Index::open_in_dir(dir) {
            Ok(index) => match check(&index, fields) {
                Ok(seq) => Some((index, Start::Resume(seq))),
                Err(reason) => {
                    drop(index);
                    wipe(dir)?;
                    Some((create(dir, fields)?, Start::Rebuild(reason)))
                }
            },
            Err(e) => {
                wipe(dir)?;
                Some((
                    create(dir, fields)?,
                    Start::Rebuild(format!("the index is unreadable ({e})")),
                ))
            }
        }
    } else {
        None
    };
    let (index, start) = match start {
        Some(s) => s,
        None => {
            wipe(dir)?;
            (
                create(dir, fields)?,
                Start::Rebuild("there is no index yet".into()),
            )
        }
    };
    index
        .tokenizers()
        .register(super::schema::TEXT_TOKENIZER, index_analyzer());
    index
        .tokenizers()
        .register(super::schema::KEYWORD_TOKENIZER, keyword_analyzer());
    Ok((index, start))
}

/// The sequence an existing index resumes from, or why it must be rebuilt.
fn check(index: &Index, fields: &Fields) -> Result<u64, String> {
    let metas = index
        .load_metas()
        .map_err(|e| format!("its metadata is unreadable ({e})"))?;
    let payload: Payload = metas
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or("it has no commit payload")?;
    if payload.schema != SCHEMA_VERSION {
        return Err(format!(
            "it has schema version {}, this binary writes {SCHEMA_VERSION}",
            payload.schema
        ));
    }
    if index.schema() != fields.schema {
        return Err("its fields differ from this binary's".into());
    }
    if !payload.complete {
        return Err("a previous rebuild did not finish".into());
    }
    Ok(payload.seq)
}

fn wipe(dir: &Path) -> Result<(), SearchError> {
    let err = |e: std::io::Error| SearchError::Dir {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

fn create(dir: &Path, fields: &Fields) -> Result<Index, SearchError> {
    Ok(Index::create_in_dir(dir, fields.schema.clone())?)
}

pub fn reader(index: &Index) -> Result<IndexReader, SearchError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?)
}
