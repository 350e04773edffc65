//! The record store: every trace, observation, score, project and key, in one redb file.
//!
//! Owns: the on-disk layout (tables and key encoding, see ARCHITECTURE.md "On disk"), the single
//! writer thread that group-commits all writes, and the read queries the API needs. Must not
//! touch: HTTP, wire formats, authentication decisions. Derived state (search index, rollups)
//! follows the change log kept here and never writes to it.

pub mod backup;
pub(crate) mod codec;
mod compact;
mod dict;
mod eval;
mod expire;
pub mod faults;
pub mod handoff;
mod prompts;
mod read;
mod snapshot;
pub(crate) mod tables;
mod trace_count;
mod usage;
pub(crate) mod values;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

pub use codec::{Io, ObsSummary};
pub use compact::Compaction;
pub use expire::{Candidates, ExpireCounts, Tally, TimeKey};
pub use handoff::{Handoff, RecordKind, Taken};
pub use prompts::{PromptOutcome, PromptResult, PromptWrite};
pub use read::{
    ObservationQuery, Page, ScoreQuery, SessionRecord, TraceField, TraceOrder, TraceQuery, Window,
};
pub use snapshot::{LogEntry, RecordKey, Scanned, Snapshot};
pub use tables::ChangeRef;
pub use usage::{DiskUsage, TableUsage};
#[cfg(test)]
pub use write::NoPrices;
pub use write::{Pricer, WriteOp, Writer, WriterStats};

use crate::record::ObservationRecord;
use crate::time::Timestamp;

/// Bumped when the key layout or row encoding changes incompatibly. Version 2: values may be
/// zstd-compressed with the built-in dictionary (`codec` tag 3), which version 1 binaries
/// cannot read. Version 3: rows carry their payload in one zstd frame (`codec` tag 5), and
/// traces carry theirs too (in version 2 every trace payload was in `trace_io`). Version 4:
/// change-log entries are binary (`codec` tag 6). Version 5: trace and observation rows refer
/// to their values in `record_values` (`codec` tag 9, see `values`).
pub const SCHEMA_VERSION: u64 = 5;
/// Older versions this binary reads, and upgrades on open by rewriting the version number:
/// they differ only in never having written the newer tags (and trace payloads being in
/// `trace_io`, where reads still look), and their tags are still read.
pub const UPGRADES_FROM: &[u64] = &[1, 2, 3, 4];
const DB_FILE: &str = "sightline.redb";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("could not encode a value: {0}")]
    Encode(String),
    #[error("the write queue is full; retry shortly")]
    Busy,
    #[error("internal error while writing ({0}); nothing was written")]
    Internal(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("the store was opened read-only; writes go through the running server")]
    ReadOnly,
    #[error("the disk is full; nothing was written: {0}")]
    DiskFull(String),
    #[error("storage is recovering from an i/o error; retry shortly")]
    Unavailable,
    #[error(
        "data directory has schema version {found}, this binary reads {expected}; use a matching release"
    )]
    SchemaMismatch { found: u64, expected: u64 },
    #[error("data directory {path} is unusable: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

/// A full disk is told apart from other I/O failures: it is the operator's to fix, clients may
/// retry, and the answer says so (507).
fn storage_error(e: &(dyn std::error::Error + 'static)) -> StoreError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::StorageFull
        {
            return StoreError::DiskFull(e.to_string());
        }
        cur = err.source();
    }
    let text = e.to_string();
    if text.contains("No space left") || text.contains("no space left") {
        return StoreError::DiskFull(text);
    }
    StoreError::Io(text)
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                storage_error(&e)
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A project: the unit of tenancy. Every key and record belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub org_name: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// A project API key. The secret is never stored, only its salted hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub public_key: String,
    pub project_id: String,
    /// Hex SHA-256 of `salt || secret`.
    pub secret_hash: String,
    pub salt: String,
    /// `sk-lf-...abcd`, for display only.
    pub display_secret: String,
    pub note: Option<String>,
    pub created_at: Timestamp,
}

/// A dashboard user; the password is stored as an argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub project_ids: Vec<String>,
    pub created_at: Timestamp,
}

/// The open database, swappable in place. After an I/O error (a full disk, a failed fsync) redb
/// refuses every later operation until the file is reopened; the writer reopens it here, so
/// writes resume once the disk has room again without restarting the process. While the file
/// cannot be opened for writing (opening writes too), it is opened read-only so reads go on.
pub(crate) struct DbSlot {
    current: std::sync::RwLock<Option<Handle>>,
    reopening: std::sync::Mutex<()>,
    path: PathBuf,
    faults: Option<Arc<faults::FaultPlan>>,
    /// Opened by a reader process (export, forward) beside a running server: never opened for
    /// writing, so such a process can neither take the server's lock nor create a file.
    read_only: bool,
}

#[derive(Clone)]
enum Handle {
    ReadWrite(Arc<Database>),
    ReadOnly(Arc<redb::ReadOnlyDatabase>),
}

impl DbSlot {
    fn open_db(
        path: &Path,
        faults: Option<Arc<faults::FaultPlan>>,
    ) -> Result<Database, StoreError> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let file = faults::DataFile::open(path, faults).map_err(|e| StoreError::DataDir {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        backup::open_builder()
            .create_with_backend(file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::DataDir {
                    path: dir,
                    reason: "another sightline process has it open".into(),
                },
                other => StoreError::from(other),
            })
    }

    /// The open handle; if none is open (a reopen failed), tries again first.
    fn handle(&self) -> Result<Handle, StoreError> {
        let current = self
            .current
            .read()
            .map_err(|_| StoreError::Unavailable)?
            .clone();
        match current {
            Some(h) => Ok(h),
            None => {
                self.reopen()?;
                self.current
                    .read()
                    .map_err(|_| StoreError::Unavailable)?
                    .clone()
                    .ok_or(StoreError::Unavailable)
            }
        }
    }

    /// A read transaction on whatever handle is open.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        Ok(match self.handle()? {
            // This process's writer registers a dictionary before any value names it.
            Handle::ReadWrite(db) => db.begin_read()?,
            Handle::ReadOnly(db) => {
                let tx = db.begin_read()?;
                // Another process may be writing, and may have trained a dictionary since.
                dict::refresh(&tx)?;
                tx
            }
        })
    }

    /// The writable database; reopens it for writing first if it is currently read-only.
    pub(crate) fn writable(&self) -> Result<Arc<Database>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        if let Handle::ReadWrite(db) = self.handle()? {
            return Ok(db);
        }
        self.reopen()?;
        match self.handle()? {
            Handle::ReadWrite(db) => Ok(db),
            Handle::ReadOnly(_) => Err(StoreError::Unavailable),
        }
    }

    /// Closes and reopens the file: for writing if it can, else read-only. Waits (bounded) for
    /// in-flight users of the old handle, since the file lock lives until the last one is gone.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reopening.lock().map_err(|_| StoreError::Unavailable)?;
        let old = self
            .current
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .take();
        if let Some(old) = old {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let busy = |h: &Handle| match h {
                Handle::ReadWrite(db) => Arc::strong_count(db) > 1,
                Handle::ReadOnly(db) => Arc::strong_count(db) > 1,
            };
            while busy(&old) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(old);
        }
        let opened = if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Self::open_db(&self.path, self.faults.clone())
        };
        let (handle, result) = match opened {
            Ok(db) => (Handle::ReadWrite(Arc::new(db)), Ok(())),
            Err(write_err) => {
                let ro = backup::open_builder()
                    .open_read_only(&self.path)
                    .map_err(StoreError::from)?;
                // A reader process wanted read-only all along: that is success, not a fallback.
                let result = if self.read_only {
                    Ok(())
                } else {
                    Err(write_err)
                };
                (Handle::ReadOnly(Arc::new(ro)), result)
            }
        };
        *self.current.write().map_err(|_| StoreError::Unavailable)? = Some(handle);
        result
    }
}

/// A logged-in dashboard session, keyed by the hash of its token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSessionRecord {
    pub email: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Handle to the store: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    slot: Arc<DbSlot>,
    writer: Writer,
    path: PathBuf,
    /// Set on a handle from `pinned`: its reads share one read transaction, opened by the first.
    pin: Option<Arc<OnceLock<redb::ReadTransaction>>>,
}

/// A read transaction: the pinned one a handle shares, or one of its own.
pub(crate) enum Tx<'a> {
    Pinned(&'a redb::ReadTransaction),
    Own(redb::ReadTransaction),
}

impl std::ops::Deref for Tx<'_> {
    type Target = redb::ReadTransaction;

    fn deref(&self) -> &redb::ReadTransaction {
        match self {
            Tx::Pinned(tx) => tx,
            Tx::Own(tx) => tx,
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        queue_capacity: usize,
        pricer: Arc<dyn Pricer>,
    ) -> Result<Store, StoreError> {
        Self::open_with_faults(data_dir, queue_capacity, pricer, None)
    }

    /// `open`, with storage faults injectable through `faults` (tests).
    pub fn open_with_faults(
        data_dir: &Path,
        queue_capacity: usize,
        pricer: Arc<dyn Pricer>,
        faults: Option<Arc<faults::FaultPlan>>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(DB_FILE);
        let db = DbSlot::open_db(&path, faults.clone())?;
        tables::init(&db)?;
        ensure_rollups(&db)?;
        let dicts = dict::load_all(&db.begin_read()?)?;
        let slot = Arc::new(DbSlot {
            current: std::sync::RwLock::new(Some(Handle::ReadWrite(Arc::new(db)))),
            reopening: std::sync::Mutex::new(()),
            path: path.clone(),
            faults,
            read_only: false,
        });
        let writer = Writer::start(slot.clone(), queue_capacity, pricer, dicts)?;
        Ok(Store {
            slot,
            writer,
            path,
            pin: None,
        })
    }

    /// This store, with every read through the returned handle on one read transaction (opened
    /// by its first read): what one request reads is one state of the store, however many
    /// records it reads, and the request opens one transaction instead of one per read (each
    /// takes and releases file range locks, so that readers in other processes can follow the
    /// writer). Hold it for one request: while the transaction lives, redb cannot reuse the
    /// pages freed after it was opened. Writes through it go to the writer as usual, and its
    /// reads do not see them; `snapshot()` on it still opens a view of its own.
    pub fn pinned(&self) -> Store {
        Store {
            pin: Some(Arc::new(OnceLock::new())),
            ..self.clone()
        }
    }

    /// A read transaction: the pinned one (see `pinned`), or a new one. For the store's own
    /// reads, and for derived-state readers in this crate (analytics) that read tables the store
    /// defines but does not interpret.
    pub(crate) fn read_tx(&self) -> Result<Tx<'_>, StoreError> {
        let Some(pin) = &self.pin else {
            return Ok(Tx::Own(self.slot.begin_read()?));
        };
        if pin.get().is_none() {
            // Two first reads on two threads may race: the one set first is the handle's.
            let _ = pin.set(self.slot.begin_read()?);
        }
        pin.get()
            .map(Tx::Pinned)
            .ok_or_else(|| StoreError::Internal("pinned read transaction unset".into()))
    }

    /// Opens the store in `data_dir` read-only, beside a server that may be writing to it (the
    /// server runs redb in single-writer mode, so readers share the file and every new read
    /// transaction sees the latest commit). Writes through this handle are refused.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::DataDir {
                path: data_dir.to_path_buf(),
                reason: format!("no {DB_FILE} in it; pass the server's data directory"),
            });
        }
        let db = backup::open_builder().open_read_only(&path)?;
        backup::check_schema(&db.begin_read()?)?;
        dict::load_all(&db.begin_read()?)?;
        let slot = Arc::new(DbSlot {
            current: std::sync::RwLock::new(Some(Handle::ReadOnly(Arc::new(db)))),
            reopening: std::sync::Mutex::new(()),
            path: path.clone(),
            faults: None,
            read_only: true,
        });
        Ok(Store {
            slot,
            writer: Writer::refusing(),
            path,
            pin: None,
        })
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn db_path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting writes, commits what is queued and waits for the writer to finish.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Bytes used by the database file.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// A cheap read that touches the file: used by the health check.
    pub fn check_readable(&self) -> Result<(), StoreError> {
        let tx = self.read_tx()?;
        let meta = tx.open_table(tables::META)?;
        meta.get(tables::META_SCHEMA)?;
        Ok(())
    }

    pub fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::PROJECTS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(codec::decode_row(v.value())?);
        }
        Ok(out)
    }

    pub fn project(&self, id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        self.get_row(tables::PROJECTS, id)
    }

    pub fn api_key(&self, public_key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get_row(tables::API_KEYS, public_key)
    }

    pub fn all_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(tables::API_KEYS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(codec::decode_row(v.value())?);
        }
        Ok(out)
    }

    pub fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get_row(tables::USERS, email)
    }

    /// The dashboard session whose token hashes to `token_hash`, if it exists (expired or not:
    /// the caller decides).
    pub fn web_session(&self, token_hash: &str) -> Result<Option<WebSessionRecord>, StoreError> {
        self.get_row(tables::WEB_SESSIONS, token_hash)
    }

    fn get_row<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(table)?;
        t.get(key)?
            .map(|v| codec::decode_row(v.value()))
            .transpose()
    }

    /// Writes tenancy records directly, before the server accepts traffic (bootstrap).
    pub fn put_admin(
        &self,
        projects: &[ProjectRecord],
        keys: &[ApiKeyRecord],
        users: &[UserRecord],
        delete_keys: &[String],
    ) -> Result<(), StoreError> {
        let tx = self.slot.writable()?.begin_write()?;
        {
            let mut p = tx.open_table(tables::PROJECTS)?;
            for rec in projects {
                p.insert(rec.id.as_str(), codec::encode_row(rec)?.as_slice())?;
            }
            let mut k = tx.open_table(tables::API_KEYS)?;
            for pk in delete_keys {
                k.remove(pk.as_str())?;
            }
            for rec in keys {
                k.insert(rec.public_key.as_str(), codec::encode_row(rec)?.as_slice())?;
            }
            let mut u = tx.open_table(tables::USERS)?;
            for rec in users {
                u.insert(rec.email.as_str(), codec::encode_row(rec)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Rebuilds the analytics rollups on open when they were built by another rollup version or not
/// at all (a data directory from before rollups, or restored from such a backup). Runs before
/// the writer starts, so nothing else writes meanwhile.
fn ensure_rollups(db: &Database) -> Result<(), StoreError> {
    let built = {
        let r = db.begin_read()?;
        let meta = r.open_table(tables::META)?;
        meta.get(tables::META_ROLLUPS)?
            .map(|v| tables::read_u64(v.value()))
            .transpose()?
    };
    if built == Some(crate::analytics::rollup::ROLLUP_VERSION) {
        return Ok(());
    }
    let tx = db.begin_write()?;
    let rows = crate::analytics::rollup::rebuild(&tx)?;
    tx.commit()?;
    tracing::info!(rows, "rebuilt analytics rollups from the records");
    Ok(())
}

/// Total cost of an observation as Langfuse reports it (`costDetails.total`).
pub fn observation_total_cost(o: &ObservationRecord) -> Option<f64> {
    o.cost_details.get("total").copied()
}

#[cfg(test)]
mod tests;
