//! The command line: parses arguments, sets up logging, and dispatches to subcommands. Only
//! this edge uses `anyhow`; everything below returns typed errors.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use crate::config::{Bootstrap, Config, LogFormat, RawConfig};
use crate::cost::{LivePrices, PriceBook};
use crate::store::{Store, WriteOp};
use crate::time::Timestamp;

#[derive(Parser, Debug)]
#[command(name = "sightline", version, about = "LLM observability in one binary")]
pub struct Cli {
    /// Config file (TOML). Also SIGHTLINE_CONFIG.
    #[arg(long, global = true, env = "SIGHTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API and dashboard (the default).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:3000.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Delete the search index and rebuild it from the record store, then exit. Run it while
    /// the server is stopped (the store refuses a second process).
    Reindex {
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy a consistent snapshot of the data directory into one file, while the server runs.
    Backup {
        /// The backup file to create (must not exist).
        dest: PathBuf,
        /// Data directory to back up (default: from config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Re-price stored observations with the current prices (built-ins, config-file and
    /// project models), e.g. after adding a model. Run it with the server stopped.
    Recost {
        /// Only observations starting at or after this date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Data directory (default: from config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the analytics rollups against the records, or rebuild them. Run it with the server
    /// stopped.
    Rollups {
        #[arg(value_enum)]
        action: RollupAction,
        /// Data directory (default: from config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print where the database file's bytes go (per table: rows, row bytes, B-tree overhead,
    /// unused) and the search index's size, as JSON. Safe while the server runs.
    DiskUsage {
        /// Data directory (default: from config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore a backup file into an empty data directory.
    Restore {
        /// The backup file.
        src: PathBuf,
        /// The data directory to create.
        data_dir: PathBuf,
    },
    /// Export a project as JSONL ingestion events or CSV, while the server runs.
    Export(ExportArgs),
    /// POST a JSONL export to a Langfuse-compatible ingestion API.
    Import(ImportArgs),
    /// Send everything stored to an upstream ingestion API, then keep sending what is new.
    Forward(ForwardArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// jsonl (Langfuse ingestion events, one per line) or csv (one row per observation).
    #[arg(long, default_value = "jsonl")]
    pub format: String,
    /// Only traces from this time on: an ISO-8601 time with offset, or a date (UTC midnight).
    #[arg(long)]
    pub since: Option<String>,
    /// Only traces before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only traces of this user.
    #[arg(long)]
    pub user_id: Option<String>,
    /// Only traces with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only traces of this session.
    #[arg(long)]
    pub session_id: Option<String>,
    /// Only traces with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only traces in this environment (repeatable: any may match).
    #[arg(long = "environment")]
    pub environments: Vec<String>,
    /// Project id (default: the only project in the data directory).
    #[arg(long)]
    pub project: Option<String>,
    /// Data directory (default: from config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File to write (default: standard output). Written under a temporary name and renamed
    /// when complete.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Where import and forward send to.
#[derive(Args, Debug)]
pub struct UpstreamArgs {
    /// Base url of the ingestion API, e.g. http://langfuse.internal:3000.
    #[arg(long, env = "SIGHTLINE_UPSTREAM_URL")]
    pub to: String,
    /// Public key of the upstream project.
    #[arg(long, env = "SIGHTLINE_UPSTREAM_PUBLIC_KEY", hide_env_values = true)]
    pub public_key: String,
    /// Secret key of the upstream project (prefer the environment variable: arguments are
    /// visible to other users in the process list).
    #[arg(long, env = "SIGHTLINE_UPSTREAM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// Bytes per batch at most (Langfuse's SDKs use 3.5 MB).
    #[arg(long, default_value_t = crate::forward::DEFAULT_BATCH_BYTES)]
    pub batch_bytes: usize,
}

impl UpstreamArgs {
    fn upstream(&self) -> anyhow::Result<crate::forward::Upstream> {
        let credentials = crate::forward::Credentials {
            public_key: self.public_key.clone(),
            secret_key: self.secret_key.clone(),
        };
        Ok(crate::forward::Upstream::new(&self.to, credentials)?)
    }
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The JSONL file (a `sightline export --format jsonl`).
    pub file: PathBuf,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Data directory (default: from config). The cursor file is kept here.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Project id (default: the only project in the data directory).
    #[arg(long)]
    pub project: Option<String>,
    /// Stop once caught up (for cron and tests) instead of following new data.
    #[arg(long)]
    pub once: bool,
    /// Milliseconds between looks for new data once caught up.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Stop after this many acknowledged batches.
    #[arg(long)]
    pub max_batches: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RollupAction {
    Verify,
    Rebuild,
}

/// Reads `--since`: a bare date means midnight UTC.
fn parse_since(s: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse(s)
        .or_else(|| Timestamp::parse(&format!("{s}T00:00:00Z")))
        .with_context(|| format!("--since {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

/// Opens the data directory offline, with the prices the server would use.
fn open_offline(config: &Config) -> anyhow::Result<Store> {
    let dir = &config.data_dir;
    let builtin = PriceBook::builtin().context("loading the built-in model price table")?;
    let prices = Arc::new(LivePrices::new(&builtin, config.models.clone()));
    Store::open(dir, config.queue_capacity, prices)
        .with_context(|| format!("opening {} (is the server still running?)", dir.display()))
}

/// Observations re-priced per write: bounds one transaction.
const RECOST_CHUNK: usize = 500;

fn recost(store: &Store, since: Option<Timestamp>) -> anyhow::Result<(usize, usize)> {
    let (mut seen, mut changed) = (0, 0);
    let cost = |o: Option<crate::record::ObservationRecord>| {
        o.map(|o| (o.usage_details, o.cost_details, o.pricing))
    };
    for project in store.projects()? {
        let ids = store.observation_ids_since(&project.id, since)?;
        for chunk in ids.chunks(RECOST_CHUNK) {
            let before = chunk
                .iter()
                .map(|id| Ok(cost(store.observation(&project.id, id)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            store.writer().submit_blocking(WriteOp::Reprice {
                project: project.id.clone(),
                ids: chunk.to_vec(),
            })?;
            for (id, b) in chunk.iter().zip(before) {
                if cost(store.observation(&project.id, id)?) != b {
                    changed += 1;
                }
            }
            seen += chunk.len();
        }
    }
    Ok((seen, changed))
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    let mut raw = match &cli.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    }
    .with_env(&env)?;
    match &cli.command {
        Some(Command::Serve { listen, data_dir }) => {
            if let Some(l) = listen {
                raw.listen = Some(l.clone());
            }
            if let Some(d) = data_dir {
                raw.data_dir = Some(d.clone());
            }
        }
        Some(Command::Reindex { data_dir: Some(d) })
        | Some(Command::Recost {
            data_dir: Some(d), ..
        })
        | Some(Command::Rollups {
            data_dir: Some(d), ..
        }) => raw.data_dir = Some(d.clone()),
        Some(Command::Reindex { data_dir: None })
        | Some(Command::Recost { data_dir: None, .. })
        | Some(Command::Rollups { data_dir: None, .. })
        | Some(Command::Backup { .. })
        | Some(Command::DiskUsage { .. })
        | Some(Command::Restore { .. })
        // These take --data-dir themselves and fall back to the configured one.
        | Some(Command::Export(_))
        | Some(Command::Import(_))
        | Some(Command::Forward(_))
        | None => {}
    }
    if let Some(f) = &cli.log_format {
        raw.log.format = Some(f.clone());
    }
    Ok(raw.validate()?)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    init_logging(&config);
    match cli.command {
        None | Some(Command::Serve { .. }) => serve(config),
        Some(Command::Reindex { .. }) => reindex(&config),
        Some(Command::DiskUsage { data_dir }) => {
            let dir = data_dir.unwrap_or(config.data_dir);
            let store = Store::open_read_only(&dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            let usage = store.disk_usage()?;
            let search_dir = dir.join("search");
            let search = dir_bytes(&search_dir);
            // The breakdown is a second look at files a live server may be merging away: when
            // it fails, the other figures still print, with the reason beside them.
            let breakdown = match crate::search::index_usage(&search_dir) {
                Ok(u) => serde_json::to_value(u)?,
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "database": usage, "searchIndexBytes": search, "searchIndex": breakdown,
                }))?
            );
            Ok(())
        }
        Some(Command::Backup { dest, data_dir }) => {
            let dir = data_dir.unwrap_or(config.data_dir);
            let r = crate::store::backup::backup(&dir, &dest)
                .with_context(|| format!("backing up {}", dir.display()))?;
            println!(
                "backed up {} rows ({} bytes) to {}",
                r.rows,
                r.bytes,
                r.path.display()
            );
            Ok(())
        }
        Some(Command::Recost { since, .. }) => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let store = open_offline(&config)?;
            let result = recost(&store, since);
            store.shutdown();
            let (seen, changed) = result?;
            println!("re-priced {seen} observations; {changed} changed cost, usage or price");
            Ok(())
        }
        Some(Command::Rollups { action, .. }) => {
            let store = open_offline(&config)?;
            let result = match action {
                RollupAction::Verify => crate::analytics::verify(&store)
                    .map_err(anyhow::Error::from)
                    .and_then(|diffs| {
                        for d in diffs.iter().take(50) {
                            println!("{d}");
                        }
                        anyhow::ensure!(
                            diffs.is_empty(),
                            "{} rollup rows differ from the records; run `sightline rollups rebuild`",
                            diffs.len()
                        );
                        println!("rollups agree with the records");
                        Ok(())
                    }),
                RollupAction::Rebuild => store
                    .writer()
                    .submit_blocking(WriteOp::RebuildRollups)
                    .map_err(anyhow::Error::from)
                    .map(|()| println!("rebuilt the rollups from the records")),
            };
            store.shutdown();
            result
        }
        Some(Command::Restore { src, data_dir }) => {
            let r = crate::store::backup::restore(&src, &data_dir)
                .with_context(|| format!("restoring {}", src.display()))?;
            println!(
                "restored {} rows into {}; the search index is rebuilt on the next start",
                r.rows,
                r.path.display()
            );
            Ok(())
        }
        Some(Command::Export(args)) => export(args, config),
        Some(Command::Import(args)) => import(args),
        Some(Command::Forward(args)) => forward(args, config),
    }
}

/// `--since`/`--until`: a full ISO-8601 time, or a date meaning its UTC midnight.
fn parse_time(flag: &str, v: Option<&String>) -> anyhow::Result<Option<crate::time::Timestamp>> {
    use crate::time::Timestamp;
    let Some(v) = v else { return Ok(None) };
    Timestamp::parse(v)
        .or_else(|| Timestamp::parse(&format!("{v}T00:00:00Z")))
        .map(Some)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{flag} {v:?} is not a date (2025-01-31) or an ISO-8601 time with offset"
            )
        })
}

/// The project to work on: the one named, or the only one there is.
fn pick_project(store: &crate::store::Store, wanted: Option<String>) -> anyhow::Result<String> {
    let projects = store.projects()?;
    match wanted {
        Some(p) if projects.iter().any(|x| x.id == p) => Ok(p),
        Some(p) => anyhow::bail!("no project {p:?} in this data directory"),
        None => match projects.as_slice() {
            [only] => Ok(only.id.clone()),
            [] => anyhow::bail!("this data directory has no project yet"),
            many => anyhow::bail!(
                "this data directory has {} projects; choose one with --project ({})",
                many.len(),
                many.iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

fn open_read_only(dir: &std::path::Path) -> anyhow::Result<crate::store::Store> {
    crate::store::Store::open_read_only(dir)
        .with_context(|| format!("opening {} read-only", dir.display()))
}

fn export(args: ExportArgs, config: Config) -> anyhow::Result<()> {
    let format: crate::export::Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let dir = args.data_dir.unwrap_or(config.data_dir);
    let store = open_read_only(&dir)?;
    let project = pick_project(&store, args.project)?;
    let q = crate::store::TraceQuery {
        user_id: args.user_id,
        name: args.name,
        session_id: args.session_id,
        tags: args.tags,
        environments: args.environments,
        from: parse_time("--since", args.since.as_ref())?,
        to: parse_time("--until", args.until.as_ref())?,
        ..Default::default()
    };
    let stats = match &args.out {
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            crate::export::export(&store, &project, &q, format, &mut w)?
        }
        Some(path) => {
            // A half-written export must never look like a complete one.
            let tmp = path.with_extension("partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let stats = crate::export::export(&store, &project, &q, format, &mut w)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            stats
        }
    };
    eprintln!(
        "exported {} traces, {} observations, {} scores of project {project}",
        stats.traces, stats.observations, stats.scores
    );
    Ok(())
}

fn reindex(config: &Config) -> anyhow::Result<()> {
    let prices =
        crate::cost::PriceBook::builtin().context("loading the built-in model price table")?;
    let store = crate::store::Store::open(
        &config.data_dir,
        config.queue_capacity,
        std::sync::Arc::new(prices),
    )
    .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let started = std::time::Instant::now();
    tracing::info!(data_dir = %config.data_dir.display(), "rebuilding the search index");
    let report = crate::search::reindex(&config.data_dir, &store);
    store.shutdown();
    let report = report.context("rebuilding the search index")?;
    tracing::info!(
        documents = report.docs,
        seq = report.seq,
        seconds = started.elapsed().as_secs_f64(),
        "search index rebuilt"
    );
    Ok(())
}

/// Prints the events an upstream refused; true when there were any.
fn report_rejected(rejected: &[crate::forward::Rejected]) -> bool {
    for r in rejected {
        eprintln!("rejected event {}: {} {}", r.id, r.status, r.message);
    }
    !rejected.is_empty()
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let upstream = args.upstream.upstream()?;
    eprintln!(
        "importing {} into {}",
        args.file.display(),
        upstream.describe()
    );
    let report =
        crate::forward::import(&args.file, &upstream, args.upstream.batch_bytes, &mut |r| {
            eprintln!("sent {} events in {} batches", r.events, r.batches)
        })
        .with_context(|| format!("importing {}", args.file.display()))?;
    let bad = report_rejected(&report.rejected);
    eprintln!(
        "imported {} events in {} batches; {} rejected",
        report.events,
        report.batches,
        report.rejected.len()
    );
    if bad {
        anyhow::bail!(
            "{} events were rejected (listed above)",
            report.rejected.len()
        );
    }
    Ok(())
}

fn forward(args: ForwardArgs, config: Config) -> anyhow::Result<()> {
    let dir = args.data_dir.unwrap_or(config.data_dir);
    let store = open_read_only(&dir)?;
    let project = pick_project(&store, args.project)?;
    let mut upstream = args.upstream.upstream()?;
    if !args.once {
        // Following: an upstream outage is waited out, not a reason to exit.
        upstream.max_attempts = None;
    }
    let cursor =
        crate::forward::cursor_path(&dir, &args.upstream.to, &args.upstream.public_key, &project);
    let opts = crate::forward::ForwardOptions {
        project: project.clone(),
        once: args.once,
        poll: std::time::Duration::from_millis(args.poll_ms.max(10)),
        batch_bytes: args.upstream.batch_bytes,
        max_batches: args.max_batches,
        stop: Default::default(),
    };
    eprintln!(
        "forwarding project {project} to {} (cursor {})",
        upstream.describe(),
        cursor.display()
    );
    let report = crate::forward::forward(
        &store,
        &cursor,
        &upstream,
        &args.upstream.to,
        &opts,
        &mut |r| {
            eprintln!(
                "forwarded through change {}: {} events in {} batches, {} deletes",
                r.seq, r.events, r.batches, r.deletes
            )
        },
    )?;
    let bad = report_rejected(&report.rejected);
    eprintln!(
        "done at change {}: {} events in {} batches, {} deletes, {} rejected",
        report.seq,
        report.events,
        report.batches,
        report.deletes,
        report.rejected.len()
    );
    if bad {
        anyhow::bail!(
            "{} events were rejected upstream (listed above)",
            report.rejected.len()
        );
    }
    Ok(())
}

/// How far each keepalive message pushes systemd's start timeout, and how often one is sent.
const STARTUP_EXTEND: std::time::Duration = std::time::Duration::from_secs(30);
const STARTUP_EXTEND_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells systemd (Type=notify) every `STARTUP_EXTEND_EVERY` that start-up is still under way,
/// until stopped. A no-op when not started by systemd.
fn startup_keepalive() -> std::io::Result<crate::background::Task> {
    crate::background::Task::spawn("startup", |stop| {
        let usec = u32::try_from(STARTUP_EXTEND.as_micros()).unwrap_or(u32::MAX);
        loop {
            if let Err(e) =
                sd_notify::notify(false, &[sd_notify::NotifyState::ExtendTimeoutUsec(usec)])
            {
                tracing::warn!(error = %e, "could not extend systemd's start timeout");
            }
            if stop.sleep(STARTUP_EXTEND_EVERY) {
                break;
            }
        }
    })
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let init = Bootstrap::from_env(&|k| std::env::var(k).ok());
        // Opening can take long once: a file from an older rollup version rebuilds its rollups
        // (~45 s at 1M observations). Under systemd, a start that outlasts TimeoutStartSec is
        // killed and restarted, which would start that rebuild over and over; the keepalive
        // extends the start timeout while the open runs, and only then.
        let keepalive = startup_keepalive().context("starting the start-up keepalive")?;
        let opened = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || crate::server::open(&config, &init)).await
        };
        keepalive.stop(std::time::Duration::from_secs(1));
        let (state, first_run) = opened??;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "sightline listening; dashboard at http://{addr}/");
        if let Some(fr) = first_run {
            tracing::info!(
                project = %fr.project_id,
                public_key = %fr.public_key,
                credentials = %fr.credentials_file.display(),
                "first run: created the default project, an API key and a dashboard user"
            );
            // The banner with the secret goes only to an interactive terminal: under systemd or
            // any log collector stderr is a log, and secrets are never logged.
            use std::io::IsTerminal;
            if std::io::stderr().is_terminal() {
                eprintln!(
                "\n  Sightline is ready: http://{addr}/\n  LANGFUSE_HOST=http://{addr}\n  LANGFUSE_PUBLIC_KEY={}\n  LANGFUSE_SECRET_KEY={}\n  Dashboard login: {} / {}\n  (also saved, readable only by you, in {})\n",
                fr.public_key,
                fr.secret_key,
                fr.user_email,
                fr.user_password,
                fr.credentials_file.display()
                );
            }
        }
        // systemd Type=notify: ready once the socket is bound and the store is open. A no-op
        // when not started by systemd.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "could not notify systemd of readiness");
        }
        let shutdown = async {
            crate::server::shutdown_signal().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        };
        crate::server::run(listener, state, shutdown).await
    })
}

/// Bytes of the files under `dir` (the search index is a directory of segment files).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
