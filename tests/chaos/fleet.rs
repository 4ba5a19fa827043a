//! The `janitor worker` processes: two at all times (a killed or stopped
//! one is replaced or resumed), each with seeded settings, and what became
//! of the ones that were told to stop.

use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::task::JoinHandle;

use crate::harness::{Env, Worker};
use crate::plan::Rng;
use crate::world::IDLE_TIMEOUT;

/// How many workers run at once.
pub const WORKERS: usize = 2;
/// Each worker's lease: short, so a stopped or killed worker's job is
/// rescued within the round.
pub const LEASE: &str = "3s";
/// After SIGTERM a worker must be gone within its shutdown timeout; this
/// much more is allowed for a loaded machine.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const SHUTDOWN_SLACK: Duration = Duration::from_secs(25);

pub struct Running {
    pub worker: Worker,
    pub pid: u32,
    /// When a SIGSTOPped worker is due its SIGCONT.
    pub stopped_until: Option<Instant>,
}

pub struct Fleet {
    pub running: Vec<Running>,
    rng: Rng,
    database_url: String,
    /// Workers told to stop (SIGTERM): each watcher returns a violation if
    /// its worker did not exit in time.
    retiring: Vec<JoinHandle<Option<String>>>,
    pub started: u64,
}

impl Fleet {
    pub fn new(rng: Rng, database_url: String) -> Self {
        Self { running: Vec::new(), rng, database_url, retiring: Vec::new(), started: 0 }
    }

    /// Starts a worker with settings drawn from the fleet's generator.
    pub fn start(&mut self, env: &Env) {
        let batch = self.rng.gen_range(7..=50).to_string();
        let throttle = self.rng.gen_bool(0.4).then(|| self.rng.gen_range(100..=500).to_string());
        let log = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
        let idle = format!("{}ms", IDLE_TIMEOUT.as_millis());
        let mut vars: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", &self.database_url),
            ("JANITOR_LEASE", LEASE),
            ("JANITOR_BATCH_SIZE", &batch),
            // The simulated store is small and mostly litter on purpose.
            ("JANITOR_MAX_ORPHAN_RATIO", "1"),
            // The sweeps' two-second grace is below the default floor.
            ("JANITOR_MIN_GRACE", "1s"),
            ("JANITOR_RECONCILE_INTERVAL", "1s"),
            ("JANITOR_RECONCILE_GRACE", "3s"),
            ("JANITOR_RETRY_BASE", "200ms"),
            ("JANITOR_MAX_ATTEMPTS", "10"),
            ("JANITOR_SHUTDOWN_TIMEOUT", "5s"),
            ("JANITOR_DB_CONNECTIONS", "10"),
            // Shorter than every SIGSTOP (see `faults`).
            ("JANITOR_IDLE_TRANSACTION_TIMEOUT", &idle),
            ("RUST_LOG", &log),
        ];
        if let Some(throttle) = &throttle {
            vars.push(("JANITOR_MAX_DELETES_PER_SEC", throttle));
        }
        let worker = env.worker(&[], &vars);
        let pid = worker.pid();
        self.started += 1;
        self.running.push(Running { worker, pid, stopped_until: None });
    }

    /// Indices of workers that are not stopped.
    pub fn awake(&self) -> Vec<usize> {
        (0..self.running.len()).filter(|&i| self.running[i].stopped_until.is_none()).collect()
    }

    pub async fn kill9(&mut self, index: usize, env: &Env) {
        let victim = self.running.remove(index);
        victim.worker.kill9().await;
        self.start(env);
    }

    /// SIGTERM, and a replacement at once; a watcher checks the old one
    /// leaves within its shutdown timeout.
    pub async fn term(&mut self, index: usize, env: &Env) {
        let victim = self.running.remove(index);
        victim.worker.signal("TERM").await;
        let pid = victim.pid;
        self.retiring.push(tokio::spawn(async move {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK, victim.worker.exit_code(Duration::from_secs(3600))).await
            {
                Ok(_) => None,
                Err(_) => Some(format!(
                    "worker pid {pid} was still running {:?} after SIGTERM (its shutdown timeout is {SHUTDOWN_TIMEOUT:?}); killed",
                    SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK
                )),
            }
        }));
        self.start(env);
    }

    pub async fn stop(&mut self, index: usize, pause: Duration) {
        self.running[index].worker.signal("STOP").await;
        self.running[index].stopped_until = Some(Instant::now() + pause);
    }

    /// Resumes the stopped workers whose pause is over (all with `all`).
    pub async fn resume(&mut self, all: bool) {
        for running in &mut self.running {
            if running.stopped_until.is_some_and(|until| all || until <= Instant::now()) {
                running.worker.signal("CONT").await;
                running.stopped_until = None;
            }
        }
    }

    /// Workers that exited although nobody told them to: each is a
    /// violation, and is replaced.
    pub async fn reap(&mut self, env: &Env) -> Vec<String> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if exited(self.running[i].pid) {
                let gone = self.running.remove(i);
                let code = gone.worker.exit_code(Duration::from_secs(5)).await;
                found.push(format!("worker pid {} exited on its own (exit code {code:?})", gone.pid));
                self.start(env);
            } else {
                i += 1;
            }
        }
        found
    }

    /// Waits for every SIGTERMed worker; returns the violations.
    pub async fn retired(&mut self) -> Vec<String> {
        let mut found = Vec::new();
        for watcher in self.retiring.drain(..) {
            match watcher.await {
                Ok(Some(violation)) => found.push(violation),
                Ok(None) => {}
                Err(err) => found.push(format!("a SIGTERMed worker's watcher failed: {err}")),
            }
        }
        found
    }

    pub async fn shutdown(&mut self) {
        self.resume(true).await;
        for running in self.running.drain(..) {
            running.worker.kill9().await;
        }
        let _ = self.retired().await;
    }
}

/// Whether the process has exited (a zombie waiting to be reaped, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
