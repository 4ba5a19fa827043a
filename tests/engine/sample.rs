//! A dry run records, with its result, a bounded sample of what it would
//! delete and of the in-use items it skipped (with why): what the console's
//! plan page shows before anything is deleted.

use janitor_workers::sample::SAMPLE_CAP;
use janitor_workers::{CleanupJob, DaysOld};
use serde_json::Value;
use sqlx::PgPool;

use crate::harness::{dry, engine, run, spec};
use crate::support::{insert_image, insert_task, Image, Store, TaskImages};

/// The `path` of each item of a sample list, in order.
fn paths(items: &Value) -> Vec<String> {
    items.as_array().expect("a list").iter().map(|item| item["path"].as_str().unwrap().to_owned()).collect()
}

/// 25 free expired images (more than the cap, over several batches), one
/// a pending task uses and one whose file a permanent row also names: the
/// sample holds the first 20 free ones in id order with their sizes, and
/// both skipped ones with their reasons; the real run after it has none.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_dry_run_of_expired_samples_what_it_would_delete_and_what_is_in_use(pool: PgPool) {
    let store = Store::new();
    let used = insert_image(&pool, Some(&store), &Image::expired("photos/in-use.jpg", 5)).await;
    insert_task(&pool, "pending", TaskImages { wife: Some(used), ..TaskImages::default() }, None).await;
    let shared = insert_image(&pool, Some(&store), &Image::expired("photos/shared.jpg", 6)).await;
    // The same file under another spelling (paths are unique as spelled).
    insert_image(&pool, None, &Image::permanent("/photos/shared.jpg", 6)).await;
    let mut free = Vec::new();
    for i in 0..25 {
        let path = format!("photos/free/{i:02}.jpg");
        free.push((insert_image(&pool, Some(&store), &Image::expired(&path, 100 + i)).await, path));
    }
    let engine = engine(&pool, &store, 10);

    let record = run(&engine, &dry(CleanupJob::Expired)).await;
    assert_eq!((record.deleted_count, record.skipped_count), (25, 2), "{record:?}");
    // What the API and the console read: the row's stored result JSON.
    let stored: Value = sqlx::query_scalar("SELECT result FROM job_results WHERE job_id = $1")
        .bind(record.job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let sample = &stored["sample"];
    let expected: Vec<String> = free.iter().take(SAMPLE_CAP).map(|(_, path)| path.clone()).collect();
    assert_eq!(paths(&sample["would_delete"]), expected, "{sample}");
    let first = &sample["would_delete"][0];
    assert_eq!((first["image_id"].as_i64(), first["size"].as_i64()), (Some(free[0].0), Some(100)));
    assert_eq!(first["operation"], "cleanup_expired_images");
    let skipped: Vec<(i64, String, String)> = sample["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let reason = item["reason"].as_str().unwrap_or_default().to_owned();
            (item["image_id"].as_i64().unwrap(), item["path"].as_str().unwrap().to_owned(), reason)
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (used, "photos/in-use.jpg".to_owned(), "in use by a pending task".to_owned()),
            (shared, "photos/shared.jpg".to_owned(), "another row refers to its file".to_owned()),
        ]
    );
    assert!(stored["checkpoint"].get("sample").is_none(), "the sample is shown once: {stored}");
    assert!(store.exists("photos/free/00.jpg"), "a dry run deletes nothing");

    let real = run(&engine, &spec(CleanupJob::Expired)).await;
    assert_eq!((real.deleted_count, real.skipped_count), (25, 2), "the real run takes what the plan showed");
    let result = real.result.unwrap();
    assert!(result.get("sample").is_none() && result["checkpoint"].get("sample").is_none(), "{result}");
}

/// The orphan sweep's dry run samples the orphans it would delete, in path
/// order with their sizes, and skips nothing; `cleanup_all` keeps each
/// phase's items apart.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dry_runs_of_orphaned_and_all_sample_per_phase(pool: PgPool) {
    let store = Store::new();
    for (path, size) in [("results/b.jpg", 20), ("photos/a.jpg", 10), ("templates/c.jpg", 30)] {
        store.write(path, size);
    }
    // Files rows refer to are no orphans, and are not sampled as such.
    insert_image(&pool, Some(&store), &Image::permanent("photos/kept.jpg", 1)).await;
    insert_image(&pool, Some(&store), &Image::expired("photos/expired.jpg", 7)).await;
    let engine = engine(&pool, &store, 1000);

    let record = run(&engine, &dry(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    let sample = &record.result.unwrap()["sample"];
    assert_eq!(paths(&sample["would_delete"]), ["photos/a.jpg", "results/b.jpg", "templates/c.jpg"], "{sample}");
    assert_eq!(sample["would_delete"][1]["size"], 20);
    assert_eq!(sample["skipped"], serde_json::json!([]));

    let all = CleanupJob::All { days_old: DaysOld::new(30).unwrap(), min_age_secs: 0 };
    let record = run(&engine, &dry(all)).await;
    let sample = &record.result.unwrap()["sample"];
    let phases: Vec<(String, String)> = sample["would_delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["operation"].as_str().unwrap().to_owned(), item["path"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(phases[0], ("cleanup_expired_images".to_owned(), "photos/expired.jpg".to_owned()), "{sample}");
    assert_eq!(phases.len(), 4, "the expired image and the three orphans: {sample}");
    assert!(phases[1..].iter().all(|(operation, _)| operation == "cleanup_orphaned_files"), "{sample}");
}
