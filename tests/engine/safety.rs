//! The rules that keep cleanup safe: images in use are untouchable, the
//! storage root is a wall, symlinks are never followed, and one bad item
//! never stops the others.

use std::os::unix::fs::symlink;

use janitor_workers::{CleanupJob, SessionId};
use sqlx::PgPool;

use crate::harness::{engine, run, spec};
use crate::support::{image_exists, insert_image, insert_task, Image, Store, TaskImages};

fn session(id: &str) -> CleanupJob {
    CleanupJob::Session { session_id: SessionId::parse(id).unwrap() }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn images_used_by_active_tasks_are_skipped_through_every_column(pool: PgPool) {
    let store = Store::new();
    let mut protected = Vec::new();
    let columns: [fn(i64) -> TaskImages; 4] = [
        |id| TaskImages { husband: Some(id), ..TaskImages::default() },
        |id| TaskImages { wife: Some(id), ..TaskImages::default() },
        |id| TaskImages { template: Some(id), ..TaskImages::default() },
        |id| TaskImages { result: Some(id), ..TaskImages::default() },
    ];
    for (i, column) in columns.iter().enumerate() {
        for status in ["pending", "processing"] {
            let path = format!("photos/{status}-{i}.jpg");
            let id = insert_image(&pool, Some(&store), &Image::expired(&path, 1).session("s")).await;
            insert_task(&pool, status, column(id), None).await;
            protected.push((id, path));
        }
    }
    // Finished tasks protect nothing.
    let free = insert_image(&pool, Some(&store), &Image::expired("photos/free.jpg", 1).session("s")).await;
    insert_task(&pool, "completed", TaskImages { husband: Some(free), ..TaskImages::default() }, Some(1)).await;
    insert_task(&pool, "failed", TaskImages { wife: Some(free), ..TaskImages::default() }, Some(1)).await;

    let engine = engine(&pool, &store, 3);
    for job in [CleanupJob::Expired, session("s")] {
        let record = run(&engine, &spec(job)).await;
        assert_eq!(record.skipped_count, 8, "{}", record.operation);
    }
    assert!(!image_exists(&pool, free).await);
    for (id, path) in protected {
        assert!(image_exists(&pool, id).await, "row of {path}");
        assert!(store.exists(&path), "file of {path}");
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn paths_outside_the_root_are_errors_and_nothing_outside_is_touched(pool: PgPool) {
    let store = Store::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.jpg");
    std::fs::write(&victim, b"keep").unwrap();
    let escapes = [
        victim.to_str().unwrap().to_owned(),
        format!("photos/../../{}", victim.strip_prefix("/").unwrap().display()),
        "../victim.jpg".to_owned(),
        "photos/a/../../../victim.jpg".to_owned(),
    ];
    let mut ids = Vec::new();
    for path in &escapes {
        ids.push(insert_image(&pool, None, &Image::expired(path, 1)).await);
    }
    let ok = insert_image(&pool, Some(&store), &Image::expired("photos/ok.jpg", 1)).await;
    let record = run(&engine(&pool, &store, 1000), &spec(CleanupJob::Expired)).await;

    assert_eq!((record.deleted_count, record.error_count), (1, 4));
    assert!(victim.exists());
    for id in ids {
        assert!(image_exists(&pool, id).await, "an escaping row stays");
    }
    assert!(!image_exists(&pool, ok).await, "the run went on past the bad items");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_symlinked_file_is_unlinked_itself_never_its_target(pool: PgPool) {
    let store = Store::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.jpg");
    std::fs::write(&target, b"keep").unwrap();
    symlink(&target, store.path("photos/link.jpg")).unwrap();
    let id = insert_image(&pool, None, &Image::expired("photos/link.jpg", 4)).await;
    let record = run(&engine(&pool, &store, 1000), &spec(CleanupJob::Expired)).await;

    assert_eq!((record.deleted_count, record.error_count), (1, 0));
    assert!(!image_exists(&pool, id).await);
    assert!(!store.exists("photos/link.jpg"), "the link is gone");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep", "its target is untouched");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_symlinked_directory_is_never_entered(pool: PgPool) {
    let store = Store::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.jpg"), b"keep").unwrap();
    std::fs::write(outside.path().join("orphan.jpg"), b"keep").unwrap();
    symlink(outside.path(), store.path("photos/linked")).unwrap();
    let id = insert_image(&pool, None, &Image::expired("photos/linked/x.jpg", 4)).await;
    let engine = engine(&pool, &store, 1000);

    let record = run(&engine, &spec(CleanupJob::Expired)).await;
    assert_eq!((record.deleted_count, record.error_count), (0, 1));
    let errors = record.errors.as_array().unwrap();
    assert_eq!(errors[0]["error"], "path goes through a symbolic link");
    assert_eq!(errors[0]["image_id"], id);
    assert!(image_exists(&pool, id).await, "its row stays");

    // The orphan sweep does not descend into it either: at most the link
    // itself goes.
    let record = run(&engine, &spec(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    assert!(outside.path().join("x.jpg").exists() && outside.path().join("orphan.jpg").exists());
    assert_eq!(record.result.unwrap()["files_scanned"], 1, "only the link itself was seen");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_missing_file_counts_as_deleted(pool: PgPool) {
    let store = Store::new();
    let id = insert_image(&pool, None, &Image::expired("photos/never-written.jpg", 33)).await;
    let record = run(&engine(&pool, &store, 1000), &spec(CleanupJob::Expired)).await;
    assert_eq!((record.deleted_count, record.deleted_bytes, record.error_count), (1, 33, 0));
    assert!(!image_exists(&pool, id).await);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_that_cannot_be_unlinked_keeps_its_row_and_the_run_goes_on(pool: PgPool) {
    let store = Store::new();
    // Tests run as root, so permission bits would not stop the unlink; a
    // directory where the file should be does.
    std::fs::create_dir_all(store.path("photos/dir.jpg/inner")).unwrap();
    let stuck = insert_image(&pool, None, &Image::expired("photos/dir.jpg", 5).session("s")).await;
    let before = insert_image(&pool, Some(&store), &Image::expired("photos/a.jpg", 1).session("s")).await;
    let after = insert_image(&pool, Some(&store), &Image::expired("photos/z.jpg", 1).session("s")).await;
    let record = run(&engine(&pool, &store, 1000), &spec(session("s"))).await;

    assert_eq!(record.status, "completed");
    assert_eq!((record.deleted_count, record.error_count), (2, 1));
    let error = &record.errors.as_array().unwrap()[0];
    assert_eq!((error["image_id"].as_i64(), error["path"].as_str()), (Some(stuck), Some("photos/dir.jpg")));
    assert_eq!(error["error"], "is a directory");
    assert!(image_exists(&pool, stuck).await && store.exists("photos/dir.jpg/inner"));
    assert!(!image_exists(&pool, before).await && !image_exists(&pool, after).await);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_missing_storage_root_fails_the_job_and_deletes_no_row(pool: PgPool) {
    let store = Store::new();
    let id = insert_image(&pool, None, &Image::expired("photos/a.jpg", 1)).await;
    let engine = janitor_workers::Engine::new(pool.clone(), store.path("not-there"), Default::default());
    let record = run(&engine, &spec(CleanupJob::Expired)).await;
    assert_eq!(record.status, "failed");
    assert!(record.last_error.unwrap().contains("cannot open storage root"));
    assert!(image_exists(&pool, id).await);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_missing_category_folder_refuses_the_orphan_sweep(pool: PgPool) {
    let store = Store::new();
    std::fs::remove_dir(store.path("templates")).unwrap();
    store.write_old("photos/orphan.jpg", 1);
    let record = run(&engine(&pool, &store, 1000), &spec(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    assert_eq!(record.status, "failed");
    assert!(record.last_error.unwrap().contains("templates"));
    assert!(store.exists("photos/orphan.jpg"));
}
