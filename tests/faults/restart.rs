//! Postgres restarted under a running job: the worker process survives,
//! reconnects, resumes from the last committed batch and finishes with
//! exact counts, and the postponed run does not count as an attempt.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection};

use crate::fixtures::{details, enqueue, finished, job, seed_expired, wait_for_job};
use crate::harness::{files_under, shared_redis_url};
use crate::postgres::PrivatePostgres;
use crate::process::{cleanup_keys, prefix, Janitor};
use crate::support::{count_images, Store};

/// Expired images seeded: at 300 deletions a second, five seconds of work.
const SEEDED: usize = 1500;
const SIZE: i64 = 10;

/// Small paced batches, quick retries, a short lease.
const WORKER: [(&str, &str); 5] = [
    ("JANITOR_BATCH_SIZE", "20"),
    ("JANITOR_MAX_DELETES_PER_SEC", "300"),
    ("JANITOR_RETRY_BASE", "200ms"),
    ("JANITOR_LEASE", "3s"),
    ("JANITOR_RECONCILE_INTERVAL", "500ms"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_a_postgres_restart_mid_job_and_counts_exactly() {
    let server = PrivatePostgres::start().await;
    let mut admin = PgConnection::connect(&server.url("postgres")).await.expect("the private server answers");
    sqlx::query("CREATE DATABASE janitor").execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let url = server.url("janitor");
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    janitor_workers::MIGRATOR.run(&pool).await.expect("migrations apply");
    let store = Store::new();
    seed_expired(&pool, &store, "restart", SEEDED, SIZE).await;

    let prefix = prefix();
    let janitor = Janitor::new(&url, &shared_redis_url(), &prefix, store.root()).with_all(&WORKER);
    let mut worker = janitor.spawn(&["worker"]);
    let job_id = enqueue(&janitor, &["expired"]).await;
    let before = wait_for_job(&pool, job_id, "the worker has committed a batch", Duration::from_secs(20), |row| {
        row.0 == "running" && row.1 > 0
    })
    .await;

    server.stop().await;
    assert!(PgConnection::connect(&url).await.is_err(), "the server is down");
    assert!(worker.is_running(), "the worker outlived the outage so far: {}", worker.stderr());
    server.start_again().await;

    let row = finished(&pool, job_id, Duration::from_secs(60)).await;
    let (bytes, errors, _) = details(&pool, job_id).await;
    eprintln!("postgres restart: at the stop {before:?}; final {row:?}; worker stderr:\n{}", worker.stderr());
    assert!(before.1 < SEEDED as i64, "the restart came mid-job: {before:?}");
    assert_eq!(row.0, "completed", "{row:?}\nworker stderr:\n{}\nserver log:\n{}", worker.stderr(), server.log());
    assert_eq!(row.1, SEEDED as i64, "every row counted exactly once: {row:?}");
    assert_eq!(bytes, SEEDED as i64 * SIZE, "bytes counted exactly once");
    assert_eq!(errors, 0);
    assert_eq!(count_images(&pool).await, 0, "image rows left");
    assert_eq!(files_under(store.root()), 0, "files left");
    assert!(worker.is_running(), "the same worker process is still up: {}", worker.stderr());
    let pid = worker.pid();
    assert!(row.3.as_deref().is_some_and(|w| w.ends_with(&format!("-{pid}"))), "the same worker finished it: {row:?}");
    // The run the outage cut short was postponed, no failure of the job: it
    // is taken back off the attempts (once Postgres answers again), so only
    // the run that finished counts.
    crate::harness::wait_until("the postponed run is not counted", Duration::from_secs(10), || async {
        job(&pool, job_id).await.is_some_and(|row| row.2 == 1)
    })
    .await;

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0), "{}", worker.stderr());
    pool.close().await;
    cleanup_keys(&shared_redis_url(), &prefix).await;
}

/// An outage longer than the retry budget (here one attempt, which waits
/// out the pool's acquire timeout) while session jobs are delivered: they
/// are postponed, not failed, and all complete once Postgres is back, with
/// exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_delivered_during_a_postgres_outage_complete_after_it() {
    const SESSIONS: usize = 8;
    let server = PrivatePostgres::start().await;
    let mut admin = PgConnection::connect(&server.url("postgres")).await.expect("the private server answers");
    sqlx::query("CREATE DATABASE janitor").execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let url = server.url("janitor");
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    janitor_workers::MIGRATOR.run(&pool).await.expect("migrations apply");
    let store = Store::new();
    for i in 0..SESSIONS {
        for j in 0..3 {
            let image = crate::support::Image::fresh(&format!("photos/s{i}/{j}.jpg"), 5).session(&format!("s{i}"));
            crate::support::insert_image(&pool, Some(&store), &image).await;
        }
    }
    let prefix = prefix();
    let budget = [("JANITOR_MAX_ATTEMPTS", "1"), ("JANITOR_RETRY_BASE", "200ms"), ("JANITOR_LEASE", "3s")];
    let janitor = Janitor::new(&url, &shared_redis_url(), &prefix, store.root()).with_all(&budget);
    let mut worker = janitor.spawn(&["worker"]);
    wait_for_worker(&shared_redis_url(), &prefix).await;

    server.stop().await;
    // The application logs users out while the database is down (a raw XADD
    // needs only Redis).
    let mut redis = redis::Client::open(shared_redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = janitor_workers::layout::Layout::new(&prefix).stream(janitor_workers::layout::Lane::Session);
    for i in 0..SESSIONS {
        let job = format!(r#"{{"op":"session","session_id":"s{i}"}}"#);
        let _: String =
            redis::cmd("XADD").arg(&stream).arg("*").arg("job").arg(job).query_async(&mut redis).await.unwrap();
    }
    // Down for longer than the one attempt takes: it waits out the pool's
    // 30 s acquire timeout, and recording its failure another 30 s.
    let outage = Duration::from_secs(65);
    tokio::time::sleep(outage).await;
    assert!(worker.is_running(), "the worker outlived the outage: {}", worker.stderr());
    let postponed = janitor_workers::layout::Layout::new(&prefix).postponed();
    let during: usize = redis::cmd("HLEN").arg(&postponed).query_async(&mut redis).await.unwrap();
    assert!(during > 0, "the jobs delivered during the outage are postponed");
    server.start_again().await;

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status = 'completed'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if done == SESSIONS as i64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{done} of {SESSIONS} completed\n{}", worker.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (deleted, failed): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(deleted_count), 0)::bigint, count(*) FILTER (WHERE status <> 'completed') FROM job_results",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((deleted, failed), (3 * SESSIONS as i64, 0), "exact counts, nothing failed");
    assert_eq!(count_images(&pool).await, 0);
    assert_eq!(files_under(store.root()), 0);
    // A job that ran forgets its postponement (and its ids entry) once it
    // has ended, just after its row says so.
    let ids = janitor_workers::layout::Layout::new(&prefix).ids();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: (usize, usize) =
            redis::pipe().cmd("HLEN").arg(&postponed).cmd("HLEN").arg(&ids).query_async(&mut redis).await.unwrap();
        if left == (0, 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "(postponed, ids) left in Redis: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0), "{}", worker.stderr());
    pool.close().await;
    cleanup_keys(&shared_redis_url(), &prefix).await;
}

/// Waits until the worker has created its consumer groups.
async fn wait_for_worker(redis_url: &str, prefix: &str) {
    let mut redis = redis::Client::open(redis_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = janitor_workers::layout::Layout::new(prefix).stream(janitor_workers::layout::Lane::Session);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
            redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut redis).await;
        if groups.is_ok_and(|g| !g.groups.is_empty()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the worker did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `janitor run` reported as ended stays ended after a Postgres crash
/// right after it: the end's commit waits for its WAL write. The WAL writer
/// is slowed to 10 s, so an end committed without waiting would still be in
/// the WAL buffers that an immediate stop throws away, and the job's row
/// would come back `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reported_ended_is_still_ended_after_a_postgres_crash() {
    let server = PrivatePostgres::start().await;
    let mut admin = PgConnection::connect(&server.url("postgres")).await.expect("the private server answers");
    sqlx::query("CREATE DATABASE janitor").execute(&mut admin).await.unwrap();
    sqlx::query("ALTER SYSTEM SET wal_writer_delay = '10s'").execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let url = server.url("janitor");
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    janitor_workers::MIGRATOR.run(&pool).await.expect("migrations apply");
    let store = Store::new();
    for j in 0..3 {
        let image = crate::support::Image::fresh(&format!("photos/c/{j}.jpg"), 5).session("crash-me");
        crate::support::insert_image(&pool, Some(&store), &image).await;
    }
    pool.close().await;

    let prefix = prefix();
    let janitor = Janitor::new(&url, &shared_redis_url(), &prefix, store.root());
    let (code, stdout, stderr) = janitor.run(&["run", "session", "crash-me", "--json"], Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let reported: serde_json::Value = serde_json::from_str(&stdout).expect("the result as JSON");
    assert_eq!(reported["status"], "completed", "{stdout}");
    let job_id = reported["job_id"].as_str().expect("a job id").to_owned();

    server.crash().await;
    server.start_again().await;
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    let row: (String, i64) = sqlx::query_as("SELECT status, deleted_count FROM job_results WHERE job_id = $1::uuid")
        .bind(&job_id)
        .fetch_one(&pool)
        .await
        .expect("the job's row survived the crash");
    assert_eq!(row, ("completed".to_owned(), 3), "what was reported is what the row says after the crash");
    assert_eq!(count_images(&pool).await, 0);
    pool.close().await;
}
