//! Python virtual environments for tests that drive real client SDKs.
//!
//! Owns: `<target>/test-venvs/<name>/`, created with `python3 -m venv` and filled with
//! `pip install -r tests/python/<requirements>`. Creation is idempotent (a stamp file holds a hash
//! of the requirement files and the interpreter version) and safe when several test binaries
//! ask at once (an exclusive `flock` per venv, released by the kernel if a test dies).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// Bump to force every venv to be rebuilt (e.g. when the creation steps change).
const LAYOUT_VERSION: &str = "1";
const STAMP_FILE: &str = "sightline-venv.stamp";

/// A ready virtual environment.
#[derive(Debug, Clone)]
pub struct Venv {
    pub dir: PathBuf,
    pub python: PathBuf,
}

/// Where the test Python scripts and requirement files live.
pub fn python_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python"))
}

/// `<target dir>/test-venvs`, following `CARGO_TARGET_DIR` (cargo sets `CARGO_TARGET_TMPDIR` to
/// `<target dir>/tmp` for integration tests).
pub fn venvs_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("test-venvs")
}

/// The interpreter that creates venvs: `SIGHTLINE_TEST_PYTHON` or `python3` from `PATH`.
fn base_python() -> String {
    std::env::var("SIGHTLINE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

impl Venv {
    /// Returns the venv `name`, creating or rebuilding it when its requirements changed.
    /// `requirements` is a file name in `tests/python/`; files it references with `-c`/`-r`
    /// count towards the stamp too.
    pub fn ensure(name: &str, requirements: &str) -> Venv {
        let root = venvs_root();
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|err| panic!("create {}: {err}", root.display()));
        let dir = root.join(name);
        let venv = Venv {
            python: dir.join("bin").join("python"),
            dir,
        };
        let requirements_path = python_dir().join(requirements);
        let stamp = stamp_for(&requirements_path);

        let _lock = VenvLock::acquire(&root.join(format!("{name}.lock")));
        if venv.python.exists()
            && std::fs::read_to_string(venv.dir.join(STAMP_FILE))
                .ok()
                .as_deref()
                == Some(stamp.as_str())
        {
            return venv;
        }

        let started = Instant::now();
        if venv.dir.exists() {
            std::fs::remove_dir_all(&venv.dir)
                .unwrap_or_else(|err| panic!("remove stale venv {}: {err}", venv.dir.display()));
        }
        let python = base_python();
        run(
            Command::new(&python).args(["-m", "venv"]).arg(&venv.dir),
            &format!("{python} -m venv {}", venv.dir.display()),
            "python3 with the venv module (and ensurepip) is required; on Debian run \
             tests/run.sh, which installs python3-venv",
        );
        let venv_secs = started.elapsed().as_secs_f64();
        let pip_started = Instant::now();
        run(
            Command::new(&venv.python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--quiet",
                    "-r",
                ])
                .arg(&requirements_path)
                .env("PIP_NO_INPUT", "1")
                .env_remove("PIP_REQUIRE_VIRTUALENV")
                .env_remove("PYTHONPATH"),
            &format!("pip install -r {}", requirements_path.display()),
            "pip must reach the package index (PyPI)",
        );
        let pip_secs = pip_started.elapsed().as_secs_f64();
        std::fs::write(venv.dir.join(STAMP_FILE), &stamp).expect("write venv stamp");
        eprintln!(
            "venv {name}: created in {:.1}s (venv {venv_secs:.1}s, pip install {pip_secs:.1}s) at {}",
            started.elapsed().as_secs_f64(),
            venv.dir.display()
        );
        venv
    }

    /// Runs `tests/python/<script>` with `args` and `env` (no other LANGFUSE_*/OTEL_* variables,
    /// loopback only), bounded by a timeout; asserts it succeeded and returns the JSON document on
    /// its last stdout line.
    pub fn run_json(
        &self,
        script: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> serde_json::Value {
        let (stdout, stderr) = self.run(script, args, env);
        let last_line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last_line).unwrap_or_else(|err| {
            panic!("{script} printed no JSON result ({err}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        })
    }

    /// Runs a script as `run_json` does and returns (stdout, stderr) after asserting success.
    pub fn run(&self, script: &str, args: &[&str], env: &[(&str, String)]) -> (String, String) {
        use std::io::Read as _;
        use std::process::Stdio;
        const SCRIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
        let mut cmd = self.command();
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && (key.starts_with("LANGFUSE_") || key.starts_with("OTEL_"))
            {
                cmd.env_remove(key);
            }
        }
        cmd.arg(python_dir().join(script)).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Offline: only the loopback server may be reached.
        cmd.env("NO_PROXY", "127.0.0.1,localhost")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let mut stdout_pipe = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stdout_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout_pipe.read_to_string(&mut text);
            text
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll script") {
                break status;
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{script} did not finish within {SCRIPT_TIMEOUT:?}; stderr:\n{}",
                    stderr_reader.join().unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stdout = stdout_reader.join().unwrap_or_default();
        let stderr = stderr_reader.join().unwrap_or_default();
        eprintln!(
            "{script} finished in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            status.success(),
            "{script} failed ({status}); a pydantic error means the client could not parse the \
             server's JSON.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
        (stdout, stderr)
    }

    /// A command running this venv's interpreter, isolated from the user's site and env.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.env("PYTHONNOUSERSITE", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        cmd
    }
}

/// Hash of everything that decides the venv's content.
fn stamp_for(requirements: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION.as_bytes());
    hasher.update(python_version().as_bytes());
    let mut pending = vec![requirements.to_path_buf()];
    let mut seen = Vec::new();
    while let Some(path) = pending.pop() {
        if seen.contains(&path) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        hasher.update(path.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(text.as_bytes());
        for line in text.lines() {
            let line = line.trim();
            for flag in ["-c ", "-r ", "--constraint ", "--requirement "] {
                if let Some(rest) = line.strip_prefix(flag) {
                    let base = path.parent().expect("requirements file has a parent");
                    pending.push(base.join(rest.trim()));
                }
            }
        }
        seen.push(path);
    }
    format!("{:x}\n", hasher.finalize())
}

fn python_version() -> String {
    let python = base_python();
    let output = Command::new(&python)
        .arg("--version")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {python}: {err}; python3 is required for the SDK tests \
                 (tests/run.sh installs it on Debian)"
            )
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err} ({hint})"));
    if !output.status.success() {
        panic!(
            "{what} failed with {} ({hint})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// An exclusive advisory lock on a file; released on drop (or by the kernel on exit).
struct VenvLock {
    file: File,
}

impl VenvLock {
    fn acquire(path: &Path) -> VenvLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|err| panic!("open lock {}: {err}", path.display()));
        // SAFETY: `flock` only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        VenvLock { file }
    }
}

impl Drop for VenvLock {
    fn drop(&mut self) {
        // SAFETY: as in `acquire`; closing the file would release the lock anyway.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
