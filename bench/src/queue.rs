//! The queue benchmark: enqueue rates, small-job throughput end to end, and
//! logout-to-done latency while a large orphan sweep runs, each next to the
//! raw Redis cost of the same traffic (`XADD`, `XREADGROUP` + `XACK`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt as _};
use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use janitor_workers::worker::{self, WorkerSettings};
use janitor_workers::{CleanupJob, Engine, EngineSettings, JobSpec, SessionId};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{quantile_ms, rate, BenchDb};

#[derive(Debug, Clone, clap::Args)]
pub struct QueueBench {
    /// Small session jobs for the throughput runs.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent producers in the enqueue and throughput runs.
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Session jobs the worker runs at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Logout samples timed while the orphan sweep runs.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Files the background orphan sweep scans.
    #[arg(long, default_value_t = 50_000)]
    pub scan_files: usize,
}

struct Ctx {
    db: BenchDb,
    redis: redis::Client,
    prefix: String,
    root: tempfile::TempDir,
}

pub async fn run(args: &QueueBench, database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    let ctx = Ctx {
        db: BenchDb::create(database_url).await?,
        redis: redis::Client::open(redis_url)?,
        prefix: format!("janitor-bench:{}", Uuid::new_v4().simple()),
        root: tempfile::tempdir()?,
    };
    let outcome = measure(args, &ctx).await;
    crate::delete_keys(&ctx.redis, &ctx.prefix).await?;
    ctx.db.drop().await;
    let rows = outcome?;
    print_table(&rows);
    let summary: serde_json::Map<String, serde_json::Value> =
        rows.iter().map(|row| (row.key.to_owned(), json!(row.value))).collect();
    println!("{}", json!({ "benchmark": "queue", "settings": args_json(args), "results": summary }));
    Ok(())
}

/// One printed figure.
struct Row {
    key: &'static str,
    what: &'static str,
    value: f64,
    unit: &'static str,
}

async fn measure(args: &QueueBench, ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let n = args.jobs;
    let raw_xadd = raw_xadd(ctx, n, args.producers).await?;
    rows.push(Row { key: "raw_xadd_per_s", what: "raw XADD, unpipelined", value: raw_xadd, unit: "ops/s" });
    let raw_e2e = raw_round_trip(ctx, n, args.producers).await?;
    rows.push(Row {
        key: "raw_round_trip_per_s",
        what: "raw XADD → XREADGROUP → XACK",
        value: raw_e2e,
        unit: "msgs/s",
    });
    let noop = noop_jobs(ctx, n, args.producers, args.concurrency).await?;
    rows.push(Row {
        key: "queue_noop_per_s",
        what: "no-op jobs through janitor's backend",
        value: noop,
        unit: "jobs/s",
    });
    rows.push(Row {
        key: "queue_noop_vs_raw",
        what: "… ratio to the raw round trip",
        value: noop / raw_e2e,
        unit: "x",
    });

    let producer = Producer::connect(ctx.db.pool.clone(), ctx.redis.clone(), Layout::new(&ctx.prefix)).await?;
    let single = enqueue_single(&producer, n / 4, args.producers).await?;
    rows.push(Row { key: "enqueue_single_per_s", what: "janitor enqueue, one by one", value: single, unit: "jobs/s" });
    let bulk = enqueue_bulk(&producer, n).await?;
    rows.push(Row {
        key: "enqueue_bulk_per_s",
        what: "janitor enqueue_many (1000 a call)",
        value: bulk,
        unit: "jobs/s",
    });

    // The bulk-enqueued backlog is drained by the worker below, first.
    let shutdown = CancellationToken::new();
    let worker = start_worker(ctx, args.concurrency, shutdown.clone()).await?;
    let drained = drain(ctx, n + n / 4).await?;
    rows.push(Row { key: "drain_backlog_per_s", what: "worker drains the backlog", value: drained, unit: "jobs/s" });
    let e2e = end_to_end(ctx, &producer, n, args.producers).await?;
    rows.push(Row {
        key: "end_to_end_per_s", what: "session jobs, enqueue → result row", value: e2e, unit: "jobs/s"
    });
    rows.push(Row {
        key: "end_to_end_vs_raw", what: "… ratio to the raw round trip", value: e2e / raw_e2e, unit: "x"
    });

    let (p50, p99) = logout_latency(ctx, &producer, args).await?;
    rows.push(Row {
        key: "logout_p50_ms", what: "logout → done during an orphan sweep, p50", value: p50, unit: "ms"
    });
    rows.push(Row {
        key: "logout_p99_ms", what: "logout → done during an orphan sweep, p99", value: p99, unit: "ms"
    });
    shutdown.cancel();
    worker.await??;
    Ok(rows)
}

async fn raw_xadd(ctx: &Ctx, n: usize, producers: usize) -> anyhow::Result<f64> {
    let conn = ctx.redis.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    xadd_all(&conn, &format!("{}:raw:xadd", ctx.prefix), n, producers).await?;
    Ok(rate(n, started.elapsed()))
}

/// `n` unpipelined `XADD`s of a session job, from `producers` clients at once.
async fn xadd_all(
    conn: &redis::aio::MultiplexedConnection,
    key: &str,
    n: usize,
    producers: usize,
) -> anyhow::Result<()> {
    let results: Vec<redis::RedisResult<String>> = stream::iter(0..n)
        .map(|i| {
            let mut conn = conn.clone();
            let payload = format!("{{\"op\":\"session\",\"session_id\":\"s{i}\"}}");
            async move { redis::cmd("XADD").arg(key).arg("*").arg("job").arg(payload).query_async(&mut conn).await }
        })
        .buffer_unordered(producers)
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))?;
    Ok(())
}

/// `n` messages through a bare consumer group: producers `XADD` one by one,
/// one consumer reads 32 at a time and acknowledges each batch.
async fn raw_round_trip(ctx: &Ctx, n: usize, producers: usize) -> anyhow::Result<f64> {
    let key = format!("{}:raw:rt", ctx.prefix);
    let mut conn = ctx.redis.get_multiplexed_async_connection().await?;
    redis::cmd("XGROUP").arg("CREATE").arg(&key).arg("g").arg("0").arg("MKSTREAM").query_async::<()>(&mut conn).await?;
    let started = Instant::now();
    let consumer = {
        let (mut conn, key) = (ctx.redis.get_multiplexed_async_connection().await?, key.clone());
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < n {
                let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("COUNT")
                    .arg(32)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">")
                    .query_async(&mut conn)
                    .await?;
                let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
                if !ids.is_empty() {
                    redis::cmd("XACK").arg(&key).arg("g").arg(&ids).query_async::<()>(&mut conn).await?;
                    acked += ids.len();
                }
            }
            anyhow::Ok(())
        })
    };
    xadd_all(&conn, &key, n, producers).await?;
    consumer.await??;
    Ok(rate(n, started.elapsed()))
}

/// The queue alone: `n` jobs through the same backend, producers and
/// concurrency as the real worker, with a handler that does nothing. This is
/// the queue's share of a small job's cost; the rest is Postgres.
async fn noop_jobs(ctx: &Ctx, n: usize, producers: usize, concurrency: usize) -> anyhow::Result<f64> {
    use apalis::prelude::*;
    use janitor_workers::queue::{QueueConfig, StreamQueue};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let queue = StreamQueue::connect(ctx.redis.clone(), QueueConfig::new(format!("{}:noop", ctx.prefix))).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let monitor = {
        let (queue, done, shutdown) = (queue.clone(), Arc::clone(&done), shutdown.clone());
        Monitor::new()
            .register(move |_| {
                WorkerBuilder::new("noop")
                    .backend(queue.backend::<serde_json::Value>(concurrency))
                    .concurrency(concurrency)
                    .data(Arc::clone(&done))
                    .build(|_: serde_json::Value, done: Data<Arc<AtomicUsize>>| async move {
                        done.fetch_add(1, Ordering::Relaxed);
                        Ok::<(), BoxDynError>(())
                    })
            })
            .run_with_signal(async move {
                shutdown.cancelled().await;
                Ok(())
            })
    };
    let running = tokio::spawn(monitor);
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let queue = queue.clone();
            async move { queue.enqueue(&json!({ "op": "session", "session_id": format!("s{i}") })).await }
        })
        .buffer_unordered(producers)
        .for_each(|r| {
            r.expect("enqueue");
            async {}
        })
        .await;
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    running.await??;
    Ok(rate(n, took))
}

fn session(i: usize, tag: &str) -> JobSpec {
    JobSpec {
        job: CleanupJob::Session { session_id: SessionId::parse(&format!("{tag}-{i}")).expect("valid id") },
        dry_run: false,
        limit: None,
    }
}

async fn enqueue_single(producer: &Producer, n: usize, producers: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| async move { producer.enqueue(&session(i, "single"), Some("bench")).await })
        .buffer_unordered(producers)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(rate(n, started.elapsed()))
}

async fn enqueue_bulk(producer: &Producer, n: usize) -> anyhow::Result<f64> {
    let specs: Vec<JobSpec> = (0..n).map(|i| session(i, "bulk")).collect();
    let started = Instant::now();
    for chunk in specs.chunks(1000) {
        producer.enqueue_many(chunk, Some("bench")).await?;
    }
    Ok(rate(n, started.elapsed()))
}

async fn start_worker(
    ctx: &Ctx,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    std::fs::create_dir_all(ctx.root.path().join("photos"))?;
    // The sweep it runs beside the logouts takes files seeded a moment ago.
    let settings = EngineSettings { min_grace: Duration::ZERO, ..EngineSettings::default() };
    let engine = Engine::new(ctx.db.pool.clone(), ctx.root.path(), settings);
    let settings = WorkerSettings {
        session_concurrency: concurrency,
        bulk_concurrency: 1,
        ..WorkerSettings::new(Layout::new(&ctx.prefix))
    };
    Ok(tokio::spawn(worker::run(engine, ctx.redis.clone(), settings, shutdown)))
}

/// Waits until `total` jobs have completed; returns the rate since the call.
async fn drain(ctx: &Ctx, total: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    wait_completed(ctx, total).await?;
    Ok(rate(total, started.elapsed()))
}

async fn wait_completed(ctx: &Ctx, total: usize) -> anyhow::Result<()> {
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status = 'completed'")
            .fetch_one(&ctx.db.pool)
            .await?;
        if done as usize >= total {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Producers enqueue one by one while the worker runs them.
async fn end_to_end(ctx: &Ctx, producer: &Producer, n: usize, producers: usize) -> anyhow::Result<f64> {
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results").fetch_one(&ctx.db.pool).await?;
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| async move { producer.enqueue(&session(i, "e2e"), Some("bench")).await })
        .buffer_unordered(producers)
        .collect()
        .await;
    for result in results {
        result?;
    }
    wait_completed(ctx, before as usize + n).await?;
    Ok(rate(n, started.elapsed()))
}

/// Logouts (one image each) timed from enqueue to finished row while an
/// orphan sweep of `scan_files` files runs in the bulk lane.
async fn logout_latency(ctx: &Ctx, producer: &Producer, args: &QueueBench) -> anyhow::Result<(f64, f64)> {
    seed_orphan_files(ctx.root.path(), args.scan_files)?;
    let sweep = producer
        .enqueue(&JobSpec { job: CleanupJob::Orphaned { min_age_secs: 0 }, dry_run: true, limit: None }, Some("bench"))
        .await?;
    let mut samples = Vec::with_capacity(args.latency_samples);
    let listener = Arc::new(producer.clone());
    for i in 0..args.latency_samples {
        let sid = format!("logout-{i}");
        sqlx::query("INSERT INTO images (filename, storage_path, category, storage_type, session_id, file_size) VALUES ('a', $1, 'photos', 'temporary', $2, 1)")
            .bind(format!("photos/{sid}.jpg"))
            .bind(&sid)
            .execute(&ctx.db.pool)
            .await?;
        let started = Instant::now();
        let job = listener.enqueue(&session(i, "logout"), Some("bench")).await?;
        listener.wait(job.job_id, Duration::from_secs(30)).await?;
        samples.push(started.elapsed());
    }
    let sweep_state: String = sqlx::query_scalar("SELECT status FROM job_results WHERE job_id = $1")
        .bind(sweep.job_id)
        .fetch_one(&ctx.db.pool)
        .await?;
    if sweep_state != "running" {
        eprintln!("note: the orphan sweep was {sweep_state} before the last logout; raise --scan-files");
    }
    Ok((quantile_ms(&mut samples, 0.5), quantile_ms(&mut samples, 0.99)))
}

fn seed_orphan_files(root: &std::path::Path, count: usize) -> anyhow::Result<()> {
    for category in janitor_workers::storage::CATEGORIES {
        std::fs::create_dir_all(root.join(category))?;
    }
    for folder in 0..count.div_ceil(1000) {
        let dir = root.join(format!("results/{folder:04}"));
        std::fs::create_dir_all(&dir)?;
        for i in 0..(count - folder * 1000).min(1000) {
            std::fs::write(dir.join(format!("{i}.jpg")), b"x")?;
        }
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("{:<46} {:>12}  unit", "measure", "value");
    for row in rows {
        println!("{:<46} {:>12.1}  {}", row.what, row.value, row.unit);
    }
}

fn args_json(args: &QueueBench) -> serde_json::Value {
    json!({
        "jobs": args.jobs, "producers": args.producers, "concurrency": args.concurrency,
        "latency_samples": args.latency_samples, "scan_files": args.scan_files,
    })
}
