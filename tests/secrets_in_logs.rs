//! Secrets never reach the logs: not the first-run secret key or dashboard password, not a
//! bootstrap secret, not a wrong secret someone tried — even at debug log level. The first-run
//! credentials go to a file only its owner can read, and the log says where.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::blocking::get(format!("http://127.0.0.1:{port}/api/public/health"))
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not become healthy");
}

fn run_and_capture_log(
    env: &[(&str, &str)],
    data_dir: &std::path::Path,
    traffic: impl Fn(u16),
) -> String {
    let port = free_port();
    let log_path = data_dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SIGHTLINE_") || k.starts_with("LANGFUSE_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("serve")
        .env("SIGHTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SIGHTLINE_DATA_DIR", data_dir)
        .env("SIGHTLINE_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_healthy(port);
    traffic(port);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn ingest(port: u16, pk: &str, sk: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/public/ingestion"))
        .basic_auth(pk, Some(sk))
        .json(
            &serde_json::json!({"batch": [{"id": "e", "type": "trace-create",
            "timestamp": "2025-01-01T00:00:00Z", "body": {"id": "t"}}]}),
        )
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn first_run_credentials_are_in_a_private_file_not_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = run_and_capture_log(&[], &data, |_| {});
    let creds_path = data.join("first-run-credentials.txt");
    let creds = std::fs::read_to_string(&creds_path).unwrap();
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file must be owner-only");
    let value = |key: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing from {creds}"))
            .to_string()
    };
    let (pk, sk, password) = (
        value("LANGFUSE_PUBLIC_KEY"),
        value("LANGFUSE_SECRET_KEY"),
        value("dashboard_password"),
    );
    assert!(log.contains(&pk), "the log names the public key: {log}");
    assert!(
        log.contains("first-run-credentials.txt"),
        "the log says where the secrets are"
    );
    assert!(!log.contains(&sk), "secret key in the log");
    assert!(!log.contains(&password), "dashboard password in the log");
    // The keys work.
    let log = run_and_capture_log(&[], &data, |port| assert_eq!(ingest(port, &pk, &sk), 207));
    assert!(!log.contains(&sk));
}

#[test]
fn bootstrap_and_attempted_secrets_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-lf-bootstrap-secret-123456";
    let wrong = "sk-lf-wrong-guess-987654";
    let password = "init-password-abcdef";
    let log = run_and_capture_log(
        &[
            ("LANGFUSE_INIT_ORG_ID", "org"),
            ("LANGFUSE_INIT_PROJECT_ID", "proj"),
            ("LANGFUSE_INIT_PROJECT_PUBLIC_KEY", "pk-lf-boot"),
            ("LANGFUSE_INIT_PROJECT_SECRET_KEY", secret),
            ("LANGFUSE_INIT_USER_EMAIL", "ops@example.com"),
            ("LANGFUSE_INIT_USER_PASSWORD", password),
        ],
        &dir.path().join("data"),
        |port| {
            assert_eq!(ingest(port, "pk-lf-boot", secret), 207);
            assert_eq!(ingest(port, "pk-lf-boot", wrong), 401);
        },
    );
    assert!(log.contains("ingestion"), "debug logging was on: {log}");
    for s in [secret, wrong, password] {
        assert!(!log.contains(s), "{s} appeared in the log");
    }
    // And not in the database file either: only salted hashes are stored.
    let mut db = Vec::new();
    std::fs::File::open(dir.path().join("data").join("sightline.redb"))
        .unwrap()
        .read_to_end(&mut db)
        .unwrap();
    for s in [secret, password] {
        assert!(
            !db.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s} stored in clear"
        );
    }
}
