//! The overview's activity: deletions and errors per hour over the last 24
//! hours, as two small bar charts and a hidden table.
//!
//! Cheap whatever the history holds: the figures come from `job_activity`,
//! a ring of 24 hourly slots (32 shard rows each) that a trigger on
//! `job_results` keeps as batches commit (migration
//! `20261202000100_job_activity`), never from `job_results` itself. One
//! query reads at most 768 small rows.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlx::PgPool;

use super::super::layout;
use super::chart::{self, Bar, Chart};

/// One hour's figures.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hour {
    /// The start of the hour.
    pub hour: DateTime<Utc>,
    /// Items deleted (dry runs excluded) and their bytes.
    pub deleted: i64,
    pub bytes: i64,
    /// Item errors (files or rows that could not be cleaned).
    pub errors: i64,
    /// Jobs that ended as failed.
    pub failed: i64,
}

/// The current hour and the 23 before it, oldest first; hours without
/// activity are zeros. The hours are the database's, like the trigger's.
pub async fn last_day(pool: &PgPool) -> sqlx::Result<Vec<Hour>> {
    sqlx::query_as(
        "WITH now_hour AS (SELECT janitor_activity_hour(now()) AS h)
         SELECT s.hour, coalesce(sum(a.deleted), 0)::bigint AS deleted, coalesce(sum(a.bytes), 0)::bigint AS bytes,
                coalesce(sum(a.errors), 0)::bigint AS errors, coalesce(sum(a.failed), 0)::bigint AS failed
         FROM now_hour, generate_series(now_hour.h - interval '23 hours', now_hour.h, interval '1 hour') AS s(hour)
         LEFT JOIN job_activity a ON a.hour = s.hour
         GROUP BY s.hour ORDER BY s.hour",
    )
    .fetch_all(pool)
    .await
}

/// The overview's section: totals, the two charts, the table.
pub fn section(hours: &[Hour]) -> Markup {
    let total = |field: fn(&Hour) -> i64| hours.iter().map(field).sum::<i64>();
    let (deleted, bytes, errors, failed) =
        (total(|h| h.deleted), total(|h| h.bytes), total(|h| h.errors), total(|h| h.failed));
    let label = |i: usize, hour: &Hour| (i % 6 == 0).then(|| hour.hour.format("%H:00").to_string());
    let series = |field: fn(&Hour) -> i64, what: &str| -> Vec<Bar> {
        hours
            .iter()
            .enumerate()
            .map(|(i, h)| Bar {
                value: field(h),
                tooltip: format!("{} UTC: {} {what}", h.hour.format("%H:00"), field(h)),
                label: label(i, h),
            })
            .collect()
    };
    let deletions = Chart {
        id: "deleted-chart",
        title: "Deletions per hour",
        desc: "Items deleted in each of the last 24 hours (UTC), oldest first.",
        class: "bar-deleted",
    };
    let problems = Chart {
        id: "errors-chart",
        title: "Errors per hour",
        desc: "Item errors in each of the last 24 hours (UTC), oldest first.",
        class: "bar-errors",
    };
    html! {
        section id="activity" aria-labelledby="activity-title" {
            h2 id="activity-title" { "Last 24 hours" }
            p.summary {
                span id="deleted-24h" { (deleted) } " deleted (" (layout::bytes(bytes)) "), "
                span id="errors-24h" { (errors) } " item errors, "
                span id="failed-24h" { (failed) } " failed jobs."
            }
            div.charts {
                figure { (chart::bars(&deletions, &series(|h| h.deleted, "deleted"))) figcaption { "Deleted" } }
                figure { (chart::bars(&problems, &series(|h| h.errors, "item errors"))) figcaption { "Errors" } }
            }
            (table(hours))
        }
    }
}

/// The same figures for screen readers (and for copying).
fn table(hours: &[Hour]) -> Markup {
    html! {
        table.visually-hidden id="activity-table" {
            caption { "Deletions and errors per hour (UTC)" }
            thead { tr {
                th scope="col" { "Hour" } th scope="col" { "Deleted" } th scope="col" { "Bytes" }
                th scope="col" { "Item errors" } th scope="col" { "Failed jobs" }
            } }
            tbody {
                @for hour in hours {
                    tr data-hour=(hour.hour.format("%Y-%m-%dT%H:00Z")) {
                        th scope="row" { (hour.hour.format("%Y-%m-%d %H:00")) }
                        td.num.deleted { (hour.deleted) }
                        td.num { (hour.bytes) }
                        td.num.errors { (hour.errors) }
                        td.num.failed { (hour.failed) }
                    }
                }
            }
        }
    }
}
