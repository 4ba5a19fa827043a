//! The everyday path: enqueue, a worker runs it, the result row answers.

use std::time::Duration;

use sqlx::PgPool;

use crate::harness::Env;
use crate::support::{count_images, insert_image, Image};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_enqueued_session_cleanup_runs_and_wait_prints_the_result(pool: PgPool) {
    let env = Env::new(pool);
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/s/a.jpg", 7).session("s1")).await;
    let worker = env.worker(&[], &[]);

    let (code, stdout, stderr) =
        env.janitor(&["enqueue", "session", "s1", "--wait", "--json", "--timeout", "30s"]).await;
    assert_eq!(code, 0, "{stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["operation"], "cleanup_session");
    assert_eq!(result["session_id"], "s1");
    assert_eq!((result["deleted_count"].as_i64(), result["deleted_size_bytes"].as_i64()), (Some(1), Some(7)));
    assert_eq!(count_images(&env.pool).await, 0);
    assert!(!env.store.exists("photos/s/a.jpg"));

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(15)).await, Some(0));
    env.cleanup_keys().await;
}
