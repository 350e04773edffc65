//! Sending records to another Langfuse-compatible ingestion API: `import` replays a JSONL
//! export file, `forward` replays a data directory's change log and then follows it, so an
//! upstream Langfuse (or another Sightline) receives everything stored here, once caught up
//! within a poll interval of the commit.
//!
//! Owns: the upstream client (batching under Langfuse's byte budget, retries with backoff,
//! per-event errors), the forward cursor file, progress reporting, and the server's own forward
//! (`tee`). Must not touch: the store's records — it reads them through a `Store` (read-only
//! beside a server, or the server's own) and writes only its own cursor file beside them — or
//! secrets in any output (keys are shown redacted, secrets never).

pub mod client;
mod follow;
mod import;
pub mod tee;

pub use client::{Credentials, DEFAULT_BATCH_BYTES, Rejected, Upstream};
pub use follow::{ForwardOptions, ForwardReport, cursor_path, forward};
pub use import::{ImportReport, import};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("bad upstream url: {0}")]
    BadUrl(String),
    #[error("http client: {0}")]
    Http(String),
    #[error("upstream refused the request: {0}")]
    Refused(String),
    /// A TLS failure that retrying does not fix (an untrusted certificate, a plain-http port).
    #[error("{0}")]
    Tls(String),
    #[error("gave up on the {what} after {tries} attempts; last: {last}")]
    GaveUp {
        what: String,
        tries: u32,
        last: String,
    },
    #[error("could not encode an event: {0}")]
    Encode(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("line {line} of the import file is not an ingestion event: {reason}")]
    BadLine { line: u64, reason: String },
    #[error("{0}")]
    Project(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server is shutting down (only a forward inside the server is ever stopped).
    #[error("stopped")]
    Stopped,
}

impl ForwardError {
    fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        ForwardError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}
