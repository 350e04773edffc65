//! `sightline-load`: the load generator and benchmark driver behind BENCHMARKS.md.
//!
//! - `ingest` sends seeded synthetic LLM traces (OTLP protobuf or Langfuse batch JSON, optionally
//!   gzipped) to Sightline or to Arize Phoenix and reports acceptance, storage and search
//!   throughput, request latency, server memory and disk per span.
//! - `query` times the read paths of a running Sightline over a data set `ingest` wrote.
//! - `startup` times `sightline serve` from exec to a healthy answer, and its idle memory.
//! - `probe` runs the baseline the targets were set from (serde_json, redb group commits and
//!   tantivy, in this process) over the same traces, to compare the server with.
//!
//! It talks to servers over HTTP only (loopback in every documented command) and never links
//! the server's code, so it measures exactly what a client sees.

mod data;
mod encode;
mod ingest;
mod phoenix;
mod probe;
mod query;
mod startup;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sightline-load",
    version,
    about = "Load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send synthetic traces and measure ingestion.
    Ingest(ingest::IngestArgs),
    /// Time read queries against a data set written by `ingest`.
    Query(query::QueryArgs),
    /// Time `sightline serve` from start to healthy.
    Startup(startup::StartupArgs),
    /// The baseline without Sightline: serde_json, redb group commits and tantivy in-process.
    Probe(probe::ProbeArgs),
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sightline-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    // Exit 1 when a span was refused, lost or never counted: scripts and CI can rely on it.
    let complete = match cli.command {
        Command::Ingest(args) => {
            let json = args.json;
            let report = ingest::run(args)?;
            emit(json, &report, ingest::print)?;
            report.complete()
        }
        Command::Query(args) => {
            emit(args.json, query::run(&args)?.as_slice(), query::print)?;
            true
        }
        Command::Probe(args) => {
            let report = probe::run(&args)?;
            emit(args.json, &report, probe::print)?;
            report.complete()
        }
        Command::Startup(args) => {
            emit(args.json, &startup::run(&args)?, startup::print)?;
            true
        }
    };
    Ok(if complete {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// A report as one JSON object (`--json`) or as text.
fn emit<R: serde::Serialize + ?Sized>(json: bool, report: &R, print: fn(&R)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print(report);
    }
    Ok(())
}

fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// ISO 8601 UTC with milliseconds, as Langfuse's query parameters take it.
fn iso(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}
