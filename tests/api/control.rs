//! Steering jobs over HTTP: cancel, retry, dead letters, with the same
//! token, audit and rate limits as the rest of the API.

use janitor_workers::layout::{Lane, Layout};
use redis::AsyncCommands as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::server::{accepted_job, Api, ApiConfig, OPS, VIEWER};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_queued_job_is_cancelled_and_retried_over_http(pool: PgPool) {
    let api = Api::start(pool).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);

    let cancelled = api.post(&format!("/jobs/{job}/cancel"), Some(OPS.1)).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(api.get(&format!("/jobs/{job}"), Some(OPS.1)).await.json()["status"], "cancelled");
    let again = api.post(&format!("/jobs/{job}/cancel"), Some(OPS.1)).await;
    assert_eq!(again.status, 409, "{}", again.text());

    let retried = api.post(&format!("/jobs/{job}/retry"), Some(OPS.1)).await;
    assert_eq!(retried.status, 202, "{}", retried.text());
    assert_eq!(retried.json()["status"], "queued");
    assert_eq!(api.get(&format!("/jobs/{job}"), Some(OPS.1)).await.json()["status"], "queued");
    let twice = api.post(&format!("/jobs/{job}/retry"), Some(OPS.1)).await;
    assert_eq!(twice.status, 409, "a queued job is not retried: {}", twice.text());

    assert_eq!(api.post(&format!("/jobs/{}/cancel", Uuid::new_v4()), Some(OPS.1)).await.status, 404);
    assert_eq!(api.post("/jobs/nope/retry", Some(OPS.1)).await.json()["field"], "job_id");
    assert_eq!(api.post(&format!("/jobs/{job}/cancel"), None).await.status, 401, "the token is required");
    let audited: Vec<(String, i32)> = api
        .audit_rows()
        .await
        .into_iter()
        .filter(|row| row.2.ends_with("/cancel") || row.2.ends_with("/retry"))
        .map(|row| (row.2, row.4))
        .collect();
    assert_eq!(audited.len(), 7, "every control request is audited: {audited:?}");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn dead_letters_are_listed_and_discarded_over_http(pool: PgPool) {
    let api = Api::start(pool).await;
    let dead = Layout::new(&api.env.prefix).dead(Lane::Session);
    let mut redis = api.env.redis().await;
    let job = Uuid::new_v4();
    let payload = format!(r#"{{"job_id":"{job}","op":"session","session_id":"s"}}"#);
    let entry: String = redis
        .xadd(&dead, "*", &[("job", payload.as_str()), ("reason", "failed 5 times"), ("attempts", "5")])
        .await
        .unwrap();

    let listed = api.get("/dead", Some(OPS.1)).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let letters = listed.json()["dead_letters"].clone();
    assert_eq!(letters[0]["entry_id"], entry.as_str(), "{letters}");
    assert_eq!((&letters[0]["job_id"], &letters[0]["reason"]), (&job.to_string().into(), &"failed 5 times".into()));
    assert_eq!(letters[0]["operation"], "cleanup_session");

    let discarded = api.post(&format!("/dead/{entry}/discard"), Some(OPS.1)).await;
    assert_eq!((discarded.status, discarded.json()["discarded"].as_u64()), (200, Some(1)), "{}", discarded.text());
    assert_eq!(api.get("/dead", Some(OPS.1)).await.json()["dead_letters"], serde_json::json!([]));
    assert_eq!(api.post(&format!("/dead/{entry}/discard"), Some(OPS.1)).await.status, 404);
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn control_requests_have_their_own_rate_limit(pool: PgPool) {
    let config = ApiConfig { rate_limits: "control=2/m".to_owned(), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);
    assert_eq!(api.post(&format!("/jobs/{job}/cancel"), Some(OPS.1)).await.status, 200);
    assert_eq!(api.post(&format!("/jobs/{job}/retry"), Some(OPS.1)).await.status, 202);
    let refused = api.post(&format!("/jobs/{job}/cancel"), Some(OPS.1)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        api.get(&format!("/jobs/{job}"), Some(OPS.1)).await.json()["status"],
        "queued",
        "the refused cancel did nothing"
    );
    api.finish().await;
}

/// A token configured as `name:ro=token` reads everything and changes
/// nothing: every POST is 403, audited under its name, and enqueues nothing.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_read_only_token_reads_but_cannot_cancel_or_enqueue(pool: PgPool) {
    let config = ApiConfig { tokens: Some(vec![OPS, VIEWER]), ..ApiConfig::default() };
    let api = Api::with(pool, config).await;
    let job = accepted_job(&api.post("/expired", Some(OPS.1)).await);

    let listed = api.get("/jobs", Some(VIEWER.1)).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["jobs"][0]["job_id"], job.to_string().as_str());
    assert_eq!(api.get(&format!("/jobs/{job}"), Some(VIEWER.1)).await.status, 200);

    let cancel = api.post(&format!("/jobs/{job}/cancel"), Some(VIEWER.1)).await;
    assert_eq!(cancel.status, 403, "{}", cancel.text());
    assert!(cancel.json()["error"].as_str().unwrap().contains("read-only"), "{}", cancel.text());
    let enqueue = api.post("/old-results?days_old=30", Some(VIEWER.1)).await;
    assert_eq!(enqueue.status, 403, "{}", enqueue.text());

    let jobs = api.jobs().await;
    assert_eq!(jobs.len(), 1, "nothing was enqueued: {jobs:?}");
    assert_eq!((jobs[0].0, jobs[0].2.as_str()), (job, "queued"), "the job was not cancelled");
    let refused: Vec<(Option<String>, String, i32, String)> =
        api.audit_rows().await.into_iter().filter(|row| row.4 == 403).map(|row| (row.0, row.2, row.4, row.5)).collect();
    let viewer = Some("viewer".to_owned());
    assert_eq!(
        refused,
        [
            (viewer.clone(), format!("/api/v1/admin/cleanup/jobs/{job}/cancel"), 403, "forbidden".to_owned()),
            (viewer, "/api/v1/admin/cleanup/old-results".to_owned(), 403, "forbidden".to_owned()),
        ],
        "each refusal is audited under the token's name"
    );
    api.finish().await;
}
