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
        let config = Config::for_data_dir(dir.path());
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
