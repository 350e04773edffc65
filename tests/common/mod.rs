//! Test harness shared by every integration test binary.
//!
//! Owns: running the real `sightline` binary as a child process (`server`), replaying recorded
//! client traffic and checking the read API against a fixture manifest (`fixtures`), and the
//! Python virtual environments that real client SDKs run in (`venv`).
//!
//! Each test binary compiles this module separately and uses a different subset of it, hence
//! the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod fake_judge;
pub mod fixtures;
pub mod in_process;
pub mod server;
pub mod venv;

pub use fixtures::{FixtureSet, ManifestReport, check_manifest};
pub use server::{Resp, Server};

use std::time::{Duration, Instant};

/// Public key of the project every test server bootstraps (the fixtures carry it).
pub const PUBLIC_KEY: &str = "pk-lf-test";
/// Secret key of that project.
pub const SECRET_KEY: &str = "sk-lf-test";
/// Project id given to `LANGFUSE_INIT_PROJECT_ID`.
pub const PROJECT_ID: &str = "sightline-test-project";
/// Organization id given to `LANGFUSE_INIT_ORG_ID`.
pub const ORG_ID: &str = "sightline-test-org";

/// Directory of the shared reference material (`../shared` beside the repository).
pub fn shared_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

/// `Authorization` header value for the test project.
pub fn basic_auth(public_key: &str, secret_key: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{public_key}:{secret_key}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A `reqwest` blocking client that sends the test project's Basic credentials on every request.
pub fn authed_client() -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        basic_auth(PUBLIC_KEY, SECRET_KEY)
            .parse()
            .expect("valid header value"),
    );
    reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client")
}

/// Retries `attempt` until it returns `Ok` or `timeout` has passed; returns the last error.
///
/// Langfuse itself processes ingestion asynchronously, so read-back checks allow a short,
/// bounded delay instead of demanding read-after-write.
pub fn eventually<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Current time as an ISO-8601 UTC string with millisecond precision (`...T..:..:..sssZ`).
pub fn now_iso() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&format).expect("format timestamp")
}

/// A fresh id that no other test (or earlier run on the same data dir) uses.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Collects every mismatch so one run reports them all.
#[derive(Default)]
pub struct Findings {
    failures: Vec<String>,
}

impl Findings {
    pub fn eq(&mut self, what: &str, got: &serde_json::Value, want: &serde_json::Value) {
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => got == want,
        };
        if !same {
            self.failures
                .push(format!("{what}: expected {want}, got {got}"));
        }
    }

    pub fn that(&mut self, what: &str, ok: bool, got: &serde_json::Value) {
        if !ok {
            self.failures.push(format!("{what}: got {got}"));
        }
    }

    pub fn finish(&self) {
        assert!(
            self.failures.is_empty(),
            "read-back values differ from what the client wrote ({} mismatches):\n  - {}",
            self.failures.len(),
            self.failures.join("\n  - ")
        );
    }
}
