//! Real processes for the queue tests: `janitor worker` children, the CLI,
//! a private `redis-server` when a test must restart Redis, and waiting on
//! conditions (never on fixed sleeps).

#![allow(dead_code)] // Each test uses a different subset.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::support::{self, Store};

/// The shared Redis (`REDIS_URL`, default 127.0.0.1:6379).
pub fn shared_redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One test's world: its database, storage root, Redis and key prefix.
pub struct Env {
    pub pool: PgPool,
    pub store: Store,
    pub redis_url: String,
    /// Whether `redis_url` is a Redis Cluster's seed list.
    pub cluster: bool,
    pub prefix: String,
    database_url: String,
}

impl Env {
    pub fn new(pool: PgPool) -> Self {
        Self::with_redis(pool, shared_redis_url())
    }

    pub fn with_redis(pool: PgPool, redis_url: String) -> Self {
        let database_url = support::database_url(&pool);
        Self {
            pool,
            store: Store::new(),
            redis_url,
            cluster: false,
            prefix: format!("janitor-test:{}", Uuid::new_v4().simple()),
            database_url,
        }
    }

    /// A world whose queue is on a Redis Cluster (`JANITOR_REDIS_CLUSTER`).
    pub fn on_cluster(pool: PgPool, seeds: String) -> Self {
        Self { cluster: true, ..Self::with_redis(pool, seeds) }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_janitor"));
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("JANITOR_REDIS_CLUSTER", self.cluster.to_string())
            .env("JANITOR_QUEUE", &self.prefix)
            .env("JANITOR_STORAGE_ROOT", self.store.root())
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true);
        command
    }

    /// Starts `janitor worker <args>` (plus `JANITOR_*` settings in `env`).
    pub fn worker(&self, args: &[&str], env: &[(&str, &str)]) -> Worker {
        self.spawn(&[&["worker"], args].concat(), env)
    }

    /// Starts a long-running `janitor <args>` process.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut command = self.command(args);
        command.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::inherit());
        Worker { child: command.spawn().expect("janitor starts") }
    }

    /// Runs the CLI to its end; returns (exit code, stdout, stderr).
    pub async fn janitor(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().await.expect("janitor runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `janitor enqueue <args> --json`; returns the job id.
    pub async fn enqueue(&self, args: &[&str]) -> Uuid {
        let (code, stdout, stderr) = self.janitor(&[&["enqueue"], args, &["--json"]].concat()).await;
        assert_eq!(code, 0, "enqueue failed: {stderr}");
        let reply: Value = serde_json::from_str(&stdout).expect("enqueue prints JSON");
        reply["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// A job's row; a database error fails the test.
    pub async fn job(&self, job_id: Uuid) -> Option<JobRow> {
        fetch_job(&self.pool, job_id).await.unwrap()
    }

    /// Waits until the job has a row in a final state; returns it.
    pub async fn finished(&self, job_id: Uuid, timeout: Duration) -> JobRow {
        wait_for_job(&self.pool, job_id, "the job has finished", timeout, |row| {
            row.0 == "completed" || row.0 == "failed"
        })
        .await
    }

    /// A pattern for every key that holds this test's prefix, hash-tagged or
    /// not (a key written without the tag must show up too).
    pub fn any_key(&self) -> String {
        format!("*{}*", self.prefix)
    }

    /// This test's key layout (its keys are `{prefix}:…`, hash-tagged).
    pub fn layout(&self) -> janitor_workers::layout::Layout {
        janitor_workers::layout::Layout::new(&self.prefix)
    }

    /// A connection to this test's Redis (a cluster connection on a cluster).
    pub async fn redis(&self) -> janitor_workers::RedisConnection {
        janitor_workers::RedisTarget::open(&self.redis_url, self.cluster)
            .unwrap()
            .connect(janitor_workers::Timeouts::default())
            .await
            .expect("redis is reachable")
    }

    /// Deletes this test's keys (and only those).
    pub async fn cleanup_keys(&self) {
        let Ok(target) = janitor_workers::RedisTarget::open(&self.redis_url, self.cluster) else {
            return;
        };
        let Ok(mut conn) = target.connect(janitor_workers::Timeouts::default()).await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS").arg(self.any_key()).query_async(&mut conn).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}

/// (status, deleted_count, attempts, worker, last_error)
pub type JobRow = (String, i64, i32, Option<String>, Option<String>);

async fn fetch_job(pool: &PgPool, job_id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as("SELECT status, deleted_count, attempts, worker, last_error FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

/// A job's row, or `None` if there is none or the database did not answer
/// (the fault tests read while Postgres is restarting).
pub async fn read_job(pool: &PgPool, job_id: Uuid) -> Option<JobRow> {
    fetch_job(pool, job_id).await.ok().flatten()
}

/// Waits until the job's row satisfies `condition`; returns that row. A row
/// that has ended without satisfying it fails at once: it will not change.
pub async fn wait_for_job(
    pool: &PgPool,
    job_id: Uuid,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&JobRow) -> bool,
) -> JobRow {
    let deadline = Instant::now() + timeout;
    loop {
        match read_job(pool, job_id).await {
            Some(row) if condition(&row) => return row,
            Some(row) if matches!(row.0.as_str(), "completed" | "failed" | "skipped") => {
                panic!("the job ended before {what}: {row:?}")
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; the row is {:?}",
            read_job(pool, job_id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `janitor worker` child process.
pub struct Worker {
    child: Child,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("worker is running")
    }

    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().await.unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGSTOP, and waits until every thread of the process has stopped
    /// (a signal is delivered asynchronously: a thread running on another
    /// core may take a moment to stop).
    pub async fn pause(&self) {
        self.signal("STOP").await;
        let tasks = format!("/proc/{}/task", self.pid());
        wait_until("every thread of the worker has stopped", Duration::from_secs(10), || {
            let tasks = tasks.clone();
            async move {
                std::fs::read_dir(&tasks).unwrap().filter_map(Result::ok).all(|task| {
                    let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // The state follows the command name, which is in parentheses.
                    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            }
        })
        .await;
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9 the worker");
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn exit_code(mut self, timeout: Duration) -> Option<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for the worker").code(),
            Err(_) => panic!("worker did not exit within {timeout:?}"),
        }
    }
}

/// Polls `condition` every 25 ms until it holds, failing the test after
/// `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `redis-server` of the test's own, on a free port, that can be killed
/// and restarted (losing everything, as the shared one would: no disk).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None, dir: tempfile::tempdir().unwrap() };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let url = self.url();
        wait_until("the private redis answers", Duration::from_secs(10), || ping(&url)).await;
    }

    /// Kills the server (its data is gone) and starts a new one on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
}

/// The number of files under a folder, recursively.
pub fn files_under(path: &Path) -> usize {
    walkdir::WalkDir::new(path).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).count()
}
