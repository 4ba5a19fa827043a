//! Faults at seeded moments: `kill -9` of a worker, SIGTERM, SIGSTOP past
//! the lease and the idle-in-transaction timeout (then SIGCONT), the
//! workers' database sessions terminated (one or all), and Redis restarted
//! (losing everything). A killed or terminated worker is replaced.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::model::Seen;
use crate::plan::{pause, pick, Rng};
use crate::world::{World, WORKER_APP};

/// Injects faults until told to stop; resumes stopped workers on time.
pub async fn run(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    let mut next = tokio::time::Instant::now() + pause(&mut rng, 1000, 3000);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let mut fleet = world.fleet.lock().await;
        fleet.resume(false).await;
        let exited = fleet.reap(&world.env).await;
        drop(fleet);
        for violation in exited {
            world.model().saw(Seen { text: violation, image: None, active_since: None });
        }
        if tokio::time::Instant::now() >= next {
            inject(&world, &mut rng).await;
            next = tokio::time::Instant::now() + pause(&mut rng, 1200, 4000);
        }
    }
}

async fn inject(world: &World, rng: &mut Rng) {
    let fault = pick(
        rng,
        &[
            ("kill -9", 20),
            ("SIGTERM", 14),
            ("SIGSTOP", 20),
            ("terminate one backend", 16),
            ("terminate all backends", 10),
            ("redis restart", 8),
            ("nothing", 12),
        ],
    );
    let mut fleet = world.fleet.lock().await;
    let awake = fleet.awake();
    let any = rng.gen_range(0..fleet.running.len().max(1));
    let victim = (!awake.is_empty()).then(|| awake[rng.gen_range(0..awake.len())]);
    let done = match (fault, victim) {
        ("kill -9", _) if !fleet.running.is_empty() => {
            fleet.kill9(any, &world.env).await;
            true
        }
        ("SIGTERM", Some(victim)) => {
            fleet.term(victim, &world.env).await;
            true
        }
        // Past the 3 s lease (`fleet::LEASE`) and the workers' 2 s
        // idle-in-transaction timeout (`world::IDLE_TIMEOUT`); one worker at
        // most is stopped at a time.
        ("SIGSTOP", Some(victim)) if awake.len() == fleet.running.len() => {
            fleet.stop(victim, pause(rng, 3500, 7000)).await;
            true
        }
        ("terminate one backend", _) => terminate(world, rng.gen_range(0..1000)).await,
        ("terminate all backends", _) => terminate(world, -1).await,
        ("redis restart", _) => {
            drop(fleet);
            world.redis.lock().await.restart().await;
            true
        }
        _ => false,
    };
    if done {
        world.model().fault(fault);
    }
}

/// Terminates the `pick`-th (modulo their number) of the workers' database
/// sessions, or all of them when `pick` is negative.
async fn terminate(world: &World, pick: i64) -> bool {
    let terminated: sqlx::Result<Vec<bool>> = sqlx::query_scalar(
        "WITH sessions AS (
             SELECT pid, row_number() OVER (ORDER BY pid) - 1 AS n, count(*) OVER () AS total
             FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database())
         SELECT pg_terminate_backend(pid) FROM sessions WHERE $2 < 0 OR n = $2 % total",
    )
    .bind(WORKER_APP)
    .bind(pick)
    .fetch_all(&world.env.pool)
    .await;
    match terminated {
        Ok(killed) => !killed.is_empty(),
        Err(err) => panic!("terminating the workers' sessions failed: {err}"),
    }
}
