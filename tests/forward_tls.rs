//! HTTPS upstreams through the real binary: a second Sightline behind a TLS-terminating proxy
//! (`tests/python/tls_proxy.py`, whose CA and certificate for 127.0.0.1 are made when it
//! starts). `sightline forward --to https://…` delivers everything when `SSL_CERT_FILE` names
//! that CA, and the upstream's read API answers as the source's does; without the CA (system
//! store, an unrelated CA, a missing file) or at an https url of a plain-http port it stops at
//! once with a sentence that says what is wrong, acknowledges nothing and leaves no cursor. The
//! server's `[forward]` tee reaches the same kind of upstream.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::venv::{Venv, python_dir};
use common::{PUBLIC_KEY, SECRET_KEY, Server, eventually};
use serde_json::{Value, json};

/// The proxy process; killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(upstream: &Server) -> Proxy {
        let venv = Venv::ensure("tls", "requirements-tls.txt");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let mut child = venv
            .command()
            .arg(python_dir().join("tls_proxy.py"))
            .args(["--upstream", &upstream.base_url(), "--dir"])
            .arg(dir.path())
            // It exits when this pipe closes, should the test die without dropping it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tls_proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "tls_proxy.py did not start ({e}): {line}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Proxy {
            child,
            port: ready["port"].as_u64().unwrap() as u16,
            ca: PathBuf::from(ready["ca"].as_str().unwrap()),
            other_ca: PathBuf::from(ready["other_ca"].as_str().unwrap()),
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tls_proxy.py ---\n{}", self.log());
        }
    }
}

/// A trace with a generation and a score, and one trace whose input is large enough that the
/// proxy has to relay a body of several reads.
fn events(prefix: &str) -> Vec<Value> {
    let ts = "2025-03-01T10:00:01.000000Z";
    let mut ev = Vec::new();
    for i in 0..3 {
        let t = format!("{prefix}-trace-{i}");
        let input = if i == 0 {
            json!({"big": "x".repeat(1_000_000)})
        } else {
            json!({"q": format!("question {i}"), "ünïcode": "✓"})
        };
        ev.push(
            json!({"id": format!("{t}-ev1"), "type": "trace-create", "timestamp": ts,
            "body": {"id": t, "timestamp": ts, "name": "chat", "userId": "u1", "input": input,
                     "tags": ["tls"], "metadata": {"i": i}}}),
        );
        ev.push(
            json!({"id": format!("{t}-ev2"), "type": "generation-create", "timestamp": ts,
            "body": {"id": format!("{t}-gen"), "traceId": t, "name": "llm", "startTime": ts,
                     "endTime": "2025-03-01T10:00:02.000000Z", "model": "gpt-4o",
                     "usageDetails": {"input": 10, "output": 5}, "output": "answer"}}),
        );
        ev.push(
            json!({"id": format!("{t}-ev3"), "type": "score-create", "timestamp": ts,
            "body": {"id": format!("{t}-score"), "traceId": t, "name": "quality", "value": 0.5}}),
        );
    }
    ev
}

fn ingest(server: &Server, events: &[Value]) {
    for e in events {
        let body = server.ingest(vec![e.clone()]).expect_json(207);
        assert_eq!(body["errors"], json!([]), "{body}");
    }
}

/// A trace as the read API shows it, without the times a copy sets when it is written.
fn trace(server: &Server, id: &str) -> Option<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("createdAt");
                m.remove("updatedAt");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let r = server.get(&format!("/api/public/traces/{id}"));
    if r.status == 404 {
        return None;
    }
    let mut t = r.expect_json(200);
    strip(&mut t);
    Some(t)
}

/// `sightline forward --once`, trusting what `trust` (`SSL_CERT_FILE` or `SSL_CERT_DIR`) names
/// or else the system's store.
fn forward(data_dir: &Path, to: &str, trust: Option<(&str, &Path)>) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline"));
    cmd.args(["forward", "--once", "--data-dir"])
        .arg(data_dir)
        .args(["--to", to, "--public-key", PUBLIC_KEY])
        .env_remove("SIGHTLINE_DATA_DIR")
        .env("SIGHTLINE_UPSTREAM_SECRET_KEY", SECRET_KEY)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some((var, path)) = trust {
        cmd.env(var, path);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

fn cursors(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cursor"))
        .count()
}

#[test]
fn forward_reaches_an_https_upstream_only_when_its_ca_is_trusted() {
    let upstream = Server::start();
    let proxy = Proxy::start(&upstream);
    let source = Server::start();
    let events = events("tls");
    ingest(&source, &events);
    let authority = format!("127.0.0.1:{}", proxy.port);

    // Refusals, each at once (retrying would take half a minute) and in one sentence.
    let missing = proxy.ca.with_file_name("missing.pem");
    let plain = upstream.base_url().replace("http://", "https://");
    /// What goes wrong, the url, what to trust, and what the error must say.
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a Path)>, &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "system store",
            &proxy.url(),
            None,
            &[
                &format!("certificate not trusted: {authority} presented a certificate"),
                "the system's CA store",
                "set SSL_CERT_FILE",
            ],
        ),
        (
            "an unrelated CA",
            &proxy.url(),
            Some(("SSL_CERT_FILE", &proxy.other_ca)),
            &["certificate not trusted", "SSL_CERT_FILE / SSL_CERT_DIR"],
        ),
        (
            "a missing CA file",
            &proxy.url(),
            Some(("SSL_CERT_FILE", &missing)),
            &["SSL_CERT_FILE=", "missing.pem", "No such file"],
        ),
        (
            "https to a plain-http port",
            &plain,
            Some(("SSL_CERT_FILE", &proxy.ca)),
            &["did not answer in TLS", "use an http:// url"],
        ),
    ];
    for (what, to, trust, says) in cases {
        let (out, took) = forward(source.data_dir(), to, trust);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what}, after {took:?}:\n{stderr}");
        assert!(!out.status.success(), "{what}: succeeded: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{what}: no {s:?} in: {stderr}");
        }
        assert!(
            !stderr.contains("retrying") && took < Duration::from_secs(20),
            "{what}: retried ({took:?}): {stderr}"
        );
        assert!(!stderr.contains(SECRET_KEY), "{what}: {stderr}");
    }
    assert_eq!(
        cursors(source.data_dir()),
        0,
        "a refused forward left a cursor"
    );
    assert_eq!(trace(&upstream, "tls-trace-1"), None);
    assert!(
        !proxy.log().contains("POST /api/public/ingestion"),
        "a request went through without a trusted certificate:\n{}",
        proxy.log()
    );

    // Trusted: everything arrives, byte for byte, through the proxy.
    let (out, _) = forward(
        source.data_dir(),
        &proxy.url(),
        Some(("SSL_CERT_FILE", &proxy.ca)),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&proxy.url()), "{stderr}");
    assert!(stderr.contains("9 events"), "{stderr}");
    for i in 0..3 {
        let id = format!("tls-trace-{i}");
        let want = trace(&source, &id).unwrap();
        assert_eq!(want["observations"].as_array().unwrap().len(), 1);
        assert_eq!(want["scores"].as_array().unwrap().len(), 1);
        assert_eq!(trace(&upstream, &id), Some(want), "{id}");
    }
    assert_eq!(cursors(source.data_dir()), 1);
    assert!(
        proxy.log().contains("POST /api/public/ingestion"),
        "{}",
        proxy.log()
    );

    // A directory of CA files (any names) works as well, and so does the host name the
    // certificate lists. Another url is another cursor: everything goes again, harmlessly.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&proxy.ca, dir.path().join("corporate-ca.crt")).unwrap();
    let by_name = format!("https://localhost:{}", proxy.port);
    let (out, _) = forward(
        source.data_dir(),
        &by_name,
        Some(("SSL_CERT_DIR", dir.path())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("9 events"), "{stderr}");
    assert_eq!(cursors(source.data_dir()), 2);
}

#[test]
fn serve_tees_to_an_https_upstream() {
    let upstream = Server::start();
    let proxy = Proxy::start(&upstream);
    let source = Server::builder()
        .env("SIGHTLINE_FORWARD_URL", &proxy.url())
        .env("SIGHTLINE_FORWARD_PUBLIC_KEY", PUBLIC_KEY)
        .env("SIGHTLINE_FORWARD_SECRET_KEY", SECRET_KEY)
        .env("SIGHTLINE_FORWARD_POLL_MS", "50")
        .env("SSL_CERT_FILE", proxy.ca.to_str().unwrap())
        .start();
    ingest(&source, &events("tee"));
    for i in 0..3 {
        let id = format!("tee-trace-{i}");
        let want = trace(&source, &id).unwrap();
        eventually(Duration::from_secs(60), || {
            let got = trace(&upstream, &id);
            (got.as_ref() == Some(&want))
                .then_some(())
                .ok_or(format!("{id}: {got:?}"))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", source.log_tail()));
    }
    assert!(!source.log_tail().contains(SECRET_KEY));

    // Trusting the wrong CA: the tee says why in the log, and the upstream gets nothing.
    let wrong = Server::builder()
        .env("SIGHTLINE_FORWARD_URL", &proxy.url())
        .env("SIGHTLINE_FORWARD_PUBLIC_KEY", PUBLIC_KEY)
        .env("SIGHTLINE_FORWARD_SECRET_KEY", SECRET_KEY)
        .env("SIGHTLINE_FORWARD_POLL_MS", "50")
        .env("SSL_CERT_FILE", proxy.other_ca.to_str().unwrap())
        .start();
    ingest(&wrong, &events("untrusted"));
    eventually(Duration::from_secs(30), || {
        let log = wrong.log_tail();
        log.contains("certificate not trusted")
            .then_some(())
            .ok_or(log)
    })
    .unwrap();
    assert_eq!(trace(&upstream, "untrusted-trace-1"), None);
}
