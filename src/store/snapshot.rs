//! A consistent read view for derived state (the search index, rollups).
//!
//! A `Snapshot` is one redb read transaction: every read through it sees the store exactly as
//! it was after change-log entry `last_seq()`, so a follower can read records and the log
//! position they correspond to without a race. Full scans go in key order in bounded chunks so a
//! rebuild never holds more than one chunk in memory.

use redb::ReadTransaction;

use super::codec::{self, Io};
use super::tables::{self, ChangeRef};
use super::{Store, StoreError, values};
use crate::record::{ObservationRecord, TraceRecord};

/// A (project, id) key, as returned by the scans: pass the last one back to continue.
pub type RecordKey = (String, String);

/// One row of a scan: its key and its record, or why the stored bytes do not decode (the scan
/// goes on past such a row, so one bad row cannot hide the rest).
pub type Scanned<T> = (RecordKey, Result<T, StoreError>);

/// A record (or a view of its fields) and its payload's JSON, empty when it has none.
pub type WithIoJson<T> = (T, Vec<u8>);

/// A change-log entry: its sequence number and what it names, or why its bytes do not decode.
pub type LogEntry = (u64, Result<ChangeRef, StoreError>);

pub struct Snapshot {
    pub(super) tx: ReadTransaction,
}

impl Store {
    /// Opens a consistent read view. Hold it only as long as one batch of work needs it: redb
    /// cannot reuse pages freed after the view was opened while it lives.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            tx: self.slot.begin_read()?,
        })
    }
}

impl Snapshot {
    /// Sequence number of the newest change-log entry this view contains (0 = none yet).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let meta = self.tx.open_table(tables::META)?;
        let next = meta
            .get(tables::META_SEQ)?
            .map(|v| tables::read_u64(v.value()))
            .transpose()?
            .unwrap_or(1);
        Ok(next.saturating_sub(1))
    }

    /// Change-log entries with sequence numbers greater than `after`, oldest first.
    pub fn changes_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ChangeRef)>, StoreError> {
        self.change_entries_since(after, limit)?
            .into_iter()
            .map(|(seq, c)| Ok((seq, c?)))
            .collect()
    }

    /// `changes_since`, with each entry decoded on its own: an entry whose bytes do not decode
    /// is an `Err` in its place, not the end of the read.
    pub fn change_entries_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let t = self.tx.open_table(tables::CHANGES)?;
        let mut out = Vec::new();
        for e in t.range(after.saturating_add(1)..)? {
            let (k, v) = e?;
            out.push((k.value(), codec::decode_change(v.value())));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn trace(&self, project: &str, id: &str) -> Result<Option<TraceRecord>, StoreError> {
        self.row(tables::TRACES, project, id)
    }

    /// `trace`, read as `T`: the record, or a view of the fields the caller needs.
    pub fn trace_as<T: serde::de::DeserializeOwned>(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.row(tables::TRACES, project, id)
    }

    pub fn trace_io(&self, project: &str, id: &str) -> Result<Io, StoreError> {
        super::read::trace_io(&self.tx, project, id)
    }

    pub fn observation(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<ObservationRecord>, StoreError> {
        self.row(tables::OBSERVATIONS, project, id)
    }

    pub fn observation_io(&self, project: &str, id: &str) -> Result<Io, StoreError> {
        super::read::observation_io(&self.tx, project, id)
    }

    /// An observation and its payload's JSON (empty when there is none), from one read of the
    /// row (it usually carries the payload, so one decompression serves both). For
    /// readers that take what they need from it without building its values. `T`: the
    /// record, or a view of the fields the caller needs.
    pub fn observation_with_io_json<T: serde::de::DeserializeOwned>(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<(T, Vec<u8>)>, StoreError> {
        super::read::row_with_io_json(&self.tx, tables::OBSERVATIONS, tables::OBS_IO, project, id)
    }

    /// `trace` and its payload's JSON (as `observation_with_io_json`), from one read of the row.
    pub fn trace_with_io_json<T: serde::de::DeserializeOwned>(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<(T, Vec<u8>)>, StoreError> {
        super::read::row_with_io_json(&self.tx, tables::TRACES, tables::TRACE_IO, project, id)
    }

    /// Ids of a trace's observations, in id order.
    pub fn trace_observation_ids(
        &self,
        project: &str,
        trace_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let t = self.tx.open_table(tables::OBS_BY_TRACE)?;
        let mut out = Vec::new();
        for e in t.range((project, trace_id, "")..)? {
            let (k, _) = e?;
            let (p, tr, id) = k.value();
            if p != project || tr != trace_id {
                break;
            }
            out.push(id.to_string());
        }
        Ok(out)
    }

    fn row<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<(&str, &str), &[u8]>,
        project: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = self.tx.open_table(table)?;
        t.get((project, id))?
            .map(|v| codec::decode_row(&values::resolve_in(&self.tx, v.value())?))
            .transpose()
    }

    /// Up to `limit` traces of every project in key order, strictly after `after`, each with
    /// its payload's JSON (as `trace_with_io_json`).
    pub fn traces_with_io_json_after<T: serde::de::DeserializeOwned>(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<WithIoJson<T>>>, StoreError> {
        self.scan_with_io_json(tables::TRACES, tables::TRACE_IO, after, limit)
    }

    /// Up to `limit` observations of every project in key order, strictly after `after`, each
    /// with its payload's JSON (as `observation_with_io_json`).
    pub fn observations_with_io_json_after<T: serde::de::DeserializeOwned>(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<WithIoJson<T>>>, StoreError> {
        self.scan_with_io_json(tables::OBSERVATIONS, tables::OBS_IO, after, limit)
    }

    fn scan_with_io_json<T: serde::de::DeserializeOwned>(
        &self,
        rows: redb::TableDefinition<(&str, &str), &[u8]>,
        payloads: redb::TableDefinition<(&str, &str), &[u8]>,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<WithIoJson<T>>>, StoreError> {
        let scanned = self.scan_by(rows, after, limit, |bytes| {
            // One decompression for both parts.
            let (row, io) = codec::json_parts(bytes)?;
            Ok((codec::parse::<T>(&row)?, io))
        })?;
        let payloads = self.tx.open_table(payloads)?;
        Ok(scanned
            .into_iter()
            .map(|(key, read)| {
                let read = read.and_then(|(rec, io)| {
                    let io = match io {
                        Some(io) => io,
                        None => match payloads.get((key.0.as_str(), key.1.as_str()))? {
                            Some(v) => codec::io_json_of(v.value())?,
                            None => Vec::new(),
                        },
                    };
                    Ok((rec, io))
                });
                (key, read)
            })
            .collect())
    }

    /// Rows of `table` strictly after `after`, at most `limit`, each read by `decode`.
    fn scan_by<T>(
        &self,
        table: redb::TableDefinition<(&str, &str), &[u8]>,
        after: Option<&RecordKey>,
        limit: usize,
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Scanned<T>>, StoreError> {
        let t = self.tx.open_table(table)?;
        let mut values = values::Resolver::new(&self.tx);
        let mut out = Vec::new();
        let range = match after {
            Some((p, id)) => t.range((p.as_str(), id.as_str())..)?,
            None => t.range::<(&str, &str)>(..)?,
        };
        for e in range {
            let (k, v) = e?;
            let (project, id) = k.value();
            if after.is_some_and(|(p, i)| (p.as_str(), i.as_str()) == (project, id)) {
                continue;
            }
            let read = values.resolve(v.value()).and_then(|bytes| decode(&bytes));
            out.push(((project.to_string(), id.to_string()), read));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
