//! The storage seam: the database file behind redb's `StorageBackend`, with an optional fault
//! plan so tests can make writes or fsyncs fail (as a full disk does) at operation N or on
//! demand, then heal. Production opens the same type with no plan. Tests can also store bytes
//! that do not decode (`RawWrite`), as a damaged row would read.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

/// What to break. All switches start off; tests flip them while the server runs.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Behave like a full filesystem: growing the file fails with "no space left on device";
    /// rewriting bytes the file already has still works, as it does on a real full disk.
    pub disk_full: AtomicBool,
    /// Fail the N-th write/fsync from now (1 = the next one), once; 0 = off.
    pub fail_at_op: AtomicU64,
    /// Write and fsync operations seen so far.
    pub ops: AtomicU64,
    /// Faults injected so far.
    pub injected: AtomicU64,
}

impl FaultPlan {
    fn no_space() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected fault: no space left on device",
        )
    }

    /// Fails an operation that would grow the file to `end` bytes while the disk is "full".
    fn check_growth(&self, end: u64, current: u64) -> std::io::Result<()> {
        if end > current && self.disk_full.load(Ordering::Relaxed) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Self::no_space());
        }
        Ok(())
    }

    fn check(&self) -> std::io::Result<()> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let countdown = self.fail_at_op.load(Ordering::Relaxed);
        let once = countdown > 0
            && self
                .fail_at_op
                .compare_exchange(
                    countdown,
                    countdown - 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            && countdown == 1;
        if once {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Self::no_space());
        }
        Ok(())
    }
}

/// The database file, optionally with faults.
#[derive(Debug)]
pub struct DataFile {
    inner: FileBackend,
    plan: Option<Arc<FaultPlan>>,
}

impl DataFile {
    pub fn open(path: &Path, plan: Option<Arc<FaultPlan>>) -> std::io::Result<DataFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(DataFile { inner, plan })
    }

    fn check(&self, grows_to: Option<u64>) -> std::io::Result<()> {
        let Some(p) = &self.plan else {
            return Ok(());
        };
        p.check()?;
        if let Some(end) = grows_to {
            p.check_growth(end, self.inner.len()?)?;
        }
        Ok(())
    }
}

impl StorageBackend for DataFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check(Some(len))?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check(None)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check(Some(offset.saturating_add(data.len() as u64)))?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Bytes stored as they are, bypassing encoding, through the writer (`WriteOp::Raw`).
#[cfg(test)]
#[derive(Debug)]
pub enum RawWrite {
    /// Replaces a trace row and logs a change for it, as an update would.
    Trace {
        project: String,
        id: String,
        bytes: Vec<u8>,
    },
    /// Appends a change-log entry holding `bytes`.
    Change(Vec<u8>),
}

#[cfg(test)]
impl super::write::Tx<'_> {
    pub(super) fn raw(&mut self, raw: &RawWrite) -> Result<(), super::StoreError> {
        match raw {
            RawWrite::Trace { project, id, bytes } => {
                self.tx
                    .open_table(super::tables::TRACES)?
                    .insert((project.as_str(), id.as_str()), bytes.as_slice())?;
                self.log(super::ChangeRef::Trace {
                    project: project.clone(),
                    id: id.clone(),
                    created: false,
                })
            }
            RawWrite::Change(bytes) => self.log_bytes(bytes),
        }
    }
}
