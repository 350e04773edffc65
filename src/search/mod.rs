//! Full-text search over every trace and observation: a tantivy index under
//! `<data_dir>/search/`.
//!
//! Owns: the index, its versioned schema (`schema`), the multilingual tokenizer (`text`), JSON
//! text extraction (`extract`), the query language (`query`), highlighted snippets
//! (`highlight`), the indexer thread that keeps the index up to date (`indexer`, reading
//! rows through `view`) and the account of where the index's bytes go (`usage`).
//!
//! Must not: write the record store. The index is derived state: it follows the store's change
//! log, records the last sequence it applied in its commit payload, and can be deleted at any
//! time — on the next start (or `sightline reindex`) it is rebuilt from the store. All tantivy
//! work runs on the indexer thread or on the caller's blocking thread, never on the async
//! runtime; `Search::search` blocks and must be called from `spawn_blocking`.
//!
//! Freshness: the indexer wakes on `Writer::subscribe()`, so a change is searchable about one
//! commit interval (`indexer::MIN_COMMIT_INTERVAL`) after its ingestion was acknowledged.
//!
//! Queries see one project only (the project term is always required) and return at most
//! `MAX_CANDIDATES` hits; the list endpoints then apply their other filters and pagination to
//! those hits through the store, so `q` combines with every filter.

mod by_time;
mod extract;
mod highlight;
mod indexer;
mod merges;
mod open;
mod query;
mod rebuild;
mod schema;
mod skips;
mod text;
mod usage;
mod view;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus_client::metrics::counter::Counter;
use tantivy::collector::{Collector, Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, IndexReader, Order, Searcher, TantivyDocument, Term};
use tokio::sync::watch;

pub use extract::json_text;
pub use highlight::{Highlight, escape};
pub use indexer::MIN_COMMIT_INTERVAL;
pub use open::Payload;
pub use query::{FIELD_NAMES, MAX_QUERY_BYTES, QueryError};
pub use schema::{SCHEMA_VERSION, TextField};
pub use usage::{FieldBytes, IndexUsage, usage as index_usage};

use query::HighlightTerms;
use schema::{DocRef, DocText, Fields, KIND_OBSERVATION, KIND_TRACE, KeywordField};

use crate::record::{Level, ObservationRecord, ObservationType};
use crate::store::{Io, Store, StoreError};
use crate::time::Timestamp;

/// The index directory inside the data directory.
pub const DIR: &str = "search";
/// Most hits one search collects. The list endpoints filter and paginate within them, so a
/// query matching more documents than this pages through the best (or newest) ones only.
pub const MAX_CANDIDATES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("search index error: {0}")]
    Index(String),
    #[error("search index directory {path} is unusable: {reason}")]
    Dir { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the search index is shutting down")]
    Closed,
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Index(e.to_string())
    }
}

/// What the indexer publishes for readers.
#[derive(Default)]
pub struct Shared {
    indexed_seq: AtomicU64,
    rebuilding: AtomicBool,
    /// Records and change-log entries left out because their stored bytes do not decode.
    skipped: Counter,
    /// Record reads the indexer fails with an I/O error before reading for real (tests of
    /// transient failures).
    #[cfg(test)]
    read_faults: AtomicU64,
}

impl Shared {
    #[cfg(test)]
    fn take_injected_read_fault(&self) -> bool {
        self.read_faults
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The state of the index, for status displays and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Every change-log entry up to this sequence is searchable.
    pub indexed_seq: u64,
    /// A rebuild is under way: results are incomplete.
    pub rebuilding: bool,
}

struct Control {
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

/// Handle to the index: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Search {
    dir: PathBuf,
    fields: Fields,
    reader: IndexReader,
    shared: Arc<Shared>,
    control: Arc<Mutex<Option<Control>>>,
}

/// Which documents a search looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Trace and observation documents (a trace matches through any of them).
    All,
    Traces,
    Observations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchOrder {
    #[default]
    Newest,
    Oldest,
    Relevance,
}

/// An exact condition pushed into the index, so a frequent word does not crowd the wanted
/// documents out of the candidate limit. Callers still apply their own filters afterwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    ObservationType(ObservationType),
    Level(Level),
    /// Any of these environments.
    Environments(Vec<String>),
    TraceId(String),
    /// The trace's user, session, or (every one of these) tags: on trace documents and, lent
    /// by their trace, on observation documents.
    User(String),
    Session(String),
    Tags(Vec<String>),
}

impl Filter {
    /// The trace-level filters of a list request that the index can apply: exact values it
    /// holds as keywords (a value longer than a keyword is left to the store).
    pub fn trace_level(user: Option<&str>, session: Option<&str>, tags: &[String]) -> Vec<Filter> {
        let fits = |v: &str| text::keyword(v).is_some();
        let mut out = Vec::new();
        if let Some(u) = user.filter(|u| fits(u)) {
            out.push(Filter::User(u.to_string()));
        }
        if let Some(s) = session.filter(|s| fits(s)) {
            out.push(Filter::Session(s.to_string()));
        }
        let tags: Vec<String> = tags.iter().filter(|t| fits(t)).cloned().collect();
        if !tags.is_empty() {
            out.push(Filter::Tags(tags));
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub project: String,
    pub q: String,
    pub scope: Scope,
    pub order: SearchOrder,
    /// Document time (trace timestamp, observation start time) bounds: [from, to).
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub filters: Vec<Filter>,
    /// Hits to skip (for a page the index alone can answer), then at most `limit` hits
    /// (capped at `MAX_CANDIDATES`).
    pub offset: usize,
    pub limit: usize,
    /// Also count every matching document (`SearchResults::total`).
    pub count: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    Trace,
    Observation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub kind: HitKind,
    pub id: String,
    pub trace_id: String,
    /// BM25 score when ordered by relevance.
    pub score: Option<f32>,
}

/// The hits of one search, in the requested order, and what is needed to highlight them.
pub struct SearchResults {
    pub hits: Vec<Hit>,
    /// The limit was reached: more documents match.
    pub truncated: bool,
    /// Every matching document, when the request asked for a count.
    pub total: Option<u64>,
    terms: HighlightTerms,
}

impl SearchResults {
    /// Distinct trace ids in hit order, each with the first (best or newest) hit naming it.
    pub fn by_trace(&self) -> Vec<(&str, &Hit)> {
        let mut seen = std::collections::HashSet::new();
        self.hits
            .iter()
            .filter(|h| seen.insert(h.trace_id.as_str()))
            .map(|h| (h.trace_id.as_str(), h))
            .collect()
    }

    /// Highlighted snippets of one hit, rebuilt from its record in the store. Empty when the
    /// record is gone or the query matched only keyword fields.
    pub fn highlights(
        &self,
        store: &Store,
        project: &str,
        hit: &Hit,
    ) -> Result<Vec<Highlight>, SearchError> {
        let doc = match hit.kind {
            HitKind::Trace => store
                .trace_with_io(project, &hit.id)?
                .map(|(t, io)| DocText::of_trace(&t, &io)),
            HitKind::Observation => store
                .observation_with_io(project, &hit.id)?
                .map(|(o, io)| DocText::of_observation(&o, &io)),
        };
        Ok(doc.map(|d| self.highlight(&d)).unwrap_or_default())
    }

    /// Highlighted snippets of an observation whose record and payload the caller already
    /// holds: a listed page highlights without reading each record a second time.
    pub fn observation_highlights(&self, o: &ObservationRecord, io: &Io) -> Vec<Highlight> {
        self.highlight(&DocText::of_observation(o, io))
    }

    fn highlight(&self, doc: &DocText) -> Vec<Highlight> {
        highlight::highlights(&mut text::index_analyzer(), doc, &self.terms)
    }
}

impl Search {
    /// Opens the index under `data_dir/search/` — rebuilding it when it is missing, corrupt,
    /// of another schema version or ahead of the store — and starts the indexer thread that
    /// follows `store`. Returns at once; a rebuild or catch-up runs in the background and logs
    /// its progress.
    pub fn start(data_dir: &Path, store: Store) -> Result<Search, SearchError> {
        let fields = Fields::build();
        let dir = data_dir.join(DIR);
        let (index, mut start) = open::open_index(&dir, &fields)?;
        if let open::Start::Resume(seq) = start {
            let store_seq = store.snapshot()?.last_seq()?;
            if seq > store_seq {
                start = open::Start::Rebuild(format!(
                    "the index has seen change {seq} but the record store ends at {store_seq}"
                ));
            }
        }
        let reader = open::reader(&index)?;
        let shared = Arc::new(Shared::default());
        let seq = match &start {
            open::Start::Resume(seq) => *seq,
            open::Start::Rebuild(_) => 0,
        };
        shared.indexed_seq.store(seq, Ordering::Release);
        let committed = store.writer().subscribe();
        let ix = indexer::Indexer::new(
            &index,
            store,
            fields.clone(),
            reader.clone(),
            shared.clone(),
            seq,
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("sightline-search".into())
            .spawn(move || ix.run(start, committed, stop_rx))
            .map_err(|e| SearchError::Index(format!("cannot start the indexer thread: {e}")))?;
        Ok(Search {
            dir,
            fields,
            reader,
            shared,
            control: Arc::new(Mutex::new(Some(Control { stop, thread }))),
        })
    }

    /// Stops the indexer (what it has not committed is redone from the log next start) and
    /// waits for it. Blocks: call from a blocking context.
    pub fn shutdown(&self) {
        let control = self.control.lock().ok().and_then(|mut c| c.take());
        if let Some(c) = control {
            let _ = c.stop.send(true);
            let _ = c.thread.join();
        }
    }

    pub fn status(&self) -> Status {
        Status {
            indexed_seq: self.shared.indexed_seq.load(Ordering::Acquire),
            rebuilding: self.shared.rebuilding.load(Ordering::Acquire),
        }
    }

    /// Counts records the indexer skipped because their stored bytes do not decode (for
    /// `/metrics`).
    pub fn skipped_records(&self) -> Counter {
        self.shared.skipped.clone()
    }

    /// Documents in the searchable (last reloaded) index.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes used by the index directory (for metrics and benchmarks).
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Runs one search. Blocking: call from `spawn_blocking`.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResults, SearchError> {
        let (user_query, terms) = compile(&self.fields, &req.project, &req.q)?;
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.project, &req.project),
                    IndexRecordOption::Basic,
                )),
            ),
            (Occur::Must, user_query),
        ];
        let kind = match req.scope {
            Scope::All => None,
            Scope::Traces => Some(KIND_TRACE),
            Scope::Observations => Some(KIND_OBSERVATION),
        };
        if let Some(kind) = kind {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.kind, kind),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if req.from.is_some() || req.to.is_some() {
            let bound = |t: Option<Timestamp>, inclusive: bool| match t {
                None => Bound::Unbounded,
                Some(t) if inclusive => Bound::Included(Term::from_field_i64(f.time, t.micros())),
                Some(t) => Bound::Excluded(Term::from_field_i64(f.time, t.micros())),
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(req.from, true), bound(req.to, false))),
            ));
        }
        for filter in &req.filters {
            clauses.push((Occur::Must, self.filter_query(&req.project, filter)));
        }
        let query = BooleanQuery::new(clauses);
        let limit = req.limit.clamp(1, MAX_CANDIDATES);
        let top = TopDocs::with_limit(limit).and_offset(req.offset);
        let searcher = self.reader.searcher();
        let (found, total): (Vec<(Option<f32>, DocAddress)>, Option<u64>) = match req.order {
            SearchOrder::Relevance => {
                let (docs, total) = collect(&searcher, &query, top.order_by_score(), req.count)?;
                let docs = docs.into_iter().map(|(s, a)| (Some(s), a)).collect();
                (docs, total)
            }
            SearchOrder::Newest | SearchOrder::Oldest => {
                let order = if req.order == SearchOrder::Newest {
                    Order::Desc
                } else {
                    Order::Asc
                };
                // Counted apart: `Count` alone needs no document's time, and the page then
                // reads times only in the segments that can hold it.
                let total = if req.count {
                    Some(searcher.search(&query, &Count)? as u64)
                } else {
                    None
                };
                let docs = by_time::top(&searcher, &query, order, req.offset, limit)?;
                (docs.into_iter().map(|a| (None, a)).collect(), total)
            }
        };
        let truncated = found.len() >= limit;
        let hits = found
            .into_iter()
            .map(|(score, addr)| self.hit(&searcher, addr, score))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchResults {
            hits,
            truncated,
            total,
            terms,
        })
    }

    fn filter_query(&self, project: &str, filter: &Filter) -> Box<dyn Query> {
        let f = &self.fields;
        let term = |field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        // Keyword fields are indexed lowercased.
        let keyword = |k, value: &str| term(f.keyword(k), &value.to_lowercase());
        match filter {
            Filter::ObservationType(t) => keyword(KeywordField::Type, t.as_str()),
            Filter::Level(l) => keyword(KeywordField::Level, l.as_str()),
            Filter::Environments(envs) => Box::new(BooleanQuery::new(
                envs.iter()
                    .map(|e| (Occur::Should, keyword(KeywordField::Environment, e)))
                    .collect(),
            )),
            Filter::TraceId(id) => Box::new(TermQuery::new(
                f.trace_key_term(project, id),
                IndexRecordOption::Basic,
            )),
            Filter::User(u) => keyword(KeywordField::User, u),
            Filter::Session(id) => keyword(KeywordField::Session, id),
            Filter::Tags(tags) => Box::new(BooleanQuery::new(
                tags.iter()
                    .map(|t| (Occur::Must, keyword(KeywordField::Tags, t)))
                    .collect(),
            )),
        }
    }

    fn hit(
        &self,
        searcher: &Searcher,
        addr: DocAddress,
        score: Option<f32>,
    ) -> Result<Hit, SearchError> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let r = doc
            .get_first(self.fields.doc_ref)
            .and_then(|v| v.as_bytes())
            .and_then(DocRef::decode)
            .ok_or_else(|| SearchError::Index("a search document lacks a stored id".into()))?;
        Ok(Hit {
            kind: if r.trace {
                HitKind::Trace
            } else {
                HitKind::Observation
            },
            id: r.id,
            trace_id: r.trace_id,
            score,
        })
    }
}

/// Runs `top` over `query`, with a count of every match when asked.
fn collect<C: Collector>(
    searcher: &Searcher,
    query: &dyn Query,
    top: C,
    count: bool,
) -> Result<(C::Fruit, Option<u64>), SearchError> {
    if count {
        let (n, docs) = searcher.search(query, &(Count, top))?;
        Ok((docs, Some(n as u64)))
    } else {
        Ok((searcher.search(query, &top)?, None))
    }
}

/// What `reindex` did.
#[derive(Debug, Clone, Copy)]
pub struct ReindexReport {
    pub seq: u64,
    pub docs: u64,
}

/// Parses a query over `project`'s documents and translates it to the index's terms, or says
/// why it cannot be searched.
fn compile(
    fields: &Fields,
    project: &str,
    q: &str,
) -> Result<(Box<dyn Query>, HighlightTerms), QueryError> {
    let expr = query::parse(q)?;
    let mut builder = query::Builder {
        fields,
        project,
        text: text::query_analyzer(),
        keyword: text::keyword_analyzer(),
    };
    builder.build(&expr).ok_or(QueryError::NoTerms)
}

/// Whether `q` is a searchable query, without an index: the whole parse-and-translate path a
/// search takes. For fuzzing and property tests; the API reports the same errors as 400s.
pub fn check_query(q: &str) -> Result<(), QueryError> {
    compile(&Fields::build(), "", q).map(|_| ())
}

/// Deletes the index under `data_dir` and rebuilds it from `store` in the calling thread
/// (`sightline reindex`). The store must not be served meanwhile (its file lock ensures it).
pub fn reindex(data_dir: &Path, store: &Store) -> Result<ReindexReport, SearchError> {
    reindex_with(data_dir, store, None)
}

/// `reindex`, committing (and logging) progress every `progress_every` instead of the default.
fn reindex_with(
    data_dir: &Path,
    store: &Store,
    progress_every: Option<std::time::Duration>,
) -> Result<ReindexReport, SearchError> {
    let fields = Fields::build();
    let dir = data_dir.join(DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| SearchError::Dir {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
    }
    let (index, _) = open::open_index(&dir, &fields)?;
    let reader = open::reader(&index)?;
    let mut ix = indexer::Indexer::new(
        &index,
        store.clone(),
        fields,
        reader.clone(),
        Arc::new(Shared::default()),
        0,
    )?;
    if let Some(every) = progress_every {
        ix.progress_every = every;
    }
    ix.rebuild_now()?;
    Ok(ReindexReport {
        seq: ix.committed_seq,
        docs: reader.searcher().num_docs(),
    })
}

#[cfg(test)]
mod skip_tests;
#[cfg(test)]
mod tests;
