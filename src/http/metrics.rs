//! `/metrics` in the Prometheus text format, read from Postgres and Redis at
//! scrape time, so the figures cover every worker and survive restarts,
//! whichever `janitor serve` answers.
//!
//! A scrape reads no `job_results` row: the job counters, the batch
//! histogram and each schedule's last success are kept incrementally by
//! triggers on `job_results`, in `job_counters` (a few rows per operation,
//! summed here) and `schedule_last_success` (migration
//! `20261130000040_job_counters`). They are monotonic: pruning old job rows
//! does not lower them.
//!
//! Each dependency is read under its own timeout, and one that is down or
//! hung only loses its own series: the answer is still `200`, with
//! `janitor_up{dependency}` saying which one could not be read.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use janitor_workers::layout::{Lane, Layout};
use janitor_workers::progress::BATCH_BUCKETS;
use sqlx::PgPool;

use super::AppState;

/// How long the Postgres part of a scrape may take. Longer than any healthy
/// scrape (a few milliseconds), shorter than Prometheus' default 10 s
/// scrape timeout, and shorter than the pool's 30 s wait for a connection.
const POSTGRES_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the Redis part of a scrape may take: the connection manager
/// retries a lost connection with backoff, and a scrape must not wait for
/// that.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn metrics(State(state): State<AppState>) -> Response {
    // Both dependencies at once, so a hung one costs its timeout only once.
    let (postgres, redis) = tokio::join!(
        read("postgres", POSTGRES_TIMEOUT, postgres(&state.pool, state.producer.layout().prefix())),
        read("redis", REDIS_TIMEOUT, queue(state.redis.clone(), state.producer.layout())),
    );
    let mut out = String::new();
    header(&mut out, "janitor_up", "gauge", "Whether this scrape could read the dependency (1) or not (0).");
    for (dependency, text) in [("postgres", &postgres), ("redis", &redis)] {
        let _ = writeln!(out, "janitor_up{{dependency=\"{dependency}\"}} {}", u8::from(text.is_some()));
    }
    out.extend(postgres);
    out.extend(redis);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The series of one dependency, or `None` (logged) if it failed or timed out.
async fn read(
    dependency: &str,
    limit: Duration,
    series: impl std::future::Future<Output = anyhow::Result<String>>,
) -> Option<String> {
    match tokio::time::timeout(limit, series).await {
        Ok(Ok(text)) => Some(text),
        Ok(Err(err)) => {
            tracing::warn!(dependency, error = %format!("{err:#}"), "metrics: cannot read {dependency}");
            None
        }
        Err(_) => {
            tracing::warn!(dependency, "metrics: {dependency} did not answer within {limit:?}");
            None
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One operation's counters, summed over its shards.
#[derive(sqlx::FromRow)]
struct Counters {
    operation: String,
    enqueued: i64,
    started: i64,
    completed: i64,
    failed: i64,
    skipped: i64,
    cancelled: i64,
    items_deleted: i64,
    bytes_freed: i64,
    items_skipped_in_use: i64,
    item_errors: i64,
    rescued: i64,
    batch_buckets: Vec<i64>,
    batch_seconds_sum: f64,
    running: i64,
    duration_buckets: Vec<i64>,
    duration_seconds_sum: f64,
}

/// The upper bounds (seconds) of the job-duration histogram's buckets; the
/// same as in `janitor_duration_counts` (migration
/// `20261130000040_job_counters`), which counts into them.
pub const JOB_DURATION_BUCKETS: [f64; 14] =
    [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0];

type Series = (&'static str, &'static str, fn(&Counters) -> i64);

const JOB_SERIES: [Series; 11] = [
    ("janitor_jobs_enqueued_total", "Jobs recorded (queued, started or skipped).", |c| c.enqueued),
    ("janitor_jobs_started_total", "Jobs a worker started.", |c| c.started),
    ("janitor_jobs_completed_total", "Jobs completed.", |c| c.completed),
    ("janitor_jobs_failed_total", "Jobs failed (including dead-lettered ones), each time they failed.", |c| c.failed),
    ("janitor_jobs_skipped_total", "Scheduled jobs skipped (missed or overlapping).", |c| c.skipped),
    ("janitor_jobs_cancelled_total", "Jobs cancelled by an operator, each time they were cancelled.", |c| c.cancelled),
    ("janitor_items_deleted_total", "Images or files deleted (not dry runs).", |c| c.items_deleted),
    ("janitor_freed_bytes_total", "Bytes freed (not dry runs).", |c| c.bytes_freed),
    ("janitor_items_skipped_in_use_total", "Images left alone because an active task uses them.", |c| {
        c.items_skipped_in_use
    }),
    ("janitor_item_errors_total", "Items that could not be cleaned.", |c| c.item_errors),
    ("janitor_jobs_rescued_total", "Extra deliveries of jobs (rescues and retries).", |c| c.rescued),
];

/// Everything kept in Postgres: the job counters, the batch histogram and
/// the schedules' last successes.
async fn postgres(pool: &PgPool, queue: &str) -> anyhow::Result<String> {
    let rows: Vec<Counters> = sqlx::query_as(
        "SELECT operation, sum(enqueued)::bigint AS enqueued, sum(started)::bigint AS started,
                sum(completed)::bigint AS completed, sum(failed)::bigint AS failed,
                sum(skipped)::bigint AS skipped, sum(cancelled)::bigint AS cancelled,
                sum(items_deleted)::bigint AS items_deleted, sum(bytes_freed)::bigint AS bytes_freed,
                sum(items_skipped_in_use)::bigint AS items_skipped_in_use,
                sum(item_errors)::bigint AS item_errors, sum(rescued)::bigint AS rescued,
                janitor_sum_counts(batch_buckets) AS batch_buckets,
                sum(batch_seconds_sum)::float8 AS batch_seconds_sum, sum(running)::bigint AS running,
                janitor_sum_counts(duration_buckets) AS duration_buckets,
                sum(duration_seconds_sum)::float8 AS duration_seconds_sum
         FROM job_counters GROUP BY operation ORDER BY operation",
    )
    .fetch_all(pool)
    .await?;
    let schedules: Vec<(String, f64)> = sqlx::query_as(
        "SELECT schedule, extract(epoch FROM finished_at)::float8 FROM schedule_last_success
         WHERE queue = $1 ORDER BY schedule",
    )
    .bind(queue)
    .fetch_all(pool)
    .await?;

    let mut out = String::new();
    for (name, help, value) in JOB_SERIES {
        header(&mut out, name, "counter", help);
        for row in &rows {
            let _ = writeln!(out, "{name}{{operation=\"{}\"}} {}", row.operation, value(row));
        }
    }
    header(&mut out, "janitor_jobs_running", "gauge", "Jobs running now (status running).");
    for row in &rows {
        let _ = writeln!(out, "janitor_jobs_running{{operation=\"{}\"}} {}", row.operation, row.running);
    }
    durations(&mut out, &rows);
    batches(&mut out, &rows);
    header(
        &mut out,
        "janitor_schedule_last_success_timestamp_seconds",
        "gauge",
        "When each schedule's last run completed (Unix time); alert on time() minus it.",
    );
    for (schedule, at) in schedules {
        let _ = writeln!(out, "janitor_schedule_last_success_timestamp_seconds{{schedule=\"{schedule}\"}} {at}");
    }
    Ok(out)
}

/// The job-duration histogram, per operation: from start to end of the
/// jobs that ended (completed, failed or cancelled).
fn durations(out: &mut String, rows: &[Counters]) {
    let name = "janitor_job_duration_seconds";
    header(out, name, "histogram", "Time from a job's start to its end (completed, failed or cancelled).");
    for row in rows {
        let operation = &row.operation;
        let mut cumulative = 0;
        for i in 0..=JOB_DURATION_BUCKETS.len() {
            cumulative += row.duration_buckets.get(i).copied().unwrap_or(0);
            let le = JOB_DURATION_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{operation=\"{operation}\",le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{operation=\"{operation}\"}} {}", row.duration_seconds_sum);
        let _ = writeln!(out, "{name}_count{{operation=\"{operation}\"}} {cumulative}");
    }
}

/// The batch-duration histogram, over every operation.
fn batches(out: &mut String, rows: &[Counters]) {
    let mut buckets = [0i64; BATCH_BUCKETS.len() + 1];
    for row in rows {
        for (total, count) in buckets.iter_mut().zip(&row.batch_buckets) {
            *total += count;
        }
    }
    let sum: f64 = rows.iter().map(|row| row.batch_seconds_sum).sum();
    header(out, "janitor_batch_duration_seconds", "histogram", "Time to run and commit one batch.");
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le = BATCH_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out, "janitor_batch_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ =
        writeln!(out, "janitor_batch_duration_seconds_sum {sum}\njanitor_batch_duration_seconds_count {cumulative}");
}

/// One lane's queue, as read from Redis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneStats {
    pub lane: &'static str,
    /// Entries on the lane's stream (waiting or running).
    pub depth: i64,
    /// Entries in the lane's dead-letter stream.
    pub dead: i64,
    /// Age of the oldest entry on the stream, in seconds (0 when empty).
    pub oldest_age_secs: f64,
}

/// Each lane's depth, oldest entry and dead letters, in one round trip:
/// `XLEN` twice and `XRANGE … COUNT 1`, each O(1) whatever the queue holds.
pub async fn lanes(mut redis: janitor_workers::RedisConnection, layout: &Layout) -> anyhow::Result<Vec<LaneStats>> {
    let mut pipe = redis::pipe();
    for lane in Lane::ALL {
        let stream = layout.stream(lane);
        pipe.cmd("XLEN").arg(&stream).cmd("XLEN").arg(layout.dead(lane));
        pipe.cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
    }
    type LaneReply = (i64, i64, redis::streams::StreamRangeReply);
    let replies: Vec<LaneReply> = {
        let flat: Vec<redis::Value> = pipe.query_async(&mut redis).await?;
        flat.chunks(3).map(|c| redis::from_redis_value(redis::Value::Array(c.to_vec()))).collect::<Result<_, _>>()?
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lanes = Lane::ALL
        .into_iter()
        .zip(replies)
        .map(|(lane, (depth, dead, oldest))| {
            let oldest_age_secs = oldest
                .ids
                .first()
                .and_then(|e| e.id.split('-').next()?.parse::<i64>().ok())
                .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
            LaneStats { lane: lane.name(), depth, dead, oldest_age_secs }
        })
        .collect();
    Ok(lanes)
}

/// The queue's series.
async fn queue(redis: janitor_workers::RedisConnection, layout: &Layout) -> anyhow::Result<String> {
    let lanes = lanes(redis, layout).await?;
    // Each family whole, one after the other (the text format wants them
    // so; promtool checks it).
    let mut out = String::new();
    header(&mut out, "janitor_queue_depth", "gauge", "Entries on a lane's stream (waiting or running).");
    for lane in &lanes {
        let _ = writeln!(out, "janitor_queue_depth{{lane=\"{}\"}} {}", lane.lane, lane.depth);
    }
    header(&mut out, "janitor_queue_oldest_age_seconds", "gauge", "Age of the oldest entry on a lane's stream.");
    for lane in &lanes {
        let _ = writeln!(out, "janitor_queue_oldest_age_seconds{{lane=\"{}\"}} {}", lane.lane, lane.oldest_age_secs);
    }
    header(&mut out, "janitor_dead_letters", "gauge", "Entries in a lane's dead-letter stream.");
    for lane in &lanes {
        let _ = writeln!(out, "janitor_dead_letters{{lane=\"{}\"}} {}", lane.lane, lane.dead);
    }
    Ok(out)
}
