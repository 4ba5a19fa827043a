//! `janitor-bench metrics`: the time of a `/metrics` scrape with a million
//! rows in `job_results`, against the query every scrape used to run (a
//! full aggregate of `job_results`, and two more over every checkpoint) on
//! the same rows, in the same run.
//!
//! The rows are seeded in a few `INSERT … SELECT FROM generate_series`
//! statements, so the counters are kept by the same trigger as in
//! production. The scrapes go through the real router on a loopback port,
//! one connection each, with Redis up.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::{quantile_ms, BenchDb};
use janitor::http::limits::{RateLimiter, DEFAULT_LIMITS};
use janitor::http::{self, AppState};

#[derive(Debug, Clone, clap::Args)]
pub struct MetricsBench {
    /// Rows seeded into `job_results`.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: i64,
    /// Scrapes of `/metrics` timed.
    #[arg(long, default_value_t = 200)]
    pub scrapes: usize,
    /// Runs of the old scrape's queries timed (each reads every row).
    #[arg(long, default_value_t = 10)]
    pub baseline_runs: usize,
}

/// The queries a scrape ran before `job_counters`.
const OLD_QUERIES: [&str; 3] = [
    "SELECT operation, count(*), count(started_at),
            count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
            count(*) FILTER (WHERE status = 'skipped'),
            coalesce(sum(deleted_count) FILTER (WHERE NOT dry_run), 0)::bigint,
            coalesce(sum(deleted_bytes) FILTER (WHERE NOT dry_run), 0)::bigint,
            coalesce(sum(skipped_count), 0)::bigint, coalesce(sum(error_count), 0)::bigint,
            coalesce(sum(greatest(attempts - 1, 0)), 0)::bigint
     FROM job_results GROUP BY operation ORDER BY operation",
    "SELECT b.i::int, coalesce(sum((checkpoint->'batch_seconds'->>b.i)::bigint), 0)::bigint
     FROM generate_series(0, 9) AS b(i)
     LEFT JOIN job_results ON checkpoint ? 'batch_seconds'
     GROUP BY b.i ORDER BY b.i",
    "SELECT coalesce(sum((checkpoint->>'batch_seconds_sum')::float8), 0) FROM job_results
     WHERE checkpoint ? 'batch_seconds_sum'",
];

pub async fn run(args: &MetricsBench, database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    let db = BenchDb::create(database_url).await?;
    let outcome = measure(args, &db, redis_url).await;
    db.drop().await;
    let (new, old) = outcome?;
    let summary = |mut samples: Vec<Duration>| {
        let max = samples.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0;
        json!({ "p50_ms": quantile_ms(&mut samples, 0.5), "p99_ms": quantile_ms(&mut samples, 0.99), "max_ms": max })
    };
    let (new, old) = (summary(new), summary(old));
    println!("{:<58} {:>9} {:>9} {:>9}", "with job_results rows", "p50 ms", "p99 ms", "max ms");
    for (what, s) in [("GET /metrics (job_counters)", &new), ("old scrape queries (aggregate job_results)", &old)] {
        let ms = |key: &str| s[key].as_f64().unwrap_or_default();
        println!("{what:<58} {:>9.2} {:>9.2} {:>9.2}", ms("p50_ms"), ms("p99_ms"), ms("max_ms"));
    }
    let settings = json!({ "rows": args.rows, "scrapes": args.scrapes, "baseline_runs": args.baseline_runs });
    println!("{}", json!({ "benchmark": "metrics", "settings": settings, "scrape": new, "old_queries": old }));
    Ok(())
}

async fn measure(args: &MetricsBench, db: &BenchDb, redis_url: &str) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let seeded = Instant::now();
    seed(db, args.rows).await?;
    eprintln!("seeded {} job rows in {:.1?}", args.rows, seeded.elapsed());

    let client = redis::Client::open(redis_url)?;
    let prefix = format!("janitor-bench:{}", Uuid::new_v4().simple());
    let producer = janitor_workers::producer::Producer::lazy(
        db.pool.clone(),
        client.clone(),
        janitor_workers::layout::Layout::new(&prefix),
    )?;
    let redis = janitor_workers::RedisTarget::from(client)
        .connect(janitor_workers::Timeouts::default())
        .await
        .context("connect to Redis")?;
    let state = AppState {
        pool: db.pool.clone(),
        producer,
        redis,
        tokens: None,
        limits: Arc::new(RateLimiter::parse(DEFAULT_LIMITS)?),
        failures: Arc::new(janitor::http::failures::AuthFailures::new(janitor::http::failures::DEFAULT_LIMIT)),
        proxies: Default::default(),
        min_grace: janitor_workers::engine::DEFAULT_MIN_GRACE,
        storage_root: None,
        schedules: Default::default(),
        reclaimable: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    // The first scrape checks that the counters hold every seeded row.
    let body = get(addr, "/metrics").await?;
    let enqueued: f64 = body
        .lines()
        .filter_map(|line| line.strip_prefix("janitor_jobs_enqueued_total{")?.split(' ').nth(1)?.parse::<f64>().ok())
        .sum();
    anyhow::ensure!(enqueued as i64 == args.rows, "the scrape counts {enqueued} jobs, not {}", args.rows);
    anyhow::ensure!(body.contains("janitor_up{dependency=\"redis\"} 1"), "Redis is not up: {body}");
    let mut scrapes = Vec::with_capacity(args.scrapes);
    for _ in 0..args.scrapes {
        let started = Instant::now();
        get(addr, "/metrics").await?;
        scrapes.push(started.elapsed());
    }
    let _ = stop.send(());
    server.await??;

    let mut old = Vec::with_capacity(args.baseline_runs);
    for _ in 0..args.baseline_runs {
        let started = Instant::now();
        for query in OLD_QUERIES {
            sqlx::raw_sql(query).execute(&db.pool).await?;
        }
        old.push(started.elapsed());
    }
    Ok((scrapes, old))
}

/// `rows` job rows of five operations, most completed with counts and a
/// checkpoint holding a batch histogram, some failed, skipped, cancelled or
/// queued; in statements of 100,000 rows.
async fn seed(db: &BenchDb, rows: i64) -> anyhow::Result<()> {
    const CHUNK: i64 = 100_000;
    let mut from = 0;
    while from < rows {
        let to = (from + CHUNK).min(rows);
        sqlx::query(
            "INSERT INTO job_results (job_id, operation, status, dry_run, deleted_count, deleted_bytes,
                 skipped_count, error_count, attempts, checkpoint, created_at, started_at, finished_at)
             SELECT gen_random_uuid(),
                    (ARRAY['cleanup_session', 'cleanup_expired_images', 'cleanup_old_results',
                           'cleanup_orphaned_files', 'cleanup_all'])[1 + i % 5],
                    (ARRAY['completed', 'completed', 'completed', 'completed', 'completed', 'completed',
                           'failed', 'skipped', 'cancelled', 'queued'])[1 + i % 10],
                    i % 50 = 0, i % 7, (i % 7) * 1000, i % 3, (i % 11 = 0)::int, 1 + (i % 13 = 0)::int,
                    jsonb_build_object('batch_seconds', jsonb_build_array(i % 2, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                       'batch_seconds_sum', 0.02),
                    now() - make_interval(secs => i), now() - make_interval(secs => i), now()
             FROM generate_series($1::bigint, $2::bigint - 1) AS i",
        )
        .bind(from)
        .bind(to)
        .execute(&db.pool)
        .await
        .context("seed job_results")?;
        from = to;
    }
    // As a database that has lived with these rows would be: vacuumed and
    // analysed, so the baseline reads a settled table.
    sqlx::raw_sql("VACUUM ANALYZE job_results, job_counters").execute(&db.pool).await?;
    Ok(())
}

/// One `GET` over a fresh loopback connection; the body of a `200`.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = String::new();
    let _ = write!(request, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "GET {path}: {}", response.lines().next().unwrap_or(""));
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}
