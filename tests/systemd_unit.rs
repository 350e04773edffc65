//! The shipped systemd unit: valid for systemd, hardened, and the binary speaks its readiness
//! protocol (Type=notify).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

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
