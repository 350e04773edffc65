//! Entry point: everything lives in the library; see `cli`.

/// mimalloc instead of glibc's malloc: ingestion allocates and frees many short-lived buffers
/// on several threads at once, where glibc spent a large share of the writer's time
/// consolidating freed chunks (see BENCHMARKS.md, "Where the time goes").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    sightline::cli::main()
}
