//! Durability: what the server acknowledged (207) is readable after SIGKILL or SIGTERM and a
//! restart on the same data dir.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fixtures::encode;
use common::{FixtureSet, Resp, Server, check_manifest, eventually, now_iso, unique_id};
use serde_json::{Value, json};

/// A batch holding one trace with one generation and one score, all keyed by `trace_id`.
fn small_batch(trace_id: &str) -> Vec<Value> {
    let now = now_iso();
    vec![
        json!({"id": unique_id("evt"), "type": "trace-create", "timestamp": now,
               "body": {"id": trace_id, "name": "crash-trace", "sessionId": "crash-session",
                        "metadata": {"burst": true}}}),
        json!({"id": unique_id("evt"), "type": "generation-create", "timestamp": now,
               "body": {"id": format!("{trace_id}-gen"), "traceId": trace_id, "name": "llm",
                        "startTime": now, "endTime": now, "model": "gpt-4o",
                        "usageDetails": {"input": 10, "output": 5}}}),
        json!({"id": unique_id("evt"), "type": "score-create", "timestamp": now,
               "body": {"id": format!("{trace_id}-score"), "traceId": trace_id,
                        "name": "quality", "value": 0.5}}),
    ]
}

/// True when a 207 answer acknowledges every event of the batch.
fn fully_acknowledged(resp: &Resp, batch: &[Value]) -> bool {
    if resp.status != 207 {
        return false;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&resp.body) else {
        return false;
    };
    let acknowledged = body["successes"].as_array().map_or(0, Vec::len);
    body["errors"].as_array().is_some_and(Vec::is_empty) && acknowledged == batch.len()
}

/// The trace, its generation and its score are all readable.
fn assert_batch_readable(server: &Server, trace_id: &str) {
    let outcome = eventually(Duration::from_secs(10), || {
        let trace = server.get(&format!("/api/public/traces/{}", encode(trace_id)));
        if trace.status != 200 {
            return Err(format!(
                "GET trace {trace_id}: {} {}",
                trace.status,
                trace.text()
            ));
        }
        let trace = trace.json();
        let observations = trace["observations"].as_array().map_or(0, Vec::len);
        let scores = trace["scores"].as_array().map_or(0, Vec::len);
        if trace["name"] != "crash-trace" || observations != 1 || scores != 1 {
            return Err(format!(
                "trace {trace_id} incomplete: name {}, {observations} observations, {scores} scores",
                trace["name"]
            ));
        }
        let generation = server.get(&format!(
            "/api/public/observations/{}",
            encode(&format!("{trace_id}-gen"))
        ));
        if generation.status != 200 || generation.json()["model"] != "gpt-4o" {
            return Err(format!(
                "generation of {trace_id}: {} {}",
                generation.status,
                generation.text()
            ));
        }
        Ok(())
    });
    if let Err(err) = outcome {
        panic!("acknowledged data lost after restart: {err}");
    }
}

#[test]
fn acknowledged_batch_survives_sigkill() {
    let mut server = Server::start();
    let trace_id = unique_id("crash-kill9");
    let batch = small_batch(&trace_id);
    let resp = server.ingest(batch.clone());
    assert!(
        fully_acknowledged(&resp, &batch),
        "expected 207 with every event a success, got {} {}",
        resp.status,
        resp.text()
    );
    server.kill9();
    server.restart();
    assert_batch_readable(&server, &trace_id);
}

#[test]
fn replayed_sdk_fixture_survives_sigkill() {
    let mut server = Server::start();
    let set = FixtureSet::load("langfuse-python-2.60.10");
    set.replay(&server);
    server.kill9();
    server.restart();
    check_manifest(&server, &set.manifest);
}

#[test]
fn acknowledged_data_survives_two_restarts() {
    let mut server = Server::start();
    let first = unique_id("crash-first");
    let batch = small_batch(&first);
    assert!(fully_acknowledged(&server.ingest(batch.clone()), &batch));
    server.kill9();
    server.restart();
    let second = unique_id("crash-second");
    let batch = small_batch(&second);
    assert!(fully_acknowledged(&server.ingest(batch.clone()), &batch));
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit status: {status}");
    server.restart();
    assert_batch_readable(&server, &first);
    assert_batch_readable(&server, &second);
}

#[test]
fn sigterm_exits_zero_when_idle() {
    let mut server = Server::start();
    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown must exit 0, got {status}"
    );
}

/// How the burst tests stop the server.
#[derive(Clone, Copy)]
enum Stop {
    Sigterm,
    Sigkill,
}

/// Several threads ingest small batches as fast as they can; once enough were acknowledged the
/// server is stopped mid-burst. Every batch answered with a full 207 must be readable after a
/// restart. Bounded: at most `THREADS * MAX_REQUESTS_PER_THREAD` requests.
fn burst_then_stop(stop: Stop) {
    const THREADS: usize = 6;
    const MAX_REQUESTS_PER_THREAD: usize = 200;
    const ACKS_BEFORE_STOP: usize = 30;

    let mut server = Server::start();
    let base_url = server.base_url();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let ack_count = Arc::new(AtomicUsize::new(0));
    let attempted = Arc::new(AtomicUsize::new(0));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let run_id = unique_id("burst");

    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let base_url = base_url.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let ack_count = Arc::clone(&ack_count);
            let attempted = Arc::clone(&attempted);
            let stop_sending = Arc::clone(&stop_sending);
            let run_id = run_id.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                let auth = common::basic_auth(common::PUBLIC_KEY, common::SECRET_KEY);
                let mut failures_in_a_row = 0;
                for request in 0..MAX_REQUESTS_PER_THREAD {
                    if stop_sending.load(Ordering::SeqCst) || failures_in_a_row >= 3 {
                        break;
                    }
                    let trace_id = format!("{run_id}-{thread}-{request}");
                    let batch = small_batch(&trace_id);
                    attempted.fetch_add(1, Ordering::SeqCst);
                    let sent = client
                        .post(format!("{base_url}/api/public/ingestion"))
                        .header("authorization", &auth)
                        .json(&json!({ "batch": batch }))
                        .send();
                    let Ok(response) = sent else {
                        // Connection refused/reset after the stop: not acknowledged.
                        failures_in_a_row += 1;
                        continue;
                    };
                    let status = response.status().as_u16();
                    let Ok(body) = response.bytes() else {
                        failures_in_a_row += 1;
                        continue;
                    };
                    let resp = Resp {
                        status,
                        headers: Default::default(),
                        body: body.to_vec(),
                        what: "POST /api/public/ingestion".to_owned(),
                    };
                    if fully_acknowledged(&resp, &batch) {
                        failures_in_a_row = 0;
                        acknowledged.lock().expect("lock").push(trace_id);
                        ack_count.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures_in_a_row += 1;
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while ack_count.load(Ordering::SeqCst) < ACKS_BEFORE_STOP {
        assert!(
            Instant::now() < deadline,
            "only {} batches acknowledged within 60 s",
            ack_count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    match stop {
        Stop::Sigterm => {
            let status = server.terminate();
            assert_eq!(
                status.code(),
                Some(0),
                "SIGTERM during an ingestion burst must exit 0, got {status}"
            );
        }
        Stop::Sigkill => server.kill9(),
    }
    stop_sending.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("burst thread");
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    eprintln!(
        "burst: {} of {} batches acknowledged before the server stopped",
        acknowledged.len(),
        attempted.load(Ordering::SeqCst)
    );
    assert!(acknowledged.len() >= ACKS_BEFORE_STOP);
    server.restart();
    for trace_id in &acknowledged {
        assert_batch_readable(&server, trace_id);
    }
    // Between acknowledged and attempted: nothing invented, nothing duplicated.
    let attempted = attempted.load(Ordering::SeqCst) as u64;
    let resp = server.get("/api/public/traces?sessionId=crash-session&limit=1");
    let total = resp.expect_json(200)["meta"]["totalItems"]
        .as_u64()
        .expect("meta.totalItems");
    assert!(
        total >= acknowledged.len() as u64 && total <= attempted,
        "traces in the burst session: {total}; acknowledged {}, attempted {attempted}",
        acknowledged.len()
    );
}

#[test]
fn sigterm_during_ingestion_burst_keeps_every_acknowledged_batch() {
    burst_then_stop(Stop::Sigterm);
}

#[test]
fn sigkill_during_ingestion_burst_keeps_every_acknowledged_batch() {
    burst_then_stop(Stop::Sigkill);
}
