//! The scheduler loop: records every due tick of every schedule in Postgres
//! and enqueues the ones that run, through the same producer as
//! `janitor enqueue`.
//!
//! **Exactly once per tick, however many schedulers run.** A tick's key is
//! (queue, schedule name, scheduled time) and its job id is derived from
//! that key: schedulers of one queue share its ticks; another deployment
//! with its own queue prefix on the same database has its own.
//! Each scheduler that sees the tick due tries to insert it into
//! `schedule_ticks`; only the one whose insert succeeds records the job (in
//! the same transaction) and enqueues it. So three replicas fire one job; a
//! replica killed just before a tick changes nothing; and a replica killed
//! between its commit and its `XADD` leaves a queued job that the workers'
//! reconciler enqueues. No leader is elected.
//!
//! **One clock.** Ticks are compared with Postgres's `now()`, never with a
//! replica's own clock, so replicas whose clocks drift still agree.
//!
//! **Catch-up.** A scheduler starts from each schedule's last recorded tick,
//! so ticks missed while every replica was down are found when one comes
//! back; [`crate::schedule::plan`] runs the newest inside the catch-up window
//! and records the rest as skipped.
//!
//! **Overlap.** A tick that comes while a job of the same operation is still
//! queued, or running with a live lease, is recorded as skipped (overlap),
//! not run twice. A `running` row whose lease has expired (its worker died
//! without anyone noticing yet) does not block the tick: recording the
//! tick's job supersedes an equal one (see `results::insert_queued`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::producer::Producer;
use crate::results::{self, NewJob};
use crate::schedule::{plan, Decision, Schedule, MAX_TICKS};

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Missed ticks younger than this run (once) when a scheduler comes back.
    pub catch_up: Duration,
    /// Longest sleep between checks (so clock jumps and new ticks are seen).
    pub max_sleep: Duration,
    /// Recorded as who recorded each tick.
    pub name: String,
    /// Written after each pass over the schedules that reached Postgres
    /// (see [`crate::health`]).
    pub health_file: Option<std::path::PathBuf>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            catch_up: Duration::from_secs(6 * 3600),
            max_sleep: Duration::from_secs(30),
            name: format!("{}-{}", crate::queue::config::host_name(), std::process::id()),
            health_file: None,
        }
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    pool: PgPool,
    producer: Producer,
    schedules: Vec<Schedule>,
    settings: SchedulerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Schedules never ticked before start from now: a new schedule does not
    // "catch up" on ticks from before it existed.
    let started = db_now(&pool).await?;
    tracing::info!(schedules = schedules.len(), scheduler = %settings.name, "scheduler started");
    loop {
        let now = db_now(&pool).await?;
        let mut healthy = true;
        for schedule in &schedules {
            if let Err(err) = fire_due(&pool, &producer, schedule, started, now, &settings).await {
                healthy = false;
                tracing::error!(schedule = %schedule.name, error = %format!("{err:#}"), "could not record due ticks; will retry");
            }
        }
        if healthy {
            crate::health::touch(settings.health_file.as_deref()).await;
        }
        let next = schedules.iter().filter_map(|s| s.next_after(now)).min();
        let wait = next
            .map(|at| (at - now).to_std().unwrap_or_default())
            .unwrap_or(settings.max_sleep)
            .min(settings.max_sleep);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn db_now(pool: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}

/// Records (and enqueues, when they run) the ticks of one schedule that are
/// due and not yet recorded.
async fn fire_due(
    pool: &PgPool,
    producer: &Producer,
    schedule: &Schedule,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &SchedulerSettings,
) -> anyhow::Result<()> {
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(scheduled_at) FROM schedule_ticks WHERE queue = $1 AND schedule = $2")
            .bind(producer.layout().prefix())
            .bind(&schedule.name)
            .fetch_one(pool)
            .await?;
    let from = last.unwrap_or(started);
    let mut due: Vec<DateTime<Utc>> =
        schedule.ticks_after(from).take_while(|t| *t <= now).take(MAX_TICKS + 1).collect();
    if due.len() > MAX_TICKS {
        // Far too many missed ticks to list: note the span, keep the newest.
        tracing::warn!(schedule = %schedule.name, since = %from, "more than {MAX_TICKS} ticks missed; recording the newest only");
        due = schedule
            .ticks_after(now - chrono::Duration::from_std(settings.catch_up)?)
            .take_while(|t| *t <= now)
            .collect();
    }
    for (tick, decision) in plan(&due, now, settings.catch_up) {
        record_tick(pool, producer, schedule, tick, decision, &settings.name).await?;
    }
    Ok(())
}

/// One tick: the insert into `schedule_ticks` decides which scheduler acts.
async fn record_tick(
    pool: &PgPool,
    producer: &Producer,
    schedule: &Schedule,
    tick: DateTime<Utc>,
    mut decision: Decision,
    me: &str,
) -> anyhow::Result<()> {
    let queue = producer.layout().prefix().to_owned();
    let job_id = schedule.job_id(&queue, tick);
    let requested_by = format!("scheduler:{}", schedule.name);
    let mut tx = pool.begin().await?;
    if decision == Decision::Run {
        if let Some((other, status)) = running_copy(&mut tx, schedule, &queue, job_id).await? {
            decision = Decision::Skip(format!("overlap: job {other} of the same operation is still {status}"));
        }
    }
    let (outcome, reason) = match &decision {
        Decision::Run => ("enqueued", None),
        Decision::Skip(reason) => ("skipped", Some(reason.as_str())),
    };
    let won: Option<i32> = sqlx::query_scalar(
        "INSERT INTO schedule_ticks (queue, schedule, scheduled_at, job_id, outcome, reason, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(&queue)
    .bind(&schedule.name)
    .bind(tick)
    .bind(job_id)
    .bind(outcome)
    .bind(reason)
    .bind(me)
    .fetch_optional(&mut *tx)
    .await?;
    if won.is_none() {
        return Ok(()); // Another scheduler recorded this tick.
    }
    let job = NewJob { job_id, spec: &schedule.spec, requested_by: Some(&requested_by), queue: &queue };
    let mut reason = reason.map(str::to_owned);
    if reason.is_none() && results::insert_queued(&mut *tx, std::slice::from_ref(&job)).await? == 0 {
        // An equal job is queued, or running with a live lease (enqueued or
        // taken over by someone else since the check above): the tick skips.
        let other = results::equal_unfinished(&mut *tx, &queue, &schedule.spec).await?.unwrap_or_default();
        let why = format!("overlap: an equal job {other} is still queued or running");
        sqlx::query(
            "UPDATE schedule_ticks SET outcome = 'skipped', reason = $4
             WHERE queue = $1 AND schedule = $2 AND scheduled_at = $3",
        )
        .bind(&queue)
        .bind(&schedule.name)
        .bind(tick)
        .bind(&why)
        .execute(&mut *tx)
        .await?;
        reason = Some(why);
    }
    if let Some(reason) = &reason {
        results::insert_skipped(&mut tx, &job, reason).await?;
    }
    tx.commit().await?;
    let span = tracing::info_span!("tick", schedule = %schedule.name, tick = %tick, job_id = %job_id);
    let enqueue = async {
        match reason {
            Some(reason) => tracing::warn!(%reason, "tick skipped"),
            // If this fails, the queued row is enqueued by the reconciler.
            None => match producer.push_recorded(job_id, &schedule.spec, Some(&requested_by)).await {
                Ok(()) => tracing::info!("tick enqueued"),
                Err(err) => {
                    tracing::warn!(error = %err, "could not enqueue the tick's job; the reconciler will")
                }
            },
        }
    };
    enqueue.instrument(span).await;
    Ok(())
}

/// An unfinished job of the same operation on this queue, if any: queued,
/// or running with a live lease (a row whose worker died without anyone
/// noticing yet does not block the schedule; the reconciler recovers it).
async fn running_copy(
    conn: &mut sqlx::PgConnection,
    schedule: &Schedule,
    queue: &str,
    job_id: Uuid,
) -> sqlx::Result<Option<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT job_id, status FROM job_results
         WHERE operation = $1 AND queue = $2 AND job_id <> $3
           AND (status = 'queued' OR (status = 'running' AND lease_expires_at > now()))
         LIMIT 1",
    )
    .bind(schedule.spec.job.operation())
    .bind(queue)
    .bind(job_id)
    .fetch_optional(conn)
    .await
}

/// One recorded tick of a schedule, with the state of its job (none when
/// the job's row was pruned).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TickRecord {
    pub scheduled_at: DateTime<Utc>,
    pub job_id: Uuid,
    /// `enqueued` or `skipped`.
    pub outcome: String,
    pub reason: Option<String>,
    pub status: Option<String>,
    pub deleted_count: Option<i64>,
    pub error_count: Option<i64>,
}

/// A schedule's last tick (run or skipped) and its last tick that ran, on
/// a queue: two reads of the ticks' primary key, newest first, for
/// `janitor schedules` and the console.
pub async fn last_ticks(
    pool: &PgPool,
    queue: &str,
    schedule: &str,
) -> sqlx::Result<(Option<TickRecord>, Option<TickRecord>)> {
    let query = "SELECT t.scheduled_at, t.job_id, t.outcome, t.reason, r.status, r.deleted_count, r.error_count
         FROM schedule_ticks t LEFT JOIN job_results r ON r.job_id = t.job_id
         WHERE t.queue = $1 AND t.schedule = $2 AND ($3 OR t.outcome = 'enqueued')
         ORDER BY t.scheduled_at DESC LIMIT 1";
    let tick = |all: bool| sqlx::query_as(query).bind(queue).bind(schedule).bind(all).fetch_optional(pool);
    Ok((tick(true).await?, tick(false).await?))
}
