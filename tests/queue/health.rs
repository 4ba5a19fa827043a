//! The health file: a running worker rewrites it every reconcile interval;
//! a paused one does not, so a healthcheck on its age tells them apart.

use std::path::Path;
use std::time::Duration;

use sqlx::PgPool;

use crate::harness::{wait_until, Env};

fn written(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

async fn db_now(pool: &PgPool) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_worker_rewrites_its_health_file_while_it_runs_and_not_while_paused(pool: PgPool) {
    let env = Env::new(pool);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.health");
    let path = file.to_str().unwrap();
    let worker = env.worker(&[], &[("JANITOR_HEALTH_FILE", path), ("JANITOR_RECONCILE_INTERVAL", "1s")]);
    wait_until("the health file is written", Duration::from_secs(30), || async { written(&file).is_some() }).await;
    let first = written(&file).unwrap();
    chrono::DateTime::parse_from_rfc3339(&first).expect("the file holds the time");
    wait_until("it is written again", Duration::from_secs(10), || async { written(&file) != Some(first.clone()) })
        .await;

    worker.pause().await;
    let paused = written(&file);
    let since = db_now(&env.pool).await;
    wait_until("three reconcile intervals pass", Duration::from_secs(10), || async {
        db_now(&env.pool).await >= since + chrono::Duration::milliseconds(3500)
    })
    .await;
    assert_eq!(written(&file), paused, "a paused worker does not write its health file");

    worker.signal("CONT").await;
    wait_until("it is written again once resumed", Duration::from_secs(10), || async { written(&file) != paused })
        .await;
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}
