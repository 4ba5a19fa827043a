//! `/metrics` moves when a job runs: it is read from Postgres and Redis at
//! scrape time, so a job finished by a separate worker process shows up.

use std::time::Duration;

use sqlx::PgPool;

use crate::server::{Api, OPS};
use crate::support::{insert_image, Image};

/// The value of one sample (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(api: &Api) -> String {
    let response = api.get_root("/metrics").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    response.text()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn counters_move_when_a_job_completes(pool: PgPool) {
    let api = Api::start(pool).await;
    let completed = r#"janitor_jobs_completed_total{operation="cleanup_session"}"#;
    let deleted = r#"janitor_items_deleted_total{operation="cleanup_session"}"#;
    let freed = r#"janitor_bytes_freed_total{operation="cleanup_session"}"#;
    let before = scrape(&api).await;
    let completed_before = sample(&before, completed).unwrap_or(0.0);
    let deleted_before = sample(&before, deleted).unwrap_or(0.0);

    for i in 0..3 {
        let image = Image::fresh(&format!("photos/m/{i}.jpg"), 100).session("metrics-session");
        insert_image(api.pool(), Some(&api.env.store), &image).await;
    }
    let worker = api.env.worker(&[], &[]);
    let response = api.post("/session/metrics-session?wait=true&timeout=30", Some(OPS.1)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["deleted_count"], 3);

    let after = scrape(&api).await;
    assert_eq!(sample(&after, completed), Some(completed_before + 1.0), "{after}");
    assert_eq!(sample(&after, deleted), Some(deleted_before + 3.0), "{after}");
    assert_eq!(sample(&after, freed), Some(300.0), "{after}");
    for lane in ["session", "bulk"] {
        let depth = sample(&after, &format!("janitor_queue_depth{{lane=\"{lane}\"}}"));
        assert!(depth.is_some(), "queue depth of the {lane} lane: {after}");
    }
    let batches = sample(&after, r#"janitor_batch_duration_seconds_bucket{le="+Inf"}"#);
    assert!(batches.is_some_and(|n| n >= 1.0), "the job's batches are in the histogram: {after}");
    assert!(after.contains("janitor_batch_duration_seconds_count "), "{after}");

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}
