//! `GET /`: the queues, the running jobs, the dead letters; and
//! `GET /console/running`, the running jobs as JSON, which the page's script
//! polls every 2 s to move the progress bars without a reload.
//!
//! Also the last 24 hours' deletions and errors (`activity`) and each
//! schedule's last run and next fire time (`schedules`).
//!
//! Cheap whatever the history holds: the queues are `XLEN`/`XRANGE COUNT 1`
//! per lane, the running jobs at most [`RUNNING_LIMIT`] rows through the
//! partial index on unfinished jobs, the activity at most 768 rows of the
//! `job_activity` ring, the schedules two primary-key reads each, the
//! reclaimable bytes the figures last computed in the background (see
//! `reclaimable`), and nothing counts `job_results`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use janitor_workers::progress::Checkpoint;
use janitor_workers::results;
use janitor_workers::JobRecord;
use maud::{html, Markup};
use serde::Serialize;

use super::super::layout;
use super::super::session::Session;
use super::{activity, reclaimable, schedules};
use crate::http::metrics::{self, LaneStats};
use crate::http::AppState;

/// The most running jobs shown.
const RUNNING_LIMIT: i64 = 50;

/// How long the page waits for Redis before it shows the queues as unknown.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// A running job's progress, as the page shows it and the script reads it.
#[derive(Debug, Serialize)]
pub struct Running {
    pub job_id: uuid::Uuid,
    pub operation: String,
    pub dry_run: bool,
    /// Items handled so far: deleted, skipped (in use) and failed.
    pub done: i64,
    /// The estimated total of items, when known (bulk jobs: see
    /// `jobs::estimate`); without it the bar shows the count alone.
    pub total: Option<i64>,
    /// Items a second since the job started.
    pub rate: f64,
    /// Seconds left, when the total is known.
    pub eta_secs: Option<f64>,
    /// The text next to the bar.
    pub summary: String,
}

impl Running {
    fn of(record: &JobRecord) -> Self {
        let checkpoint: Option<Checkpoint> =
            record.checkpoint.clone().and_then(|value| serde_json::from_value(value).ok());
        let done = done(record, checkpoint.as_ref());
        let elapsed = record.started_at.map_or(0.0, |at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
        let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
        // Estimated when the job first started (`jobs::estimate`); a store
        // that grew since can take the count past it.
        let total = checkpoint.and_then(|c| c.estimated_total).map(|total| total.max(done));
        let eta_secs = total.filter(|_| rate > 0.0).map(|total| (total - done).max(0) as f64 / rate);
        let eta = eta_secs.map_or("ETA unknown".to_owned(), |secs| format!("ETA {}", layout::duration(secs)));
        let of = total.map_or(String::new(), |total| format!(" of about {total}"));
        let summary = format!("{done}{of} items, {rate:.1}/s, {eta}");
        Self {
            job_id: record.job_id,
            operation: record.operation.clone(),
            dry_run: record.dry_run,
            done,
            total,
            rate,
            eta_secs,
            summary,
        }
    }
}

/// Items a running job has handled, counted as its estimate is: rows
/// decided for row phases, files looked at for an orphan sweep.
fn done(record: &JobRecord, checkpoint: Option<&Checkpoint>) -> i64 {
    let items = record.deleted_count + record.skipped_count + record.error_count;
    let scanned = checkpoint.map_or(0, |c| i64::try_from(c.files_scanned).unwrap_or(i64::MAX));
    match (record.operation.as_str(), checkpoint) {
        ("cleanup_orphaned_files", _) => scanned,
        // `all`: its row phases' items, then the files its sweep looked at.
        ("cleanup_all", Some(c)) => {
            c.phases.iter().take(2).map(|p| p.deleted + p.skipped + p.errors).sum::<i64>() + scanned
        }
        _ => items,
    }
}

async fn running_jobs(state: &AppState) -> sqlx::Result<Vec<Running>> {
    Ok(results::running(&state.pool, RUNNING_LIMIT).await?.iter().map(Running::of).collect())
}

pub async fn running(State(state): State<AppState>, _session: Session) -> Response {
    match running_jobs(&state).await {
        Ok(jobs) => Json(serde_json::json!({ "running": jobs })).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "console: cannot read the running jobs");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let lanes = tokio::time::timeout(REDIS_TIMEOUT, metrics::lanes(state.redis.clone(), state.producer.layout()));
    let (lanes, running, activity, schedules) =
        tokio::join!(lanes, running_jobs(&state), activity::last_day(&state.pool), schedules::load(&state));
    let lanes = match lanes {
        Ok(Ok(lanes)) => Some(lanes),
        Ok(Err(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "console: cannot read the queues");
            None
        }
        Err(_) => None,
    };
    let (running, activity, schedules) = match (running, activity, schedules) {
        (Ok(running), Ok(activity), Ok(schedules)) => (running, activity, schedules),
        (Err(err), ..) | (_, Err(err), _) | (.., Err(err)) => return layout::error(&session, err.into()),
    };
    let main = html! {
        h1 { "Overview" }
        (queues(lanes.as_deref()))
        section id="running" aria-labelledby="running-title" {
            div.section-head {
                h2 id="running-title" { "Running jobs" }
                button id="pause" type="button" aria-pressed="false" { "Pause updates" }
            }
            div.jobs data-poll="/console/running" {
                @for job in &running { (job_card(job)) }
            }
            p.empty hidden[!running.is_empty()] { "No job is running." }
        }
        (dead(lanes.as_deref()))
        (reclaimable::section(&state.reclaimable, &state.pool))
        (activity::section(&activity))
        (schedules::summary(&schedules))
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Overview", main))
}

fn queues(lanes: Option<&[LaneStats]>) -> Markup {
    html! {
        section id="queues" aria-labelledby="queues-title" {
            h2 id="queues-title" { "Queues" }
            @match lanes {
                None => { p.error role="alert" { "The queues cannot be read: Redis did not answer." } }
                Some(lanes) => {
                    @for lane in lanes {
                        table.lane data-lane=(lane.lane) {
                            caption { "Lane " (lane.lane) }
                            tbody {
                                tr { th scope="row" { "Depth" } td.depth { (lane.depth) } }
                                tr { th scope="row" { "Oldest" } td.oldest {
                                    @if lane.depth == 0 { "—" } @else { (layout::duration(lane.oldest_age_secs)) }
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn job_card(job: &Running) -> Markup {
    html! {
        div.job data-job-id=(job.job_id) {
            a href={ "/jobs/" (job.job_id) } { code { (job.job_id) } }
            " "
            span.operation { (job.operation) }
            @if job.dry_run { " " span.badge { "dry run" } }
            // Without a known total the bar is indeterminate (a value with
            // no max would draw it full); the items done are in `data-done`
            // and in the summary.
            @match job.total {
                Some(total) => { progress value=(job.done) max=(total) data-done=(job.done) aria-label="progress" {} }
                None => { progress data-done=(job.done) aria-label="progress" {} }
            }
            span.summary { (job.summary) }
        }
    }
}

fn dead(lanes: Option<&[LaneStats]>) -> Markup {
    let count: Option<i64> = lanes.map(|lanes| lanes.iter().map(|lane| lane.dead).sum());
    html! {
        section id="dead" aria-labelledby="dead-title" {
            h2 id="dead-title" { "Dead letters" }
            p {
                @match count {
                    None => { "unknown (Redis did not answer)." }
                    Some(0) => { span.count { "0" } " dead letters." }
                    Some(n) => { strong.count.alert { (n) } " dead letters need a look." }
                }
                " "
                a href="/dead" { "See the dead letters" }
            }
        }
    }
}
