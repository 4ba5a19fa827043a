//! `janitor restore` behind the wall: it writes nothing through a symlinked
//! folder, reads nothing through a symlinked trash, and never overwrites a
//! file that took a quarantined file's place.

use std::fs;
use std::os::unix::fs::symlink;

use sqlx::PgPool;
use uuid::Uuid;

use crate::binary::Janitor;
use crate::support::Store;

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn restore_writes_nothing_through_a_symlinked_category_folder(pool: PgPool) {
    let store = Store::new();
    let job_id = Uuid::new_v4().to_string();
    store.write(&format!(".janitor-trash/{job_id}/photos/a/x.jpg"), 3);
    // Since the sweep, `photos/a` became a symlink to a folder elsewhere.
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), store.path("photos/a")).unwrap();

    let report = Janitor::new(&pool, &store).json(&["restore", &job_id, "--json"], 3).await;
    assert!(!outside.path().join("x.jpg").exists(), "nothing was written outside the root");
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/a/x.jpg")), "left in the trash");
    assert_eq!(report["restored"], 0);
    assert_eq!(report["conflicts"][0][0], "photos/a/x.jpg");
    let why = report["conflicts"][0][1].as_str().unwrap();
    assert!(why.contains("symbolic link"), "{why}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn restore_never_overwrites_a_newer_file(pool: PgPool) {
    let store = Store::new();
    let job_id = Uuid::new_v4().to_string();
    store.write(&format!(".janitor-trash/{job_id}/photos/a/x.jpg"), 3);
    store.write(&format!(".janitor-trash/{job_id}/photos/a/y.jpg"), 3);
    // The app uploaded a new file at the first one's path.
    store.write("photos/a/x.jpg", 5);

    let report = Janitor::new(&pool, &store).json(&["restore", &job_id, "--json"], 3).await;
    assert_eq!(report["restored"], 1);
    assert_eq!(report["conflicts"][0][0], "photos/a/x.jpg");
    assert_eq!(fs::metadata(store.path("photos/a/x.jpg")).unwrap().len(), 5, "the newer file is intact");
    let trashed = store.path(&format!(".janitor-trash/{job_id}/photos/a/x.jpg"));
    assert_eq!(fs::metadata(trashed).unwrap().len(), 3, "the quarantined one stays in the trash");
    assert!(store.exists("photos/a/y.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn restore_refuses_a_symlinked_trash(pool: PgPool) {
    let store = Store::new();
    let job_id = Uuid::new_v4().to_string();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join(format!("{job_id}/photos/a"))).unwrap();
    fs::write(outside.path().join(format!("{job_id}/photos/a/x.jpg")), b"elsewhere").unwrap();
    symlink(outside.path(), store.path(".janitor-trash")).unwrap();

    let output = Janitor::new(&pool, &store).run(&["restore", &job_id]).await.expect_code(1);
    assert!(output.stderr.contains("symbolic link"), "{}", output.stderr);
    assert!(outside.path().join(format!("{job_id}/photos/a/x.jpg")).exists());
    assert!(!store.exists("photos/a/x.jpg"), "nothing was taken in from outside the root");
}

/// The API's guards hold on the command line too: a sweep that has not
/// ended may still move files into its folder, so it is not restored.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn restore_refuses_a_sweep_that_is_still_running(pool: PgPool) {
    let store = Store::new();
    let job_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, queue) VALUES ($1, 'cleanup_orphaned_files', 'running', 'q')",
    )
    .bind(job_id)
    .execute(&pool)
    .await
    .unwrap();
    store.write(&format!(".janitor-trash/{job_id}/photos/a/x.jpg"), 3);

    let output = Janitor::new(&pool, &store).run(&["restore", &job_id.to_string()]).await.expect_code(1);
    assert!(output.stderr.contains("is still running"), "{}", output.stderr);
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/a/x.jpg")) && !store.exists("photos/a/x.jpg"));
}

/// A sweep that stopped between deciding a batch and finishing it resumes
/// that batch on retry, without walking again, and would take restored
/// files back to the trash: its quarantine is not restored until then.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn restore_refuses_a_sweep_stopped_in_the_middle_of_a_batch(pool: PgPool) {
    let store = Store::new();
    let job_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, queue, checkpoint)
         VALUES ($1, 'cleanup_orphaned_files', 'failed', 'q',
                 '{\"pending\": {\"files\": [[\"photos/a/x.jpg\", 3], [\"photos/a/y.jpg\", 3]], \"cursor\": \"photos/a/y.jpg\", \"scanned\": 2}}')",
    )
    .bind(job_id)
    .execute(&pool)
    .await
    .unwrap();
    store.write(&format!(".janitor-trash/{job_id}/photos/a/x.jpg"), 3);

    let output = Janitor::new(&pool, &store).run(&["restore", &job_id.to_string()]).await.expect_code(1);
    assert!(output.stderr.contains("in the middle of a batch of 2 files"), "{}", output.stderr);
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/a/x.jpg")) && !store.exists("photos/a/x.jpg"));
}
