//! `run session`, `run old-results` and `run all`: each deletes what it
//! should and its result carries its own fields.

use chrono::{Duration, Utc};
use sqlx::PgPool;

use crate::binary::{timestamp, Janitor};
use crate::support::{image_exists, insert_image, insert_task, Image, Store, TaskImages};

/// Seeds a permanent result image of a task of `status` that finished
/// `days_ago` days ago; returns the image's and the task's ids.
async fn old_result(pool: &PgPool, store: &Store, path: &str, days_ago: i64) -> (i64, i64) {
    let image = insert_image(pool, Some(store), &Image::permanent(path, 10)).await;
    let images = TaskImages { result: Some(image), ..TaskImages::default() };
    (image, insert_task(pool, "completed", images, Some(days_ago)).await)
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn session_deletes_only_that_sessions_images(pool: PgPool) {
    let store = Store::new();
    let mine = [
        insert_image(&pool, Some(&store), &Image::fresh("photos/s1-a.jpg", 5).session("s1")).await,
        insert_image(&pool, Some(&store), &Image::permanent("results/s1-b.jpg", 6).session("s1")).await,
    ];
    let theirs = insert_image(&pool, Some(&store), &Image::expired("photos/s2.jpg", 7).session("s2")).await;
    let anonymous = insert_image(&pool, Some(&store), &Image::expired("photos/none.jpg", 8)).await;

    let result = Janitor::new(&pool, &store).json(&["run", "session", "s1", "--json"], 0).await;

    assert_eq!(result["operation"], "cleanup_session");
    assert_eq!(result["session_id"], "s1");
    assert_eq!(result["deleted_count"], 2);
    assert_eq!(result["deleted_size_bytes"], 11);
    for id in mine {
        assert!(!image_exists(&pool, id).await, "image {id} of s1 is deleted");
    }
    assert!(!store.exists("photos/s1-a.jpg") && !store.exists("results/s1-b.jpg"));
    assert!(image_exists(&pool, theirs).await && store.exists("photos/s2.jpg"));
    assert!(image_exists(&pool, anonymous).await && store.exists("photos/none.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn old_results_reports_its_cutoff_and_keeps_the_tasks(pool: PgPool) {
    let store = Store::new();
    let (old_image, old_task) = old_result(&pool, &store, "results/old.jpg", 20).await;
    let (recent_image, _) = old_result(&pool, &store, "results/recent.jpg", 5).await;

    let args = ["run", "old-results", "--days-old", "10", "--json"];
    let result = Janitor::new(&pool, &store).json(&args, 0).await;

    assert_eq!(result["operation"], "cleanup_old_results");
    assert_eq!(result["days_old"], 10);
    assert_eq!(result["deleted_count"], 1);
    let drift = timestamp(&result, "cutoff_date") - (Utc::now() - Duration::days(10));
    assert!(drift.abs() < Duration::minutes(5), "cutoff is ten days ago: {result}");

    assert!(!image_exists(&pool, old_image).await && !store.exists("results/old.jpg"));
    assert!(image_exists(&pool, recent_image).await && store.exists("results/recent.jpg"));
    let result_id: Option<i64> = sqlx::query_scalar("SELECT result_image_id FROM face_swap_tasks WHERE id = $1")
        .bind(old_task)
        .fetch_one(&pool)
        .await
        .expect("the task row stays");
    assert_eq!(result_id, None, "the task no longer points at the deleted image");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn all_nests_each_phase_and_the_totals(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::expired("photos/expired.jpg", 10)).await;
    old_result(&pool, &store, "results/old.jpg", 40).await;
    store.write("templates/orphan.jpg", 30);
    store.wait_until_older(&["templates/orphan.jpg"], std::time::Duration::from_secs(1)).await;
    store.write("photos/new-orphan.jpg", 5);

    let args = ["run", "all", "--json", "--max-orphan-ratio", "1", "--min-age", "1s", "--min-grace", "1s"];
    let result = Janitor::new(&pool, &store).json(&args, 0).await;

    assert_eq!(result["operation"], "cleanup_all");
    assert_eq!(result["status"], "completed");
    let phases = [
        ("expired_images", "cleanup_expired_images", 10),
        ("old_task_results", "cleanup_old_results", 10),
        ("orphaned_files", "cleanup_orphaned_files", 30),
    ];
    for (key, operation, bytes) in phases {
        let phase = &result[key];
        assert_eq!(phase["operation"], operation, "{key}: {phase}");
        assert_eq!(phase["deleted_count"], 1, "{key}: {phase}");
        assert_eq!(phase["deleted_size_bytes"], bytes, "{key}: {phase}");
    }
    assert!(result["old_task_results"]["cutoff_date"].is_string(), "{result}");
    assert!(result["orphaned_files"]["files_scanned"].as_u64() >= Some(2), "{result}");
    assert_eq!(result["totals"]["deleted_count"], 3);
    assert_eq!(result["totals"]["deleted_size_bytes"], 50);
    assert_eq!(result["totals"]["error_count"], 0);

    for path in ["photos/expired.jpg", "results/old.jpg", "templates/orphan.jpg"] {
        assert!(!store.exists(path), "{path} is deleted");
    }
    assert!(store.exists("photos/new-orphan.jpg"), "an orphan in its grace period stays");
}
