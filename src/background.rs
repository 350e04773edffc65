//! Threads the server runs beside the HTTP API (retention, the configured forward): a stop
//! signal their waits wake on, and a handle that stops one and waits for it, boundedly.
//!
//! Owns: nothing but the signalling. Must not touch: what the threads do.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set once, seen by every clone. The default is a signal nobody will ever give (for the
/// command-line tools, which stop by exiting).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<(Mutex<bool>, Condvar)>);

impl StopSignal {
    pub fn stop(&self) {
        let (flag, cond) = &*self.0;
        if let Ok(mut f) = flag.lock() {
            *f = true;
        }
        cond.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.0.lock().map(|f| *f).unwrap_or(true)
    }

    /// Waits up to `d`; true when the signal was given (before or meanwhile).
    pub fn sleep(&self, d: Duration) -> bool {
        let (flag, cond) = &*self.0;
        let Ok(guard) = flag.lock() else {
            return true;
        };
        match cond.wait_timeout_while(guard, d, |stopped| !*stopped) {
            Ok((stopped, _)) => *stopped,
            Err(_) => true,
        }
    }
}

/// A named background thread and its stop signal.
pub struct Task {
    name: &'static str,
    stop: StopSignal,
    thread: JoinHandle<()>,
}

impl Task {
    pub fn spawn(
        name: &'static str,
        body: impl FnOnce(StopSignal) + Send + 'static,
    ) -> std::io::Result<Task> {
        let stop = StopSignal::default();
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sightline-{name}"))
            .spawn(move || body(signal))?;
        Ok(Task { name, stop, thread })
    }

    /// Signals the thread and waits up to `grace` for it to end. A thread still inside a call
    /// it cannot interrupt (an upstream request) is left to end with the process: whatever it
    /// has not finished is redone next start (retention runs again, a forward resends from its
    /// cursor).
    pub fn stop(self, grace: Duration) {
        self.stop.stop();
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!(
                task = self.name,
                "background task still busy at shutdown; leaving it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_wakes_a_sleeper_at_once() {
        let task = Task::spawn("test", |stop| {
            assert!(stop.sleep(Duration::from_secs(60)));
        })
        .unwrap();
        let started = Instant::now();
        task.stop(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(5));
        let never = StopSignal::default();
        assert!(!never.sleep(Duration::from_millis(1)));
        assert!(!never.is_stopped());
    }
}
