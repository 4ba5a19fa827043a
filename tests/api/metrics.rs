//! `/metrics`: the job counters move when a job runs (in a separate worker
//! process), count a cancelled and retried job exactly, never go down when
//! job rows are pruned, are read without touching `job_results`, and are
//! still served while Redis is down.

use std::net::TcpListener;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::harness::wait_for_job;
use crate::server::{accepted_job, Api, ApiConfig, OPS, SERVER_APPLICATION};
use crate::support::{self, count_images, insert_image, seed_expired_in, Image};

/// The value of one sample (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `promtool check metrics` (Debian's `prometheus` package) finds nothing
/// wrong with a scrape: neither a format error nor a naming lint.
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool must be installed (apt-get install prometheus): {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
    // promtool 2.42 does not check this: each family's samples come right
    // after its TYPE line, never split.
    let mut done: Vec<&str> = Vec::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split(' ').next()) {
            assert!(!done.contains(&family), "family {family} appears twice:\n{text}");
            done.push(family);
            current = family;
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(name.starts_with(current), "{name} is outside its family's block (after {current}):\n{text}");
        }
    }
}

async fn scrape(api: &Api) -> String {
    let response = api.get_root("/metrics").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    response.text()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn counters_move_when_a_job_completes(pool: PgPool) {
    let api = Api::start(pool).await;
    let completed = r#"janitor_jobs_completed_total{operation="cleanup_session"}"#;
    let deleted = r#"janitor_items_deleted_total{operation="cleanup_session"}"#;
    let freed = r#"janitor_freed_bytes_total{operation="cleanup_session"}"#;
    let before = scrape(&api).await;
    let completed_before = sample(&before, completed).unwrap_or(0.0);
    let deleted_before = sample(&before, deleted).unwrap_or(0.0);

    for i in 0..3 {
        let image = Image::fresh(&format!("photos/m/{i}.jpg"), 100).session("metrics-session");
        insert_image(api.pool(), Some(&api.env.store), &image).await;
    }
    let worker = api.env.worker(&[], &[]);
    let response = api.post("/session/metrics-session?wait=true&timeout=30", Some(OPS.1)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["deleted_count"], 3);

    let after = scrape(&api).await;
    assert_eq!(sample(&after, r#"janitor_up{dependency="redis"}"#), Some(1.0), "{after}");
    assert_eq!(sample(&after, r#"janitor_up{dependency="postgres"}"#), Some(1.0), "{after}");
    assert_eq!(sample(&after, completed), Some(completed_before + 1.0), "{after}");
    assert_eq!(sample(&after, deleted), Some(deleted_before + 3.0), "{after}");
    assert_eq!(sample(&after, freed), Some(300.0), "{after}");
    for lane in ["session", "bulk"] {
        let depth = sample(&after, &format!("janitor_queue_depth{{lane=\"{lane}\"}}"));
        assert!(depth.is_some(), "queue depth of the {lane} lane: {after}");
    }
    let batches = sample(&after, r#"janitor_batch_duration_seconds_bucket{le="+Inf"}"#);
    assert!(batches.is_some_and(|n| n >= 1.0), "the job's batches are in the histogram: {after}");
    assert!(after.contains("janitor_batch_duration_seconds_count "), "{after}");
    let ended = r#"janitor_job_duration_seconds_count{operation="cleanup_session"}"#;
    assert_eq!(sample(&after, ended), Some(completed_before + 1.0), "the job's duration is counted: {after}");
    let slowest = r#"janitor_job_duration_seconds_bucket{operation="cleanup_session",le="+Inf"}"#;
    assert_eq!(sample(&after, slowest), sample(&after, ended), "{after}");
    assert_eq!(sample(&after, r#"janitor_jobs_running{operation="cleanup_session"}"#), Some(0.0), "{after}");
    promtool_accepts(&after);

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}

/// A job cancelled while it runs and then retried: it ends once cancelled
/// and once completed, and its items are counted once, although its row
/// carried the first run's totals into the second.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_cancelled_and_retried_job_is_counted_exactly(pool: PgPool) {
    let api = Api::start(pool).await;
    seed_expired_in(api.pool(), &api.env.store, "m", 300, 10).await;
    // Slow batches and a short lease (renewed, and so the cancel seen, every
    // fraction of a second), so that the cancel lands while the job runs.
    let knobs = [
        ("JANITOR_BATCH_SIZE", "20"),
        ("JANITOR_MAX_DELETES_PER_SEC", "200"),
        ("JANITOR_BULK_CONCURRENCY", "1"),
        ("JANITOR_LEASE", "2s"),
    ];
    // A job queued and cancelled before any worker runs.
    let never = accepted_job(&api.post("/old-results?days_old=30", Some(OPS.1)).await);
    let cancelled = api.post(&format!("/jobs/{never}/cancel"), Some(OPS.1)).await;
    assert_eq!(cancelled.json()["status"], "cancelled", "{}", cancelled.text());
    let worker = api.env.worker(&[], &knobs);
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);
    wait_for_job(api.pool(), job, "the job is under way", Duration::from_secs(30), |row| row.1 > 0).await;
    let running = scrape(&api).await;
    let gauge = r#"janitor_jobs_running{operation="cleanup_expired_images"}"#;
    assert_eq!(sample(&running, gauge), Some(1.0), "the running job is in the gauge: {running}");
    assert_eq!(api.post(&format!("/jobs/{job}/cancel"), Some(OPS.1)).await.status, 202, "cancelling");
    let row = wait_for_job(api.pool(), job, "it is cancelled", Duration::from_secs(30), |r| r.0 == "cancelled").await;
    assert!(count_images(api.pool()).await > 0 && row.1 > 0, "it stopped half way: {row:?}");
    assert_eq!(api.post(&format!("/jobs/{job}/retry"), Some(OPS.1)).await.status, 202);
    let row = api.env.finished(job, Duration::from_secs(60)).await;
    // A retry starts the attempts over: the completing run is attempt 1.
    assert_eq!((row.0.as_str(), row.1, row.2), ("completed", 300, 1), "{row:?}");

    let text = scrape(&api).await;
    let expired = |name: &str| sample(&text, &format!("janitor_{name}{{operation=\"cleanup_expired_images\"}}"));
    let expected = [
        ("jobs_enqueued_total", 1.0),
        ("jobs_started_total", 1.0),
        ("jobs_completed_total", 1.0),
        ("jobs_cancelled_total", 1.0),
        ("jobs_failed_total", 0.0),
        ("jobs_rescued_total", 1.0),
        ("items_deleted_total", 300.0),
        ("freed_bytes_total", 3000.0),
        ("item_errors_total", 0.0),
        ("jobs_running", 0.0),
        // Each run that ended: the cancelled one and the completed retry.
        ("job_duration_seconds_count", 2.0),
    ];
    for (name, value) in expected {
        assert_eq!(expired(name), Some(value), "{name}: {text}");
    }
    let old = |name: &str| sample(&text, &format!("janitor_{name}{{operation=\"cleanup_old_results\"}}"));
    assert_eq!((old("jobs_enqueued_total"), old("jobs_started_total")), (Some(1.0), Some(0.0)), "{text}");
    assert_eq!(old("jobs_cancelled_total"), Some(1.0), "{text}");
    // The histogram holds every batch of both runs, once: as many as the
    // job's own checkpoint counts.
    let batches: i64 = sqlx::query_scalar(
        "SELECT sum(n::bigint)::bigint FROM job_results, jsonb_array_elements_text(checkpoint->'batch_seconds') n",
    )
    .fetch_one(api.pool())
    .await
    .unwrap();
    assert!(batches >= 15, "300 items in batches of 20: {batches}");
    assert_eq!(sample(&text, "janitor_batch_duration_seconds_count"), Some(batches as f64), "{text}");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}

/// Job rows with some history, written as the workers write them: inserted
/// queued, started, a batch, the end.
async fn record_jobs(pool: &PgPool, count: i64, status: &str) {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    sqlx::query("INSERT INTO job_results (job_id, operation) SELECT unnest($1::uuid[]), 'cleanup_session'")
        .bind(&ids)
        .execute(pool)
        .await
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        let batch = format!(r#"{{"batch_seconds": [1, {i}], "batch_seconds_sum": 0.5}}"#);
        let (start, end) = (
            "UPDATE job_results SET status = 'running', attempts = 1, started_at = now() WHERE job_id = $1",
            "UPDATE job_results SET status = $2, finished_at = now() WHERE job_id = $1",
        );
        sqlx::query(start).bind(id).execute(pool).await.unwrap();
        sqlx::query(
            "UPDATE job_results SET deleted_count = 3, deleted_bytes = 30, error_count = 1, checkpoint = $2::jsonb
             WHERE job_id = $1",
        )
        .bind(id)
        .bind(&batch)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(end).bind(id).bind(status).execute(pool).await.unwrap();
    }
}

/// Every counter sample of a scrape (`janitor_*_total` and the histogram).
fn counters(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.starts_with("janitor_batch_duration") || l.split('{').next().is_some_and(|n| n.ends_with("_total"))
        })
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn pruning_job_rows_lowers_no_counter(pool: PgPool) {
    let api = Api::start(pool).await;
    record_jobs(api.pool(), 4, "completed").await;
    record_jobs(api.pool(), 2, "failed").await;
    let before = scrape(&api).await;
    let session = |text: &str, name: &str| sample(text, &format!("janitor_{name}{{operation=\"cleanup_session\"}}"));
    assert_eq!(session(&before, "jobs_completed_total"), Some(4.0), "{before}");
    assert_eq!(session(&before, "items_deleted_total"), Some(18.0), "{before}");
    assert_eq!(sample(&before, r#"janitor_batch_duration_seconds_bucket{le="0.025"}"#), Some(13.0), "{before}");

    // What `janitor prune` does to finished rows, and more.
    let deleted = sqlx::query("DELETE FROM job_results").execute(api.pool()).await.unwrap().rows_affected();
    assert_eq!(deleted, 6);
    let after = scrape(&api).await;
    assert_eq!(counters(&after), counters(&before), "{after}");
    assert!(counters(&after).len() > 12, "{after}");
    api.finish().await;
}

/// `seq_scan + idx_scan` of `job_results`, as flushed to the statistics,
/// once every other connection to the test's database (but the server's)
/// has gone. A backend flushes its table statistics lazily, but always when
/// it exits, so what the others did is counted by then.
async fn job_results_scans(conn: &mut PgConnection, except_application: &str) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> $1",
        )
        .bind(except_application)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if others == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{others} other connections stay open");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sqlx::query_scalar(
        "SELECT (seq_scan + coalesce(idx_scan, 0))::bigint FROM pg_stat_user_tables WHERE relname = 'job_results'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_scrape_reads_no_job_rows(pool: PgPool) {
    let mut api = Api::start(pool).await;
    // Rows that the counters count, inserted (an insert scans nothing).
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, started_at, finished_at, deleted_count)
         SELECT gen_random_uuid(), 'cleanup_session', 'completed', now(), now(), 2 FROM generate_series(1, 3)",
    )
    .execute(api.pool())
    .await
    .unwrap();
    // Only this connection and the server's stay: the test pool's (which ran
    // the migrations, whose backfill scanned the table) close.
    let mut conn = PgConnection::connect(&support::database_url(api.pool())).await.unwrap();
    api.pool().close().await;
    let before = job_results_scans(&mut conn, SERVER_APPLICATION).await;
    for _ in 0..3 {
        let text = scrape(&api).await;
        assert_eq!(sample(&text, r#"janitor_jobs_completed_total{operation="cleanup_session"}"#), Some(3.0));
        assert_eq!(sample(&text, r#"janitor_items_deleted_total{operation="cleanup_session"}"#), Some(6.0));
    }
    api.stop();
    let after = job_results_scans(&mut conn, "").await;
    assert_eq!(after, before, "a scrape scanned job_results");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn with_redis_down_metrics_still_serves_the_postgres_series(pool: PgPool) {
    // A port where nothing listens.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = ApiConfig { redis_url: Some(format!("redis://127.0.0.1:{port}")), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    record_jobs(api.pool(), 2, "completed").await;
    let started = std::time::Instant::now();
    let text = scrape(&api).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(sample(&text, r#"janitor_up{dependency="redis"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, r#"janitor_up{dependency="postgres"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"janitor_jobs_completed_total{operation="cleanup_session"}"#), Some(2.0), "{text}");
    assert_eq!(sample(&text, r#"janitor_items_deleted_total{operation="cleanup_session"}"#), Some(6.0), "{text}");
    assert!(!text.contains("janitor_queue_depth{"), "no queue figures without Redis: {text}");
    // Its Redis is down: there are no keys to clean up.
    drop(api);
}

/// The counter triggers' helpers (PL/pgSQL since 20261201000050) return what
/// their first definitions in SQL returned; the expected values were taken
/// from those, on the same inputs, edge cases included (padding, NULLs, an
/// array not based at 1, bounds, NaN, a checkpoint without a histogram).
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_counter_helpers_keep_their_results(pool: PgPool) {
    let cases: &[(&str, &str)] = &[
        ("janitor_add_counts('{1,2,3}', '{4,5}')", "{5,7,3}"),
        ("janitor_add_counts('{}', '{4,5}')", "{4,5}"),
        ("janitor_add_counts(NULL, '{4,5}')", "{4,5}"),
        ("janitor_add_counts('{1,NULL}', NULL)", "{1,0}"),
        ("janitor_add_counts('{}', '{}')", "{}"),
        ("janitor_add_counts('[0:1]={7,8}', '{1}')", "{8,8}"),
        ("janitor_duration_counts(0)", "{1,0,0,0,0,0,0,0,0,0,0,0,0,0,0}"),
        ("janitor_duration_counts(0.1)", "{1,0,0,0,0,0,0,0,0,0,0,0,0,0,0}"),
        ("janitor_duration_counts(0.2)", "{0,1,0,0,0,0,0,0,0,0,0,0,0,0,0}"),
        ("janitor_duration_counts(3)", "{0,0,0,0,1,0,0,0,0,0,0,0,0,0,0}"),
        ("janitor_duration_counts(21600)", "{0,0,0,0,0,0,0,0,0,0,0,0,0,1,0}"),
        ("janitor_duration_counts(21601)", "{0,0,0,0,0,0,0,0,0,0,0,0,0,0,1}"),
        ("janitor_duration_counts('NaN')", "{0,0,0,0,0,0,0,0,0,0,0,0,0,0,1}"),
        ("janitor_duration_counts(NULL)", "{0,0,0,0,0,0,0,0,0,0,0,0,0,0,1}"),
        (r#"janitor_batch_counts('{"batch_seconds": [1, 0, 3]}')"#, "{1,0,3}"),
        (r#"janitor_batch_counts('{"batch_seconds": []}')"#, "{}"),
        (r#"janitor_batch_counts('{"batch_seconds": 5}')"#, "{}"),
        ("janitor_batch_counts('{}')", "{}"),
        ("janitor_batch_counts(NULL)", "{}"),
        ("(SELECT janitor_sum_counts(c::bigint[]) FROM unnest(ARRAY['{1,2}', '{0,0,5}']) AS c)", "{1,2,5}"),
    ];
    for (call, want) in cases {
        let got: String = sqlx::query_scalar(&format!("SELECT ({call})::text"))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|err| panic!("{call}: {err}"));
        assert_eq!(&got, want, "{call}");
    }
}
