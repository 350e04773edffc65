//! Latency samples and their percentiles, and what the generator reads about the server process
//! (resident memory from `/proc`) and its data directory (bytes on disk).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Request latencies of one measurement.
#[derive(Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1_000.0
    }
}

/// `VmRSS` and `VmHWM` (peak resident set) of a process, in bytes, from one reading: two
/// readings could see the process shrink in between, and report a peak below the current size.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = read_status(pid)?;
    Some((
        field_bytes(&status, "VmRSS:")?,
        field_bytes(&status, "VmHWM:")?,
    ))
}

/// `RssAnon`: the resident memory that is the process's own (heap, stacks). The rest of
/// `VmRSS` is file pages it has mapped (tantivy maps its segments), which the kernel can drop.
pub fn rss_anon(pid: u32) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

fn status_bytes(pid: u32, name: &str) -> Option<u64> {
    field_bytes(&read_status(pid)?, name)
}

fn read_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

fn field_bytes(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}

/// Bytes allocated on disk under `dir` (blocks, not apparent length: a sparse or preallocated
/// file counts for what it really takes).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// CPU seconds (user + system) each thread of a process has used, summed by thread name
/// (`sightline-write`, `tokio-rt-worker`, tantivy's threads, ...). Threads that ended are lost, so
/// take this while the process runs.
///
/// Threads that ended (tantivy starts new indexing workers at every commit) are summed under
/// `(exited threads)`: the process total counts them, the live threads do not.
pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let mut live = 0.0;
    for task in tasks.flatten() {
        if let Some((name, secs)) = stat_cpu(&task.path().join("stat")) {
            live += secs;
            *out.entry(name).or_insert(0.0) += secs;
        }
    }
    if let Some((_, total)) = stat_cpu(Path::new(&format!("/proc/{pid}/stat"))) {
        out.insert(EXITED.to_owned(), (total - live).max(0.0));
    }
    out
}

const EXITED: &str = "(exited threads)";

/// User + system CPU seconds of the whole process `pid`, ended threads included.
pub fn process_cpu(pid: u32) -> Option<f64> {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map(|(_, secs)| secs)
}

/// User + system CPU seconds of the calling thread: what a thread reports of itself before it
/// ends, as `cpu_by_thread` no longer sees it afterwards.
pub fn thread_cpu() -> f64 {
    stat_cpu(Path::new("/proc/thread-self/stat")).map_or(0.0, |(_, secs)| secs)
}

/// Name and user + system CPU seconds from a `/proc/.../stat` file.
fn stat_cpu(path: &Path) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so split at the last parenthesis.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields after the comm start at `state` (field 3): utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((name, (ticks(14)? + ticks(15)?) / CLOCK_TICKS))
}

/// `_SC_CLK_TCK`: 100 on every Linux this runs on.
const CLOCK_TICKS: f64 = 100.0;

/// Per-thread CPU used between two `cpu_by_thread` readings.
pub fn cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile_ms(0.5), 50.0);
        assert_eq!(l.percentile_ms(0.99), 99.0);
        assert_eq!(Latencies::default().percentile_ms(0.5), 0.0);
    }

    #[test]
    fn cpu_of_this_process_by_thread() {
        // Spins until its own thread's CPU shows up (or 20 s pass on a very busy machine), so
        // the assertion holds however the cores are shared.
        let spin = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                loop {
                    for _ in 0..1_000_000 {
                        x = x.wrapping_add(1);
                    }
                    let cpu = cpu_by_thread(std::process::id());
                    if cpu.get("cpu-probe").is_some_and(|s| *s >= 0.05)
                        || t.elapsed() > Duration::from_secs(20)
                    {
                        std::hint::black_box(x);
                        return cpu;
                    }
                }
            })
            .expect("spawn");
        let cpu = spin.join().expect("join");
        assert!(cpu.get("cpu-probe").is_some_and(|s| *s >= 0.05), "{cpu:?}");
        assert!(cpu.contains_key("(exited threads)"), "{cpu:?}");
    }

    #[test]
    fn process_cpu_counts_ended_threads() {
        let before = process_cpu(std::process::id()).expect("own /proc stat");
        // A thread spins until its own CPU shows up (or 20 s pass on a very busy machine), then
        // ends: what it used must stay in the process total.
        let used = std::thread::spawn(|| {
            let t = std::time::Instant::now();
            let mut x = 0u64;
            loop {
                for _ in 0..1_000_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let own = stat_cpu(Path::new("/proc/thread-self/stat")).map_or(0.0, |c| c.1);
                if own >= 0.05 || t.elapsed() > Duration::from_secs(20) {
                    return own;
                }
            }
        })
        .join()
        .expect("join");
        let after = process_cpu(std::process::id()).expect("own /proc stat");
        assert!(used >= 0.05, "the thread never got 50 ms of CPU: {used}");
        // Two ticks of slack: user and system time are each rounded down to whole ticks.
        assert!(
            after - before + 0.02 >= used,
            "{before} -> {after}, ended thread {used}"
        );
    }

    #[test]
    fn reads_this_process() {
        // Other tests' threads come and go meanwhile: the two figures must still be of one
        // moment, where the peak is never below the current size.
        for _ in 0..1_000 {
            let (now, peak) = rss(std::process::id()).expect("own /proc status");
            assert!(now > 0 && peak >= now, "VmRSS {now} VmHWM {peak}");
        }
    }
}
