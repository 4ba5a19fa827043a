//! Signals to a worker in the middle of a job. SIGTERM is a graceful stop:
//! the job checkpoints and is handed back at once, not after a lease. SIGSTOP
//! freezes a worker until its job is rescued; once it is thawed it must
//! write nothing (no "zombie" commit), and the counts stay exact.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::crash::{deleted_bytes, run_by, seed_slow_job, SEEDED, SIZE, SLOW};
use crate::harness::{files_under, wait_for_job, wait_until, Env};
use crate::support::{self, count_images};

fn settings(lease: &str) -> Vec<(&str, &str)> {
    let mut all = vec![("JANITOR_LEASE", lease)];
    all.extend(SLOW);
    all
}

/// The consumers of the bulk lane's group, as (name, pending).
async fn bulk_consumers(env: &Env) -> Vec<(String, usize)> {
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(env.layout().stream(janitor_workers::layout::Lane::Bulk))
        .arg("workers")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    reply.consumers.into_iter().map(|c| (c.name, c.pending)).collect()
}

async fn checkpoint(env: &Env, job_id: Uuid) -> Option<serde_json::Value> {
    sqlx::query_scalar("SELECT checkpoint FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn sigterm_checkpoints_and_hands_the_job_back_at_once(pool: PgPool) {
    let env = Env::new(pool);
    seed_slow_job(&env, SEEDED).await;
    // A 30 s lease: a rescue by lease expiry could not finish in time below.
    let a = env.worker(&[], &settings("30s"));
    let a_pid = a.pid();
    let job_id = env.enqueue(&["expired"]).await;
    wait_for_job(&env.pool, job_id, "A has deleted some rows", Duration::from_secs(15), |r| {
        r.0 == "running" && r.1 > 0
    })
    .await;

    a.signal("TERM").await;
    assert_eq!(a.exit_code(Duration::from_secs(10)).await, Some(0));
    let stopped = env.job(job_id).await.unwrap();
    assert_eq!(stopped.0, "running", "left resumable: {stopped:?}");
    assert!(stopped.1 > 0 && stopped.1 < SEEDED as i64, "{stopped:?}");
    assert!(run_by(&stopped, a_pid), "{stopped:?}");
    assert!(checkpoint(&env, job_id).await.is_some(), "a checkpoint");
    assert_eq!(count_images(&env.pool).await, SEEDED as i64 - stopped.1, "the counters match the committed deletions");
    let consumers = bulk_consumers(&env).await;
    assert!(!consumers.iter().any(|(name, _)| name.contains(&format!("-{a_pid}-"))), "A left the group: {consumers:?}");
    assert_eq!(
        consumers.iter().map(|(_, pending)| pending).sum::<usize>(),
        1,
        "the entry was handed back, not dropped: {consumers:?}"
    );

    let started = Instant::now();
    let b = env.worker(&[], &settings("30s"));
    let row = env.finished(job_id, Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(20), "taken over by hand-back, not after the 30 s lease");
    assert_eq!(row.0, "completed", "{row:?}");
    assert_eq!(row.1, SEEDED as i64, "{row:?}");
    // A run handed back at shutdown is not an attempt: only failures of the
    // job itself count.
    assert_eq!(row.2, 1, "{row:?}");
    assert!(run_by(&row, b.pid()), "{row:?}");
    assert_eq!(deleted_bytes(&env, job_id).await, SEEDED as i64 * SIZE);
    assert_eq!(count_images(&env.pool).await, 0);
    assert_eq!(files_under(env.store.root()), 0);

    b.signal("TERM").await;
    assert_eq!(b.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}

/// A `janitor worker` whose log lines (stderr, `RUST_LOG=warn`) the test
/// can wait on; they are echoed to the test's stderr too. The harness's
/// `Worker` inherits stderr, and this test must know when a thawed worker
/// has reacted.
struct LoggedWorker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedWorker {
    fn start(env: &Env, settings: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_janitor"))
            .arg("worker")
            .env("DATABASE_URL", support::database_url(&env.pool))
            .env("REDIS_URL", &env.redis_url)
            .env("JANITOR_QUEUE", &env.prefix)
            .env("JANITOR_STORAGE_ROOT", env.store.root())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("janitor worker starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let pid = child.id().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[worker {pid}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("worker is running")
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    async fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().await.unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    async fn exit_code(mut self, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker did not exit within {timeout:?}"));
        status.unwrap().code()
    }
}

/// What a worker logs when it finds its job taken over (`worker.rs`).
const RELINQUISHED: &str = "another worker took this job over";

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_stopped_worker_thawed_after_its_job_was_rescued_commits_nothing(pool: PgPool) {
    let env = Env::new(pool);
    seed_slow_job(&env, SEEDED).await;
    let first = LoggedWorker::start(&env, &settings("2s"));
    let second = LoggedWorker::start(&env, &settings("2s"));
    let job_id = env.enqueue(&["expired"]).await;
    let mid = wait_for_job(&env.pool, job_id, "a worker has deleted some rows", Duration::from_secs(15), |r| {
        r.0 == "running" && r.1 > 0
    })
    .await;
    let (frozen, other) = if run_by(&mid, first.pid()) {
        (first, second)
    } else {
        assert!(run_by(&mid, second.pid()), "{mid:?}");
        (second, first)
    };

    frozen.signal("STOP").await;
    let other_pid = other.pid();
    let rescued =
        wait_for_job(&env.pool, job_id, "the other worker has taken the job over", Duration::from_secs(15), |r| {
            run_by(r, other_pid) && r.2 > mid.2
        })
        .await;
    assert_eq!(rescued.0, "running", "{rescued:?}");

    // Thaw it while the other still runs the job: its batch in flight must
    // roll back (its lease epoch is stale) and it must write nothing more.
    frozen.signal("CONT").await;
    // Fixed behaviour logs the first; a lost lease treated as a failed
    // attempt ends with the acknowledger's retry line, after its writes.
    wait_until("the thawed worker has settled its delivery", Duration::from_secs(15), || async {
        frozen.logged(RELINQUISHED) || frozen.logged("job failed; will retry")
    })
    .await;
    let during = env.job(job_id).await.unwrap();
    assert_eq!(during.0, "running", "the other still runs it: {during:?}");
    assert!(run_by(&during, other_pid), "{during:?}");
    assert_eq!(during.4, None, "the thawed worker wrote to a job it no longer holds: {during:?}");
    assert!(frozen.logged(RELINQUISHED), "the thawed worker treated its lost lease as a failed attempt to retry");

    let row = env.finished(job_id, Duration::from_secs(30)).await;
    assert_eq!(row.0, "completed", "{row:?}");
    assert_eq!(row.1, SEEDED as i64, "deleted_count is the rows removed, once: {row:?}");
    assert_eq!(deleted_bytes(&env, job_id).await, SEEDED as i64 * SIZE);
    assert_eq!(count_images(&env.pool).await, 0, "image rows left");
    assert_eq!(files_under(env.store.root()), 0, "files left");
    assert!(run_by(&row, other_pid), "the rescuer finished it: {row:?}");
    assert_eq!(row.2, mid.2 + 1, "one rescue, no third run: {row:?}");
    assert_eq!(row.4, None, "{row:?}");

    for worker in [frozen, other] {
        worker.signal("TERM").await;
        assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    }
    env.cleanup_keys().await;
}
