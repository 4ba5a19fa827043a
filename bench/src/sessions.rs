//! The session-job benchmark alone: the logout path (one small job per
//! session) through a real worker, against the hand-written baseline (one
//! transaction per session) on an identical store, with where the time and
//! the CPU went. The engine benchmark runs the same two measurements among
//! everything else; this one is for looking at small jobs closely.

use std::time::Duration;

use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use serde_json::json;
use uuid::Uuid;

use crate::engine::{session_ids, sessions, EngineBench, Store, WorkerProcess, SESSION_CONCURRENCY};
use crate::{baseline, quantile_ms, CpuTimes};

/// What one side's run cost, per job.
struct Side {
    jobs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The whole machine's busy CPU (both cores), per job.
    cpu_ms: f64,
    /// Transactions committed in the store's database, per job.
    commits: f64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`), per job: what bounds
    /// a small job's rate when commits wait for them.
    wal_syncs: f64,
}

pub async fn run(args: &EngineBench, database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    let prefix = format!("janitor-bench:{}", Uuid::new_v4().simple());
    let redis = redis::Client::open(redis_url)?;
    let outcome = measure(args, database_url, redis_url, &prefix).await;
    crate::delete_keys(&redis, &prefix).await?;
    let (janitor, base) = outcome?;
    println!("{:<44} {:>10} {:>10} {:>7}", "session jobs, 32 at once", "janitor", "baseline", "ratio");
    let rows = [
        ("jobs/s", janitor.jobs_per_s, base.jobs_per_s),
        ("enqueue to done, p50 (ms)", janitor.p50_ms, base.p50_ms),
        ("enqueue to done, p99 (ms)", janitor.p99_ms, base.p99_ms),
        ("machine CPU per job (ms, both cores)", janitor.cpu_ms, base.cpu_ms),
        ("commits per job (its database)", janitor.commits, base.commits),
        ("WAL flushes per job (the server)", janitor.wal_syncs, base.wal_syncs),
    ];
    for (what, j, b) in rows {
        println!("{what:<44} {j:>10.2} {b:>10.2} {:>7.2}", j / b.max(1e-9));
    }
    let side = |s: &Side| {
        json!({ "jobs_per_s": s.jobs_per_s, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "cpu_ms_per_job": s.cpu_ms,
                "commits_per_job": s.commits, "wal_syncs_per_job": s.wal_syncs })
    };
    let summary = json!({
        "benchmark": "sessions", "images": args.images, "concurrency": SESSION_CONCURRENCY,
        "janitor": side(&janitor), "baseline": side(&base), "ratio": janitor.jobs_per_s / base.jobs_per_s,
    });
    println!("{summary}");
    Ok(())
}

async fn measure(
    args: &EngineBench,
    database_url: &str,
    redis_url: &str,
    prefix: &str,
) -> anyhow::Result<(Side, Side)> {
    let ids = session_ids(args.images);
    let a = Store::seeded(args, database_url).await?;
    let worker = WorkerProcess::start(args, &a, redis_url, &format!("{prefix}:a"), &[])?;
    let producer =
        Producer::connect(a.db.pool.clone(), redis::Client::open(redis_url)?, Layout::new(format!("{prefix}:a")))
            .await?;
    let before = Counts::settled(a.db.url()).await?;
    let cpu = CpuTimes::now();
    let (rate, mut latencies) = sessions(&producer, &ids).await?;
    let cpu = CpuTimes::now().since(cpu);
    worker.stop().await?;
    drop(producer);
    a.db.pool.close().await;
    let janitor = Counts::settled(a.db.url()).await?.side(&before, cpu, rate, &mut latencies);
    a.db.drop().await;

    let b = Store::seeded(args, database_url).await?;
    let before = Counts::settled(b.db.url()).await?;
    let cpu = CpuTimes::now();
    let (rate, mut latencies) = baseline::sessions(&b.db.pool, b.root.path(), &ids, SESSION_CONCURRENCY).await?;
    let cpu = CpuTimes::now().since(cpu);
    b.db.pool.close().await;
    let base = Counts::settled(b.db.url()).await?.side(&before, cpu, rate, &mut latencies);
    b.db.drop().await;
    Ok((janitor, base))
}

/// Postgres's counters, read before and after a side's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    commits: i64,
    wal_syncs: i64,
}

impl Counts {
    /// The counters once they stop moving. A backend adds its statistics
    /// to the shared ones when it goes idle or exits, not at once: the
    /// reading is taken from a fresh connection after the side's own
    /// connections were closed, again until two readings 200 ms apart agree
    /// (at most 15 s).
    async fn settled(url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut last = Self::read(&mut conn).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = Self::read(&mut conn).await?;
            if now == last || std::time::Instant::now() >= deadline {
                conn.close().await?;
                return Ok(now);
            }
            last = now;
        }
    }

    async fn read(conn: &mut sqlx::PgConnection) -> anyhow::Result<Self> {
        // A transaction's statistics are a snapshot taken at its first read.
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await?;
        let (commits, wal_syncs): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                    (SELECT wal_sync FROM pg_stat_wal)",
        )
        .fetch_one(&mut *conn)
        .await?;
        // The readings' own few transactions count too: a rounding error
        // against the run's thousands.
        Ok(Self { commits, wal_syncs })
    }

    fn side(self, before: &Self, cpu: CpuTimes, rate: f64, latencies: &mut [Duration]) -> Side {
        let jobs = latencies.len().max(1) as f64;
        Side {
            jobs_per_s: rate,
            p50_ms: quantile_ms(latencies, 0.5),
            p99_ms: quantile_ms(latencies, 0.99),
            cpu_ms: cpu.busy.as_secs_f64() * 1000.0 / jobs,
            commits: (self.commits - before.commits) as f64 / jobs,
            wal_syncs: (self.wal_syncs - before.wal_syncs) as f64 / jobs,
        }
    }
}
