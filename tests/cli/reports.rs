//! `janitor stats` and `janitor results`, in JSON and as text.

use chrono::{Duration, Utc};
use sqlx::PgPool;

use crate::binary::{timestamp, Janitor};
use crate::support::{insert_image, insert_task, Image, Store, TaskImages};

/// Seeds two expired and one fresh temporary image, and two permanent
/// result images: one of a task finished 40 days ago, one of 10 days ago.
async fn seed_for_stats(pool: &PgPool) {
    insert_image(pool, None, &Image::expired("photos/e1.jpg", 100)).await;
    insert_image(pool, None, &Image::expired("photos/e2.jpg", 200)).await;
    insert_image(pool, None, &Image::fresh("photos/fresh.jpg", 300)).await;
    for (path, days_ago) in [("results/old.jpg", 40), ("results/recent.jpg", 10)] {
        let image = insert_image(pool, None, &Image::permanent(path, 400)).await;
        let images = TaskImages { result: Some(image), ..TaskImages::default() };
        insert_task(pool, "completed", images, Some(days_ago)).await;
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn stats_counts_what_could_be_cleaned(pool: PgPool) {
    seed_for_stats(&pool).await;
    let store = Store::new();
    let janitor = Janitor::new(&pool, &store);

    let stats = janitor.json(&["stats", "--json"], 0).await;

    assert_eq!(stats["expired_images"], 2);
    assert_eq!(stats["temporary_images"], 3);
    assert_eq!(stats["old_task_results_30d"], 1);
    let age = Utc::now() - timestamp(&stats, "last_checked");
    assert!(age.abs() < Duration::minutes(5), "last_checked is now: {stats}");

    let text = janitor.run(&["stats"]).await.expect_code(0).stdout;
    assert!(text.contains("cleanup statistics at"), "{text}");
    assert!(text.contains("expired temporary images: 2"), "{text}");
    assert!(text.contains("task results > 30 days:   1"), "{text}");
}

/// Runs a session cleanup and then an expired dry run; returns their job ids.
async fn two_jobs(pool: &PgPool, janitor: &Janitor, store: &Store) -> (String, String) {
    insert_image(pool, Some(store), &Image::fresh("photos/s1.jpg", 10).session("s1")).await;
    insert_image(pool, Some(store), &Image::expired("photos/e.jpg", 10)).await;
    let session = janitor.json(&["run", "session", "s1", "--json"], 0).await;
    let dry = janitor.json(&["run", "expired", "--dry-run", "--json"], 0).await;
    let id = |result: &serde_json::Value| result["job_id"].as_str().expect("job id").to_owned();
    (id(&session), id(&dry))
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn results_lists_jobs_newest_first_with_their_params(pool: PgPool) {
    let store = Store::new();
    let janitor = Janitor::new(&pool, &store);
    let (session_job, dry_job) = two_jobs(&pool, &janitor, &store).await;

    let listed = janitor.json(&["results", "--limit", "5", "--json"], 0).await;
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["job_id"], dry_job.as_str(), "newest first");
    assert_eq!(listed[0]["dry_run"], true);
    assert_eq!(listed[1]["job_id"], session_job.as_str());
    assert_eq!(listed[1]["operation"], "cleanup_session");
    assert_eq!(listed[1]["session_id"], "s1");
    assert_eq!(listed[1]["deleted_count"], 1);

    let limited = janitor.json(&["results", "--limit", "1", "--json"], 0).await;
    let limited = limited.as_array().expect("a JSON array");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["job_id"], dry_job.as_str());
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn results_of_one_job_prints_its_object(pool: PgPool) {
    let store = Store::new();
    let janitor = Janitor::new(&pool, &store);
    let (session_job, _) = two_jobs(&pool, &janitor, &store).await;

    let one = janitor.json(&["results", &session_job, "--json"], 0).await;
    assert!(one.is_object(), "{one}");
    assert_eq!(one["job_id"], session_job.as_str());
    assert_eq!(one["session_id"], "s1");
    assert_eq!(one["status"], "completed");

    let unknown = uuid::Uuid::new_v4().to_string();
    let missing = janitor.run(&["results", &unknown]).await.expect_code(1);
    assert!(missing.stderr.contains(&format!("no job {unknown} is recorded")), "{missing:?}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn results_as_text_show_the_jobs(pool: PgPool) {
    let store = Store::new();
    let janitor = Janitor::new(&pool, &store);
    let (session_job, dry_job) = two_jobs(&pool, &janitor, &store).await;

    let table = janitor.run(&["results"]).await.expect_code(0).stdout;
    assert!(table.starts_with("JOB ID"), "{table}");
    let session_line = table.lines().find(|l| l.contains(&session_job)).expect("session row");
    assert!(session_line.contains("cleanup_session") && session_line.contains("completed"));
    let dry_line = table.lines().find(|l| l.contains(&dry_job)).expect("dry run row");
    assert!(dry_line.contains("cleanup_expired_images*"), "{table}");
    assert!(table.contains("(* dry run)"), "{table}");

    let one = janitor.run(&["results", &session_job]).await.expect_code(0).stdout;
    assert!(one.contains("cleanup_session completed"), "{one}");
    assert!(one.contains(&format!("job id:   {session_job}")), "{one}");
    assert!(one.contains("session:  s1"), "{one}");
    assert!(one.contains("deleted: 1"), "{one}");
}
