//! `sightline backup` while the server ingests, then `sightline restore` into a new directory:
//! everything acknowledged before the backup began is in the restored copy, and the copy serves.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Server, now_iso};
use serde_json::json;

fn ingest_trace(server: &Server, id: &str) -> bool {
    let now = now_iso();
    let body = json!({"batch": [
        {"id": format!("{id}-e1"), "type": "trace-create", "timestamp": now,
         "body": {"id": id, "name": "backup-trace", "input": {"q": "x".repeat(600)}}},
        {"id": format!("{id}-e2"), "type": "span-create", "timestamp": now,
         "body": {"id": format!("{id}-span"), "traceId": id, "name": "work"}},
    ]});
    server.post_json("/api/public/ingestion", &body).status == 207
}

fn sightline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .env_remove("SIGHTLINE_DATA_DIR")
        .output()
        .unwrap()
}

#[test]
fn backup_while_ingesting_then_restore_and_serve() {
    let server = Server::start();
    for i in 0..20 {
        assert!(ingest_trace(&server, &format!("before-{i}")));
    }
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (server, stop, acked) = (server.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                let id = format!("during-{i}");
                if ingest_trace(&server, &id) {
                    acked.lock().unwrap().push(id);
                }
                i += 1;
            }
        })
    };
    // Let ingestion run, then back up in the middle of it.
    while acked.lock().unwrap().len() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let acked_before_backup = acked.lock().unwrap().clone();
    let out_dir = tempfile::tempdir().unwrap();
    let backup_file = out_dir.path().join("snap.redb");
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let out = sightline(&[
        "backup",
        backup_file.to_str().unwrap(),
        "--data-dir",
        &data_dir,
    ]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        acked.lock().unwrap().len() > acked_before_backup.len(),
        "ingestion kept going during the backup"
    );

    let restored = out_dir.path().join("restored");
    let out = sightline(&[
        "restore",
        backup_file.to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over existing data is refused.
    let again = sightline(&[
        "restore",
        backup_file.to_str().unwrap(),
        restored.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    let copy = Server::builder().data_dir(&restored).start();
    let mut expected: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    expected.extend(acked_before_backup);
    for id in &expected {
        let t = copy
            .get(&format!("/api/public/traces/{id}"))
            .expect_json(200);
        assert_eq!(t["input"]["q"].as_str().unwrap().len(), 600, "{id}");
        assert_eq!(t["observations"].as_array().unwrap().len(), 1, "{id}");
    }
    // The snapshot is consistent: every trace in it is complete (trace row and its span).
    let list = copy
        .get("/api/public/traces?limit=100&page=1")
        .expect_json(200);
    let total = list["meta"]["totalItems"].as_u64().unwrap();
    assert!(total as usize >= expected.len());
    let mut page = 1;
    loop {
        let l = copy
            .get(&format!("/api/public/traces?limit=100&page={page}"))
            .expect_json(200);
        let data = l["data"].as_array().unwrap();
        if data.is_empty() {
            break;
        }
        for t in data {
            assert_eq!(t["observations"].as_array().unwrap().len(), 1, "{t}");
        }
        page += 1;
    }
}
