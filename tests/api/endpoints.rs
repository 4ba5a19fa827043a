//! Every admin endpoint on its happy path: the POSTs queue a job recorded
//! under the token's name, the GETs answer from Postgres, and `wait=true`
//! returns the finished result in the application's original shape.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::client::encode;
use crate::server::{accepted_job, Api, BASE, CRON, OPS};
use crate::support::{count_images, insert_image, insert_task, Image, TaskImages};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn every_post_queues_a_job_requested_by_the_token_and_get_job_returns_it(pool: PgPool) {
    let api = Api::start(pool).await;
    let cases = [
        ("/expired", "cleanup_expired_images", OPS),
        ("/session/logout-1", "cleanup_session", CRON),
        ("/old-results?days_old=7", "cleanup_old_results", OPS),
        ("/orphaned?dry_run=true", "cleanup_orphaned_files", OPS),
        ("/all?days_old=90", "cleanup_all", CRON),
    ];
    for (path, operation, (name, token)) in cases {
        let job_id = accepted_job(&api.post(path, Some(token)).await);
        let (op, status, requested_by): (String, String, Option<String>) =
            sqlx::query_as("SELECT operation, status, requested_by FROM job_results WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(api.pool())
                .await
                .unwrap_or_else(|e| panic!("{path}: no job_results row for {job_id}: {e}"));
        assert_eq!(
            (op.as_str(), status.as_str(), requested_by.as_deref()),
            (operation, "queued", Some(name)),
            "{path}"
        );

        // No worker runs, so the job is still queued when it is read back.
        let job = api.get(&format!("/jobs/{job_id}"), Some(token)).await;
        assert_eq!(job.status, 200, "{}", job.text());
        let job = job.json();
        assert_eq!((job["job_id"].as_str(), job["operation"].as_str()), (Some(&*job_id.to_string()), Some(operation)));
        assert_eq!((job["status"].as_str(), job["requested_by"].as_str()), (Some("queued"), Some(name)), "{job}");
    }
    let job = api.get("/jobs/logout-1", Some(OPS.1)).await;
    assert_eq!((job.status, job.json()["field"].as_str()), (422, Some("job_id")));
    assert_eq!(api.get(&format!("/jobs/{}", Uuid::new_v4()), Some(OPS.1)).await.status, 404);
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_job_list_pages_newest_first_without_skipping_or_repeating(pool: PgPool) {
    let api = Api::start(pool).await;
    for i in 0..7 {
        accepted_job(&api.post(&format!("/session/page-{i}"), Some(OPS.1)).await);
    }
    let expected: Vec<Uuid> =
        sqlx::query_scalar("SELECT job_id FROM job_results ORDER BY created_at DESC, job_id DESC")
            .fetch_all(api.pool())
            .await
            .unwrap();
    assert_eq!(expected.len(), 7);

    let (mut seen, mut pages, mut before) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let query = match &before {
            None => "/jobs?limit=3".to_owned(),
            Some(cursor) => format!("/jobs?limit=3&before={}", encode(cursor)),
        };
        let page = api.get(&query, Some(OPS.1)).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let jobs = page["jobs"].as_array().expect("jobs is an array");
        pages.push(jobs.len());
        seen.extend(jobs.iter().map(|j| j["job_id"].as_str().unwrap().parse::<Uuid>().unwrap()));
        match page["next_before"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "the cursor does not advance: {page}");
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(seen, expected, "newest first, each job exactly once");

    let filtered = api.get("/jobs?operation=cleanup_session&status=queued&limit=500", Some(OPS.1)).await.json();
    assert_eq!(filtered["jobs"].as_array().unwrap().len(), 7);
    assert_eq!(filtered["next_before"], Value::Null);
    let none = api.get("/jobs?operation=cleanup_all", Some(OPS.1)).await.json();
    assert_eq!(none["jobs"], serde_json::json!([]));
    for (query, field) in
        [("limit=0", "limit"), ("limit=501", "limit"), ("before=yesterday", "before"), ("status=done", "status")]
    {
        let refused = api.get(&format!("/jobs?{query}"), Some(OPS.1)).await;
        assert_eq!((refused.status, refused.json()["field"].as_str()), (422, Some(field)), "{query}");
    }
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn stats_answers_in_the_original_shape(pool: PgPool) {
    let api = Api::start(pool).await;
    insert_image(api.pool(), None, &Image::expired("photos/e1.jpg", 10)).await;
    insert_image(api.pool(), None, &Image::expired("photos/e2.jpg", 20)).await;
    insert_image(api.pool(), None, &Image::fresh("photos/f.jpg", 30)).await;
    let result = insert_image(api.pool(), None, &Image::permanent("results/r.jpg", 40)).await;
    insert_task(api.pool(), "completed", TaskImages { result: Some(result), ..Default::default() }, Some(45)).await;

    let stats = api.get("/stats", Some(OPS.1)).await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = stats.json();
    assert_eq!(stats["expired_images"], 2, "{stats}");
    assert_eq!(stats["temporary_images"], 3, "{stats}");
    assert_eq!(stats["old_task_results_30d"], 1, "{stats}");
    let checked = stats["last_checked"].as_str().expect("last_checked is a time");
    assert!(chrono::DateTime::parse_from_rfc3339(checked).is_ok(), "{checked}");
    assert!(api.jobs().await.is_empty(), "stats runs no job");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn wait_true_returns_the_finished_result_and_the_images_are_gone(pool: PgPool) {
    let api = Api::start(pool).await;
    let store = &api.env.store;
    insert_image(api.pool(), Some(store), &Image::fresh("photos/s/a.jpg", 1_000).session("s1")).await;
    insert_image(api.pool(), Some(store), &Image::permanent("results/s/b.jpg", 2_000).session("s1")).await;
    let other = insert_image(api.pool(), Some(store), &Image::fresh("photos/t/c.jpg", 5).session("s2")).await;
    let worker = api.env.worker(&[], &[]);

    let response = api.post("/session/s1?wait=true&timeout=30", Some(OPS.1)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let result = response.json();
    assert_eq!(result["operation"], "cleanup_session", "{result}");
    assert_eq!(result["session_id"], "s1");
    assert_eq!(result["status"], "completed");
    assert_eq!((result["deleted_count"].as_i64(), result["deleted_size_bytes"].as_i64()), (Some(2), Some(3_000)));
    assert!(result["deleted_size_mb"].is_number(), "{result}");
    assert_eq!((result["errors"].clone(), result["dry_run"].clone()), (serde_json::json!([]), Value::Bool(false)));
    assert!(!store.exists("photos/s/a.jpg") && !store.exists("results/s/b.jpg"), "the files are gone");
    assert_eq!(count_images(api.pool()).await, 1, "only the other session's image is left");
    assert!(crate::support::image_exists(api.pool(), other).await);

    // Every endpoint can wait; the expired sweep reports in the same shape.
    insert_image(api.pool(), Some(store), &Image::expired("photos/x/old.jpg", 7)).await;
    let expired = api.post("/expired?wait=1&timeout=30", Some(OPS.1)).await;
    assert_eq!(expired.status, 200, "{}", expired.text());
    let expired = expired.json();
    assert_eq!(
        (expired["operation"].as_str(), expired["deleted_count"].as_i64()),
        (Some("cleanup_expired_images"), Some(1))
    );
    assert!(!store.exists("photos/x/old.jpg"));
    let status_url = format!("{BASE}/jobs/{}", expired["job_id"].as_str().unwrap());
    let again = crate::client::request(api.addr, "GET", &status_url, Some(OPS.1)).await.json();
    assert_eq!((again["status"].as_str(), again["deleted_count"].as_i64()), (Some("completed"), Some(1)));

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}
