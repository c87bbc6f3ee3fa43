//! Supervised jobs: each runs on a thread of its own and is restarted with backoff, from its
//! committed offsets, when it fails or panics; the board records their states for `/ready`,
//! `/health` and `/metrics`.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a job is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Started, no batch applied yet.
    Starting,
    /// Its last batch (or its start) succeeded.
    Running,
    /// Failed; retried after a backoff. `reason` is the last error.
    Down { reason: String },
    /// Ended because the node is shutting down.
    Stopped,
}

/// A job's state and counters.
#[derive(Clone, Debug)]
pub struct JobStatus {
    pub state: JobState,
    /// When the state last changed.
    pub since: Instant,
    /// Failures so far: failed batches (retried in place) and failed or panicked runs
    /// (restarted).
    pub failures: u64,
    /// Times the job was started again after its run ended in an error or a panic.
    pub restarts: u64,
}

impl JobStatus {
    fn new() -> Self {
        Self {
            state: JobState::Starting,
            since: Instant::now(),
            failures: 0,
            restarts: 0,
        }
    }

    fn set(&mut self, state: JobState) {
        if self.state != state {
            self.state = state;
            self.since = Instant::now();
        }
    }
}

/// The states of a node's jobs, by name.
#[derive(Debug, Default)]
pub struct JobBoard {
    jobs: Mutex<BTreeMap<&'static str, JobStatus>>,
}

impl JobBoard {
    fn update(&self, job: &'static str, f: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        f(jobs.entry(job).or_insert_with(JobStatus::new));
    }

    /// Registers `job` as starting.
    pub fn starting(&self, job: &'static str) {
        self.update(job, |s| s.set(JobState::Starting));
    }

    /// Marks `job` as running (a batch, or its start, succeeded).
    pub fn running(&self, job: &'static str) {
        self.update(job, |s| s.set(JobState::Running));
    }

    /// Records a failure of `job` and marks it down with `reason` until it recovers.
    pub fn failed(&self, job: &'static str, reason: String) {
        self.update(job, |s| {
            s.failures += 1;
            s.set(JobState::Down { reason });
        });
    }

    fn restarted(&self, job: &'static str) {
        self.update(job, |s| s.restarts += 1);
    }

    fn stopped(&self, job: &'static str) {
        self.update(job, |s| s.set(JobState::Stopped));
    }

    /// Every job's status, by name.
    pub fn statuses(&self) -> BTreeMap<&'static str, JobStatus> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The jobs that are down now, each with its last error.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.statuses()
            .into_iter()
            .filter_map(|(name, s)| match s.state {
                JobState::Down { reason } => Some((name, reason)),
                _ => None,
            })
            .collect()
    }
}

/// A run that lasted this long resets the backoff: the next failure is retried quickly.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs `job` on a thread of its own until `stop` turns true. Each run gets a fresh
/// single-threaded tokio runtime and its attempt number (0 first). A run that returns an
/// error, panics, or ends while the node is not stopping is recorded on `board` and started
/// again after [`shelf_engine::retry_delay`] (100 ms doubling to 30 s; reset after a run of
/// 30 s). Jobs resume from their committed offsets, so a restart loses and repeats nothing.
pub fn spawn_supervised<F>(
    name: &'static str,
    board: Arc<JobBoard>,
    stop: watch::Receiver<bool>,
    mut job: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnMut(&tokio::runtime::Runtime, u64) -> anyhow::Result<()> + Send + 'static,
{
    board.starting(name);
    std::thread::Builder::new()
        .name(format!("shelf-{name}"))
        .spawn(move || {
            let mut attempt = 0u64;
            let mut failures_in_a_row = 0u32;
            loop {
                let started = Instant::now();
                let reason: String = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let run =
                            std::panic::catch_unwind(AssertUnwindSafe(|| job(&runtime, attempt)));
                        match run {
                            Ok(Ok(())) if *stop.borrow() => {
                                board.stopped(name);
                                return;
                            }
                            Ok(Ok(())) => "ended without being asked to stop".to_string(),
                            Ok(Err(e)) => format!("{e:#}"),
                            Err(panic) => format!("panicked: {}", panic_message(&panic)),
                        }
                    }
                    Err(e) => format!("starting its runtime: {e}"),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    failures_in_a_row = 0;
                }
                failures_in_a_row += 1;
                let wait = shelf_engine::retry_delay(failures_in_a_row);
                tracing::error!(
                    job = name,
                    reason = %reason,
                    restart_in_ms = wait.as_millis() as u64,
                    "job failed; restarting from its committed offsets"
                );
                board.failed(name, reason);
                if sleep_unless_stopped(wait, &stop) {
                    board.stopped(name);
                    return;
                }
                attempt += 1;
                board.restarted(name);
            }
        })
}

/// Sleeps `wait` in short steps; returns true as soon as `stop` is true.
fn sleep_unless_stopped(wait: Duration, stop: &watch::Receiver<bool>) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if *stop.borrow() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A job that fails, then panics, then runs until stopped: the supervisor restarts it
    /// each time, the board shows it down in between, and it stops cleanly.
    #[test]
    fn a_failing_or_panicking_job_is_restarted_and_shown_down_meanwhile() {
        let board = Arc::new(JobBoard::default());
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU64::new(0));
        let runs_in_job = Arc::clone(&runs);
        let mut stop_in_job = stop.clone();
        let handle = spawn_supervised("test-job", Arc::clone(&board), stop, move |rt, attempt| {
            runs_in_job.fetch_add(1, Ordering::SeqCst);
            match attempt {
                0 => anyhow::bail!("store unavailable"),
                1 => panic!("a bug"),
                _ => rt.block_on(async {
                    let _ = stop_in_job.wait_for(|s| *s).await;
                    Ok(())
                }),
            }
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "not restarted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = board.statuses()["test-job"].clone();
        assert_eq!(status.failures, 2);
        assert_eq!(status.restarts, 2);
        assert!(
            matches!(&status.state, JobState::Down { reason } if reason.contains("panicked: a bug")),
            "{status:?}"
        );
        assert_eq!(board.down().len(), 1);
        stop_tx.send(true).unwrap();
        handle.join().unwrap();
        assert_eq!(board.statuses()["test-job"].state, JobState::Stopped);
        assert!(board.down().is_empty());
    }
}
