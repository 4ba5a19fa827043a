//! An image a task uses is never deleted, whatever the application does to
//! its tasks while a batch is in flight, and an old result goes only when no
//! newer or active task shares it.

use std::time::Duration;

use janitor_workers::{CleanupJob, DaysOld, Engine, EngineSettings};
use sqlx::PgPool;

use crate::harness::{run, spec};
use crate::support::{image_exists, insert_image, insert_task, Image, Store, TaskImages};

/// The application retries failed tasks (a status-only `UPDATE`, which takes
/// no lock on the images) while the cleanup deletes their images. A task the
/// application moved back to pending must keep its image: its column stays
/// set, and the row and the file are there. Pacing widens each batch's
/// window, so the retries land inside batches.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_task_moved_back_to_pending_mid_batch_keeps_its_image(pool: PgPool) {
    let store = Store::new();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let image = insert_image(&pool, Some(&store), &Image::expired(&format!("photos/r/{i}.jpg"), 1)).await;
        let task =
            insert_task(&pool, "failed", TaskImages { husband: Some(image), ..TaskImages::default() }, Some(1)).await;
        tasks.push((task, image));
    }
    let settings = EngineSettings { batch_size: 5, max_deletes_per_sec: Some(40), ..EngineSettings::default() };
    let engine = Engine::new(pool.clone(), store.root(), settings);
    let app = tokio::spawn(retry_tasks(pool.clone(), tasks.clone()));
    let record = run(&engine, &spec(CleanupJob::Expired)).await;
    let retried = app.await.unwrap();

    assert!(!retried.is_empty() && retried.len() < tasks.len(), "the retries must race the cleanup: {retried:?}");
    for (task, image) in &retried {
        let column: Option<i64> = sqlx::query_scalar("SELECT husband_photo_id FROM face_swap_tasks WHERE id = $1")
            .bind(task)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(column, Some(*image), "pending task {task} lost its image (ON DELETE SET NULL)");
        let path: Option<String> = sqlx::query_scalar("SELECT storage_path FROM images WHERE id = $1")
            .bind(image)
            .fetch_optional(&pool)
            .await
            .unwrap();
        let path = path.unwrap_or_else(|| panic!("the row of pending task {task}'s image is gone"));
        assert!(store.exists(&path), "the file of pending task {task}'s image is gone: {path}");
    }
    assert_eq!(record.deleted_count + retried.len() as i64, tasks.len() as i64, "{record:?}");
}

/// Moves failed tasks back to pending one by one, only while their image is
/// still set; returns the tasks it moved, with their images.
async fn retry_tasks(pool: PgPool, tasks: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut retried = Vec::new();
    for (task, _) in tasks.iter().rev() {
        let moved: Option<i64> = sqlx::query_scalar(
            "UPDATE face_swap_tasks SET status = 'pending', completed_at = NULL
             WHERE id = $1 AND husband_photo_id IS NOT NULL RETURNING husband_photo_id",
        )
        .bind(task)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(image) = moved {
            retried.push((*task, image));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    retried
}

async fn old_result(pool: &PgPool, store: &Store, path: &str) -> i64 {
    let image = insert_image(pool, Some(store), &Image::permanent(path, 3)).await;
    insert_task(pool, "completed", TaskImages { result: Some(image), ..TaskImages::default() }, Some(40)).await;
    image
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_old_result_that_a_newer_or_active_task_shares_stays(pool: PgPool) {
    let store = Store::new();
    let alone = old_result(&pool, &store, "results/alone.png").await;
    // A recent task uses the same image as its template.
    let recent = old_result(&pool, &store, "results/recent.png").await;
    insert_task(&pool, "completed", TaskImages { template: Some(recent), ..TaskImages::default() }, Some(2)).await;
    // A newer task produced the same result again.
    let again = old_result(&pool, &store, "results/again.png").await;
    insert_task(&pool, "failed", TaskImages { result: Some(again), ..TaskImages::default() }, Some(1)).await;
    // A pending task uses it as a photo.
    let active = old_result(&pool, &store, "results/active.png").await;
    insert_task(&pool, "pending", TaskImages { wife: Some(active), ..TaskImages::default() }, None).await;
    // Another old task shares it: still an old result.
    let shared_old = old_result(&pool, &store, "results/shared-old.png").await;
    insert_task(&pool, "failed", TaskImages { husband: Some(shared_old), ..TaskImages::default() }, Some(50)).await;

    let engine = Engine::new(pool.clone(), store.root(), EngineSettings::default());
    let record = run(&engine, &spec(CleanupJob::OldResults { days_old: DaysOld::new(30).unwrap() })).await;

    assert_eq!((record.deleted_count, record.skipped_count), (2, 1), "{:?}", record.result);
    for (image, path) in [(alone, "results/alone.png"), (shared_old, "results/shared-old.png")] {
        assert!(!image_exists(&pool, image).await && !store.exists(path), "{path} is an old result");
    }
    for (image, path) in [(recent, "results/recent.png"), (again, "results/again.png"), (active, "results/active.png")]
    {
        assert!(image_exists(&pool, image).await && store.exists(path), "{path} is still in use");
    }
}

/// The same race, held at a fixed point: the batch is stopped inside its
/// delete (by a trigger that waits for a lock this test holds), after it
/// decided from the tasks as they were. The application's retry of a task
/// that uses the batch's image must wait for the batch's commit (the
/// batch's `FOR SHARE` on the task); it must not slip in between the
/// decision and the commit, which would leave a pending task whose image
/// is deleted under it.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_status_change_waits_for_the_batch_that_decided_on_its_task(pool: PgPool) {
    const GATE: i64 = 7_770_001;
    let store = Store::new();
    let image = insert_image(&pool, Some(&store), &Image::expired("photos/g/a.jpg", 1)).await;
    let task =
        insert_task(&pool, "failed", TaskImages { husband: Some(image), ..TaskImages::default() }, Some(1)).await;
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN OLD; END $$;
         CREATE TRIGGER test_gate BEFORE DELETE ON images FOR EACH ROW EXECUTE FUNCTION test_gate();"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut gate = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(GATE).execute(&mut *gate).await.unwrap();

    let engine = crate::harness::engine(&pool, &store, 10);
    let cleanup = tokio::spawn(async move { run(&engine, &spec(CleanupJob::Expired)).await });
    wait_until("the batch waits at the gate, inside its delete", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1)",
        )
        .bind(GATE)
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;

    let mut app = pool.acquire().await.unwrap();
    let app_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *app).await.unwrap();
    let retry = tokio::spawn(async move {
        sqlx::query_scalar::<_, i64>(
            "UPDATE face_swap_tasks SET status = 'pending', completed_at = NULL
             WHERE id = $1 AND husband_photo_id IS NOT NULL RETURNING husband_photo_id",
        )
        .bind(task)
        .fetch_optional(&mut *app)
        .await
        .unwrap()
    });
    // The retry either waits for a lock or has finished: a finished retry
    // slipped in between the batch's decision and its commit.
    wait_until("the retry waits for a lock or ends", || async {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
        )
        .bind(app_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
        waiting || retry.is_finished()
    })
    .await;
    assert!(!retry.is_finished(), "the task's status changed while the batch that decided on it was still open");

    sqlx::query("SELECT pg_advisory_unlock($1)").bind(GATE).execute(&mut *gate).await.unwrap();
    let record = cleanup.await.unwrap();
    let retried = retry.await.unwrap();
    assert_eq!(record.deleted_count, 1, "{record:?}");
    assert_eq!(retried, None, "the retry ran after the commit and found the image gone");
    assert!(!image_exists(&pool, image).await && !store.exists("photos/g/a.jpg"));
    let status: String = sqlx::query_scalar("SELECT status FROM face_swap_tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "failed", "the retry did not apply to a task whose image is gone");
}

/// Polls `check` every 20 ms until it holds (at most 20 s).
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
