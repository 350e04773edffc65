//! Gives freed heap memory back to the operating system: once a burst of work is over, and
//! every few seconds while the server stays busy.
//!
//! glibc's allocator keeps what a burst frees (decoded requests, B-tree page buffers, the
//! search indexer's arena) in its per-thread arenas: after 40,000 spans the server stayed at
//! 175 MiB resident with nothing to do, 78 MiB of it free heap. Under a sustained load the
//! same happens while busy: 140 seconds into a 1M-span load, `malloc_stats` counted 211 MB
//! taken from the system and 79 MB in use, three arenas holding 12–23 MB each with almost
//! nothing in them. Two things keep that down:
//!
//! - fixed mmap and trim thresholds (`configure`). glibc raises both whenever a large mmapped
//!   block is freed (up to 32 and 64 MiB), after which an arena keeps that much free memory at
//!   its top for good; fixed, a block of 512 KiB or more is mapped on its own and unmapped
//!   when freed, and an arena gives back its top beyond 4 MiB at once;
//! - `malloc_trim`, which hands the free pages inside every arena back. It costs a walk over
//!   the arenas, so it runs once per quiet spell and at most every `BUSY_EVERY` under load.
//!
//! Owns: the allocator's thresholds and the decision when to trim. Must not touch: any data,
//! or any thread's work.

use std::time::{Duration, Instant};

use crate::background::{StopSignal, Task};

/// How long the server must have done nothing before it trims: long enough that a steady load
/// (requests every few hundred milliseconds) never pays for trims it would undo at once.
pub const QUIET: Duration = Duration::from_secs(2);

/// While the server stays busy, it trims this often: a trim walks the arenas (milliseconds)
/// and the pages it returns are faulted in again as the load goes on, so this is rare enough
/// to cost well under 1 % of a core, and frequent enough that the heap cannot pile up between
/// two trims.
pub const BUSY_EVERY: Duration = Duration::from_secs(6);

/// Blocks of this size or more get a mapping of their own, returned whole when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 512 * 1024;
/// An arena gives back the free memory at its top beyond this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 * 1024 * 1024;

/// Starts the task. `activity` is any counter that moves while the server works (commits,
/// indexed changes, requests answered); a trim follows each spell of movement once it has
/// stood still for `QUIET`, and one every `BUSY_EVERY` while it keeps moving.
pub fn start(activity: impl Fn() -> u64 + Send + 'static) -> std::io::Result<Task> {
    configure();
    Task::spawn("memory", move |stop| {
        run(&activity, &mut trim, &stop, QUIET, BUSY_EVERY)
    })
}

/// The trimming schedule, apart from the allocator, so that it can be tested with a counter.
fn run(
    activity: &dyn Fn() -> u64,
    trim: &mut dyn FnMut(),
    stop: &StopSignal,
    quiet: Duration,
    busy_every: Duration,
) {
    let mut seen = activity();
    let mut worked = false;
    let mut last_trim = Instant::now();
    while !stop.sleep(quiet) {
        let now = activity();
        if now != seen {
            seen = now;
            worked = true;
            if last_trim.elapsed() >= busy_every {
                trim();
                last_trim = Instant::now();
            }
        } else if worked {
            worked = false;
            trim();
            last_trim = Instant::now();
        }
    }
}

/// Fixes glibc's mmap and trim thresholds (see the module comment). Idempotent; called once
/// the server starts, before the load that would raise them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() {
    // SAFETY: mallopt only sets allocator parameters under the allocator's lock; any thread may
    // call it at any time, and both values are within glibc's documented ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Other allocators (musl's, the BSDs') have no such thresholds to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Runs the schedule on its own thread with a counter the test moves, and counts trims.
    fn schedule(busy: bool, for_: Duration) -> u64 {
        let counter = Arc::new(AtomicU64::new(0));
        let trims = Arc::new(AtomicU64::new(0));
        let stop = StopSignal::default();
        let thread = {
            let (counter, trims, stop) = (counter.clone(), trims.clone(), stop.clone());
            std::thread::spawn(move || {
                let activity = move || counter.load(Ordering::Relaxed);
                let mut trim = move || {
                    trims.fetch_add(1, Ordering::Relaxed);
                };
                run(
                    &activity,
                    &mut trim,
                    &stop,
                    Duration::from_millis(20),
                    Duration::from_millis(100),
                );
            })
        };
        let until = Instant::now() + for_;
        while Instant::now() < until {
            if busy {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.stop();
        thread.join().unwrap();
        trims.load(Ordering::Relaxed)
    }

    #[test]
    fn a_steady_load_is_trimmed_every_busy_interval() {
        // 2 s of uninterrupted activity: ~20 busy trims 100 ms apart, not one per 20 ms tick.
        let n = schedule(true, Duration::from_secs(2));
        assert!((5..=30).contains(&n), "{n} trims");
    }

    #[test]
    fn an_idle_server_is_never_trimmed() {
        assert_eq!(schedule(false, Duration::from_millis(500)), 0);
    }

    /// The thresholds are accepted by the allocator this binary runs on.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_thresholds_are_valid_for_glibc() {
        // SAFETY: as in `configure`.
        let ok = unsafe {
            [
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            ]
        };
        assert_eq!(ok, [1, 1], "mallopt returns 1 on success");
    }
}
