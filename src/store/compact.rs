//! Compaction: giving the file's free pages back to the file system after large deletes.
//!
//! redb reuses the pages a delete frees, so without compaction the file stops growing but never
//! shrinks. `Database::compact` moves live pages down and truncates the file; it needs the
//! `Database` exclusively and no read transaction open anywhere (in this process or a reader
//! process beside it). The writer thread runs it, so no write transaction is open; it takes the
//! slot's handle lock for writing, so no new read transaction can begin, waits for the ones in
//! flight to end (they are short: every query opens its own) and compacts. Reads and writes that
//! arrive meanwhile wait for it: compaction is a pause, which is why retention only asks for it
//! after deleting a large share of the data. A reader that holds its transaction longer than
//! `READERS_WAIT` (a long export, a search index rebuild) makes it give up until the next run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DbSlot, Handle, StoreError};

/// How long compaction waits for read transactions in flight to end before giving up.
pub const READERS_WAIT: Duration = Duration::from_secs(2);

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// The file shrank (or stayed) from `before` to `after` bytes.
    Done { before: u64, after: u64 },
    /// Readers kept a transaction open; nothing was done.
    Busy,
}

impl DbSlot {
    pub(super) fn compact(&self, wait: Duration) -> Result<Compaction, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let _one_at_a_time = self.reopening.lock().map_err(|_| StoreError::Unavailable)?;
        let before = file_len(&self.path);
        let mut current = self.current.write().map_err(|_| StoreError::Unavailable)?;
        let Some(Handle::ReadWrite(db)) = current.as_mut() else {
            return Err(StoreError::Unavailable);
        };
        let deadline = Instant::now() + wait;
        loop {
            // Other clones of the handle live only while a query begins its transaction.
            if let Some(db) = Arc::get_mut(db) {
                match db.compact() {
                    Ok(_) => break,
                    Err(redb::CompactionError::TransactionInProgress) => {}
                    Err(redb::CompactionError::Storage(e)) => return Err(e.into()),
                    Err(e) => return Err(StoreError::Io(format!("compaction: {e}"))),
                }
            }
            if Instant::now() >= deadline {
                return Ok(Compaction::Busy);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(current);
        Ok(Compaction::Done {
            before,
            after: file_len(&self.path),
        })
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
