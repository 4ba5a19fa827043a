//! A large table is pruned in bounded batches: each batch is one short
//! statement of at most the batch size, committed on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use janitor_workers::layout::Layout;
use janitor_workers::retention::Retention;
use janitor_workers::{BatchReport, CleanupJob, Engine, EngineSettings, JobSpec, RunControl, RunOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{shared_redis_url, wait_until, Env};

const OLD: i64 = 200_000;
const BATCH: usize = 1000;

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_large_table_goes_in_bounded_batches(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, finished_at)
         SELECT gen_random_uuid(), 'cleanup_session', 'completed', now() - interval '30 days' - make_interval(secs => i)
         FROM generate_series(1, $1) AS i",
    )
    .bind(OLD)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, finished_at)
         SELECT gen_random_uuid(), 'cleanup_session', 'completed', now() - interval '1 day' FROM generate_series(1, 500)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE job_results").execute(pool).await.unwrap();

    let settings = EngineSettings { batch_size: BATCH, ..EngineSettings::default() };
    let redis = redis::Client::open(shared_redis_url()).unwrap();
    let engine = Engine::new(pool.clone(), env.store.root(), settings).with_queue(redis, Layout::new(&env.prefix));
    let reports: Arc<Mutex<Vec<BatchReport>>> = Arc::default();
    let seen = Arc::clone(&reports);
    let control = RunControl {
        worker: "test".into(),
        on_batch: Some(Arc::new(move |report: &BatchReport| seen.lock().unwrap().push(report.clone()))),
        ..RunControl::default()
    };
    let spec = JobSpec::new(CleanupJob::Prune { retention: Retention::default() }, false);
    let RunOutcome::Finished(record) = engine.run(Uuid::new_v4(), &spec, &control).await.unwrap() else {
        panic!("the prune did not finish");
    };

    assert_eq!(record.status, "completed");
    assert_eq!(record.deleted_count, OLD);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE operation = 'cleanup_session'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 500, "the young rows stay");

    // Each committed batch removed at most the batch size, in one short
    // transaction; together they removed everything old.
    let reports = std::mem::take(&mut *reports.lock().unwrap());
    let mut removed = Vec::new();
    let mut before = 0;
    for report in &reports {
        removed.push((report.totals.deleted - before, report.elapsed));
        before = report.totals.deleted;
    }
    assert!(removed.len() >= (OLD as usize).div_ceil(BATCH), "{} batches", removed.len());
    let largest = removed.iter().map(|(n, _)| *n).max().unwrap();
    assert_eq!(largest, BATCH as i64, "no batch removes more than the batch size");
    let slowest = removed.iter().map(|(_, t)| *t).max().unwrap();
    assert!(slowest < Duration::from_secs(5), "the slowest batch took {slowest:?}");
    // Every batch found its rows on the retention index: the queries repeat
    // its expression exactly. (Postgres reports index use within a second.)
    let batches = removed.len() as i64;
    wait_until("the retention index served every batch", Duration::from_secs(30), || async {
        let scans: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes
             WHERE indexrelname = 'janitor_job_results_retention'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        scans >= batches
    })
    .await;
    env.cleanup_keys().await;
}
