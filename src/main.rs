//! Entry point: everything lives in the library; see `cli`. This file only picks the allocator.
//!
//! jemalloc rather than glibc's malloc: ingestion allocates and frees many short-lived values
//! on every thread (decoded requests, JSON trees, B-tree page buffers, index documents), and
//! glibc either keeps what a burst frees in its per-thread arenas for good or, tuned to give it
//! back, pays for it in page faults and trims. Side by side, jemalloc spent ~20 % less CPU per
//! stored span, with the idle and peak memory targets still met (BENCHMARKS.md, "The
//! allocator").

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation. Pages freed and not reused for about a
/// second go back to the system, returned by jemalloc's own background thread: a burst's heap
/// is given back once the server is quiet, without a request or the writer paying for it.
/// Defined here, in the binary, so the linker cannot drop it in favour of jemalloc's weak
/// default; an array behind a thin reference, as jemalloc reads a `const char *`.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> anyhow::Result<()> {
    sightline::cli::main()
}
