//! Postgres restarted under a running job: the worker process survives,
//! reconnects, resumes from the last committed batch and finishes with
//! exact counts.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection};

use crate::fixtures::{details, enqueue, finished, seed_expired, wait_for_job};
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

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0), "{}", worker.stderr());
    pool.close().await;
    cleanup_keys(&shared_redis_url(), &prefix).await;
}
