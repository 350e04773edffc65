//! Entry point: everything lives in the library; see `cli`.

fn main() -> anyhow::Result<()> {
    sightline::cli::main()
}
