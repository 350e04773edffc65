//! The shipped systemd unit: valid for systemd, hardened, the binary speaks its readiness
//! protocol (Type=notify), and makes no system call the unit's filter refuses.

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, eventually, now_iso, unique_id};
use serde_json::json;

const UNIT: &str = include_str!("../systemd/sightline.service");

#[test]
fn unit_verifies_cleanly_with_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart exists, so point it at the binary under test.
    let unit = UNIT.replace("/usr/local/bin/sightline", env!("CARGO_BIN_EXE_sightline"));
    let path = dir.path().join("sightline.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (tests/run.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown or unparsable directives are only warnings; they must not be there either.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sightline.service"))
        .collect();
    assert!(warnings.is_empty(), "unit has warnings: {warnings:#?}");
}

#[test]
fn unit_is_hardened() {
    for directive in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=sightline",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "LimitNOFILE=",
        "Restart=on-failure",
        "/etc/sightline/config.toml",
    ] {
        assert!(UNIT.contains(directive), "unit lacks {directive:?}");
    }
}

#[test]
fn binary_extends_its_start_timeout_then_notifies_readiness_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .arg("serve")
        .env("SIGHTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SIGHTLINE_DATA_DIR", dir.path().join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    // While the store opens (which can take long once, after an upgrade), the start timeout is
    // extended; then readiness.
    let n = sock.recv(&mut buf).expect("no start-up notification");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]).trim(),
        "EXTEND_TIMEOUT_USEC=30000000"
    );
    let mut n = sock.recv(&mut buf).expect("no readiness notification");
    while String::from_utf8_lossy(&buf[..n]).starts_with("EXTEND_TIMEOUT_USEC=") {
        n = sock.recv(&mut buf).expect("no readiness notification");
    }
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // Ready means serving.
    let health =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/api/public/health")).unwrap();
    assert_eq!(health.status(), 200);
    sigterm(child.id());
    let n = sock.recv(&mut buf).expect("no stopping notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// What `systemd-analyze syscall-filter` lists for one item of a `SystemCallFilter=` line: a
/// system call stands for itself, a `@group` for its calls and nested groups.
fn expand(item: &str) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_owned()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", item])
        .output()
        .expect("systemd-analyze must be installed (tests/run.sh installs systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {item} failed"
    );
    let mut calls = BTreeSet::new();
    // The first line names the group itself.
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            calls.extend(expand(line));
        } else {
            calls.insert(line.to_owned());
        }
    }
    calls
}

/// The system calls the unit lets through, as systemd merges its `SystemCallFilter=` lines: the
/// first is an allow list; after it, a `~` line takes calls out and a plain line puts calls in.
fn unit_allowed_syscalls() -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    let mut first = true;
    for line in UNIT.lines() {
        let Some(list) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, list) = match list.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, list),
        };
        assert!(
            !(first && deny),
            "the unit's first SystemCallFilter= line must be an allow list"
        );
        first = false;
        for call in list.split_whitespace().flat_map(expand) {
            if deny {
                allowed.remove(&call);
            } else {
                allowed.insert(call);
            }
        }
    }
    allowed
}

/// The system call names of an `strace -c` summary (`% time seconds usecs/call calls [errors]
/// syscall` rows between dashed lines, then a `total` row).
fn summary_syscalls(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let first = fields.first()?;
            first.parse::<f64>().ok()?;
            fields.last().map(|name| name.to_string())
        })
        .filter(|name| name != "total")
        .collect()
}

/// The process whose parent is `parent` (the binary a wrapper started).
fn child_of(parent: u32) -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            return pid;
        }
    }
    panic!("no child of process {parent}");
}

/// Under systemd, a call outside the unit's filter fails (`SystemCallErrorNumber=EPERM`; without
/// that line it would kill the service), and nothing else runs the server under that filter. So
/// the server runs under strace while it starts, ingests (writer, commit), indexes (indexer
/// thread, tantivy's workers), answers searches and reads, and stops; every call it made must
/// be one the unit lets through.
#[test]
fn the_server_makes_only_system_calls_the_unit_allows() {
    let allowed = unit_allowed_syscalls();
    for call in ["read", "futex", "fdatasync", "clone3"] {
        assert!(allowed.contains(call), "the unit refuses {call}");
    }
    for call in ["reboot", "setrlimit", "setpriority", "init_module"] {
        assert!(!allowed.contains(call), "the unit lets {call} through");
    }

    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("syscalls.txt");
    let summary_arg = summary.to_str().unwrap();
    let mut server = Server::builder()
        .wrapped("strace", &["-f", "-qq", "-c", "-o", summary_arg])
        .start();
    let trace = unique_id("trace");
    let now = now_iso();
    server
        .ingest(vec![
            json!({"id": unique_id("ev"), "timestamp": now, "type": "trace-create",
                   "body": {"id": trace, "name": "filter-check", "timestamp": now,
                            "input": "what does the seccomp filter allow"}}),
            json!({"id": unique_id("ev"), "timestamp": now, "type": "generation-create",
                   "body": {"id": unique_id("gen"), "traceId": trace, "startTime": now,
                            "model": "gpt-4o", "input": [{"role": "user", "content": "quixotic"}],
                            "output": "a quixotic answer", "usage": {"input": 3, "output": 3}}}),
        ])
        .expect_json(207);
    eventually(Duration::from_secs(30), || {
        let found = server
            .get("/api/public/observations?q=quixotic")
            .expect_json(200);
        match found["data"].as_array().map(Vec::len) {
            Some(1) => Ok(()),
            _ => Err(format!("not searchable yet: {found}")),
        }
    })
    .unwrap();
    server.get("/api/public/traces?limit=10").expect_json(200);
    server
        .get(&format!("/api/public/traces/{trace}"))
        .expect_json(200);
    // SIGTERM to strace would only detach it: the binary itself is stopped.
    let binary = child_of(server.pid());
    let signalled = Command::new("kill")
        .args(["-TERM", &binary.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = server.wait_exit();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let text = std::fs::read_to_string(&summary).unwrap();
    let made = summary_syscalls(&text);
    // The trace saw the threads start and the writer commit.
    for call in ["clone3", "fdatasync"] {
        assert!(made.contains(call), "strace saw no {call}:\n{text}");
    }
    let refused: Vec<&String> = made.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the server made system calls the unit's filter refuses: {refused:?}\n{text}"
    );
}
