//! `GET /schedules` (read-only): each schedule this process knows (the
//! config file's `[[schedule]]` tables, or the defaults, as
//! `janitor schedules` shows them), its cron expression, its last run with
//! a link to the job, a skipped last tick with its reason, and its next
//! fire time. The overview shows the same rows in short ([`summary`]).
//!
//! Cheap: two reads of `schedule_ticks`' primary key per schedule (newest
//! tick, newest tick that ran), each joined to one job row by its key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use janitor_workers::schedule::Schedule;
use janitor_workers::scheduler::{self, TickRecord};
use maud::{html, Markup};

use super::super::layout;
use super::super::session::Session;
use crate::http::AppState;

/// A schedule with what the ticks say of it.
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub operation: String,
    pub params: serde_json::Value,
    pub dry_run: bool,
    pub next_fire: Option<DateTime<Utc>>,
    /// The newest tick, when it was skipped (with its reason).
    pub skipped: Option<TickRecord>,
    pub last_run: Option<TickRecord>,
    /// The database's time, that next fire times are counted from.
    pub now: DateTime<Utc>,
}

/// Every schedule's view, in the configured order. Ticks are read on this
/// process's queue, as the scheduler writes them.
pub async fn load(state: &AppState) -> sqlx::Result<Vec<ScheduleView>> {
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&state.pool).await?;
    let queue = state.producer.layout().prefix();
    let mut views = Vec::with_capacity(state.schedules.len());
    for schedule in state.schedules.iter() {
        let (last_tick, last_run) = scheduler::last_ticks(&state.pool, queue, &schedule.name).await?;
        views.push(view(schedule, now, last_tick, last_run));
    }
    Ok(views)
}

fn view(
    schedule: &Schedule,
    now: DateTime<Utc>,
    last_tick: Option<TickRecord>,
    last_run: Option<TickRecord>,
) -> ScheduleView {
    ScheduleView {
        name: schedule.name.clone(),
        cron: schedule.cron_text.clone(),
        timezone: schedule.timezone.name().to_owned(),
        operation: schedule.spec.job.operation().to_owned(),
        params: schedule.spec.params(),
        dry_run: schedule.spec.dry_run,
        next_fire: schedule.next_after(now),
        skipped: last_tick.filter(|tick| tick.outcome == "skipped"),
        last_run,
        now,
    }
}

pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let views = match load(&state).await {
        Ok(views) => views,
        Err(err) => return layout::error(&session, err.into()),
    };
    let main = html! {
        h1 { "Schedules" }
        p.hint { "What " code { "janitor scheduler" } " enqueues, from this process's config file (or the defaults). Read-only: change the " code { "[[schedule]]" } " tables and restart the scheduler." }
        div.scroll {
            table id="schedules" {
                thead { tr {
                    th scope="col" { "Schedule" } th scope="col" { "When (cron, seconds first)" } th scope="col" { "Runs" }
                    th scope="col" { "Last run" } th scope="col" { "Next fire" }
                } }
                tbody { @for view in &views { (row(view)) } }
            }
        }
        @if views.is_empty() { p.empty { "No schedule is configured." } }
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Schedules", main))
}

fn row(view: &ScheduleView) -> Markup {
    html! {
        tr data-schedule=(view.name) {
            th scope="row" { (view.name) }
            td { code { (view.cron) } " " span.hint { (view.timezone) } }
            td {
                (view.operation) @if view.dry_run { " " span.badge { "dry run" } }
                @if view.params.as_object().is_some_and(|params| !params.is_empty()) {
                    br; code.hint { (view.params) }
                }
            }
            td.last-run {
                (last_run(view.last_run.as_ref()))
                @if let Some(skipped) = &view.skipped {
                    br; span.hint.skipped {
                        "Skipped at " (layout::time(skipped.scheduled_at)) ": " (skipped.reason.as_deref().unwrap_or("no reason recorded"))
                    }
                }
            }
            td.next-fire { (next_fire(view)) }
        }
    }
}

/// A last run: its tick's time, linked to its job, and the job's status.
fn last_run(run: Option<&TickRecord>) -> Markup {
    html! {
        @match run {
            None => { span.empty { "never" } }
            Some(run) => {
                a href={ "/jobs/" (run.job_id) } { (layout::time(run.scheduled_at)) }
                " "
                @match &run.status {
                    Some(status) => { span class={ "status status-" (status) } { (status) } }
                    None => { span.hint { "(its record was pruned)" } }
                }
                @if let (Some(deleted), Some(errors)) = (run.deleted_count, run.error_count) {
                    " " span.hint { (deleted) " deleted, " (errors) " errors" }
                }
            }
        }
    }
}

fn next_fire(view: &ScheduleView) -> Markup {
    html! {
        @match view.next_fire {
            None => { span.empty { "never (the expression has no future time)" } }
            Some(at) => {
                time datetime=(at.to_rfc3339()) { (layout::time(at)) }
                " " span.hint { "(in " (layout::duration((at - view.now).num_seconds() as f64)) ")" }
            }
        }
    }
}

/// The overview's section: each schedule's last run and next fire time.
pub fn summary(views: &[ScheduleView]) -> Markup {
    html! {
        section id="schedules" aria-labelledby="schedules-title" {
            h2 id="schedules-title" { "Schedules" }
            @if views.is_empty() { p.empty { "No schedule is configured." } } @else {
                div.scroll {
                    table {
                        thead { tr { th scope="col" { "Schedule" } th scope="col" { "Last run" } th scope="col" { "Next fire" } } }
                        tbody {
                            @for view in views {
                                tr data-schedule=(view.name) {
                                    th scope="row" { (view.name) }
                                    td.last-run { (last_run(view.last_run.as_ref())) }
                                    td.next-fire { (next_fire(view)) }
                                }
                            }
                        }
                    }
                }
            }
            p { a href="/schedules" { "All about the schedules" } }
        }
    }
}
