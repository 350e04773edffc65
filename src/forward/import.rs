//! `sightline import FILE`: a JSONL export (one ingestion event per line) POSTed in batches.

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use super::ForwardError;
use super::client::{Batch, Rejected, Upstream};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportReport {
    pub events: u64,
    pub batches: u64,
    pub rejected: Vec<Rejected>,
}

/// Sends every event of `file`; `progress` hears about each acknowledged batch. Per-event
/// rejections are collected, not fatal: the rest of the file still goes.
pub fn import(
    file: &Path,
    upstream: &Upstream,
    batch_bytes: usize,
    progress: &mut dyn FnMut(&ImportReport),
) -> Result<ImportReport, ForwardError> {
    let f = std::fs::File::open(file).map_err(|e| ForwardError::file(file, e))?;
    let mut report = ImportReport::default();
    let mut batch = Batch::default();
    let mut flush = |batch: &mut Batch, report: &mut ImportReport| -> Result<(), ForwardError> {
        if batch.is_empty() {
            return Ok(());
        }
        let sent = batch.take();
        report.rejected.extend(upstream.send(&sent)?);
        report.events += sent.len() as u64;
        report.batches += 1;
        progress(report);
        Ok(())
    };
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| ForwardError::file(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ForwardError::BadLine {
            line: n as u64 + 1,
            reason,
        };
        let event: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if !event.get("type").is_some_and(Value::is_string)
            || !event.get("body").is_some_and(Value::is_object)
        {
            return Err(bad("needs a \"type\" and a \"body\" object".into()));
        }
        if batch.would_overflow(line.len(), batch_bytes) {
            flush(&mut batch, &mut report)?;
        }
        batch.push(&event)?;
    }
    flush(&mut batch, &mut report)?;
    Ok(report)
}
