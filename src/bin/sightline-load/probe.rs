//! `probe`: the baseline the performance targets were set from — serde_json, redb group commits
//! and tantivy in one process, with none of Sightline's work — over the same generated traces
//! and the same wire bodies as `ingest`. BENCHMARKS.md compares it with the server, step by
//! step, to say where the difference goes.
//!
//! Owns: the probe pipeline (client threads → parsing threads → one writer → one indexer) and
//! its report. Shares only the generator and the wire format with `ingest`; links no server
//! code.
//!
//! Each client sends a Langfuse batch body and waits for its acknowledgement, as `ingest`'s
//! workers do over HTTP; a body is parsed with serde_json on a parsing thread, each event's
//! body is stored under its id as JSON in one redb table, the writer takes whatever is queued
//! into one durable commit and acknowledges after it, and then hands the documents to the
//! indexer, which commits tantivy every `--commit-ms` while documents arrive.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redb::{Database, TableDefinition};
use serde::Serialize;
use serde_json::Value;
use tantivy::schema::{STRING, Schema, TEXT, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexWriter, TantivyDocument};

use crate::data::{LoadArgs, Shape};
use crate::encode::{Format, Target, encode};
use crate::stats;

const SPANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("spans");

#[derive(clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Threads that parse request bodies (the server's HTTP threads).
    #[arg(long, default_value_t = 2)]
    pub parse_threads: usize,
    /// What tantivy indexes: nothing, text without positions, or text with positions (tantivy's
    /// `TEXT`, which phrase search needs).
    #[arg(long, value_enum, default_value = "positions")]
    pub index: IndexLevel,
    /// Time between two tantivy commits while documents arrive.
    #[arg(long, default_value_t = 150)]
    pub commit_ms: u64,
    /// Where the database and the index go (created; must not exist). A temporary directory,
    /// removed afterwards, when not given.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexLevel {
    None,
    Text,
    Positions,
}

#[derive(Serialize, Debug)]
pub struct ProbeReport {
    pub index: String,
    pub traces: u64,
    pub spans: u64,
    pub payload_bytes: usize,
    pub commits: u64,
    /// Events (traces and observations) in the bodies sent, and those the writer stored.
    pub events: u64,
    pub records: u64,
    /// Rows in the table and documents in the index at the end: every record, once each.
    pub rows_stored: u64,
    pub documents_indexed: Option<u64>,
    pub spans_per_sec_stored: f64,
    pub searchable_after_last_ack_ms: f64,
    /// CPU of everything but the client threads, per stored span.
    pub cpu_us_per_span: f64,
    pub client_cpu_us_per_span: f64,
    pub cpu_seconds_by_thread: std::collections::BTreeMap<String, f64>,
    pub disk_bytes_per_span: f64,
}

impl ProbeReport {
    /// Whether every record sent was stored, and indexed when there is an index, exactly once.
    pub fn complete(&self) -> bool {
        self.events >= self.spans
            && self.records == self.events
            && self.rows_stored == self.records
            && self.documents_indexed.is_none_or(|n| n == self.records)
    }
}

/// One request: its body and where to acknowledge it.
struct Request {
    body: Vec<u8>,
    ack: SyncSender<()>,
}

/// A parsed request: each event's key, stored value and indexed text.
struct Parsed {
    /// Events in the body, whether or not they made a record.
    events: u64,
    records: Vec<ProbeRecord>,
    ack: SyncSender<()>,
}

struct ProbeRecord {
    id: String,
    value: Vec<u8>,
    text: [String; 4],
}

pub fn run(args: &ProbeArgs) -> anyhow::Result<ProbeReport> {
    let shape = args.load.shape("probetag".to_owned())?;
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("sightline-probe-{:016x}", rand::random::<u64>())),
            true,
        ),
    };
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = probe(args, shape, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn probe(args: &ProbeArgs, shape: Shape, dir: &std::path::Path) -> anyhow::Result<ProbeReport> {
    let db = Arc::new(Database::create(dir.join("probe.redb"))?);
    let tx = db.begin_write()?;
    tx.open_table(SPANS)?;
    tx.commit()?;
    let (index, fields) = open_index(args.index, &dir.join("index"))?;
    let reader = index.as_ref().map(Index::reader).transpose()?;

    let me = std::process::id();
    let cpu_before = stats::cpu_by_thread(me);
    let started = Instant::now();

    let (req_tx, req_rx) = sync_channel::<Request>(args.load.concurrency.max(1));
    let req_rx = Arc::new(std::sync::Mutex::new(req_rx));
    let (parsed_tx, parsed_rx) = sync_channel::<Parsed>(args.load.concurrency.max(1));
    let (doc_tx, doc_rx) = sync_channel::<Vec<ProbeRecord>>(64);

    let parsers: Vec<_> = (0..args.parse_threads.max(1))
        .map(|i| {
            let rx = req_rx.clone();
            let tx = parsed_tx.clone();
            named(format!("probe-parse{i}"), move || {
                parse_loop(&rx, &tx);
                stats::thread_cpu()
            })
        })
        .collect::<Result<_, _>>()?;
    drop(parsed_tx);
    let write_db = db.clone();
    let writer = named("probe-writer".into(), move || {
        write_loop(&write_db, &parsed_rx, &doc_tx).map(|counts| (counts, stats::thread_cpu()))
    })?;
    let commit_every = Duration::from_millis(args.commit_ms);
    let indexer = named("probe-index".into(), move || {
        index_loop(index, fields, &doc_rx, commit_every).map(|w| (w, stats::thread_cpu()))
    })?;

    // Clients stay alive after their last request until their CPU is read.
    let per_request = args.load.traces_per_request();
    let clients = args.load.concurrency.max(1);
    let measured = Arc::new(Barrier::new(clients + 1));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let shape = Arc::new(shape);
    let (done_tx, done_rx) = sync_channel::<()>(clients);
    let client_threads: Vec<_> = (0..clients)
        .map(|i| {
            let (shape, next, measured) = (shape.clone(), next.clone(), measured.clone());
            let (req_tx, done_tx) = (req_tx.clone(), done_tx.clone());
            let traces = args.load.traces;
            named(format!("probe-client{i}"), move || {
                client(&shape, &next, traces, per_request, &req_tx);
                drop(req_tx);
                let _ = done_tx.send(());
                measured.wait();
            })
        })
        .collect::<Result<_, _>>()?;
    drop(req_tx);
    for _ in 0..clients {
        done_rx.recv().context("a client thread ended early")?;
    }
    let acked = started.elapsed();
    // Every parser ends once the clients' senders are gone, then the writer, then the indexer
    // after its last commit.
    let mut own = std::collections::BTreeMap::new();
    for p in parsers {
        let secs = p.join().map_err(|_| anyhow::anyhow!("parser panicked"))?;
        *own.entry("probe-parse".to_owned()).or_insert(0.0) += secs;
    }
    let (tally, secs) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    own.insert("probe-writer".to_owned(), secs);
    let (index_writer, secs) = indexer
        .join()
        .map_err(|_| anyhow::anyhow!("indexer panicked"))??;
    own.insert("probe-index".to_owned(), secs);
    let searchable = started.elapsed();
    let mut cpu = stats::cpu_delta(&cpu_before, &stats::cpu_by_thread(me));
    // The pipeline's threads have ended: what they reported of themselves comes out of the
    // process's ended threads, the rest of which are tantivy's indexing workers.
    let ended: f64 = own.values().sum();
    if let Some(rest) = cpu.get_mut("(exited threads)") {
        *rest = (*rest - ended).max(0.0);
    }
    cpu.extend(own);
    measured.wait();
    for c in client_threads {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
    }
    if let Some(w) = index_writer {
        w.wait_merging_threads()?;
    }
    let rows_stored = {
        use redb::{ReadableDatabase as _, ReadableTableMetadata as _};
        db.begin_read()?.open_table(SPANS)?.len()?
    };
    let documents_indexed = match reader {
        Some(r) => {
            r.reload()?;
            Some(r.searcher().num_docs())
        }
        None => None,
    };

    let spans = args.load.spans();
    let client_cpu: f64 = cpu
        .iter()
        .filter(|(k, _)| k.starts_with("probe-client"))
        .map(|(_, v)| v)
        .sum();
    let total: f64 = cpu.values().sum();
    let per_span = |secs: f64| secs * 1e6 / spans.max(1) as f64;
    Ok(ProbeReport {
        index: format!("{:?}", args.index).to_lowercase(),
        traces: args.load.traces,
        spans,
        payload_bytes: args.load.payload_bytes,
        commits: tally.commits,
        events: tally.events,
        records: tally.records,
        rows_stored,
        documents_indexed,
        spans_per_sec_stored: spans as f64 / acked.as_secs_f64().max(1e-9),
        searchable_after_last_ack_ms: searchable.saturating_sub(acked).as_secs_f64() * 1e3,
        cpu_us_per_span: per_span(total - client_cpu),
        client_cpu_us_per_span: per_span(client_cpu),
        cpu_seconds_by_thread: cpu,
        disk_bytes_per_span: stats::disk_bytes(dir) as f64 / spans.max(1) as f64,
    })
}

fn named<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// The text fields a naive probe indexes: input, output, name and metadata, as JSON text.
struct ProbeFields {
    id: tantivy::schema::Field,
    text: [tantivy::schema::Field; 4],
}

fn open_index(
    level: IndexLevel,
    path: &std::path::Path,
) -> anyhow::Result<(Option<Index>, ProbeFields)> {
    let mut b = Schema::builder();
    let text_options = match level {
        IndexLevel::Text => TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(tantivy::schema::IndexRecordOption::WithFreqs),
        ),
        _ => TEXT,
    };
    let id = b.add_text_field("id", STRING);
    let text = ["input", "output", "name", "metadata"]
        .map(|name| b.add_text_field(name, text_options.clone()));
    let fields = ProbeFields { id, text };
    if level == IndexLevel::None {
        return Ok((None, fields));
    }
    std::fs::create_dir(path)?;
    Ok((Some(Index::create_in_dir(path, b.build())?), fields))
}

fn client(
    shape: &Shape,
    next: &std::sync::atomic::AtomicU64,
    traces: u64,
    per_request: u64,
    requests: &SyncSender<Request>,
) {
    let target = Target {
        environment: "probe",
        project: "probe",
    };
    let (ack_tx, ack_rx) = sync_channel::<()>(1);
    loop {
        let first = next.fetch_add(per_request, std::sync::atomic::Ordering::Relaxed);
        if first >= traces {
            return;
        }
        let group: Vec<_> = (first..(first + per_request).min(traces))
            .map(|i| shape.trace(i))
            .collect();
        let body = encode(Format::Langfuse, &group, &target);
        let request = Request {
            body,
            ack: ack_tx.clone(),
        };
        if requests.send(request).is_err() || ack_rx.recv().is_err() {
            return;
        }
    }
}

fn parse_loop(requests: &std::sync::Mutex<Receiver<Request>>, parsed: &SyncSender<Parsed>) {
    loop {
        let Ok(request) = requests
            .lock()
            .map_err(drop)
            .and_then(|r| r.recv().map_err(drop))
        else {
            return;
        };
        let (events, records) = parse(&request.body);
        if parsed
            .send(Parsed {
                events,
                records,
                ack: request.ack,
            })
            .is_err()
        {
            return;
        }
    }
}

/// A Langfuse batch's events (how many) as records: each event's body under its id.
fn parse(body: &[u8]) -> (u64, Vec<ProbeRecord>) {
    let Ok(Value::Object(mut batch)) = serde_json::from_slice::<Value>(body) else {
        return (0, Vec::new());
    };
    let Some(Value::Array(events)) = batch.remove("batch") else {
        return (0, Vec::new());
    };
    let count = events.len() as u64;
    let records = events
        .into_iter()
        .filter_map(|mut event| {
            let body = event.get_mut("body")?.take();
            let id = body.get("id")?.as_str()?.to_owned();
            let text = ["input", "output", "name", "metadata"].map(|k| match body.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            });
            let value = serde_json::to_vec(&body).ok()?;
            Some(ProbeRecord { id, value, text })
        })
        .collect();
    (count, records)
}

#[derive(Default)]
struct WriterTally {
    commits: u64,
    events: u64,
    records: u64,
}

/// Group commits: whatever is queued goes into one durable transaction, acknowledged after it.
fn write_loop(
    db: &Database,
    parsed: &Receiver<Parsed>,
    docs: &SyncSender<Vec<ProbeRecord>>,
) -> anyhow::Result<WriterTally> {
    let mut tally = WriterTally::default();
    while let Ok(first) = parsed.recv() {
        let mut group = vec![first];
        group.extend(parsed.try_iter());
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(SPANS)?;
            for p in &group {
                for r in &p.records {
                    table.insert(r.id.as_bytes(), r.value.as_slice())?;
                }
                tally.records += p.records.len() as u64;
                tally.events += p.events;
            }
        }
        tx.commit()?;
        tally.commits += 1;
        for p in group {
            let _ = p.ack.send(());
            let _ = docs.send(p.records);
        }
    }
    Ok(tally)
}

fn index_loop(
    index: Option<Index>,
    fields: ProbeFields,
    docs: &Receiver<Vec<ProbeRecord>>,
    every: Duration,
) -> anyhow::Result<Option<IndexWriter>> {
    let Some(index) = index else {
        while docs.recv().is_ok() {}
        return Ok(None);
    };
    let mut writer: IndexWriter = index.writer(50_000_000)?;
    let mut last = Instant::now();
    let mut dirty = false;
    loop {
        match docs.recv_timeout(every.saturating_sub(last.elapsed())) {
            Ok(records) => {
                for r in records {
                    let mut doc = TantivyDocument::default();
                    doc.add_text(fields.id, &r.id);
                    for (field, text) in fields.text.iter().zip(&r.text) {
                        if !text.is_empty() {
                            doc.add_text(*field, text);
                        }
                    }
                    writer.add_document(doc)?;
                    dirty = true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last.elapsed() >= every {
            if dirty {
                writer.commit()?;
                dirty = false;
            }
            last = Instant::now();
        }
    }
    writer.commit()?;
    Ok(Some(writer))
}

pub fn print(r: &ProbeReport) {
    println!(
        "probe ({} index): {} spans, {:.0} spans/s stored in {} commits; server CPU {:.1} µs per \
         span (clients {:.1}); searchable {:.0} ms after the last ack; {:.0} bytes per span on disk",
        r.index,
        r.spans,
        r.spans_per_sec_stored,
        r.commits,
        r.cpu_us_per_span,
        r.client_cpu_us_per_span,
        r.searchable_after_last_ack_ms,
        r.disk_bytes_per_span
    );
    let split: Vec<String> = r
        .cpu_seconds_by_thread
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    println!("CPU seconds by thread: {}", split.join(", "));
}
