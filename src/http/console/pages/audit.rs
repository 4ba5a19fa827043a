//! `GET /audit` (read-only): the audit log, newest first, 50 entries a
//! page, filtered by actor (a token's name), action (text in the path,
//! such as `cancel` or `/login`) and outcome.
//!
//! Cheap however long the log is: a page is a keyset page on the `at`
//! index from the previous page's last `(at, id)`. A filter on a rare actor
//! could otherwise walk the whole index to fill a page, so a filtered page
//! looks through at most [`SCAN`] entries; when they hold fewer than a page
//! of matches it says how far it looked and links to the next stretch.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlx::PgPool;
use uuid::Uuid;

use super::super::layout;
use super::super::session::Session;
use crate::http::error::ApiError;
use crate::http::AppState;

const PAGE: i64 = 50;
/// The most entries a filtered page looks through.
const SCAN: i64 = 5000;

const OUTCOMES: [&str; 8] =
    ["accepted", "unauthorized", "unauthorized_repeated", "forbidden", "not_found", "invalid", "rate_limited", "error"];

/// One entry as the page shows it.
#[derive(Debug, sqlx::FromRow)]
struct Entry {
    id: i64,
    at: DateTime<Utc>,
    actor: Option<String>,
    method: String,
    path: String,
    status: i32,
    outcome: String,
    job_id: Option<Uuid>,
    remote: Option<String>,
    detail: Option<String>,
}

/// The filters and cursor, as given in the query string (empty: any).
#[derive(Debug, Default)]
struct Filters {
    actor: String,
    action: String,
    outcome: String,
    before: String,
}

impl Filters {
    fn parse(query: Option<&str>) -> Self {
        let mut filters = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.trim().to_owned();
            match key.as_ref() {
                "actor" => filters.actor = value,
                "action" => filters.action = value,
                "outcome" => filters.outcome = value,
                "before" => filters.before = value,
                _ => {}
            }
        }
        filters
    }

    fn filtered(&self) -> bool {
        !(self.actor.is_empty() && self.action.is_empty() && self.outcome.is_empty())
    }

    /// The cursor, or the reason it is refused.
    fn cursor(&self) -> Result<Option<(DateTime<Utc>, i64)>, ApiError> {
        if self.before.is_empty() {
            return Ok(None);
        }
        let bad = || ApiError::invalid("before", "bad cursor");
        let (at, id) = self.before.split_once('~').ok_or_else(bad)?;
        let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?.with_timezone(&Utc);
        Ok(Some((at, id.parse().map_err(|_| bad())?)))
    }

    /// The query string of the page before `cursor`.
    fn next(&self, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [("actor", &self.actor), ("action", &self.action), ("outcome", &self.outcome)] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.append_pair("before", cursor);
        format!("/audit?{}", query.finish())
    }
}

fn cursor_of(at: DateTime<Utc>, id: i64) -> String {
    format!("{}~{id}", janitor_workers::report::rfc3339_micros(at))
}

/// Up to [`PAGE`] matching entries before the cursor, among the [`SCAN`]
/// entries before it when filtered. Without a cursor the bound is
/// `infinity`: no `$1 IS NULL OR …`, which a generic plan could not use as
/// an index condition (it would walk the index from the newest entry to
/// the cursor, 170 ms deep in a million entries).
async fn entries(pool: &PgPool, filters: &Filters, before: Option<(DateTime<Utc>, i64)>) -> sqlx::Result<Vec<Entry>> {
    let given = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    let scan = if filters.filtered() { SCAN } else { PAGE };
    sqlx::query_as(
        "WITH scanned AS (
             SELECT id, at, actor, method, path, status, outcome, job_id, remote, detail FROM audit_log
             WHERE at <= coalesce($1::timestamptz, 'infinity') AND (at, id) < (coalesce($1, 'infinity'), $2)
             ORDER BY at DESC, id DESC LIMIT $3)
         SELECT * FROM scanned
         WHERE ($4::text IS NULL OR actor = $4) AND ($5::text IS NULL OR strpos(path, $5) > 0)
           AND ($6::text IS NULL OR outcome = $6)
         ORDER BY at DESC, id DESC LIMIT $7",
    )
    .bind(before.map(|(at, _)| at))
    .bind(before.map_or(i64::MAX, |(_, id)| id))
    .bind(scan)
    .bind(given(&filters.actor))
    .bind(given(&filters.action))
    .bind(given(&filters.outcome))
    .bind(PAGE)
    .fetch_all(pool)
    .await
}

/// Where a filtered page's look-through ended: the oldest of the [`SCAN`]
/// entries before the cursor, if there were that many (else the log ends
/// there).
async fn scan_end(pool: &PgPool, before: Option<(DateTime<Utc>, i64)>) -> sqlx::Result<Option<(DateTime<Utc>, i64)>> {
    let end: Option<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "WITH scanned AS (
             SELECT id, at FROM audit_log
             WHERE at <= coalesce($1::timestamptz, 'infinity') AND (at, id) < (coalesce($1, 'infinity'), $2)
             ORDER BY at DESC, id DESC LIMIT $3)
         SELECT at, id, (SELECT count(*) FROM scanned) FROM scanned ORDER BY at, id LIMIT 1",
    )
    .bind(before.map(|(at, _)| at))
    .bind(before.map_or(i64::MAX, |(_, id)| id))
    .bind(SCAN)
    .fetch_optional(pool)
    .await?;
    Ok(end.filter(|(.., scanned)| *scanned == SCAN).map(|(at, id, _)| (at, id)))
}

pub async fn page(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let filters = Filters::parse(query.as_deref());
    match render(&state, &filters).await {
        Ok(main) => layout::respond(StatusCode::OK, layout::page(&session, "Audit log", main)),
        Err(err) => layout::error(&session, err),
    }
}

async fn render(state: &AppState, filters: &Filters) -> Result<Markup, ApiError> {
    if !filters.outcome.is_empty() && !OUTCOMES.contains(&filters.outcome.as_str()) {
        return Err(ApiError::invalid("outcome", format!("must be one of {}", OUTCOMES.join(", "))));
    }
    let before = filters.cursor()?;
    let rows = entries(&state.pool, filters, before).await?;
    // A full page continues after its last entry; a filtered page with
    // fewer matches continues after the last entry it looked through.
    let (next, looked_through) = match rows.last() {
        Some(last) if rows.len() as i64 == PAGE => (Some(cursor_of(last.at, last.id)), false),
        _ if filters.filtered() => match scan_end(&state.pool, before).await? {
            Some((at, id)) => (Some(cursor_of(at, id)), true),
            None => (None, false),
        },
        _ => (None, false),
    };
    Ok(html! {
        h1 { "Audit log" }
        (filter_form(filters))
        div.scroll { table id="audit" {
            thead { tr {
                th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Request" }
                th scope="col" { "Status" } th scope="col" { "Outcome" } th scope="col" { "Job" } th scope="col" { "From" }
            } }
            tbody { @for entry in &rows { (row(entry)) } }
        } }
        @if rows.is_empty() { p.empty { "No entry matches." } }
        @if let Some(cursor) = next {
            p {
                @if looked_through { "These are the matches among the " (SCAN) " entries before. " }
                a rel="next" href=(filters.next(&cursor)) { "Older entries" }
            }
        }
    })
}

fn row(entry: &Entry) -> Markup {
    html! {
        tr data-audit-id=(entry.id) {
            td { (layout::time(entry.at)) }
            td.actor { (entry.actor.as_deref().unwrap_or("—")) }
            td.request {
                code { (entry.method) " " (entry.path) }
                @if let Some(detail) = &entry.detail { br; span.hint { (detail) } }
            }
            td.num { (entry.status) }
            td.outcome { (entry.outcome) }
            td { @if let Some(id) = entry.job_id { a href={ "/jobs/" (id) } { code { (id.to_string()[..8]) } } } @else { "—" } }
            td { (entry.remote.as_deref().unwrap_or("—")) }
        }
    }
}

fn filter_form(filters: &Filters) -> Markup {
    html! {
        form.filters id="audit-filters" method="get" action="/audit" {
            div { label for="actor" { "Actor" } input id="actor" name="actor" type="text" value=(filters.actor) placeholder="token name"; }
            div { label for="action" { "Action" } input id="action" name="action" type="text" value=(filters.action) placeholder="cancel, /login"; }
            div {
                label for="outcome" { "Outcome" }
                select id="outcome" name="outcome" {
                    option value="" selected[filters.outcome.is_empty()] { "any" }
                    @for outcome in OUTCOMES { option value=(outcome) selected[filters.outcome == outcome] { (outcome) } }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}
