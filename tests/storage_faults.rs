//! Storage faults through the storage seam (`store::faults`): a full disk gives 507 with
//! nothing acknowledged, reads keep working, health goes red, and writes resume without a
//! restart once there is room; a failed write or fsync at any operation N never loses an
//! acknowledged record.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::in_process::InProcess;
use reqwest::blocking::Client;
use serde_json::json;
use sightline::store::faults::FaultPlan;

fn ingest(client: &Client, base: &str, id: &str) -> reqwest::blocking::Response {
    ingest_sized(client, base, id, 10)
}

/// Text that does not compress, so its size really lands on disk.
fn noise(bytes: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A trace with an input of `bytes` characters (large ones make the database file grow).
fn ingest_sized(
    client: &Client,
    base: &str,
    id: &str,
    bytes: usize,
) -> reqwest::blocking::Response {
    let now = "2025-01-01T00:00:00Z";
    client
        .post(format!("{base}/api/public/ingestion"))
        .basic_auth("pk-lf-test", Some("sk-lf-test"))
        .json(&json!({"batch": [
            {"id": format!("{id}-e"), "type": "trace-create", "timestamp": now, "body": {"id": id, "name": "fault", "input": noise(bytes)}},
            {"id": format!("{id}-o"), "type": "span-create", "timestamp": now, "body": {"id": format!("{id}-span"), "traceId": id}},
        ]}))
        .send()
        .unwrap()
}

fn trace_status(client: &Client, base: &str, id: &str) -> u16 {
    client
        .get(format!("{base}/api/public/traces/{id}"))
        .basic_auth("pk-lf-test", Some("sk-lf-test"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Reads may briefly answer 503 while the file is reopened; they must come back.
fn eventually_status(client: &Client, base: &str, id: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = trace_status(client, base, id);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "trace {id}: wanted {want}, still {got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(client: &Client, base: &str) -> u16 {
    client
        .get(format!("{base}/api/public/health"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn full_disk_is_507_reads_work_and_writes_resume_without_restart() {
    let plan = Arc::new(FaultPlan::default());
    let server = InProcess::start_in(tempfile::tempdir().unwrap(), Some(plan.clone()));
    let (client, base) = (Client::new(), server.base.clone());
    assert_eq!(ingest(&client, &base, "before").status(), 207);
    assert_eq!(health(&client, &base), 200);

    plan.disk_full.store(true, Ordering::SeqCst);
    // A full disk refuses what needs new space; 3 MB of input needs it.
    let resp = ingest_sized(&client, &base, "during", 3 << 20);
    assert_eq!(resp.status(), 507, "{:?}", resp.text());
    let again = ingest_sized(&client, &base, "during-2", 3 << 20);
    assert!(matches!(again.status().as_u16(), 503 | 507));
    assert!(again.headers().contains_key("retry-after"));
    assert_eq!(
        health(&client, &base),
        503,
        "health must go red when writes fail"
    );
    eventually_status(&client, &base, "before", 200);
    eventually_status(&client, &base, "during", 404);
    assert!(plan.injected.load(Ordering::SeqCst) > 0);

    plan.disk_full.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = ingest_sized(&client, &base, "after", 3 << 20)
            .status()
            .as_u16();
        if s == 207 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(health(&client, &base), 200);
    eventually_status(&client, &base, "after", 200);
    eventually_status(&client, &base, "during", 404);

    // And the file is sound after a clean restart.
    let dir = server.stop();
    let server = InProcess::start_in(dir, None);
    for id in ["before", "after"] {
        assert_eq!(trace_status(&client, &server.base, id), 200, "{id}");
    }
    assert_eq!(trace_status(&client, &server.base, "during"), 404);
}

#[test]
fn a_fault_at_any_operation_never_loses_an_acknowledged_record() {
    let mut acknowledged = Vec::new();
    let mut attempted = 0;
    let mut faults = 0;
    let mut dir = tempfile::tempdir().unwrap();
    for round in 0..8u64 {
        let plan = Arc::new(FaultPlan::default());
        let server = InProcess::start_in(dir, Some(plan.clone()));
        let client = Client::new();
        // Fail the N-th storage write/fsync from now: a different spot in the commit each round.
        plan.fail_at_op.store(1 + round * 3, Ordering::SeqCst);
        for i in 0..6 {
            let id = format!("r{round}-{i}");
            attempted += 1;
            if ingest(&client, &server.base, &id).status() == 207 {
                acknowledged.push(id);
            }
        }
        faults += plan.injected.load(Ordering::SeqCst);
        dir = server.stop();
    }
    assert!(faults >= 8, "every round injected a fault ({faults})");
    assert!(
        acknowledged.len() < attempted,
        "some writes must have failed"
    );
    let server = InProcess::start_in(dir, None);
    let client = Client::new();
    for id in &acknowledged {
        assert_eq!(
            trace_status(&client, &server.base, id),
            200,
            "acknowledged {id} was lost"
        );
    }
    eprintln!(
        "storage faults: {faults} injected, {} of {attempted} writes acknowledged, none lost",
        acknowledged.len()
    );
}
