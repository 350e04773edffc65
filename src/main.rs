//! Entry point: everything lives in the library; see `cli`.
//!
//! The system allocator on purpose: mimalloc made ingestion 16 % faster but kept 56–75 MiB
//! resident when idle against 30 MiB (BENCHMARKS.md, "The allocator alone"), past the 64 MiB
//! idle target.

fn main() -> anyhow::Result<()> {
    sightline::cli::main()
}
