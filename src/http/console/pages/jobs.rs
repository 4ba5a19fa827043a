//! `GET /jobs` (a filtered keyset page of jobs, newest first) and
//! `GET /jobs/{id}` (one job, with its cancel and retry forms, its batch
//! histogram and, for an ended sweep, its quarantine and restore form).
//!
//! The list is the API's query (`results::list`): 50 rows a page in
//! `(created_at, job_id)` order from an index, with the last row's cursor
//! in the "Older" link, so page 1000 costs what page 1 does.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use janitor_workers::progress::ErrorItem;
use janitor_workers::results::{self, ListFilter};
use janitor_workers::JobRecord;
use maud::{html, Markup};
use uuid::Uuid;

use super::super::layout::{self, csrf_field};
use super::super::session::Session;
use super::{chart, restore};
use crate::http::error::ApiError;
use crate::http::AppState;

const PAGE: i64 = 50;

const STATUSES: [&str; 6] = ["queued", "running", "completed", "failed", "skipped", "cancelled"];

/// The list's filters, as given in the query string (empty fields: any).
#[derive(Debug, Default)]
struct Filters {
    operation: String,
    status: String,
    requested_by: String,
    /// "Created before", as the form's `datetime-local` field gives it
    /// (`2026-12-01T09:30`, read as UTC) or as RFC 3339.
    until: String,
    /// The paging cursor (after the last job shown).
    before: String,
}

impl Filters {
    fn parse(query: Option<&str>) -> Self {
        let mut filters = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.trim().to_owned();
            match key.as_ref() {
                "operation" => filters.operation = value,
                "status" => filters.status = value,
                "requested_by" => filters.requested_by = value,
                "until" => filters.until = value,
                "before" => filters.before = value,
                _ => {}
            }
        }
        filters
    }

    fn list_filter(&self) -> Result<ListFilter, ApiError> {
        let given = |value: &str| (!value.is_empty()).then(|| value.to_owned());
        if !self.status.is_empty() && !STATUSES.contains(&self.status.as_str()) {
            return Err(ApiError::invalid("status", format!("must be one of {}", STATUSES.join(", "))));
        }
        let until = match given(&self.until) {
            None => None,
            Some(raw) => {
                Some((parse_time(&raw).ok_or_else(|| ApiError::invalid("until", "not a date and time"))?, None))
            }
        };
        // A page after the first goes on from its cursor, which lies before
        // `until` (the first page's filter) already.
        let before = match given(&self.before) {
            None => until,
            Some(raw) => Some(results::parse_cursor(&raw).ok_or_else(|| ApiError::invalid("before", "bad cursor"))?),
        };
        Ok(ListFilter {
            operation: given(&self.operation),
            status: given(&self.status),
            requested_by: given(&self.requested_by),
            before,
            limit: PAGE,
        })
    }

    /// The query string of the next page.
    fn next(&self, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("operation", &self.operation),
            ("status", &self.status),
            ("requested_by", &self.requested_by),
            ("until", &self.until),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.append_pair("before", cursor);
        format!("/jobs?{}", query.finish())
    }
}

pub async fn list(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let filters = Filters::parse(query.as_deref());
    let records = match filters.list_filter() {
        Ok(filter) => results::list(&state.pool, &filter).await.map_err(ApiError::from),
        Err(err) => Err(err),
    };
    let records = match records {
        Ok(records) => records,
        Err(err) => return layout::error(&session, err),
    };
    let next = (records.len() as i64 == PAGE).then(|| records.last().map(results::cursor)).flatten();
    let main = html! {
        h1 { "Jobs" }
        (filter_form(&filters))
        div.scroll {
            table id="jobs" {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Operation" } th scope="col" { "Status" }
                    th scope="col" { "Deleted" } th scope="col" { "Requested by" } th scope="col" { "Created" }
                } }
                tbody {
                    @for record in &records {
                        tr data-job-id=(record.job_id) {
                            td { a href={ "/jobs/" (record.job_id) } { code { (short(record.job_id)) } } }
                            td { (record.operation) @if record.dry_run { " " span.badge { "dry run" } } }
                            td { span class={ "status status-" (record.status) } { (record.status) } }
                            td.num { (record.deleted_count) }
                            td { (record.requested_by.as_deref().unwrap_or("—")) }
                            td { (layout::time(record.created_at)) }
                        }
                    }
                }
            }
        }
        @if records.is_empty() { p.empty { "No job matches." } }
        @if let Some(cursor) = next { p { a rel="next" href=(filters.next(&cursor)) { "Older jobs" } } }
    };
    layout::respond(StatusCode::OK, layout::page(&session, "Jobs", main))
}

fn short(id: Uuid) -> String {
    id.to_string()[..8].to_owned()
}

/// A time as the form's `datetime-local` field sends it (no zone: UTC),
/// with or without seconds, or as RFC 3339.
fn parse_time(raw: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&chrono::Utc));
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(raw, format).ok())
        .map(|naive| naive.and_utc())
}

fn filter_form(filters: &Filters) -> Markup {
    html! {
        form.filters id="filters" method="get" action="/jobs" {
            label for="operation" { "Operation" }
            input id="operation" name="operation" type="text" value=(filters.operation) placeholder="cleanup_expired_images";
            label for="status" { "Status" }
            select id="status" name="status" {
                option value="" selected[filters.status.is_empty()] { "any" }
                @for status in STATUSES {
                    option value=(status) selected[filters.status == status] { (status) }
                }
            }
            label for="requested_by" { "Requested by" }
            input id="requested_by" name="requested_by" type="text" value=(filters.requested_by);
            label for="until" { "Created before (UTC)" }
            input id="until" name="until" type="datetime-local" step="1" value=(filters.until);
            button type="submit" { "Filter" }
        }
    }
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let record = match raw.parse::<Uuid>() {
        Ok(job_id) => results::get(&state.pool, job_id).await.map_err(ApiError::from),
        Err(_) => Ok(None),
    };
    let record = match record {
        Ok(Some(record)) => record,
        Ok(None) => return layout::error(&session, ApiError::NotFound),
        Err(err) => return layout::error(&session, err),
    };
    let title = format!("Job {}", short(record.job_id));
    let quarantine = restore::quarantine(&state, &record).await;
    let restore = restore::section(&session, &record, &quarantine, restore::outcome(query.as_deref()));
    layout::respond(StatusCode::OK, layout::page(&session, &title, job(&session, &record, restore)))
}

/// The job's page; `restore` is its quarantine section (empty for a job
/// that quarantines nothing).
fn job(session: &Session, record: &JobRecord, restore: Markup) -> Markup {
    let id = record.job_id;
    let can_cancel = matches!(record.status.as_str(), "queued" | "running");
    let can_retry = matches!(record.status.as_str(), "failed" | "cancelled");
    let errors: Vec<ErrorItem> = serde_json::from_value(record.errors.clone()).unwrap_or_default();
    let took = record.started_at.map(|start| record.finished_at.unwrap_or_else(chrono::Utc::now) - start);
    html! {
        h1 { "Job " code { (id) } }
        dl.facts {
            dt { "Status" } dd id="status" { (record.status) }
            dt { "Operation" } dd { (record.operation) @if record.dry_run { " (dry run)" } }
            dt { "Requested by" } dd id="requested-by" { (record.requested_by.as_deref().unwrap_or("—")) }
            dt { "Deleted" } dd id="deleted" { (record.deleted_count) }
            dt { "Bytes" } dd id="bytes" { (layout::bytes(record.deleted_bytes)) }
            dt { "Skipped (in use)" } dd id="skipped" { (record.skipped_count) }
            dt { "Errors" } dd id="errors" { (record.error_count) }
            dt { "Created" } dd { (layout::time(record.created_at)) }
            dt { "Started" } dd { (record.started_at.map_or("—".to_owned(), layout::time)) }
            dt { "Finished" } dd { (record.finished_at.map_or("—".to_owned(), layout::time)) }
            dt { "Took" } dd { (took.map_or("—".to_owned(), |d| layout::duration(d.num_milliseconds() as f64 / 1000.0))) }
            dt { "Attempts" } dd { (record.attempts) }
            @if let Some(error) = &record.last_error { dt { "Last error" } dd { (error) } }
        }
        @if !session.read_only && (can_cancel || can_retry) {
            div.actions {
                @if can_cancel {
                    form id="cancel" method="post" action={ "/jobs/" (id) "/cancel" } {
                        (csrf_field(session))
                        button.danger type="submit" { "Cancel job" }
                    }
                }
                @if can_retry {
                    form id="retry" method="post" action={ "/jobs/" (id) "/retry" } {
                        (csrf_field(session))
                        button type="submit" { "Retry from its checkpoint" }
                    }
                }
            }
        }
        (restore)
        (chart::histogram(record.checkpoint.as_ref()))
        h2 { "Error items" }
        @if errors.is_empty() { p.empty { "None." } } @else {
            div.scroll {
                table id="error-items" {
                    thead { tr { th scope="col" { "Path" } th scope="col" { "Error" } th scope="col" { "Phase" } } }
                    tbody {
                        @for item in &errors {
                            tr { td { code { (item.path) } } td { (item.error) } td { (item.operation) } }
                        }
                    }
                }
            }
        }
        h2 { "Checkpoint" }
        pre id="checkpoint" {
            (record.checkpoint.as_ref().map_or("none".to_owned(), |c| serde_json::to_string_pretty(c).unwrap_or_default()))
        }
    }
}
