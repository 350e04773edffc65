//! Online backup and restore. The server opens its file in redb's single-writer mode, so a
//! backup process can open the same file read-only at the same time and copy one consistent
//! snapshot (a read transaction) into a fresh file — no pause in ingestion, no torn copy.

use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, ReadTransaction, ReadableDatabase, ReadableMultimapTable,
    ReadableTable, TableDefinition, WriteTransaction,
};

use super::tables::{self, TableVisitor};
use super::{DB_FILE, SCHEMA_VERSION, StoreError};

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub rows: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

struct Copy<'a> {
    src: &'a ReadTransaction,
    dst: &'a WriteTransaction,
    rows: u64,
}

impl TableVisitor for Copy<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let src = match self.src.open_table(def) {
            Ok(t) => t,
            // A table created by a newer minor version of the layout may be absent: nothing to copy.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut dst = self.dst.open_table(def)?;
        for entry in src.iter()? {
            let (k, v) = entry?;
            dst.insert(k.value(), v.value())?;
            self.rows += 1;
        }
        Ok(())
    }

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let src = match self.src.open_multimap_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut dst = self.dst.open_multimap_table(def)?;
        for entry in src.iter()? {
            let (k, values) = entry?;
            for v in values {
                dst.insert(k.value(), v?.value())?;
                self.rows += 1;
            }
        }
        Ok(())
    }
}

/// redb's page cache. Its default (1 GiB) lets resident memory grow with the file; the kernel's
/// page cache serves re-reads nearly as fast and is not charged to the process, so a small
/// cache keeps memory flat at any data size (measured: BENCHMARKS.md).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// How the server and backups open the file: one writing process, any number of read-only ones.
pub(super) fn open_builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Copies a consistent snapshot of the store in `data_dir` into the new file `dest`, while a
/// server may be writing to it.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<CopyReport, StoreError> {
    let src_path = data_dir.join(DB_FILE);
    if !src_path.exists() {
        return Err(StoreError::DataDir {
            path: data_dir.to_path_buf(),
            reason: format!("no {DB_FILE} in it"),
        });
    }
    let src = open_builder().open_read_only(&src_path)?;
    copy_into(&src.begin_read()?, dest)
}

/// Restores a backup file into `data_dir`, which must not hold a database yet (restoring over
/// live data is refused rather than guessed at). The search index is rebuilt on the next start.
pub fn restore(src: &Path, data_dir: &Path) -> Result<CopyReport, StoreError> {
    let dest = data_dir.join(DB_FILE);
    if dest.exists() {
        return Err(StoreError::DataDir {
            path: data_dir.to_path_buf(),
            reason: format!("it already holds {DB_FILE}; restore into an empty directory"),
        });
    }
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let backup = open_builder().open_read_only(src)?;
    copy_into(&backup.begin_read()?, &dest)
}

fn copy_into(src: &ReadTransaction, dest: &Path) -> Result<CopyReport, StoreError> {
    check_schema(src)?;
    if dest.exists() {
        return Err(StoreError::DataDir {
            path: dest.to_path_buf(),
            reason: "destination exists; choose a new file name".into(),
        });
    }
    // Written under a temporary name and renamed, so a crash never leaves a half backup that
    // looks complete.
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let rows = {
        let mut db = Database::create(&tmp)?;
        let tx = db.begin_write()?;
        let rows = {
            let mut copy = Copy {
                src,
                dst: &tx,
                rows: 0,
            };
            tables::visit_all(&mut copy)?;
            copy.rows
        };
        tx.commit()?;
        db.compact()
            .map_err(|e| StoreError::Io(format!("compacting the copy: {e}")))?;
        rows
    };
    std::fs::rename(&tmp, dest).map_err(|e| StoreError::Io(format!("renaming the copy: {e}")))?;
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(CopyReport {
        rows,
        bytes,
        path: dest.to_path_buf(),
    })
}

pub(super) fn check_schema(src: &ReadTransaction) -> Result<(), StoreError> {
    let meta = src.open_table(tables::META)?;
    let found = meta
        .get(tables::META_SCHEMA)?
        .map(|v| tables::read_u64(v.value()))
        .transpose()?
        .ok_or_else(|| {
            StoreError::Corrupt("not a sightline database (no schema version)".into())
        })?;
    // An older file this binary upgrades on open is as good a source as a current one.
    if found != SCHEMA_VERSION && !super::UPGRADES_FROM.contains(&found) {
        return Err(StoreError::SchemaMismatch {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}
