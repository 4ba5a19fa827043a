//! `janitor run expired`: the seed-compatible result JSON, item errors and
//! exit code 3, dry runs, and re-running a finished job by its id.

use serde_json::json;
use sqlx::PgPool;

use crate::binary::{count_jobs, timestamp, Janitor};
use crate::support::{image_exists, insert_image, insert_task, Image, Store, TaskImages};

/// Half a mebibyte, so that the megabyte field has a value worth checking.
const HALF_MB: i64 = 512 * 1024;

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn expired_prints_the_seed_result_and_deletes_rows_and_files(pool: PgPool) {
    let store = Store::new();
    let mut gone = Vec::new();
    for path in ["photos/a.jpg", "photos/b/c.jpg", "preprocessed/d.jpg"] {
        gone.push(insert_image(&pool, Some(&store), &Image::expired(path, HALF_MB)).await);
    }
    let in_use = insert_image(&pool, Some(&store), &Image::expired("photos/used.jpg", 7)).await;
    let images = TaskImages { husband: Some(in_use), ..TaskImages::default() };
    insert_task(&pool, "pending", images, None).await;
    let fresh = insert_image(&pool, Some(&store), &Image::fresh("photos/fresh.jpg", 7)).await;

    let result = Janitor::new(&pool, &store).json(&["run", "expired", "--json"], 0).await;

    assert_eq!(result["operation"], "cleanup_expired_images");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["dry_run"], false);
    assert_eq!(result["deleted_count"], 3);
    assert_eq!(result["deleted_size_bytes"], 3 * HALF_MB);
    assert_eq!(result["deleted_size_mb"], json!(1.5));
    assert_eq!(result["skipped_count"], 1);
    assert_eq!(result["error_count"], 0);
    assert_eq!(result["errors"], json!([]));
    assert!(timestamp(&result, "started_at") <= timestamp(&result, "finished_at"));
    let job_id: uuid::Uuid = serde_json::from_value(result["job_id"].clone()).expect("job id");
    let status: String = sqlx::query_scalar("SELECT status FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .expect("the job is recorded");
    assert_eq!(status, "completed");

    for id in gone {
        assert!(!image_exists(&pool, id).await, "image {id} was deleted");
    }
    assert!(!store.exists("photos/a.jpg") && !store.exists("photos/b/c.jpg"));
    assert!(!store.exists("preprocessed/d.jpg"));
    assert!(image_exists(&pool, in_use).await && store.exists("photos/used.jpg"));
    assert!(image_exists(&pool, fresh).await && store.exists("photos/fresh.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_item_that_cannot_be_deleted_exits_with_3_and_is_listed(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::expired("photos/ok.jpg", 10)).await;
    // The row's storage path is a directory on disk: unlinking it fails.
    let stuck = insert_image(&pool, None, &Image::expired("photos/dir.jpg", 20)).await;
    std::fs::create_dir_all(store.path("photos/dir.jpg")).unwrap();

    let result = Janitor::new(&pool, &store).json(&["run", "expired", "--json"], 3).await;

    assert_eq!(result["status"], "completed");
    assert_eq!(result["deleted_count"], 1);
    assert_eq!(result["deleted_size_bytes"], 10);
    assert_eq!(result["error_count"], 1);
    let errors = result["errors"].as_array().expect("errors is an array");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["image_id"], stuck);
    assert_eq!(errors[0]["path"], "photos/dir.jpg");
    assert_eq!(errors[0]["error"], "is a directory");
    assert!(image_exists(&pool, stuck).await, "the failed item keeps its row");
    assert!(store.path("photos/dir.jpg").is_dir());
    assert!(!store.exists("photos/ok.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dry_run_reports_what_it_would_delete_and_changes_nothing(pool: PgPool) {
    let store = Store::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let image = Image::expired(&format!("photos/{i}.jpg"), 100);
        ids.push(insert_image(&pool, Some(&store), &image).await);
    }
    ids.push(insert_image(&pool, Some(&store), &Image::fresh("photos/fresh.jpg", 100)).await);

    let args = ["run", "expired", "--dry-run", "--json"];
    let result = Janitor::new(&pool, &store).json(&args, 0).await;

    assert_eq!(result["dry_run"], true);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["deleted_count"], 3);
    assert_eq!(result["deleted_size_bytes"], 300);
    for id in ids {
        assert!(image_exists(&pool, id).await, "image {id} stays");
    }
    for path in ["photos/0.jpg", "photos/1.jpg", "photos/2.jpg", "photos/fresh.jpg"] {
        assert!(store.exists(path), "{path} stays");
    }
    let job_id: uuid::Uuid = serde_json::from_value(result["job_id"].clone()).expect("job id");
    let dry_run: bool = sqlx::query_scalar("SELECT dry_run FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .expect("the dry run is recorded");
    assert!(dry_run);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn human_output_of_a_dry_run_says_what_would_be_deleted(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::expired("photos/a.jpg", 10)).await;
    insert_image(&pool, Some(&store), &Image::expired("photos/b.jpg", 10)).await;

    let output = Janitor::new(&pool, &store).run(&["run", "expired", "--dry-run"]).await.expect_code(0);

    let text = &output.stdout;
    assert!(text.contains("cleanup_expired_images completed"), "{text}");
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    assert!(text.contains("would delete: 2"), "{text}");
    assert!(store.exists("photos/a.jpg") && store.exists("photos/b.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn rerunning_a_finished_job_reprints_its_result_and_deletes_nothing(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::expired("photos/a.jpg", 10)).await;
    insert_image(&pool, Some(&store), &Image::expired("photos/b.jpg", 20)).await;
    let janitor = Janitor::new(&pool, &store);
    let job_id = uuid::Uuid::new_v4().to_string();
    let args = ["run", "expired", "--job-id", &job_id, "--json"];
    let first = janitor.json(&args, 0).await;
    assert_eq!(first["deleted_count"], 2);

    // Something new expires after the job finished; the finished job must
    // not pick it up when it is run again.
    let late = insert_image(&pool, Some(&store), &Image::expired("photos/late.jpg", 40)).await;
    let second = janitor.json(&args, 0).await;

    assert_eq!(second, first, "the same result is printed again");
    assert_eq!(second["job_id"], job_id.as_str());
    assert!(image_exists(&pool, late).await && store.exists("photos/late.jpg"));
    assert_eq!(count_jobs(&pool).await, 1, "no second job was recorded");
}
