//! The safety switches on the command line: the orphan ratio guard, the
//! quarantine with `janitor restore`, and `--limit`.

use sqlx::PgPool;

use crate::binary::Janitor;
use crate::support::{count_images, insert_image, seed_expired, Image, Store};

/// A grace period short enough to wait out in a test.
const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn orphans_go_to_quarantine_and_restore_puts_them_back(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::permanent("templates/keep.png", 1)).await;
    store.write("photos/a/orphan.jpg", 3);
    store.wait_until_older(&["photos/a/orphan.jpg"], GRACE).await;
    let janitor = Janitor::new(&pool, &store);

    // One orphan in two files is far past the default 20%: refused, untouched.
    let refused = janitor.run(&["run", "orphaned", "--json", "--min-age", "1s", "--min-grace", "1s"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stdout.contains("refusing: 50% of 2 files look orphaned"), "{}", refused.stdout);
    assert!(store.exists("photos/a/orphan.jpg"));

    let sweep = ["run", "orphaned", "--max-orphan-ratio", "1", "--json", "--min-age", "1s", "--min-grace", "1s"];
    let result = janitor.json(&sweep, 0).await;
    assert_eq!(result["deleted_count"], 1);
    let job_id = result["job_id"].as_str().unwrap().to_owned();
    assert!(!store.exists("photos/a/orphan.jpg"));
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/a/orphan.jpg")));

    let restored = janitor.json(&["restore", &job_id, "--json"], 0).await;
    assert_eq!(restored["restored"], 1);
    assert!(store.exists("photos/a/orphan.jpg"));
    let unknown = janitor.run(&["restore", "00000000-0000-4000-8000-000000000000"]).await;
    assert_eq!(unknown.code, 1, "restoring a job without trash is an error");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn limit_bounds_one_run(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 9, 1).await;
    let janitor = Janitor::new(&pool, &store);
    let result = janitor.json(&["run", "expired", "--limit", "4", "--json"], 0).await;
    assert_eq!((result["deleted_count"].as_i64(), result["limit"].as_i64()), (Some(4), Some(4)));
    assert_eq!(count_images(&pool).await, 5);
    let bad = janitor.run(&["run", "expired", "--limit", "0"]).await;
    assert_eq!(bad.code, 2);
}
