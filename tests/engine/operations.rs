//! Each operation deletes exactly what it should, counts it exactly, and a
//! dry run changes nothing.

use janitor_workers::{CleanupJob, DaysOld, SessionId};
use sqlx::PgPool;

use crate::harness::{dry, engine, run, spec};
use crate::support::{count_images, image_exists, insert_image, insert_task, Image, Store, TaskImages};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn expired_deletes_only_expired_temporary_images(pool: PgPool) {
    let store = Store::new();
    let gone = [
        insert_image(&pool, Some(&store), &Image::expired("photos/a.jpg", 100)).await,
        insert_image(&pool, Some(&store), &Image::expired("preprocessed/b.jpg", 50)).await,
    ];
    let kept = [
        insert_image(&pool, Some(&store), &Image::fresh("photos/fresh.jpg", 7)).await,
        insert_image(&pool, Some(&store), &Image::permanent("templates/t.jpg", 7)).await,
    ];
    let record = run(&engine(&pool, &store, 1000), &spec(CleanupJob::Expired)).await;

    assert_eq!(record.status, "completed");
    assert_eq!((record.deleted_count, record.deleted_bytes), (2, 150));
    assert_eq!((record.skipped_count, record.error_count), (0, 0));
    for id in gone {
        assert!(!image_exists(&pool, id).await);
    }
    for id in kept {
        assert!(image_exists(&pool, id).await);
    }
    assert!(!store.exists("photos/a.jpg") && !store.exists("preprocessed/b.jpg"));
    assert!(store.exists("photos/fresh.jpg") && store.exists("templates/t.jpg"));
    let result = record.result.expect("final result stored");
    assert_eq!(result["operation"], "cleanup_expired_images");
    assert_eq!(result["deleted_size_bytes"], 150);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn session_deletes_all_of_a_sessions_images_and_nothing_else(pool: PgPool) {
    let store = Store::new();
    let mine = [
        insert_image(&pool, Some(&store), &Image::fresh("photos/s1/a.jpg", 10).session("s1")).await,
        insert_image(&pool, Some(&store), &Image::permanent("results/s1.jpg", 20).session("s1")).await,
    ];
    let other = insert_image(&pool, Some(&store), &Image::fresh("photos/s2/a.jpg", 10).session("s2")).await;
    let job = CleanupJob::Session { session_id: SessionId::parse("s1").unwrap() };
    let record = run(&engine(&pool, &store, 1000), &spec(job)).await;

    assert_eq!((record.deleted_count, record.deleted_bytes), (2, 30));
    for id in mine {
        assert!(!image_exists(&pool, id).await);
    }
    assert!(image_exists(&pool, other).await && store.exists("photos/s2/a.jpg"));
    assert!(!store.exists("photos/s1/a.jpg") && !store.exists("results/s1.jpg"));
    assert_eq!(record.result.unwrap()["session_id"], "s1");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn old_results_delete_result_images_and_keep_the_tasks(pool: PgPool) {
    let store = Store::new();
    let old = insert_image(&pool, Some(&store), &Image::permanent("results/old.jpg", 40)).await;
    let old_failed = insert_image(&pool, Some(&store), &Image::permanent("results/oldf.jpg", 2)).await;
    let recent = insert_image(&pool, Some(&store), &Image::permanent("results/new.jpg", 40)).await;
    let input = insert_image(&pool, Some(&store), &Image::permanent("photos/in.jpg", 40)).await;
    let with = |result| TaskImages { husband: Some(input), result: Some(result), ..TaskImages::default() };
    let old_task = insert_task(&pool, "completed", with(old), Some(45)).await;
    insert_task(&pool, "failed", with(old_failed), Some(31)).await;
    insert_task(&pool, "completed", with(recent), Some(5)).await;

    let job = CleanupJob::OldResults { days_old: DaysOld::new(30).unwrap() };
    let record = run(&engine(&pool, &store, 1000), &spec(job)).await;

    assert_eq!((record.deleted_count, record.deleted_bytes), (2, 42));
    assert!(!image_exists(&pool, old).await && !store.exists("results/old.jpg"));
    assert!(image_exists(&pool, recent).await && store.exists("results/new.jpg"));
    assert!(image_exists(&pool, input).await, "inputs of old tasks are not results");
    let (tasks, result_id): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM face_swap_tasks), result_image_id FROM face_swap_tasks WHERE id = $1",
    )
    .bind(old_task)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((tasks, result_id), (3, None), "task rows stay, with result_image_id cleared");
    let result = record.result.unwrap();
    assert_eq!(result["days_old"], 30);
    assert!(result["cutoff_date"].is_string());
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn orphaned_deletes_unreferenced_old_files_only(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, None, &Image::permanent("photos/known.jpg", 5)).await;
    let old = ["photos/known.jpg", "photos/deep/er/orphan.jpg", "templates/orphan.png", "stray-at-root.jpg"];
    for (path, size) in old.iter().zip([5, 11, 4, 3]) {
        store.write(path, size);
    }
    let grace = std::time::Duration::from_secs(1);
    store.wait_until_older(&old, grace).await;
    store.write("results/just-written.jpg", 3);
    // Copied in a moment ago, keeping its old modification time (`cp -p`):
    // its status-change time says it is new.
    store.write_old("results/copied.jpg", 3);
    let job = CleanupJob::Orphaned { min_age_secs: grace.as_secs() };
    let record = run(&engine(&pool, &store, 2), &spec(job)).await;

    assert_eq!(record.status, "completed");
    assert_eq!((record.deleted_count, record.deleted_bytes), (2, 15));
    assert!(!store.exists("photos/deep/er/orphan.jpg") && !store.exists("templates/orphan.png"));
    assert!(store.exists("photos/known.jpg"), "referenced");
    assert!(store.exists("results/just-written.jpg"), "inside the grace period");
    assert!(store.exists("results/copied.jpg"), "copied in with an old mtime: inside the grace period");
    assert!(store.exists("stray-at-root.jpg"), "outside the category folders");
    assert_eq!(record.result.unwrap()["files_scanned"], 5);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn all_runs_every_phase_and_nests_their_results(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::expired("photos/e.jpg", 1)).await;
    let result_image = insert_image(&pool, Some(&store), &Image::permanent("results/r.jpg", 10)).await;
    insert_task(&pool, "completed", TaskImages { result: Some(result_image), ..TaskImages::default() }, Some(40)).await;
    store.write_old("photos/orphan.jpg", 100);
    let job = CleanupJob::All { days_old: DaysOld::new(30).unwrap(), min_age_secs: 0 };
    let record = run(&engine(&pool, &store, 1000), &spec(job)).await;

    assert_eq!((record.deleted_count, record.deleted_bytes), (3, 111));
    let result = record.result.unwrap();
    assert_eq!(result["expired_images"]["deleted_count"], 1);
    assert_eq!(result["old_task_results"]["deleted_size_bytes"], 10);
    assert_eq!(result["orphaned_files"]["deleted_count"], 1);
    assert_eq!(result["totals"]["deleted_count"], 3);
    assert_eq!(count_images(&pool).await, 0);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dry_runs_change_nothing_but_report_and_record(pool: PgPool) {
    let store = Store::new();
    let expired = insert_image(&pool, Some(&store), &Image::expired("photos/e.jpg", 9).session("s")).await;
    let result_image = insert_image(&pool, Some(&store), &Image::permanent("results/r.jpg", 10)).await;
    insert_task(&pool, "completed", TaskImages { result: Some(result_image), ..TaskImages::default() }, Some(40)).await;
    store.write_old("photos/orphan.jpg", 100);
    let engine = engine(&pool, &store, 1000);
    let days_old = DaysOld::new(30).unwrap();
    let jobs = [
        (CleanupJob::Expired, 1),
        (CleanupJob::Session { session_id: SessionId::parse("s").unwrap() }, 1),
        (CleanupJob::OldResults { days_old }, 1),
        (CleanupJob::Orphaned { min_age_secs: 0 }, 1),
        (CleanupJob::All { days_old, min_age_secs: 0 }, 3),
    ];
    for (job, would_delete) in jobs {
        let record = run(&engine, &dry(job.clone())).await;
        assert_eq!(record.deleted_count, would_delete, "{job:?}");
        assert!(record.dry_run && record.status == "completed");
    }
    assert!(image_exists(&pool, expired).await && image_exists(&pool, result_image).await);
    assert!(store.exists("photos/e.jpg") && store.exists("results/r.jpg") && store.exists("photos/orphan.jpg"));
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_results WHERE dry_run").fetch_one(&pool).await.unwrap();
    assert_eq!(recorded, 5);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn stats_count_what_could_be_cleaned(pool: PgPool) {
    insert_image(&pool, None, &Image::expired("photos/e1.jpg", 100)).await;
    let used = insert_image(&pool, None, &Image::expired("photos/e2.jpg", 50)).await;
    insert_image(&pool, None, &Image::fresh("photos/f.jpg", 1)).await;
    let result_image = insert_image(&pool, None, &Image::permanent("results/r.jpg", 10)).await;
    insert_task(&pool, "completed", TaskImages { result: Some(result_image), ..TaskImages::default() }, Some(40)).await;
    insert_task(&pool, "pending", TaskImages { wife: Some(used), ..TaskImages::default() }, None).await;

    let stats = janitor_workers::jobs::stats::collect(&pool).await.unwrap();
    assert_eq!((stats.expired_images, stats.expired_images_bytes), (2, 150));
    assert_eq!(stats.expired_images_in_use, 1);
    assert_eq!((stats.temporary_images, stats.temporary_images_bytes), (3, 151));
    assert_eq!((stats.old_task_results_30d, stats.old_task_results_30d_bytes), (1, 10));
    assert_eq!(stats.total_images, 4);
    assert_eq!(stats.reclaimable_bytes, 160);
}
