//! Real janitor runs through PgBouncer, with exact counts checked against
//! the rows and files left.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::bouncer::{janitor, output, Bouncer, Mode, Version};
use crate::support::{count_images, insert_image, insert_task, Image, Store, TaskImages};

/// PgBouncer refuses the `options` startup parameter that carries the idle
/// transaction timeout, so it is not sent (the role would carry it).
const NO_STARTUP_OPTION: (&str, &str) = ("JANITOR_IDLE_TRANSACTION_TIMEOUT", "0");

/// Session pooling: each client keeps its server connection, so named
/// statements, the sweep's lock and LISTEN all hold.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn session_pooling_runs_every_operation_and_a_queued_job(pool: PgPool) {
    let bouncer = Bouncer::start(&pool, Mode::Session).await;
    every_operation_and_a_queued_job(&pool, &bouncer).await;
}

/// Transaction pooling, with PgBouncer 1.21+ and `max_prepared_statements`:
/// janitor's 20 connections per process share five server connections,
/// statement by statement, with sqlx's statement cache on (the default).
/// What needs more than one transaction holds anyway: every setting is
/// `SET LOCAL`, and the sweep's lock lives in a transaction kept open for
/// the sweep, which keeps its server connection; a second sweep right after
/// is not locked out by a lock left behind on a pooled connection.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn transaction_pooling_with_prepared_statements_runs_every_operation_and_a_queued_job(pool: PgPool) {
    let bouncer = Bouncer::start_version(&pool, Mode::Transaction, Version::PreparedStatements).await;
    every_operation_and_a_queued_job(&pool, &bouncer).await;
}

/// Runs the expired, session, old-results and orphan operations with the
/// binary (the sweep twice), then one job through `janitor worker`, all
/// through PgBouncer, with exact counts.
async fn every_operation_and_a_queued_job(pool: &PgPool, bouncer: &Bouncer) {
    let pool = pool.clone();
    // Where the idle transaction timeout lives behind PgBouncer.
    let database = pool.connect_options().get_database().unwrap().to_owned();
    sqlx::query(&format!("ALTER DATABASE \"{database}\" SET idle_in_transaction_session_timeout = '60s'"))
        .execute(&pool)
        .await
        .unwrap();
    let store = Store::new();
    let queue = format!("janitor-test:{}", Uuid::new_v4().simple());
    for i in 0..3 {
        insert_image(&pool, Some(&store), &Image::expired(&format!("photos/x/{i}.jpg"), 10)).await;
    }
    for i in 0..2 {
        insert_image(&pool, Some(&store), &Image::fresh(&format!("preprocessed/s/{i}.jpg"), 5).session("s1")).await;
    }
    insert_image(&pool, Some(&store), &Image::permanent("templates/keep.png", 7)).await;
    let result = insert_image(&pool, Some(&store), &Image::permanent("results/old.png", 6)).await;
    insert_task(&pool, "completed", TaskImages { result: Some(result), ..TaskImages::default() }, Some(40)).await;
    store.write("photos/o/orphan.jpg", 4);
    store.wait_until_older(&["photos/o/orphan.jpg"], Duration::from_secs(1)).await;
    let run = |args: &[&str]| janitor(&bouncer.url(), &store, &queue, args, &[NO_STARTUP_OPTION]);

    // The startup option is refused by PgBouncer unless left out.
    let refused = output(janitor(&bouncer.url(), &store, &queue, &["run", "expired", "--json"], &[])).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("unsupported startup parameter"), "{}", refused.stderr);

    let expired = output(run(&["run", "expired", "--json"])).await.json();
    assert_eq!((expired["status"].as_str(), expired["deleted_count"].as_i64()), (Some("completed"), Some(3)));
    let session = output(run(&["run", "session", "s1", "--json"])).await.json();
    assert_eq!((session["status"].as_str(), session["deleted_count"].as_i64()), (Some("completed"), Some(2)));
    let old = output(run(&["run", "old-results", "--days-old", "30", "--json"])).await.json();
    assert_eq!((old["status"].as_str(), old["deleted_count"].as_i64()), (Some("completed"), Some(1)));
    assert!(!store.exists("results/old.png"));
    let sweep = ["run", "orphaned", "--json", "--min-age", "1s", "--min-grace", "1s", "--max-orphan-ratio", "1"];
    let orphans = output(run(&sweep)).await.json();
    assert_eq!((orphans["status"].as_str(), orphans["deleted_count"].as_i64()), (Some("completed"), Some(1)));
    let job_id = orphans["job_id"].as_str().unwrap();
    assert!(!store.exists("photos/o/orphan.jpg"));
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/o/orphan.jpg")));
    assert_eq!(count_images(&pool).await, 1, "only the permanent image is left");
    assert!(store.exists("templates/keep.png"));
    for i in 0..3 {
        assert!(!store.exists(&format!("photos/x/{i}.jpg")));
    }
    assert!(!store.exists("preprocessed/s/0.jpg") && !store.exists("preprocessed/s/1.jpg"));
    // The sweep released its lock: no advisory lock is left in this database.
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(locks, 0);
    // So the next sweep of the root is not locked out.
    store.write("photos/o/second.jpg", 4);
    store.wait_until_older(&["photos/o/second.jpg"], Duration::from_secs(1)).await;
    let again = output(run(&sweep)).await.json();
    assert_eq!((again["status"].as_str(), again["deleted_count"].as_i64()), (Some("completed"), Some(1)), "{again}");

    // One queued job through a worker, both through PgBouncer.
    for i in 0..4 {
        insert_image(&pool, Some(&store), &Image::expired(&format!("results/q/{i}.jpg"), 3)).await;
    }
    let mut worker = run(&["worker"]);
    let _worker = worker.stdout(std::process::Stdio::null()).spawn().expect("the worker starts");
    let enqueued = output(run(&["enqueue", "expired", "--json"])).await.json();
    let job: Uuid = enqueued["job_id"].as_str().unwrap().parse().unwrap();
    let (status, deleted) = finished(&pool, job).await;
    assert_eq!((status.as_str(), deleted), ("completed", 4), "pgbouncer log:\n{}", bouncer.log());
    assert_eq!(count_images(&pool).await, 1);
    for i in 0..4 {
        assert!(!store.exists(&format!("results/q/{i}.jpg")));
    }
}

/// Transaction pooling in PgBouncer 1.18 (no `max_prepared_statements`)
/// fails, with sqlx's statement cache on or off: sqlx 0.8 prepares every
/// statement under a name (`sqlx_s_N`) and, with the cache off, never
/// closes it, so another client's statement of the same name collides on a
/// shared server connection, and a statement parsed on one server
/// connection is missing on the next. The job does not complete and deletes
/// nothing.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn transaction_pooling_fails_even_without_the_statement_cache(pool: PgPool) {
    let bouncer = Bouncer::start(&pool, Mode::Transaction).await;
    let store = Store::new();
    let queue = format!("janitor-test:{}", Uuid::new_v4().simple());
    for i in 0..3 {
        insert_image(&pool, Some(&store), &Image::expired(&format!("photos/x/{i}.jpg"), 10)).await;
    }
    for cache in ["100", "0"] {
        let settings = [NO_STARTUP_OPTION, ("JANITOR_DB_STATEMENT_CACHE", cache)];
        let failed = output(janitor(&bouncer.url(), &store, &queue, &["run", "expired", "--json"], &settings)).await;
        assert_ne!(failed.code, 0, "cache {cache}: {}", failed.stdout);
        assert!(failed.stderr.contains("prepared statement \"sqlx_s_"), "cache {cache}: {}", failed.stderr);
    }
    assert_eq!(count_images(&pool).await, 3, "nothing was deleted");
    assert!(store.exists("photos/x/0.jpg"));
}

/// Waits for the job's final row (at most 60 s); returns its status and
/// deleted count.
async fn finished(pool: &PgPool, job: Uuid) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT status, deleted_count FROM job_results WHERE job_id = $1")
                .bind(job)
                .fetch_optional(pool)
                .await
                .unwrap();
        if let Some(row) = row.filter(|(status, _)| status == "completed" || status == "failed") {
            return row;
        }
        assert!(Instant::now() < deadline, "job {job} did not finish within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
