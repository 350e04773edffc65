//! The real `sightline` binary as a child process on a loopback port, with its own data dir.
//!
//! Owns: spawning, waiting for health, signals (SIGKILL / SIGTERM), restarting on the same data
//! dir, and making the server's own log visible when a test fails. Must not know about fixtures
//! or the read API's shapes beyond `/api/public/health`.

use std::fs::File;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ORG_ID, PROJECT_ID, PUBLIC_KEY, SECRET_KEY, authed_client};

/// How long a start may take before the test fails (debug build, cold redb open).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of the server's log a failing test prints.
const LOG_TAIL_LINES: usize = 200;

/// A running (or stopped) `sightline serve` process.
pub struct Server {
    child: Option<Child>,
    /// Holds `data/` and `logs/`; removed when the `Server` is dropped.
    root: tempfile::TempDir,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    /// Listen on this port on every start, instead of a fresh one.
    fixed_port: Option<u16>,
    /// A program (and its arguments) that runs the binary, e.g. a tracer.
    wrapper: Vec<String>,
    starts: u32,
    log_path: PathBuf,
    http: reqwest::blocking::Client,
}

/// Builder for a server with extra environment (e.g. a small `SIGHTLINE_MAX_BODY_BYTES`).
#[derive(Default)]
pub struct ServerBuilder {
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    port: Option<u16>,
    wrapper: Vec<String>,
}

impl ServerBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serve an existing data directory (e.g. a restored backup) instead of a fresh one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Listen on `port` on every start and restart (e.g. an upstream another server's config
    /// names), instead of a fresh free port each time.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Run the binary through `program` and `args` (`program args... sightline serve`), e.g.
    /// under strace. `pid()` is then the wrapper's.
    pub fn wrapped(mut self, program: &str, args: &[&str]) -> Self {
        self.wrapper = std::iter::once(program)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        self
    }

    pub fn start(self) -> Server {
        let root = tempfile::Builder::new()
            .prefix("sightline-test-")
            .tempdir()
            .expect("create temp dir for the server");
        let data_dir = self.data_dir.unwrap_or_else(|| root.path().join("data"));
        std::fs::create_dir_all(root.path().join("logs")).expect("create log dir");
        let mut server = Server {
            child: None,
            data_dir,
            env: self.env,
            port: 0,
            fixed_port: self.port,
            wrapper: self.wrapper,
            starts: 0,
            log_path: root.path().join("logs").join("none"),
            root,
            http: authed_client(),
        };
        server.spawn_and_wait();
        server
    }
}

/// An HTTP answer, read fully, with helpers that fail with the body shown.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// `METHOD path` of the request, for failure messages.
    pub what: String,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test (showing the body) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{} answered {} with a body that is not JSON ({err}): {}",
                self.what,
                self.status,
                truncate(&self.text(), 2000)
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect_json(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}: expected HTTP {status}, got {} with body {}",
            self.what,
            self.status,
            truncate(&self.text(), 2000)
        );
        self.json()
    }
}

impl Server {
    /// Starts a server with the test project's keys and default settings.
    pub fn start() -> Server {
        ServerBuilder::default().start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url(), path_and_query)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// The authed client (Basic `pk-lf-test:sk-lf-test`).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// Sends a prepared request and reads the whole answer. A dropped connection fails the
    /// test: the server must answer every request, even a hostile one.
    pub fn send(&self, what: &str, request: reqwest::blocking::RequestBuilder) -> Resp {
        match self.try_send(what, request) {
            Ok(resp) => resp,
            Err(err) => panic!(
                "{what}: no HTTP answer ({err}); server alive: {}",
                self.is_running_quiet()
            ),
        }
    }

    /// Like `send`, but returns transport errors instead of failing.
    pub fn try_send(
        &self,
        what: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<Resp, reqwest::Error> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes()?.to_vec();
        Ok(Resp {
            status,
            headers,
            body,
            what: what.to_owned(),
        })
    }

    /// Authed GET.
    pub fn get(&self, path_and_query: &str) -> Resp {
        self.send(
            &format!("GET {path_and_query}"),
            self.http.get(self.url(path_and_query)),
        )
    }

    /// Authed POST of a JSON value.
    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(
            &format!("POST {path}"),
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("serialize body")),
        )
    }

    /// Authed POST of raw bytes with a content type.
    pub fn post_bytes(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        self.send(
            &format!("POST {path}"),
            self.http
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
    }

    /// `POST /api/public/ingestion` with `{"batch": events}`.
    pub fn ingest(&self, events: Vec<Value>) -> Resp {
        self.post_json(
            "/api/public/ingestion",
            &serde_json::json!({ "batch": events }),
        )
    }

    /// Asserts `GET /api/public/health` answers 200 `{"status":"OK"}` and the process lives.
    pub fn assert_healthy(&self) {
        assert!(
            self.is_running_quiet(),
            "server process exited; log:\n{}",
            self.log_tail()
        );
        let resp = self.send(
            "GET /api/public/health",
            reqwest::blocking::Client::new().get(self.url("/api/public/health")),
        );
        let body = resp.expect_json(200);
        assert_eq!(body["status"], "OK", "health body: {body}");
    }

    /// SIGKILL, then wait for the process to be gone. Nothing graceful happens.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: server is not running");
        child.kill().expect("send SIGKILL");
        child.wait().expect("wait for killed server");
    }

    /// SIGTERM, wait (bounded) and return the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self
            .child
            .as_ref()
            .expect("terminate: server is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own live child, which
        // we have not yet waited for, so the id cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "send SIGTERM: {}", std::io::Error::last_os_error());
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit by itself, e.g. after a signal sent to the
    /// binary under a wrapper, and returns its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("wait_exit: server is not running");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the binary again on the same data dir (after `kill9` or `terminate`). The port
    /// may change; use `base_url()` afresh.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: the server is still running; call kill9() or terminate() first"
        );
        self.spawn_and_wait();
    }

    /// The last lines of the current run's stdout+stderr.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "--- {} (last {} lines) ---\n{}\n--- end of server log ---",
            self.log_path.display(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }

    fn is_running_quiet(&self) -> bool {
        // `try_wait` needs `&mut`; probing /proc avoids that and is enough for messages.
        match &self.child {
            Some(child) => Path::new(&format!("/proc/{}", child.id())).exists(),
            None => false,
        }
    }

    fn spawn_and_wait(&mut self) {
        const PORT_ATTEMPTS: u32 = 3;
        for attempt in 1..=PORT_ATTEMPTS {
            match self.spawn_once() {
                Ok(()) => return,
                Err(early_exit) if attempt < PORT_ATTEMPTS && early_exit.contains("in use") => {
                    // Another process took the port between our probe and the bind: retry.
                    continue;
                }
                Err(early_exit) => panic!("{early_exit}"),
            }
        }
    }

    /// Spawns once; `Err` carries a complete failure message when the process exited early.
    /// A timeout panics directly (retrying would not help).
    fn spawn_once(&mut self) -> Result<(), String> {
        self.port = self.fixed_port.unwrap_or_else(free_port);
        self.starts += 1;
        self.log_path = self
            .root
            .path()
            .join("logs")
            .join(format!("serve-{}.log", self.starts));
        let log = File::create(&self.log_path).expect("create server log file");
        let log_err = log.try_clone().expect("clone log handle");

        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_sightline"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_sightline")),
        };
        cmd.arg("serve");
        // Nothing from the machine's environment may steer the server under test.
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && (key.starts_with("SIGHTLINE_") || key.starts_with("LANGFUSE_"))
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("SIGHTLINE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("SIGHTLINE_DATA_DIR", &self.data_dir)
            .env("LANGFUSE_INIT_ORG_ID", ORG_ID)
            .env("LANGFUSE_INIT_PROJECT_ID", PROJECT_ID)
            .env("LANGFUSE_INIT_PROJECT_PUBLIC_KEY", PUBLIC_KEY)
            .env("LANGFUSE_INIT_PROJECT_SECRET_KEY", SECRET_KEY);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd.spawn().unwrap_or_else(|err| {
            panic!("cannot start {}: {err}", env!("CARGO_BIN_EXE_sightline"))
        });
        self.child = Some(child);

        let probe = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build probe client");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child just spawned");
            if let Some(status) = child.try_wait().expect("poll server process") {
                self.child = None;
                return Err(format!(
                    "server exited during start-up with {status} (port {}); log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if let Ok(resp) = probe.get(self.url("/api/public/health")).send()
                && resp.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().expect("child present");
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server not healthy within {STARTUP_TIMEOUT:?} on port {} \
                     (GET /api/public/health never answered 200); log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows the log of the server it was talking to. (Start-up and shutdown
        // failures already put the log into their own message, with no child left.)
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("{}", self.log_tail());
            }
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}
