//! A standing adversary, in the spirit of Jepsen: a simulated application
//! uploads, creates tasks, flips their statuses in every direction, shares
//! result images, logs sessions out and drops litter, while two real
//! `janitor worker` processes clean the same database and storage root,
//! and faults land at seeded moments (kill -9, SIGTERM, SIGSTOP past the
//! lease, database sessions terminated, Redis restarted). After every
//! round the faults stop, the queue drains, and an oracle checks the
//! invariants against the simulator's own record of what it committed.
//!
//! `JANITOR_CHAOS_SEED` replays a run's choices (timing still varies);
//! `JANITOR_CHAOS_SECONDS` sets its length (default: two rounds, 40 s);
//! `JANITOR_CHAOS_WITHOUT` leaves oddities out, to look past a known hole.
//! Every failure message carries the command that replays it.
//!
//! Layout: `plan` (seed, rounds), `world` (database, store, Redis, triggers
//! the oracle reads), `fleet` (the workers), `model` (what the simulator
//! committed), `uploads`, `tasks`, `litter` (the simulator's actors),
//! `driver` (enqueues; the quarantine monitor), `faults`, `files` (store,
//! quarantine, sentinel), `facts` and `oracle` (the checks).

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod driver;
mod facts;
mod faults;
mod files;
mod fleet;
mod litter;
mod model;
mod oracle;
mod plan;
mod tasks;
mod uploads;
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::oracle::Report;
use crate::plan::{fork, Plan, Rng};
use crate::world::{World, WORKER_APP};

/// How long the queue may take to drain after a round before the
/// unfinished jobs count as stuck.
const DRAIN: Duration = Duration::from_secs(240);

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn janitor_keeps_its_invariants_under_load_and_faults(pool: PgPool) {
    let plan = Plan::from_env();
    eprintln!(
        "chaos: seed {} for {} s{}\n{}",
        plan.seed,
        plan.seconds,
        if plan.replayed { " (replayed)" } else { "" },
        plan.replay()
    );
    let mut rng = plan.rng();
    let world = Arc::new(World::new(pool, plan.clone(), &mut rng).await);
    let watching = CancellationToken::new();
    let monitor = tokio::spawn(driver::monitor(Arc::clone(&world), watching.clone()));
    let rounds = plan.rounds();
    let mut failed = None;
    let mut coverage = (0, 0);
    for (n, length) in rounds.iter().enumerate() {
        let started = Instant::now();
        run_round(&world, &mut rng, *length).await;
        let drained = drain(&world).await;
        let report = oracle::check(&world, drained).await;
        eprintln!("{}", summary(&world, &report, n + 1, rounds.len(), started.elapsed()).await);
        coverage = report.coverage;
        if !report.is_clean() {
            failed = Some((n + 1, report));
            break;
        }
    }
    if failed.is_none() && plan.seconds >= 20 && (coverage.0 == 0 || coverage.1 == 0) {
        let mut report = Report::default();
        let (rows, orphans) = coverage;
        report.add(
            oracle::H,
            format!(
                "the run deleted {rows} rows and quarantined {orphans} orphans: it exercised nothing there \
                 (are the jobs refused, or were the workers' settings renamed?)"
            ),
        );
        failed = Some((rounds.len(), report));
    }
    watching.cancel();
    monitor.await.expect("the quarantine monitor ends cleanly");
    world.fleet.lock().await.shutdown().await;
    if let Some((round, report)) = failed {
        panic!(
            "chaos: round {round} broke {} invariant(s) (seed {}):{}\n{}\n",
            report.violations.len(),
            plan.seed,
            report.render(25),
            plan.replay()
        );
    }
}

/// One round: the simulator, the enqueues and the faults for `length`
/// (load, not a wait for a condition), then everything is told to stop.
async fn run_round(world: &Arc<World>, rng: &mut Rng, length: Duration) {
    let stop = CancellationToken::new();
    let actors: Vec<(&str, JoinHandle<()>)> = vec![
        ("uploader 1", tokio::spawn(uploads::run(Arc::clone(world), fork(rng), stop.clone()))),
        ("uploader 2", tokio::spawn(uploads::run(Arc::clone(world), fork(rng), stop.clone()))),
        ("task maker", tokio::spawn(tasks::create(Arc::clone(world), fork(rng), stop.clone()))),
        ("flipper", tokio::spawn(tasks::flip(Arc::clone(world), fork(rng), stop.clone()))),
        ("litter", tokio::spawn(litter::run(Arc::clone(world), fork(rng), stop.clone()))),
        ("operator", tokio::spawn(litter::operate(Arc::clone(world), fork(rng), stop.clone()))),
        ("enqueuer", tokio::spawn(driver::run(Arc::clone(world), fork(rng), stop.clone()))),
        ("faults", tokio::spawn(faults::run(Arc::clone(world), fork(rng), stop.clone()))),
    ];
    tokio::time::sleep(length).await;
    stop.cancel();
    for (name, actor) in actors {
        if let Err(err) = actor.await {
            panic!("chaos: the {name} failed: {err} (seed {})\n{}", world.plan.seed, world.plan.replay());
        }
    }
}

/// Resumes stopped workers, makes sure two run, and waits until every job
/// has ended, every finished sweep's quarantine has been photographed and
/// no worker is inside a transaction. Returns what it found wrong.
async fn drain(world: &World) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    {
        let mut fleet = world.fleet.lock().await;
        fleet.resume(true).await;
        found.extend(fleet.reap(&world.env).await.into_iter().map(|v| (oracle::W, v)));
        while fleet.running.len() < fleet::WORKERS {
            fleet.start(&world.env);
        }
    }
    let deadline = Instant::now() + DRAIN;
    loop {
        let unfinished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status IN ('queued', 'running')")
                .fetch_one(&world.env.pool)
                .await
                .unwrap();
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database() AND xact_start IS NOT NULL",
        )
        .bind(WORKER_APP)
        .fetch_one(&world.env.pool)
        .await
        .unwrap();
        let unphotographed = driver::snapshot_finished(world).await;
        if unfinished == 0 && busy == 0 && unphotographed == 0 {
            break;
        }
        if Instant::now() >= deadline {
            found.extend(stuck_jobs(world).await.into_iter().map(|v| (oracle::I4, v)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut fleet = world.fleet.lock().await;
    found.extend(fleet.retired().await.into_iter().map(|v| (oracle::W, v)));
    found.extend(fleet.reap(&world.env).await.into_iter().map(|v| (oracle::W, v)));
    found
}

async fn stuck_jobs(world: &World) -> Vec<String> {
    type Stuck = (uuid::Uuid, String, String, i32, Option<String>, Option<String>, chrono::DateTime<chrono::Utc>);
    let rows: Vec<Stuck> = sqlx::query_as(
        "SELECT job_id, operation, status, attempts, worker, last_error, updated_at FROM job_results
             WHERE status IN ('queued', 'running') ORDER BY created_at",
    )
    .fetch_all(&world.env.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, op, status, attempts, worker, error, updated)| {
            format!(
                "job {id} ({op}) is still {status} {DRAIN:?} after the round ended: {attempts} attempt(s), worker {worker:?}, \
                 last error {error:?}, last update {updated}"
            )
        })
        .collect()
}

/// What the round did, for the log.
async fn summary(world: &World, report: &Report, round: usize, rounds: usize, took: Duration) -> String {
    let jobs: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT operation, status, count(*) FROM job_results GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(&world.env.pool)
            .await
            .unwrap();
    let failures: Vec<(String, String)> = sqlx::query_as(
        "SELECT operation, left(coalesce(last_error, ''), 160) FROM job_results WHERE status = 'failed' LIMIT 5",
    )
    .fetch_all(&world.env.pool)
    .await
    .unwrap();
    let model = world.model();
    let jobs: Vec<String> = jobs.iter().map(|(op, status, n)| format!("{op}/{status} {n}")).collect();
    let mut out = format!(
        "chaos round {round}/{rounds} ({:.1} s, seed {}): {} violation(s), {} note(s)\n  simulator: {:?}\n  jobs: {}\n  {}\n  workers started: {}",
        took.as_secs_f64(),
        world.plan.seed,
        report.violations.values().map(Vec::len).sum::<usize>(),
        report.notes.len(),
        model.stats,
        jobs.join(", "),
        report.summary.join("; "),
        world.fleet.try_lock().map(|f| f.started).unwrap_or_default(),
    );
    for (op, error) in failures {
        out.push_str(&format!("\n  failed {op}: {error}"));
    }
    for note in report.notes.iter().take(5) {
        let note: String = note.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(400).collect();
        out.push_str(&format!("\n  note: {note}"));
    }
    out
}
