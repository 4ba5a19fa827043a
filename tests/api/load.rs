//! A bounded load on loopback: many session POSTs over concurrent
//! keep-alive connections while a worker runs the jobs. Every request must
//! be accepted and audited, and dedup must hold under concurrency.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use sqlx::PgPool;
use uuid::Uuid;

use crate::client::Conn;
use crate::harness::wait_until;
use crate::server::{Api, BASE, OPS};

const REQUESTS: usize = 2_000;
const CONNECTIONS: usize = 50;
/// Every tenth request goes to one of these few sessions, so repeats of a
/// session arrive concurrently, the others are distinct.
const HOT_SESSIONS: usize = 20;

fn session_of(i: usize) -> String {
    if i % 10 == 0 {
        format!("hot-{}", (i / 10) % HOT_SESSIONS)
    } else {
        format!("load-{i}")
    }
}

/// (session, status, job_id, deduplicated) of each request.
type Outcome = (String, u16, Option<Uuid>, bool);

/// Runs the requests over `CONNECTIONS` keep-alive connections, each taking
/// the next request number until all are sent.
async fn drive(api: &Api) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let connections = (0..CONNECTIONS).map(|_| {
        let next = next.clone();
        let addr = api.addr;
        async move {
            let mut conn = Conn::connect(addr).await.expect("connect");
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    return outcomes;
                }
                let session = session_of(i);
                let response = conn.send("POST", &format!("{BASE}/session/{session}"), Some(OPS.1)).await;
                let response = response.unwrap_or_else(|e| panic!("request {i}: {e}"));
                let (job_id, dedup) = match response.status {
                    202 => {
                        let body = response.json();
                        (body["job_id"].as_str().and_then(|id| id.parse().ok()), body["deduplicated"] == true)
                    }
                    _ => (None, false),
                };
                outcomes.push((session, response.status, job_id, dedup));
            }
        }
    });
    join_all(connections).await.into_iter().flatten().collect()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_bounded_load_of_session_posts_is_all_accepted_audited_and_deduplicated(pool: PgPool) {
    let api = Api::start(pool).await;
    let worker = api.env.worker(&[], &[]);
    let started = Instant::now();
    let outcomes = drive(&api).await;
    let elapsed = started.elapsed();
    eprintln!(
        "api load: {REQUESTS} session POSTs over {CONNECTIONS} keep-alive connections in {:.2} s = {:.0} requests/s \
         (in-process server on 2 runtime threads, one token, a janitor worker running, {} cores)",
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    assert_eq!(outcomes.len(), REQUESTS);
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.1 != 202 || o.2.is_none()).collect();
    assert!(
        refused.is_empty(),
        "{} requests were not accepted, e.g. {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );

    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE path LIKE $1 AND status = 202")
        .bind(format!("{BASE}/session/%"))
        .fetch_one(api.pool())
        .await
        .unwrap();
    assert_eq!(audited, REQUESTS as i64, "one audit row per request");

    // The job ids answered are exactly the job rows, and only the requests
    // that were not deduplicated created one.
    let answered: BTreeSet<Uuid> = outcomes.iter().filter_map(|o| o.2).collect();
    let rows: Vec<JobRow> = sqlx::query_as(
        "SELECT job_id, params->>'session_id', created_at, finished_at FROM job_results
         WHERE operation = 'cleanup_session' ORDER BY created_at, job_id",
    )
    .fetch_all(api.pool())
    .await
    .unwrap();
    let recorded: BTreeSet<Uuid> = rows.iter().map(|r| r.0).collect();
    assert_eq!(answered, recorded, "every answered job has a row, and every row was answered");
    assert_eq!(outcomes.iter().filter(|o| !o.3).count(), rows.len(), "each new job was answered once as new");
    let distinct: BTreeSet<&str> = outcomes.iter().map(|o| o.0.as_str()).collect();
    let by_session = jobs_by_session(&rows);
    assert_eq!(by_session.keys().copied().collect::<BTreeSet<_>>(), distinct, "a job for each distinct session");

    // A session has a second job only if its first had finished by then:
    // two jobs of one session are never queued or running at once.
    for (session, jobs) in &by_session {
        for pair in jobs.windows(2) {
            let ((first, _, first_done), (second, second_created, _)) = (pair[0], pair[1]);
            assert!(
                first_done.is_some_and(|done| done <= second_created),
                "session {session}: job {second} was created while job {first} was still live"
            );
        }
    }
    let repeated = by_session.values().filter(|jobs| jobs.len() > 1).count();
    eprintln!(
        "api load: {} jobs for {} distinct sessions ({repeated} sessions ran again after finishing)",
        rows.len(),
        distinct.len()
    );

    let pool = api.pool().clone();
    wait_until("the worker has run every job", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status <> 'completed'")
                .fetch_one(&pool)
                .await
                .unwrap();
            left == 0
        }
    })
    .await;
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    api.finish().await;
}

/// (job_id, session_id, created_at, finished_at)
type JobRow = (Uuid, String, DateTime<Utc>, Option<DateTime<Utc>>);
/// (job_id, created_at, finished_at)
type JobSpan = (Uuid, DateTime<Utc>, Option<DateTime<Utc>>);

fn jobs_by_session(rows: &[JobRow]) -> BTreeMap<&str, Vec<JobSpan>> {
    let mut by_session: BTreeMap<&str, Vec<JobSpan>> = BTreeMap::new();
    for (job_id, session, created, finished) in rows {
        by_session.entry(session.as_str()).or_default().push((*job_id, *created, *finished));
    }
    by_session
}
