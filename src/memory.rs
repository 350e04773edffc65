//! Gives freed heap memory back to the operating system once a burst of work is over.
//!
//! glibc's allocator keeps what a burst frees (decoded requests, B-tree page buffers, the
//! search indexer's arena) in its per-thread arenas: after 40,000 spans the server stayed at
//! 175 MiB resident with nothing to do, 78 MiB of it free heap. `malloc_trim` hands the free
//! pages of every arena back. It costs a walk over the arenas, so it runs once per quiet spell,
//! not on a timer.
//!
//! Owns: the decision when to trim. Must not touch: any data, or any thread's work.

use std::time::Duration;

use crate::background::Task;

/// How long the server must have done nothing before it trims: long enough that a steady load
/// (requests every few hundred milliseconds) never pays for trims it would undo at once.
pub const QUIET: Duration = Duration::from_secs(2);

/// Starts the task. `activity` is any counter that moves while the server works (commits,
/// indexed changes, requests answered); a trim follows each spell of movement once it has stood still for `QUIET`.
pub fn start(activity: impl Fn() -> u64 + Send + 'static) -> std::io::Result<Task> {
    Task::spawn("memory", move |stop| {
        let mut seen = activity();
        let mut worked = false;
        while !stop.sleep(QUIET) {
            let now = activity();
            if now != seen {
                seen = now;
                worked = true;
            } else if worked {
                worked = false;
                trim();
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only rearranges the allocator's own free lists
    // under its locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, the BSDs') give memory back on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
