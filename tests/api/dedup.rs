//! Session dedup through the API: while a session's cleanup is queued, more
//! POSTs for that session return the same job; once it has finished, a new
//! POST starts a new one.

use std::time::Duration;

use futures::future::join_all;
use sqlx::PgPool;
use uuid::Uuid;

use crate::server::{accepted_job, Api, CRON, OPS};

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn posts_for_a_queued_session_return_the_same_job(pool: PgPool) {
    let api = Api::start(pool).await;
    let first = api.post("/session/s1", Some(OPS.1)).await;
    let job_id = accepted_job(&first);
    assert_eq!(first.json()["deduplicated"], false);
    for token in [OPS.1, CRON.1, OPS.1] {
        let again = api.post("/session/s1", Some(token)).await;
        assert_eq!(accepted_job(&again), job_id, "the queued job is returned");
        assert_eq!(again.json()["deduplicated"], true);
    }
    // A dry run is another job, and so is another session.
    let dry = accepted_job(&api.post("/session/s1?dry_run=true", Some(OPS.1)).await);
    let other = accepted_job(&api.post("/session/s2", Some(OPS.1)).await);
    assert!(dry != job_id && other != job_id && dry != other);
    assert_eq!(api.jobs().await.len(), 3);

    // Once the job has finished, the same session runs again.
    let worker = api.env.worker(&[], &[]);
    api.env.finished(job_id, Duration::from_secs(30)).await;
    let later = accepted_job(&api.post("/session/s1", Some(OPS.1)).await);
    assert_ne!(later, job_id, "a finished job is not reused");
    api.env.finished(later, Duration::from_secs(30)).await;
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn concurrent_posts_for_a_queued_session_return_the_same_job(pool: PgPool) {
    let api = Api::start(pool).await;
    // No worker: every job stays queued, so every POST of a session must
    // get that session's one job, however the requests interleave.
    let rounds = 10;
    let per_session = 16;
    for round in 0..rounds {
        let path = format!("/session/race-{round}");
        let responses = join_all((0..per_session).map(|_| api.post(&path, Some(OPS.1)))).await;
        let ids: std::collections::BTreeSet<Uuid> = responses.iter().map(accepted_job).collect();
        assert_eq!(ids.len(), 1, "{path}: {per_session} concurrent POSTs created {} jobs: {ids:?}", ids.len());
    }
    assert_eq!(api.jobs().await.len(), rounds, "one job per session");
    api.finish().await;
}
