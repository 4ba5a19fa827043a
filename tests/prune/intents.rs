//! A finished job's left-over unlink intents list files whose rows are
//! already deleted: the prune unlinks them through the storage wall (but
//! not a file a row refers to again) and only then deletes the intent.

use sqlx::PgPool;

use crate::harness::Env;
use crate::seed::{self, counts, pruned};
use crate::support::{insert_image, Image};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn left_over_intents_are_carried_out_before_they_go(pool: PgPool) {
    let env = Env::new(pool);
    let (pool, store) = (&env.pool, &env.store);
    for path in
        ["photos/a/1.jpg", "photos/a/2.jpg", "photos/a/5.jpg", "photos/b/4.jpg", "photos/c/6.jpg", "photos/d/7.jpg"]
    {
        store.write(path, 8);
    }
    std::fs::create_dir_all(store.path("photos/b/dir.jpg")).unwrap();
    // A job that failed after committing two batches whose files it never
    // unlinked. Since then, uploads reused two of the paths: one under the
    // same spelling, one under another (`./photos/a/5.jpg`).
    let failed = seed::job(pool, "cleanup_expired_images", "failed", Some(0.01)).await;
    seed::intent(pool, failed, 0, &["photos/a/1.jpg", "photos/a/2.jpg", "photos/a/3.jpg", "photos/a/5.jpg"]).await;
    seed::intent(pool, failed, 1, &["photos/b/4.jpg", "photos/b/dir.jpg"]).await;
    insert_image(pool, None, &Image::permanent("photos/a/2.jpg", 8)).await;
    insert_image(pool, None, &Image::permanent("./photos/a/5.jpg", 8)).await;
    // A job still running: its intent is its own business.
    let running = seed::job(pool, "cleanup_session", "running", None).await;
    seed::intent(pool, running, 0, &["photos/c/6.jpg"]).await;
    // A job whose row is gone altogether.
    let forgotten = uuid::Uuid::new_v4();
    seed::intent(pool, forgotten, 3, &["photos/d/7.jpg"]).await;

    // One item could not be unlinked (a directory stands where the file was).
    let result = seed::prune(&env, &[], 3).await;

    assert_eq!(pruned(&result), counts(&[("unlink_intents", 3)]));
    assert_eq!(result["skipped_count"], 2, "two files a row refers to again were kept");
    assert_eq!(result["error_count"], 1);
    let error = &result["errors"][0];
    assert_eq!(
        (error["path"].as_str(), error["operation"].as_str()),
        (Some("photos/b/dir.jpg"), Some("prune_records"))
    );
    for gone in ["photos/a/1.jpg", "photos/b/4.jpg", "photos/d/7.jpg"] {
        assert!(!store.exists(gone), "{gone} was listed by a finished job's intent and should be unlinked");
    }
    for kept in ["photos/a/2.jpg", "photos/a/5.jpg"] {
        assert!(store.exists(kept), "{kept}: a row refers to it again; it must stay");
    }
    assert!(store.exists("photos/c/6.jpg"), "a running job's intent is not touched");
    assert_eq!(seed::intent_batches(pool, failed).await, Vec::<i64>::new());
    assert_eq!(seed::intent_batches(pool, forgotten).await, Vec::<i64>::new());
    assert_eq!(seed::intent_batches(pool, running).await, [0]);
    env.cleanup_keys().await;
}
