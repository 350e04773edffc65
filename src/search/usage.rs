//! Where the search index's bytes go, per field and per part of the index (`sightline
//! disk-usage`): the figures that say which field a change to the schema would save on.
//!
//! Owns: reading tantivy's space accounting of the last commit. Must not: write to the index or
//! hold it open; it runs beside a live server, whose indexer owns the directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use tantivy::space_usage::PerFieldSpaceUsage;
use tantivy::{Index, ReloadPolicy};

use super::SearchError;

/// The bytes one field takes in the committed segments, by part of the index.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldBytes {
    pub field: String,
    pub term_dictionary: u64,
    pub postings: u64,
    pub positions: u64,
    pub fast_field: u64,
    pub norms: u64,
    pub total: u64,
}

/// The committed index's bytes: the documents' stored values, the deletion bitsets and every
/// field, the largest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexUsage {
    pub segments: usize,
    pub documents: u64,
    pub deleted_documents: u64,
    /// The stored values (each document's reference to its record) and their offsets.
    pub doc_store: u64,
    pub deletes: u64,
    pub fields: Vec<FieldBytes>,
}

/// The breakdown of the index committed in `dir`; `None` when nothing was ever committed there.
/// Files the server merges away meanwhile can make it fail: the caller reports that and the
/// rest of its figures.
pub fn usage(dir: &Path) -> Result<Option<IndexUsage>, SearchError> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = Index::open_in_dir(dir)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher = reader.searcher();
    let space = searcher.space_usage().map_err(|e| SearchError::Dir {
        path: dir.to_path_buf(),
        reason: format!("reading its files' sizes: {e}"),
    })?;
    let mut fields: BTreeMap<String, FieldBytes> = BTreeMap::new();
    let mut add = |part: &PerFieldSpaceUsage, slot: fn(&mut FieldBytes) -> &mut u64| {
        for f in part.fields() {
            let bytes = f.total().get_bytes();
            let entry = fields
                .entry(f.field_name().to_string())
                .or_insert_with(|| FieldBytes {
                    field: f.field_name().to_string(),
                    ..FieldBytes::default()
                });
            *slot(entry) += bytes;
            entry.total += bytes;
        }
    };
    let (mut doc_store, mut deletes) = (0, 0);
    for segment in space.segments() {
        add(segment.termdict(), |f| &mut f.term_dictionary);
        add(segment.postings(), |f| &mut f.postings);
        add(segment.positions(), |f| &mut f.positions);
        add(segment.fast_fields(), |f| &mut f.fast_field);
        add(segment.fieldnorms(), |f| &mut f.norms);
        doc_store += segment.store().total().get_bytes();
        deletes += segment.deletes().get_bytes();
    }
    let mut fields: Vec<FieldBytes> = fields.into_values().collect();
    fields.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.field.cmp(&b.field)));
    let readers = searcher.segment_readers();
    Ok(Some(IndexUsage {
        segments: readers.len(),
        documents: readers.iter().map(|r| u64::from(r.num_docs())).sum(),
        deleted_documents: readers
            .iter()
            .map(|r| u64::from(r.num_deleted_docs()))
            .sum(),
        doc_store,
        deletes,
        fields,
    }))
}
