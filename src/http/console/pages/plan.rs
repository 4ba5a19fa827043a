//! "Plan a cleanup": `GET /plan` (the form), `GET /plan/{id}` (the dry
//! run's outcome: counts, bytes, a sample of paths and the in-use items it
//! skipped; while it runs, the page's script polls `GET /plan/{id}/status`
//! and reloads once it has finished), and `GET /plan/{id}/confirm` (the
//! numbers again, with the button that runs it for real). The POSTs are in
//! `console/planning.rs`.
//!
//! Cheap: each page reads one `job_results` row by its key; the sample is
//! the bounded one the worker keeps in the row's checkpoint.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use janitor_workers::progress::Checkpoint;
use janitor_workers::results;
use janitor_workers::sample::Sample;
use janitor_workers::{JobRecord, JobSpec};
use maud::{html, Markup};
use serde_json::{json, Value};
use uuid::Uuid;

use super::super::layout::{self, csrf_field};
use super::super::planning::{class, PlanForm};
use super::super::see_other;
use super::super::session::Session;
use super::plan_sample;
use crate::http::error::ApiError;
use crate::http::AppState;

/// The operations the form offers, by (value, label).
const OPERATIONS: [(&str, &str); 5] = [
    ("expired", "Expired temporary images"),
    ("session", "One session's images"),
    ("old-results", "Old task results"),
    ("orphaned", "Orphaned files"),
    ("all", "All of them: expired, old results, orphaned"),
];

/// The parameters' fields, by (name, label, hint, input type).
const FIELDS: [(&str, &str, &str, &str); 4] = [
    ("session_id", "Session id", "session only", "text"),
    ("days_old", "Older than (days)", "old results and all; 1 to 36500", "number"),
    ("min_age", "Grace period", "orphaned and all; such as 1h, 90m, 2d", "text"),
    ("limit", "At most (deletions)", "optional", "number"),
];

/// What was typed into the field `name`.
fn value<'a>(form: &'a PlanForm, name: &str) -> &'a str {
    match name {
        "session_id" => &form.session_id,
        "days_old" => &form.days_old,
        "min_age" => &form.min_age,
        _ => &form.limit,
    }
}

pub async fn new(session: Session) -> Response {
    form_page(&session, &PlanForm::default(), None, StatusCode::OK)
}

/// The form, filled in with `form`, and the refusal of its last submission.
pub fn form_page(session: &Session, form: &PlanForm, refusal: Option<&ApiError>, status: StatusCode) -> Response {
    let bad = |name: &str| matches!(refusal, Some(ApiError::Invalid { field, .. }) if field == name);
    let main = html! {
        h1 { "Plan a cleanup" }
        p.hint { "A plan is a dry run: it counts what the operation would delete and deletes nothing. \
                  Its page then offers to run the same operation for real." }
        @if let Some(err) = refusal { p.error id="plan-error" role="alert" { (err.to_string()) } }
        form id="plan" method="post" action="/plan" {
            (csrf_field(session))
            fieldset disabled[session.read_only] {
                legend { "Operation" }
                @for (value, label) in OPERATIONS {
                    label.choice {
                        input type="radio" name="operation" value=(value) checked[form.operation == value];
                        " " (label)
                    }
                }
            }
            fieldset disabled[session.read_only] {
                legend { "Parameters" }
                @for (name, label, hint, kind) in FIELDS {
                    (field(name, label, hint, kind, value(form, name), bad(name)))
                }
            }
            @if session.read_only {
                p.hint { "This token is read-only: it can look at plans, not make them." }
            } @else {
                button type="submit" { "Plan it (dry run)" }
            }
        }
    };
    layout::respond(status, layout::page(session, "Plan a cleanup", main))
}

fn field(name: &str, label: &str, hint: &str, kind: &str, value: &str, invalid: bool) -> Markup {
    let hint_id = format!("{name}-hint");
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) type=(kind) value=(value) aria-describedby=(hint_id)
                aria-invalid=[invalid.then_some("true")];
            span.hint id=(hint_id) { (hint) }
        }
    }
}

/// A dry run's row, or the page to show instead.
async fn load(state: &AppState, session: &Session, raw: &str) -> Result<JobRecord, Response> {
    let record = match raw.parse::<Uuid>() {
        Ok(job_id) => results::get(&state.pool, job_id).await.map_err(ApiError::from),
        Err(_) => Ok(None),
    };
    match record {
        Ok(Some(record)) if record.dry_run => Ok(record),
        // A real job has its own page.
        Ok(Some(record)) => Err(see_other(&format!("/jobs/{}", record.job_id))),
        Ok(None) => Err(layout::error(session, ApiError::NotFound)),
        Err(err) => Err(layout::error(session, err)),
    }
}

pub async fn show(State(state): State<AppState>, session: Session, Path(raw): Path<String>) -> Response {
    let record = match load(&state, &session, &raw).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    let main = html! {
        h1 { "Plan: " (record.operation) }
        p.lead { "A dry run of " (describe(&record)) ". Nothing has been deleted." }
        @match record.status.as_str() {
            "completed" => { (outcome(&session, &record)) }
            "queued" | "running" => { (waiting(&record)) }
            status => {
                p.error role="alert" id="plan-failed" {
                    "The dry run ended as " (status) ": " (record.last_error.as_deref().unwrap_or("no reason recorded"))
                }
                p { a href="/plan" { "Plan again" } }
            }
        }
        p { a href={ "/jobs/" (record.job_id) } { "The dry run's job page" } " (error items, checkpoint)" }
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Plan", main))
}

/// While the dry run is queued or running: its status, polled.
fn waiting(record: &JobRecord) -> Markup {
    html! {
        section id="plan-progress" data-plan-status={ "/plan/" (record.job_id) "/status" } aria-live="polite" {
            div.section-head {
                p { "Status: " strong id="plan-status" { (record.status) } " " span.summary { (summary(record)) } }
                button id="pause" type="button" aria-pressed="false" { "Pause updates" }
            }
            p.hint { "This page shows the outcome as soon as the dry run has finished." }
        }
    }
}

/// A completed dry run: its numbers, the way to run it for real, the sample.
fn outcome(session: &Session, record: &JobRecord) -> Markup {
    let sample = sample_of(record);
    html! {
        dl.facts id="plan-numbers" {
            dt { "Would delete" } dd id="would-delete" { (things(&record.operation, record.deleted_count)) }
            dt { "Would free" } dd id="would-free" { (bytes(record.deleted_bytes)) }
            dt { "Skipped, in use" } dd id="skipped" { (record.skipped_count) }
            dt { "Errors" } dd id="errors" { (record.error_count) }
            dt { "Planned by" } dd { (record.requested_by.as_deref().unwrap_or("—")) }
            dt { "Finished" } dd { (record.finished_at.map_or("—".to_owned(), layout::time)) }
        }
        @if session.read_only {
            p.hint { "This token is read-only: it cannot run the plan." }
        } @else {
            form id="run-for-real" method="get" action={ "/plan/" (record.job_id) "/confirm" } {
                button type="submit" { "Run it for real…" }
            }
        }
        (plan_sample::tables(record, &sample))
    }
}

/// How long ago the dry run ended, for the confirmation: a plan made days
/// ago may no longer describe the store.
fn planned_ago(record: &janitor_workers::JobRecord) -> String {
    let ended = record.finished_at.unwrap_or(record.updated_at);
    let secs = (chrono::Utc::now() - ended).num_milliseconds().max(0) as f64 / 1000.0;
    format!("{} ago ({})", layout::duration(secs), layout::time(ended))
}

pub async fn confirm(State(state): State<AppState>, session: Session, Path(raw): Path<String>) -> Response {
    let record = match load(&state, &session, &raw).await {
        Ok(record) if record.status == "completed" => record,
        Ok(record) => return see_other(&format!("/plan/{}", record.job_id)),
        Err(page) => return page,
    };
    let id = record.job_id;
    let main = html! {
        h1 { "Run it for real?" }
        p id="confirm-numbers" {
            "This will delete " strong { (things(&record.operation, record.deleted_count)) } ", "
            strong { (bytes(record.deleted_bytes)) } ", and leave " (record.skipped_count) " in use alone: "
            (describe(&record)) "."
        }
        p.hint id="plan-age" {
            "These are the dry run's numbers, from " (planned_ago(&record)) ". The real run decides again, \
             item by item: what changed since may make it take more or less, and it never takes an image in use."
        }
        @if session.read_only {
            p.hint { "This token is read-only: it cannot run the plan." }
        } @else {
            form id="run" method="post" action={ "/plan/" (id) "/run" } {
                (csrf_field(&session))
                button.danger type="submit" { "Delete " (things(&record.operation, record.deleted_count)) }
            }
        }
        p { a href={ "/plan/" (id) } { "Back to the plan" } }
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Run it for real?", main))
}

/// `GET /plan/{id}/status`, what the plan page's script polls.
pub async fn status(State(state): State<AppState>, session: Session, Path(raw): Path<String>) -> Response {
    match load(&state, &session, &raw).await {
        Ok(record) => Json(json!({
            "status": record.status,
            "finished": record.is_finished(),
            "summary": summary(&record),
        }))
        .into_response(),
        Err(page) => page,
    }
}

/// The job that runs a completed plan for real: its operation and
/// parameters, read back from its row.
pub(crate) async fn real_run(state: &AppState, plan_id: Uuid) -> Result<JobSpec, ApiError> {
    let record = results::get(&state.pool, plan_id).await?.ok_or(ApiError::NotFound)?;
    if !record.dry_run {
        return Err(ApiError::Conflict(format!("job {plan_id} is not a dry run")));
    }
    if record.status != "completed" {
        return Err(ApiError::Conflict(format!("the plan {plan_id} has not completed (it is {})", record.status)));
    }
    let spec = JobSpec::from_record(&record.operation, &record.params, false)
        .map_err(|e| ApiError::Conflict(format!("the plan's parameters do not make a job: {e}")))?;
    if class(&spec.job).is_none() {
        return Err(ApiError::Conflict(format!("{} is not planned here", record.operation)));
    }
    Ok(spec)
}

fn sample_of(record: &JobRecord) -> Sample {
    let checkpoint = record.checkpoint.clone().and_then(|value| serde_json::from_value::<Checkpoint>(value).ok());
    checkpoint.map(|checkpoint| checkpoint.sample).unwrap_or_default()
}

/// The running counts, as the poll shows them.
fn summary(record: &JobRecord) -> String {
    let noun = things(&record.operation, record.deleted_count);
    format!("{noun} would go so far, {} in use", record.skipped_count)
}

/// A count with the operation's noun: images, files, or (for `all`) items.
pub fn things(operation: &str, n: i64) -> String {
    let (one, many) = match operation {
        "cleanup_orphaned_files" => ("file", "files"),
        "cleanup_all" => ("item", "items"),
        _ => ("image", "images"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

fn bytes(n: i64) -> String {
    format!("{} ({n} bytes)", layout::bytes(n))
}

/// The operation and its parameters, in words.
fn describe(record: &JobRecord) -> String {
    let params = &record.params;
    let days = params.get("days_old").and_then(Value::as_i64).unwrap_or_default();
    let grace = params
        .get("min_age_secs")
        .and_then(Value::as_u64)
        .map(|secs| humantime::format_duration(Duration::from_secs(secs)).to_string())
        .unwrap_or_default();
    let what = match record.operation.as_str() {
        "cleanup_expired_images" => "expired temporary images".to_owned(),
        "cleanup_session" => {
            format!("the images of session {}", params.get("session_id").and_then(Value::as_str).unwrap_or("?"))
        }
        "cleanup_old_results" => format!("results of tasks finished more than {days} days ago"),
        "cleanup_orphaned_files" => format!("files no row refers to, unchanged for {grace}"),
        "cleanup_all" => {
            format!("expired images, results older than {days} days, then orphaned files unchanged for {grace}")
        }
        other => other.to_owned(),
    };
    match params.get("limit").and_then(Value::as_u64) {
        Some(limit) => format!("{what}, at most {limit} deletions"),
        None => what,
    }
}
