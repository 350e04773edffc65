//! The search index survives SIGKILL: the real binary is killed while ingestion (and so
//! indexing and index commits) are under way, restarted on the same data directory, and every
//! text whose ingestion was acknowledged is found again.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PUBLIC_KEY, SECRET_KEY, Server, eventually, now_iso, unique_id};
use serde_json::{Value, json};

/// Ingests one generation per request, each with its own word, until `stop`; returns the words
/// whose request was acknowledged with 207 and no per-event error.
fn ingest_until(url: String, round: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let word = format!("kiwi{round}x{i}");
        let now = now_iso();
        let batch = json!({"batch": [{
            "id": unique_id("evt"), "type": "generation-create", "timestamp": now,
            "body": {"id": unique_id("gen"), "traceId": unique_id("trace"), "startTime": now,
                     "input": format!("tell me about the {word} bird"), "output": "a bird"}}]});
        let Ok(resp) = client
            .post(&url)
            .basic_auth(PUBLIC_KEY, Some(SECRET_KEY))
            .json(&batch)
            .send()
        else {
            break; // the server is gone
        };
        if resp.status().as_u16() == 207
            && resp
                .json::<Value>()
                .is_ok_and(|b| b["errors"].as_array().is_some_and(Vec::is_empty))
        {
            acked.push(word);
        }
    }
    acked
}

#[test]
fn acknowledged_text_is_searchable_after_sigkill_and_restart() {
    let mut server = Server::start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (url, stop) = (server.url("/api/public/ingestion"), stop.clone());
            std::thread::spawn(move || ingest_until(url, round, stop))
        };
        // Long enough for several index commits, then kill mid-stream.
        std::thread::sleep(Duration::from_millis(700 + 150 * round as u64));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let words = writer.join().unwrap();
        assert!(!words.is_empty(), "round {round}: nothing was acknowledged");
        acked.lock().unwrap().extend(words);
        server.restart();
    }
    let acked = acked.lock().unwrap().clone();
    for word in &acked {
        eventually(Duration::from_secs(30), || {
            let body = server
                .get(&format!("/api/public/observations?q={word}"))
                .expect_json(200);
            match body["data"].as_array().map(Vec::len) {
                Some(1) => Ok(()),
                other => Err(format!("{word}: {other:?} hits")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    }
    eprintln!(
        "{} acknowledged texts all searchable after 3 SIGKILLs",
        acked.len()
    );
}
