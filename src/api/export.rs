//! `GET /api/public/export`: the caller's project as JSONL ingestion events or CSV, with the
//! traces list's filters. The body is streamed: a blocking task runs the one `export::export`
//! (the command line's too) into a small bounded channel that the response drains, so memory
//! stays flat however large the project, and a client that goes away stops the export.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;

use super::params::Params;
use super::read::trace_query;
use super::{ApiError, AppState, Project};
use crate::export::{self, Format};

/// Chunks in flight between the export task and the connection.
const CHANNEL_CHUNKS: usize = 8;
/// Bytes per chunk: large enough that a chunk is not one tiny line, small enough to stay flat.
const CHUNK_BYTES: usize = 64 * 1024;

type Chunk = Result<Bytes, std::io::Error>;

/// The sending side, as `Write` for the blocking export. Fails once the client is gone.
struct ChannelWriter(mpsc::Sender<Chunk>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The receiving side, as a response body.
struct ChannelBody(mpsc::Receiver<Chunk>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

pub async fn export(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Response, ApiError> {
    let format = match params.str("format") {
        Some(f) => f.parse::<Format>().map_err(ApiError::bad_request)?,
        None => Format::Jsonl,
    };
    let q = trace_query(&params)?;
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(CHUNK_BYTES, ChannelWriter(tx.clone()));
        match export::export(&store, &p.project_id, &q, format, &mut w) {
            Ok(_) => {}
            Err(export::ExportError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::debug!(project = %p.project_id, "export client went away");
            }
            Err(e) => {
                // The status line has gone out already; aborting the body is how the client
                // learns the export is incomplete (the connection ends without the last chunk).
                tracing::warn!(error = %e, project = %p.project_id, "export stopped");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let extension = match format {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
    };
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"sightline-export.{extension}\""),
            ),
        ],
        Body::new(ChannelBody(rx)),
    )
        .into_response())
}
