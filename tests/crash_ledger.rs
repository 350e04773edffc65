//! The crash ledger: senders record every id the server acknowledged while the server is
//! SIGKILLed at varying moments, round after round; after each restart every acknowledged id is
//! readable. `SIGHTLINE_CRASH_ROUNDS` sets the number of rounds (20 by default, as CI runs it;
//! the documented long run uses 200).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, now_iso};
use serde_json::json;

const SENDERS: usize = 3;

fn rounds() -> u64 {
    std::env::var("SIGHTLINE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// One batch of three traces, each with a generation: acknowledged together or not at all.
fn send(client: &reqwest::blocking::Client, base: &str, prefix: &str) -> Option<Vec<String>> {
    let now = now_iso();
    let ids: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    let batch: Vec<_> = ids
        .iter()
        .flat_map(|id| {
            [
                json!({"id": format!("{id}-t"), "type": "trace-create", "timestamp": now,
                       "body": {"id": id, "name": "ledger"}}),
                json!({"id": format!("{id}-g"), "type": "generation-create", "timestamp": now,
                       "body": {"id": format!("{id}-gen"), "traceId": id, "model": "gpt-4o",
                                "usageDetails": {"input": 10, "output": 5}}}),
            ]
        })
        .collect();
    let resp = client
        .post(format!("{base}/api/public/ingestion"))
        .basic_auth(common::PUBLIC_KEY, Some(common::SECRET_KEY))
        .timeout(Duration::from_secs(5))
        .json(&json!({ "batch": batch }))
        .send()
        .ok()?;
    (resp.status() == 207).then_some(ids)
}

#[test]
fn every_acknowledged_id_survives_repeated_sigkill() {
    let mut server = Server::start();
    let ledger: Arc<Mutex<Vec<String>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let rounds = rounds();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let base = server.base_url();
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                let (stop, ledger, counter, base) =
                    (stop.clone(), ledger.clone(), counter.clone(), base.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        if let Some(ids) = send(&client, &base, &format!("r{round}-b{n}")) {
                            ledger.lock().unwrap().extend(ids);
                        }
                    }
                })
            })
            .collect();
        // Kill at a different moment each round: 20–270 ms into the load.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 250));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
        server.restart();
        let acked = ledger.lock().unwrap().clone();
        for id in acked
            .iter()
            .filter(|id| id.starts_with(&format!("r{round}-")))
        {
            let t = server.get(&format!("/api/public/traces/{id}"));
            assert_eq!(t.status, 200, "round {round}: acknowledged {id} is missing");
            let t = t.json();
            assert_eq!(t["observations"].as_array().map(Vec::len), Some(1), "{id}");
        }
    }
    let acked = ledger.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "too little was acknowledged to mean anything: {}",
        acked.len()
    );
    // Nothing acknowledged in an earlier round was lost by a later crash, and nothing is doubled.
    let mut total = 0;
    let mut page = 1;
    loop {
        let l = server
            .get(&format!(
                "/api/public/traces?limit=100&page={page}&fields=core"
            ))
            .expect_json(200);
        let data = l["data"].as_array().unwrap().len();
        total += data;
        if data < 100 {
            break;
        }
        page += 1;
    }
    let mut unique = acked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");
    assert!(
        total >= acked.len(),
        "stored {total} < acknowledged {}",
        acked.len()
    );
    for id in &acked {
        assert_eq!(
            server.get(&format!("/api/public/traces/{id}")).status,
            200,
            "{id} lost"
        );
    }
    eprintln!(
        "crash ledger: {rounds} SIGKILL rounds, {} ids acknowledged, {total} stored, none lost",
        acked.len()
    );
}
