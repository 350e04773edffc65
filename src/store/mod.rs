//! The record store: every trace, observation, score, project and key, in one redb file.
//!
//! Owns: the on-disk layout (tables and key encoding, see ARCHITECTURE.md "On disk"), the single
//! writer thread that group-commits all writes, and the read queries the API needs. Must not
//! touch: HTTP, wire formats, authentication decisions. Derived state (search index, rollups)
//! follows the change log kept here and never writes to it.

pub mod backup;
mod codec;
mod read;
mod snapshot;
mod tables;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

pub use codec::{Io, ObsSummary};
pub use read::{
    ObservationQuery, Page, ScoreQuery, SessionRecord, TraceField, TraceOrder, TraceQuery, Window,
};
pub use snapshot::{RecordKey, Snapshot};
pub use tables::ChangeRef;
pub use write::{Pricer, WriteOp, Writer, WriterStats};

use crate::record::ObservationRecord;
use crate::time::Timestamp;

/// Bumped when the key layout or row encoding changes incompatibly.
pub const SCHEMA_VERSION: u64 = 1;
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
    #[error("the store is shutting down")]
    Closed,
    #[error(
        "data directory has schema version {found}, this binary reads {expected}; use a matching release"
    )]
    SchemaMismatch { found: u64, expected: u64 },
    #[error("data directory {path} is unusable: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Io(e.to_string())
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

/// Handle to the store: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        queue_capacity: usize,
        pricer: Arc<dyn Pricer>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(DB_FILE);
        let db = backup::open_builder().create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::DataDir {
                path: data_dir.to_path_buf(),
                reason: "another sightline process has it open".into(),
            },
            other => StoreError::from(other),
        })?;
        tables::init(&db)?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), queue_capacity, pricer)?;
        Ok(Store { db, writer, path })
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
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(tables::META)?;
        meta.get(tables::META_SCHEMA)?;
        Ok(())
    }

    pub fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_read()?;
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

    fn get_row<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_write()?;
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

/// Total cost of an observation as Langfuse reports it (`costDetails.total`).
pub fn observation_total_cost(o: &ObservationRecord) -> Option<f64> {
    o.cost_details.get("total").copied()
}

#[cfg(test)]
mod tests;
