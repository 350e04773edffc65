//! `sightline-load startup`: starts `sightline serve` on an existing data directory, times exec
//! to the first 200 from `/api/public/health` (which proves the store reads and commits), reads
//! the idle resident memory a few seconds later, and stops the server with SIGTERM.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::stats;

#[derive(clap::Args, Clone, Debug)]
pub struct StartupArgs {
    /// The server binary; defaults to `sightline` beside this program.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:3999")]
    pub listen: String,
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Seconds to wait after healthy before reading idle memory.
    #[arg(long, default_value_t = 3)]
    pub idle_secs: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct StartupReport {
    pub healthy_ms: Vec<f64>,
    pub median_healthy_ms: f64,
    pub idle_rss_mib: Vec<f64>,
    pub median_idle_rss_mib: f64,
    /// The anonymous part (heap, stacks), without mapped files.
    pub median_idle_rss_anon_mib: f64,
    pub data_dir_bytes: u64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(args: &StartupArgs) -> anyhow::Result<StartupReport> {
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("own directory")?
            .join("sightline"),
    };
    let probe = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let health = format!("http://{}/api/public/health", args.listen);
    let mut healthy_ms = Vec::new();
    let mut idle = Vec::new();
    let mut idle_anon = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .arg("serve")
            .env("SIGHTLINE_LISTEN", &args.listen)
            .env("SIGHTLINE_DATA_DIR", &args.data_dir)
            .env("SIGHTLINE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let deadline = started + Duration::from_secs(120);
        let took = loop {
            if let Some(status) = child.try_wait()? {
                bail!("server exited during start-up: {status}");
            }
            if probe
                .get(&health)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                break started.elapsed();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("not healthy within 120 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        healthy_ms.push(took.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(args.idle_secs));
        if let Some((rss, _)) = stats::rss(child.id()) {
            idle.push(stats::mib(rss));
        }
        if let Some(anon) = stats::rss_anon(child.id()) {
            idle_anon.push(stats::mib(anon));
        }
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !term.success() {
            let _ = child.kill();
        }
        child.wait()?;
    }
    Ok(StartupReport {
        median_healthy_ms: median(&healthy_ms),
        median_idle_rss_mib: median(&idle),
        median_idle_rss_anon_mib: median(&idle_anon),
        healthy_ms,
        idle_rss_mib: idle,
        data_dir_bytes: stats::disk_bytes(&args.data_dir),
    })
}

pub fn print(r: &StartupReport) {
    println!(
        "start to healthy: median {:.0} ms (runs {:?}); idle RSS median {:.1} MiB (runs {:?}), anonymous {:.1} MiB; data dir {:.0} MiB",
        r.median_healthy_ms,
        r.healthy_ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
        r.median_idle_rss_mib,
        r.idle_rss_mib
            .iter()
            .map(|m| (m * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        r.median_idle_rss_anon_mib,
        stats::mib(r.data_dir_bytes)
    );
}
