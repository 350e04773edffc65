//! Index tests against a real store in a temporary directory: what is found, in which
//! language, and how the index follows updates, deletes, restarts and rebuilds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::record::{Change, ObservationPatch, ObservationType, Patch, TimedChange, TracePatch};
use crate::store::{NoPrices, WriteOp};

pub(super) const P: &str = "proj";

pub(super) fn open_store(dir: &Path) -> Store {
    Store::open(dir, 64, Arc::new(NoPrices)).unwrap()
}

pub(super) fn trace(id: &str, user: &str, at: i64, input: Value) -> TimedChange {
    TimedChange {
        at: Timestamp::from_micros(at),
        change: Change::Trace(TracePatch {
            id: id.into(),
            timestamp: Some(Timestamp::from_micros(at)),
            name: Patch::Set(format!("trace {id}")),
            user_id: Patch::Set(user.into()),
            input: Some(input),
            ..Default::default()
        }),
    }
}

fn obs(id: &str, trace: &str, at: i64, input: Value, output: Value) -> TimedChange {
    let mut p = ObservationPatch::new(id, ObservationType::Generation);
    p.trace_id = Some(trace.into());
    p.start_time = Some(Timestamp::from_micros(at));
    p.input = Some(input);
    p.output = Some(output);
    p.model = Patch::Set("gpt-4o".into());
    TimedChange {
        at: Timestamp::from_micros(at),
        change: Change::Observation(p),
    }
}

/// A later event that replaces one observation's output.
fn replace_output(store: &Store, id: &str, output: &str) {
    let mut p = ObservationPatch::new(id, ObservationType::Generation);
    p.output = Some(json!(output));
    write(
        store,
        P,
        vec![TimedChange {
            at: Timestamp::from_micros(9_000),
            change: Change::Observation(p),
        }],
    );
}

pub(super) fn write(store: &Store, project: &str, changes: Vec<TimedChange>) {
    store
        .writer()
        .submit_blocking(WriteOp::Changes {
            project: project.into(),
            changes,
        })
        .unwrap();
}

/// Waits until everything the store committed is searchable.
pub(super) fn wait_indexed(search: &Search, store: &Store) {
    let target = *store.writer().subscribe().borrow();
    let deadline = Instant::now() + Duration::from_secs(10);
    while search.status().indexed_seq < target || search.status().rebuilding {
        assert!(
            Instant::now() < deadline,
            "index did not catch up with {target}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn find(search: &Search, scope: Scope, q: &str) -> Vec<String> {
    let req = SearchRequest {
        project: P.into(),
        q: q.into(),
        scope,
        order: SearchOrder::Newest,
        from: None,
        to: None,
        filters: Vec::new(),
        offset: 0,
        limit: 100,
        count: false,
    };
    let mut ids: Vec<String> = search
        .search(&req)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect();
    ids.sort();
    ids
}

fn chat(system: &str, user: &str) -> Value {
    json!([{"role": "system", "content": system}, {"role": "user", "content": user}])
}

fn corpus() -> Vec<TimedChange> {
    vec![
        trace("t1", "alice", 1_000, json!("first trace")),
        obs(
            "o-en",
            "t1",
            1_100,
            chat("You are helpful.", "Tell me about the quokka please"),
            json!({"role": "assistant", "content": "Quokkas live on Rottnest Island."}),
        ),
        obs(
            "o-de",
            "t1",
            1_200,
            json!("Wie lang ist die Straße und welche Größe hat das Haus?"),
            json!("Die Straße ist 3 km lang."),
        ),
        trace("t2", "bob", 2_000, json!("second trace")),
        obs(
            "o-zh",
            "t2",
            2_100,
            json!("我们在海里看到了一条巨大的海蛇，它很长。"),
            json!("海蛇是一种爬行动物。"),
        ),
        obs(
            "o-ja",
            "t2",
            2_200,
            json!("東京タワーはどこにありますか"),
            json!("東京都港区にあります。"),
        ),
        obs(
            "o-ar",
            "t2",
            2_300,
            json!("مرحبا، أين تقع المكتبة؟"),
            json!({"tool_calls": [{"function": {"name": "lookup", "arguments": "{\"city\": \"Zanzibar\"}"}}]}),
        ),
    ]
}

pub(super) fn started(dir: &Path) -> (Store, Search) {
    let store = open_store(dir);
    let search = Search::start(dir, store.clone()).unwrap();
    (store, search)
}

#[test]
fn finds_words_in_every_language_and_form() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    let check = |q: &str, want: &[&str]| {
        assert_eq!(find(&search, Scope::Observations, q), want, "query {q:?}");
    };
    check("quokka", &["o-en"]); // rare word in input (chat messages)
    check("rottnest", &["o-en"]); // word in output
    check("Straße", &["o-de"]);
    check("strasse", &["o-de"]);
    check("Größe", &["o-de"]);
    check("海蛇", &["o-zh"]); // inside a Chinese sentence, no spaces
    check("巨大的海蛇", &["o-zh"]);
    check("蛇", &["o-zh"]); // one character
    check("東京タワー", &["o-ja"]);
    check("港区", &["o-ja"]);
    check("المكتبة", &["o-ar"]);
    check("zanzibar", &["o-ar"]); // tool-call arguments: JSON inside a string
    check("\"rottnest island\"", &["o-en"]); // phrase
    check("\"island rottnest\"", &[]); // phrase order matters
    check("quok*", &["o-en"]); // prefix
    check("\"die straße\"", &["o-de"]);
    check("output:rottnest", &["o-en"]); // field-qualified
    check("input:rottnest", &[]);
    check("model:GPT-4o", &["o-ar", "o-de", "o-en", "o-ja", "o-zh"]);
    check("quokka OR 海蛇", &["o-en", "o-zh"]);
    check("model:gpt-4o -quokka -海蛇 -東京 -zanzibar", &["o-de"]);
    // Regression (quickwit-oss/tantivy#2811): an excluded phrase seeks its scorer backwards.
    check(
        "model:gpt-4o -\"rottnest island\"",
        &["o-ar", "o-de", "o-ja", "o-zh"],
    );
    check("quokka \"rottnest island\"", &["o-en"]);
    check("xylophone", &[]); // absent word
    check("role", &[]); // JSON keys are not text
    check("content", &[]);
    // Traces match through their own text or any observation.
    assert_eq!(find(&search, Scope::All, "first"), ["t1"]);
    search.shutdown();
    store.shutdown();
}

/// What the writer has just committed reaches the index from its hand-over, without a read
/// back: every record of the corpus is taken from it, and none is left behind.
#[test]
fn new_records_are_indexed_from_what_the_writer_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    let handoff = store.writer().handoff().clone();
    let records = corpus().len() as u64;
    // The first start builds the index from a snapshot, which reads what it holds: a first
    // write indexed means that is over.
    write(&store, P, vec![trace("t0", "zed", 500, json!("warm up"))]);
    wait_indexed(&search, &store);
    let before = handoff.taken();
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    assert_eq!(handoff.taken() - before, records);
    assert_eq!(handoff.held(), (0, 0));
    assert_eq!(find(&search, Scope::Observations, "quokka"), ["o-en"]);
    assert_eq!(find(&search, Scope::Observations, "海蛇"), ["o-zh"]);
    assert_eq!(find(&search, Scope::All, "first"), ["t1"]);
    // An update is handed over as the whole merged record, not the patch.
    replace_output(&store, "o-en", "Wombats instead.");
    wait_indexed(&search, &store);
    assert_eq!(handoff.taken() - before, records + 1);
    assert_eq!(
        find(&search, Scope::Observations, "wombats model:gpt-4o"),
        ["o-en"]
    );
    assert_eq!(find(&search, Scope::Observations, "quokka"), ["o-en"]);
    search.shutdown();
    store.shutdown();
}

#[test]
fn queries_are_confined_to_their_project() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, "other", corpus());
    wait_indexed(&search, &store);
    assert!(find(&search, Scope::All, "quokka").is_empty());
    search.shutdown();
    store.shutdown();
}

#[test]
fn updates_replace_documents_and_deletes_remove_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    // A later event replaces the output: the old word goes, the new one comes.
    replace_output(&store, "o-en", "Wombats instead.");
    wait_indexed(&search, &store);
    assert_eq!(find(&search, Scope::Observations, "wombats"), ["o-en"]);
    assert!(find(&search, Scope::Observations, "rottnest").is_empty());
    assert_eq!(find(&search, Scope::Observations, "quokka"), ["o-en"]);
    // Deleting a trace removes it and its observations.
    store
        .writer()
        .submit_blocking(WriteOp::DeleteTraces {
            project: P.into(),
            ids: vec!["t2".into()],
        })
        .unwrap();
    wait_indexed(&search, &store);
    assert!(find(&search, Scope::All, "海蛇").is_empty());
    assert!(find(&search, Scope::All, "second").is_empty());
    assert_eq!(find(&search, Scope::All, "quokka"), ["o-en"]);
    search.shutdown();
    store.shutdown();
}

/// New records go into the index without a delete in front: however the change log is cut
/// into batches (a batch's snapshot may already hold records created after it), a record
/// deleted and created again, or whose observations came first, ends up with one document.
#[test]
fn new_records_get_one_document_however_the_log_is_cut_into_batches() {
    let delete = |store: &Store, id: &str| {
        store
            .writer()
            .submit_blocking(WriteOp::DeleteTraces {
                project: P.into(),
                ids: vec![id.into()],
            })
            .unwrap();
    };
    let o = |id: &str, trace: &str| obs(id, trace, 1_500, json!(id), json!(""));
    // Without the hand-over every record is read from a snapshot, which may be ahead of the
    // batch.
    for (batch, handed) in [1, 2, 3, 4, 7, 1000]
        .into_iter()
        .flat_map(|b| [(b, true), (b, false)])
    {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let (fields, reader, mut ix) = behind_indexer(dir.path(), &store, batch, handed);
        let (_keep, stop) = tokio::sync::watch::channel(false);
        write(
            &store,
            P,
            vec![trace("t1", "alice", 1_000, json!("one")), o("o1", "t1")],
        );
        write(&store, P, vec![o("o2", "t1")]);
        ix.catch_up(&stop).ok().unwrap();
        write(&store, P, vec![o("o3", "t1")]);
        write(&store, P, vec![o("o4", "t2")]);
        write(
            &store,
            P,
            vec![trace("t1", "alice", 1_000, json!("updated"))],
        );
        delete(&store, "t1");
        write(
            &store,
            P,
            vec![trace("t1", "bob", 1_000, json!("again")), o("o1", "t1")],
        );
        write(&store, P, vec![o("o5", "t3")]);
        write(&store, P, vec![trace("t2", "carol", 2_000, json!("two"))]);
        ix.catch_up(&stop).ok().unwrap();
        delete(&store, "t3");
        write(
            &store,
            P,
            vec![o("o5", "t3"), trace("t3", "dave", 3_000, json!("three"))],
        );
        ix.catch_up(&stop).ok().unwrap();
        let searcher = reader.searcher();
        let docs = |kind: &str, id: &str| {
            let key = TermQuery::new(fields.key_term(P, kind, id), IndexRecordOption::Basic);
            searcher.search(&key, &Count).unwrap()
        };
        let trace_docs = ["t1", "t2", "t3"].map(|id| docs(KIND_TRACE, id));
        let obs_docs = ["o1", "o2", "o3", "o4", "o5"].map(|id| docs(KIND_OBSERVATION, id));
        assert_eq!(trace_docs, [1, 1, 1], "batches of {batch}, handed {handed}");
        assert_eq!(
            obs_docs,
            [1, 0, 0, 1, 1],
            "batches of {batch}, handed {handed}"
        );
        assert_eq!(
            searcher.num_docs(),
            6,
            "batches of {batch}, handed {handed}"
        );
        drop(ix);
        store.shutdown();
    }
}

/// An indexer on `store` that applies `batch` change-log entries per snapshot, taking records
/// from the writer's hand-over or (`handed` false) always from the store.
fn behind_indexer(
    dir: &Path,
    store: &Store,
    batch: usize,
    handed: bool,
) -> (Fields, tantivy::IndexReader, indexer::Indexer) {
    let fields = Fields::build();
    let (index, _) = open::open_index(&dir.join(DIR), &fields).unwrap();
    let reader = open::reader(&index).unwrap();
    let shared = Arc::new(Shared::default());
    let mut ix = indexer::Indexer::new(
        &index,
        store.clone(),
        fields.clone(),
        reader.clone(),
        shared,
        0,
    )
    .unwrap();
    ix.changes_per_batch = batch;
    if !handed {
        // As if the indexer had applied everything: nothing is kept from now on.
        store.writer().handoff().forget_through(u64::MAX);
    }
    (fields, reader, ix)
}

/// An indexer behind the writer reads each batch from a snapshot that holds later changes too.
/// New records of the later batches still go in without a delete: a delete is a term lookup in
/// every segment at commit, and paying it for every record once behind kept the indexer behind.
#[test]
fn an_indexer_behind_the_writer_adds_new_records_without_deletes() {
    for handed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let (_fields, reader, mut ix) = behind_indexer(dir.path(), &store, 3, handed);
        let (_keep, stop) = tokio::sync::watch::channel(false);
        write(&store, P, vec![trace("t0", "alice", 1_000, json!("zero"))]);
        ix.catch_up(&stop).ok().unwrap();
        for i in 1..=20 {
            let at = 1_000 + i;
            write(
                &store,
                P,
                vec![trace(&format!("t{i}"), "bob", at, json!("x"))],
            );
            let o = obs(&format!("o{i}"), "t0", at, json!("y"), json!(""));
            write(&store, P, vec![o]);
        }
        ix.catch_up(&stop).ok().unwrap();
        assert_eq!(ix.deletes, 0, "handed {handed}");
        assert_eq!(reader.searcher().num_docs(), 41, "handed {handed}");
        drop(ix);
        store.shutdown();
    }
}

#[test]
fn restart_resumes_and_a_deleted_or_corrupt_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let queries = [
        "quokka",
        "海蛇",
        "strasse",
        "model:gpt-4o",
        "first OR second",
    ];
    let snapshot = |search: &Search| {
        queries
            .iter()
            .map(|q| find(search, Scope::All, q))
            .collect::<Vec<_>>()
    };
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    let before = snapshot(&search);
    search.shutdown();
    // Written while the index is down: caught up on the next start.
    write(
        &store,
        P,
        vec![obs("o-late", "t1", 5_000, json!("quokka again"), json!(""))],
    );
    let search = Search::start(dir.path(), store.clone()).unwrap();
    wait_indexed(&search, &store);
    assert_eq!(
        find(&search, Scope::Observations, "quokka"),
        ["o-en", "o-late"]
    );
    let with_late = snapshot(&search);
    search.shutdown();

    std::fs::remove_dir_all(dir.path().join(DIR)).unwrap();
    let search = Search::start(dir.path(), store.clone()).unwrap();
    wait_indexed(&search, &store);
    assert_eq!(snapshot(&search), with_late);
    search.shutdown();

    std::fs::write(dir.path().join(DIR).join("meta.json"), b"{not json").unwrap();
    let search = Search::start(dir.path(), store.clone()).unwrap();
    wait_indexed(&search, &store);
    assert_eq!(snapshot(&search), with_late);
    assert_ne!(before, with_late);
    search.shutdown();
    store.shutdown();
}

#[test]
fn another_schema_version_or_an_unfinished_rebuild_forces_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let fields = Fields::build();
    let path = dir.path().join(DIR);
    for (payload, why) in [
        (
            Payload {
                schema: SCHEMA_VERSION + 1,
                seq: 0,
                complete: true,
            },
            "schema version",
        ),
        (
            Payload {
                schema: SCHEMA_VERSION,
                seq: 0,
                complete: false,
            },
            "did not finish",
        ),
    ] {
        let (index, _) = open::open_index(&path, &fields).unwrap();
        let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut c = w.prepare_commit().unwrap();
        c.set_payload(&serde_json::to_string(&payload).unwrap());
        c.commit().unwrap();
        drop(w);
        let (_, start) = open::open_index(&path, &fields).unwrap();
        assert!(
            matches!(&start, open::Start::Rebuild(r) if r.contains(why)),
            "{start:?}"
        );
    }
    // A complete commit of this version resumes.
    let (index, _) = open::open_index(&path, &fields).unwrap();
    let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    let mut c = w.prepare_commit().unwrap();
    let ok = Payload {
        schema: SCHEMA_VERSION,
        seq: 7,
        complete: true,
    };
    c.set_payload(&serde_json::to_string(&ok).unwrap());
    c.commit().unwrap();
    drop(w);
    assert_eq!(
        open::open_index(&path, &fields).unwrap().1,
        open::Start::Resume(7)
    );
}

#[test]
fn reindex_rebuilds_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    write(&store, P, corpus());
    let report = reindex(dir.path(), &store).unwrap();
    assert_eq!(report.docs, 7);
    assert_eq!(report.seq, *store.writer().subscribe().borrow());
    let search = Search::start(dir.path(), store.clone()).unwrap();
    // Resumes from the rebuilt index without another rebuild.
    assert!(!search.status().rebuilding);
    assert_eq!(search.status().indexed_seq, report.seq);
    assert_eq!(find(&search, Scope::Observations, "海蛇"), ["o-zh"]);
    search.shutdown();
    store.shutdown();
}

/// Regression: a rebuild long enough to commit progress midway lost every document added after
/// its last intermediate commit, and never marked itself complete.
#[test]
fn a_rebuild_with_intermediate_commits_keeps_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    write(&store, P, corpus());
    let report = reindex_with(dir.path(), &store, Some(Duration::ZERO)).unwrap();
    assert_eq!(report.docs, 7);
    let search = Search::start(dir.path(), store.clone()).unwrap();
    assert!(
        !search.status().rebuilding,
        "the rebuild was not marked complete"
    );
    assert_eq!(search.num_docs(), 7);
    search.shutdown();
    store.shutdown();
}

#[test]
fn large_payloads_are_capped_and_blobs_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    let image = format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(400_000));
    let long = format!("{} needle", "filler ".repeat(20_000));
    write(
        &store,
        P,
        vec![
            obs(
                "o-img",
                "t9",
                1,
                json!([{"type": "image_url", "url": image}, "caption kiwi"]),
                json!(""),
            ),
            obs("o-long", "t9", 2, json!(long), json!("")),
        ],
    );
    wait_indexed(&search, &store);
    assert_eq!(find(&search, Scope::Observations, "kiwi"), ["o-img"]);
    assert!(find(&search, Scope::Observations, "ivborw0kggo*").is_empty());
    // Text past the input cap is not indexed.
    assert!(find(&search, Scope::Observations, "needle").is_empty());
    assert_eq!(find(&search, Scope::Observations, "filler"), ["o-long"]);
    search.shutdown();
    store.shutdown();
}

#[test]
fn relevance_order_puts_the_better_match_first_and_highlights_escape() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(
        &store,
        P,
        vec![
            obs(
                "weak",
                "t1",
                2,
                json!("kiwi and many other words about fruit and trees"),
                json!(""),
            ),
            obs("strong", "t1", 1, json!("kiwi kiwi <b>kiwi</b>"), json!("")),
        ],
    );
    wait_indexed(&search, &store);
    let req = SearchRequest {
        project: P.into(),
        q: "kiwi".into(),
        scope: Scope::Observations,
        order: SearchOrder::Relevance,
        from: None,
        to: None,
        filters: Vec::new(),
        offset: 0,
        limit: 10,
        count: false,
    };
    let res = search.search(&req).unwrap();
    assert_eq!(res.hits[0].id, "strong");
    assert!(res.hits[0].score > res.hits[1].score);
    let hl = res.highlights(&store, P, &res.hits[0]).unwrap();
    assert_eq!(hl.len(), 1);
    assert_eq!(hl[0].field, TextField::Input);
    assert_eq!(
        hl[0].html,
        "<mark>kiwi</mark> <mark>kiwi</mark> &lt;b&gt;<mark>kiwi</mark>&lt;/b&gt;"
    );
    // Newest first by default.
    let newest = search
        .search(&SearchRequest {
            order: SearchOrder::Newest,
            ..req.clone()
        })
        .unwrap();
    assert_eq!(newest.hits[0].id, "weak");
    // A time window is applied in the index.
    let windowed = search
        .search(&SearchRequest {
            to: Some(Timestamp::from_micros(2)),
            ..req
        })
        .unwrap();
    assert_eq!(windowed.hits.len(), 1);
    assert_eq!(windowed.hits[0].id, "strong");
    search.shutdown();
    store.shutdown();
}

#[test]
fn filters_are_applied_in_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    let with = |filters: Vec<Filter>| {
        let mut ids: Vec<String> = search
            .search(&SearchRequest {
                project: P.into(),
                q: "model:gpt-4o".into(),
                scope: Scope::Observations,
                order: SearchOrder::Newest,
                from: None,
                to: None,
                filters,
                offset: 0,
                limit: 100,
                count: false,
            })
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(with(vec![Filter::TraceId("t1".into())]), ["o-de", "o-en"]);
    assert_eq!(
        with(vec![Filter::ObservationType(ObservationType::Generation)]).len(),
        5
    );
    assert!(with(vec![Filter::ObservationType(ObservationType::Span)]).is_empty());
    assert_eq!(
        with(vec![Filter::Level(crate::record::Level::Default)]).len(),
        5
    );
    assert!(with(vec![Filter::Level(crate::record::Level::Error)]).is_empty());
    assert_eq!(
        with(vec![Filter::Environments(vec![
            "staging".into(),
            "default".into()
        ])])
        .len(),
        5
    );
    assert!(with(vec![Filter::Environments(vec!["staging".into()])]).is_empty());
    search.shutdown();
    store.shutdown();
}

/// Any string is either a 400-style query error or a search: never a panic.
#[test]
fn arbitrary_queries_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    wait_indexed(&search, &store);
    let pieces = [
        "a",
        "quokka",
        "海",
        "海蛇",
        "المكتبة",
        "Straße",
        " ",
        "  ",
        "\"",
        "\\",
        "(",
        ")",
        "*",
        ":",
        "-",
        "+",
        "OR",
        "AND",
        "NOT",
        "input:",
        "model:",
        "id:",
        "x:",
        "http://",
        "'",
        "^",
        "~2",
        "[",
        "]",
        "{",
        "}",
        "!",
        "\u{0}",
        "\u{301}",
        "ـ",
        "🙂",
        "-*",
        "\"*",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = 1 + next() % 8;
        let q: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        for order in [SearchOrder::Newest, SearchOrder::Relevance] {
            let req = SearchRequest {
                project: P.into(),
                q: q.clone(),
                scope: Scope::All,
                order,
                from: None,
                to: None,
                filters: Vec::new(),
                offset: 0,
                limit: 10,
                count: false,
            };
            match search.search(&req) {
                Ok(_) | Err(SearchError::Query(_)) => {}
                Err(e) => panic!("{q:?}: {e}"),
            }
        }
    }
    search.shutdown();
    store.shutdown();
}

#[test]
fn ids_and_trace_ids_are_searched_within_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let (store, search) = started(dir.path());
    write(&store, P, corpus());
    // An observation whose id is also a trace's, and the same ids in another project.
    write(
        &store,
        P,
        vec![obs("t1", "t2", 2_400, json!("same id"), json!(""))],
    );
    write(&store, "other", corpus());
    wait_indexed(&search, &store);
    let check = |q: &str, want: &[&str]| {
        assert_eq!(find(&search, Scope::All, q), want, "query {q:?}");
    };
    check("id:o-en", &["o-en"]);
    check("id:t1", &["t1", "t1"]);
    check("id:o-*", &["o-ar", "o-de", "o-en", "o-ja", "o-zh"]);
    check("id:O-EN", &[]);
    check("id:o-e", &[]);
    check("traceId:t1", &["o-de", "o-en", "t1"]);
    check(
        "trace:t*",
        &["o-ar", "o-de", "o-en", "o-ja", "o-zh", "t1", "t1", "t2"],
    );
    check("traceId:t2 -id:t1", &["o-ar", "o-ja", "o-zh", "t2"]);
    check("id:t1 OR traceId:t1", &["o-de", "o-en", "t1", "t1"]);
    check("id:o-en rottnest", &["o-en"]);
    check("id:o-de rottnest", &[]);
    // Hits name their kind and trace.
    let hits = search
        .search(&SearchRequest {
            project: P.into(),
            q: "id:t1".into(),
            scope: Scope::All,
            order: SearchOrder::Newest,
            from: None,
            to: None,
            filters: Vec::new(),
            offset: 0,
            limit: 10,
            count: false,
        })
        .unwrap()
        .hits;
    let named: Vec<(HitKind, &str, &str)> = hits
        .iter()
        .map(|h| (h.kind, h.id.as_str(), h.trace_id.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (HitKind::Observation, "t1", "t2"),
            (HitKind::Trace, "t1", "t1")
        ]
    );
    search.shutdown();
    store.shutdown();
}
