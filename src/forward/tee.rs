//! `serve` with `[forward]` configured: the same follow-and-cursor loop as `sightline forward`,
//! on a thread of the server, reading the server's own store (no second open of the file). It
//! shares its cursor file with the command for the same upstream, key and project, so either
//! can take over from the other.
//!
//! Failures that a retry cannot fix at once (the upstream refused the key, a store error) are
//! logged and retried with a growing pause, so fixing the upstream is enough; only the server's
//! shutdown ends the loop.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{ForwardError, ForwardOptions, Upstream, cursor_path, forward};
use crate::background::{StopSignal, Task};
use crate::config::ForwardConfig;
use crate::store::Store;

/// First pause after a failed run; doubled up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What `/metrics` shows of the server's forward.
#[derive(Clone, Default)]
pub struct Stats {
    /// Events the upstream acknowledged.
    pub events: Counter,
    pub batches: Counter,
    pub deletes: Counter,
    /// Events the upstream refused for good.
    pub rejected: Counter,
    /// Runs that ended in an error (then retried).
    pub failures: Counter,
    /// The cursor: the last change-log sequence the upstream acknowledged.
    pub cursor: Gauge<u64, AtomicU64>,
}

/// Checks the configuration against the store and starts forwarding. Errors (a bad url, no such
/// project) are returned at once, so a misconfigured server does not start.
pub fn start(
    config: &ForwardConfig,
    store: Store,
    data_dir: &Path,
    stats: Stats,
) -> Result<Task, ForwardError> {
    let project = match &config.project {
        Some(p) => {
            if store.project(p)?.is_none() {
                return Err(ForwardError::Project(format!(
                    "[forward] project {p:?} does not exist here"
                )));
            }
            p.clone()
        }
        None => {
            let projects = store.projects()?;
            match projects.as_slice() {
                [only] => only.id.clone(),
                _ => {
                    return Err(ForwardError::Project(format!(
                        "this data directory has {} projects; set [forward] project (or \
                         SIGHTLINE_FORWARD_PROJECT) to the one to forward",
                        projects.len()
                    )));
                }
            }
        }
    };
    let mut upstream = Upstream::new(&config.url, config.credentials.clone())?;
    // Following: an upstream outage is waited out.
    upstream.max_attempts = None;
    let cursor = cursor_path(
        data_dir,
        &config.url,
        &config.credentials.public_key,
        &project,
    );
    tracing::info!(
        %project,
        upstream = %upstream.describe(),
        cursor = %cursor.display(),
        "forwarding everything stored to the upstream"
    );
    let url = config.url.clone();
    let (batch_bytes, poll) = (config.batch_bytes, config.poll);
    Task::spawn("forward", move |stop: StopSignal| {
        upstream.stop = stop.clone();
        let opts = ForwardOptions {
            project,
            once: false,
            poll,
            batch_bytes,
            max_batches: None,
            stop: stop.clone(),
        };
        let mut pause = FIRST_PAUSE;
        loop {
            let mut last = super::ForwardReport::default();
            let result = forward(&store, &cursor, &upstream, &url, &opts, &mut |r| {
                // Reports are cumulative within one run: count what is new since the last.
                stats.events.inc_by(r.events - last.events);
                stats.batches.inc_by(r.batches - last.batches);
                stats.deletes.inc_by(r.deletes - last.deletes);
                stats
                    .rejected
                    .inc_by((r.rejected.len() - last.rejected.len()) as u64);
                stats.cursor.set(r.seq);
                last = r.clone();
            });
            match result {
                Ok(_) | Err(ForwardError::Stopped) => return,
                Err(e) => {
                    stats.failures.inc();
                    if last.batches > 0 {
                        // It got somewhere before failing: a fresh problem, a short pause.
                        pause = FIRST_PAUSE;
                    }
                    tracing::error!(error = %e, retry_in_s = pause.as_secs(), "forwarding failed; retrying");
                    if stop.sleep(pause) {
                        return;
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    })
    .map_err(|e| ForwardError::Http(format!("cannot start the forward thread: {e}")))
}
