//! `/metrics` in the Prometheus text format. Everything is read from Postgres
//! and Redis at scrape time, so the figures cover every worker and survive
//! restarts, whichever `janitor serve` answers.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use janitor_workers::layout::Lane;
use janitor_workers::progress::BATCH_BUCKETS;

use super::error::ApiError;
use super::AppState;

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::new();
    jobs(&state, &mut out).await?;
    batches(&state, &mut out).await?;
    queue(&state, &mut out).await?;
    schedules(&state, &mut out).await?;
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

async fn jobs(state: &AppState, out: &mut String) -> Result<(), ApiError> {
    type Row = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT operation, count(*), count(started_at),
                count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'skipped'),
                coalesce(sum(deleted_count) FILTER (WHERE NOT dry_run), 0)::bigint,
                coalesce(sum(deleted_bytes) FILTER (WHERE NOT dry_run), 0)::bigint,
                coalesce(sum(skipped_count), 0)::bigint, coalesce(sum(error_count), 0)::bigint,
                coalesce(sum(greatest(attempts - 1, 0)), 0)::bigint
         FROM job_results GROUP BY operation ORDER BY operation",
    )
    .fetch_all(&state.pool)
    .await?;
    type Series = (&'static str, &'static str, fn(&Row) -> i64);
    let series: [Series; 10] = [
        ("janitor_jobs_enqueued_total", "Jobs recorded (queued or started).", |r| r.1),
        ("janitor_jobs_started_total", "Jobs a worker started.", |r| r.2),
        ("janitor_jobs_completed_total", "Jobs completed.", |r| r.3),
        ("janitor_jobs_failed_total", "Jobs failed (including dead-lettered ones).", |r| r.4),
        ("janitor_jobs_skipped_total", "Scheduled jobs skipped (missed or overlapping).", |r| r.5),
        ("janitor_items_deleted_total", "Images or files deleted (not dry runs).", |r| r.6),
        ("janitor_bytes_freed_total", "Bytes freed (not dry runs).", |r| r.7),
        ("janitor_items_skipped_in_use_total", "Images left alone because an active task uses them.", |r| r.8),
        ("janitor_item_errors_total", "Items that could not be cleaned.", |r| r.9),
        ("janitor_jobs_rescued_total", "Extra deliveries of jobs (rescues and retries).", |r| r.10),
    ];
    for (name, help, value) in series {
        header(out, name, "counter", help);
        for row in &rows {
            let _ = writeln!(out, "{name}{{operation=\"{}\"}} {}", row.0, value(row));
        }
    }
    Ok(())
}

async fn batches(state: &AppState, out: &mut String) -> Result<(), ApiError> {
    // Each job keeps its batch-duration histogram in its checkpoint.
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT b.i::int, coalesce(sum((checkpoint->'batch_seconds'->>b.i)::bigint), 0)::bigint
         FROM generate_series(0, $1) AS b(i)
         LEFT JOIN job_results ON checkpoint ? 'batch_seconds'
         GROUP BY b.i ORDER BY b.i",
    )
    .bind(BATCH_BUCKETS.len() as i32)
    .fetch_all(&state.pool)
    .await?;
    let sum: f64 = sqlx::query_scalar("SELECT coalesce(sum((checkpoint->>'batch_seconds_sum')::float8), 0) FROM job_results WHERE checkpoint ? 'batch_seconds_sum'")
        .fetch_one(&state.pool)
        .await?;
    header(out, "janitor_batch_duration_seconds", "histogram", "Time to run and commit one batch.");
    let mut cumulative = 0;
    for (i, count) in rows {
        cumulative += count;
        let le = BATCH_BUCKETS.get(i as usize).map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out, "janitor_batch_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ =
        writeln!(out, "janitor_batch_duration_seconds_sum {sum}\njanitor_batch_duration_seconds_count {cumulative}");
    Ok(())
}

async fn queue(state: &AppState, out: &mut String) -> Result<(), ApiError> {
    let mut redis = state.redis.clone();
    let layout = state.producer.layout();
    header(out, "janitor_queue_depth", "gauge", "Entries on a lane's stream (waiting or running).");
    header(out, "janitor_queue_oldest_age_seconds", "gauge", "Age of the oldest entry on a lane's stream.");
    header(out, "janitor_dead_letters", "gauge", "Entries in a lane's dead-letter stream.");
    let now_ms = chrono::Utc::now().timestamp_millis();
    for lane in Lane::ALL {
        let stream = layout.stream(lane);
        let depth: i64 = redis::cmd("XLEN").arg(&stream).query_async(&mut redis).await.map_err(anyhow::Error::from)?;
        let dead: i64 =
            redis::cmd("XLEN").arg(layout.dead(lane)).query_async(&mut redis).await.map_err(anyhow::Error::from)?;
        let oldest: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut redis)
            .await
            .map_err(anyhow::Error::from)?;
        let age = oldest
            .ids
            .first()
            .and_then(|e| e.id.split('-').next()?.parse::<i64>().ok())
            .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
        let name = lane.name();
        let _ = writeln!(out, "janitor_queue_depth{{lane=\"{name}\"}} {depth}");
        let _ = writeln!(out, "janitor_queue_oldest_age_seconds{{lane=\"{name}\"}} {age}");
        let _ = writeln!(out, "janitor_dead_letters{{lane=\"{name}\"}} {dead}");
    }
    Ok(())
}

async fn schedules(state: &AppState, out: &mut String) -> Result<(), ApiError> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT t.schedule, extract(epoch FROM now() - max(r.finished_at))::float8
         FROM schedule_ticks t JOIN job_results r ON r.job_id = t.job_id
         WHERE r.status = 'completed' GROUP BY t.schedule ORDER BY t.schedule",
    )
    .fetch_all(&state.pool)
    .await?;
    header(
        out,
        "janitor_schedule_last_success_age_seconds",
        "gauge",
        "Seconds since each schedule's last completed run.",
    );
    for (schedule, age) in rows {
        let _ = writeln!(out, "janitor_schedule_last_success_age_seconds{{schedule=\"{schedule}\"}} {age}");
    }
    Ok(())
}
