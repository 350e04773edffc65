//! In-process server harness.

use sightline::config::{Bootstrap, Config};

/// The real router served in-process on 127.0.0.1:0 (same `server::open` + `server::run` as the
/// binary), for tests that need the store handle, e.g. to add a second project.
pub struct InProcess {
    pub state: sightline::api::AppState,
    pub base: String,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    pub fn start() -> InProcess {
        Self::start_in(tempfile::tempdir().unwrap(), None)
    }

    /// Serves `dir` (kept alive by the returned value) with an optional storage fault plan.
    pub fn start_in(
        dir: tempfile::TempDir,
        faults: Option<std::sync::Arc<sightline::store::faults::FaultPlan>>,
    ) -> InProcess {
        Self::start_configured(dir, faults, |_| {})
    }

    /// `start_in` with the default config adjusted first (e.g. `[[models]]` entries).
    pub fn start_configured(
        dir: tempfile::TempDir,
        faults: Option<std::sync::Arc<sightline::store::faults::FaultPlan>>,
        configure: impl FnOnce(&mut Config),
    ) -> InProcess {
        let mut config = Config::for_data_dir(dir.path());
        configure(&mut config);
        let init = Bootstrap {
            org_id: Some("org".into()),
            project_id: Some("proj".into()),
            public_key: Some("pk-lf-test".into()),
            secret_key: Some("sk-lf-test".into()),
            ..Default::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (state, _) = sightline::server::open_with_faults(&config, &init, faults).unwrap();
        let app_state = state.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.spawn(sightline::server::run(listener, state, async {
            let _ = stopped.await;
        }));
        InProcess {
            state: app_state,
            base,
            _dir: dir,
            rt,
            stop: Some(stop),
            handle: Some(handle),
        }
    }
}

impl InProcess {
    /// One request with Basic `keys`: the status and the JSON answer (null when empty, any
    /// other non-JSON answer as a string, so assertions can show it).
    #[allow(dead_code)] // not every test binary that includes `common` sends requests this way
    pub fn send_as(
        &self,
        keys: (&str, &str),
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.base))
            .basic_auth(keys.0, Some(keys.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        let body = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if text.is_empty() => serde_json::Value::Null,
            Err(_) => serde_json::Value::String(text),
        };
        (status, body)
    }

    /// Stops the server (graceful: the writer drains) and hands back its data directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dir, dir)
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(h);
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}
