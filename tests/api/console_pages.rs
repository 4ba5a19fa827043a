//! The console's read-only pages over HTTP: the schedules (and their
//! summary on the overview), the audit log with its paging and filters, the
//! overview's activity chart and a job's batch histogram. The restore
//! action, API and console, is in [`restore`].

mod restore;

use chrono::{DateTime, Utc};
use janitor_workers::schedule::Schedule;
use sqlx::PgPool;
use uuid::Uuid;

use crate::console::{get, session};
use crate::server::{Api, OPS};

/// The HTML of the first element that starts with `open`, up to `close`.
fn element<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html.find(open).unwrap_or_else(|| panic!("no {open} in {html}"));
    let end = html[start..].find(close).map_or(html.len(), |end| start + end + close.len());
    &html[start..end]
}

/// Inserts a job row as a producer would, then moves it as a worker
/// would, so that the counting triggers see it. Each is on a queue of its
/// own, so that equal unfinished jobs may coexist.
async fn job(pool: &PgPool, operation: &str, dry_run: bool, set: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO job_results (job_id, operation, dry_run, queue) VALUES ($1, $2, $3, $1::text)")
        .bind(id)
        .bind(operation)
        .bind(dry_run)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&format!("UPDATE job_results SET {set} WHERE job_id = $1")).bind(id).execute(pool).await.unwrap();
    id
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_schedules_show_their_last_run_and_next_fire_time(pool: PgPool) {
    let api = Api::start(pool).await;
    let queue = api.env.prefix.clone();
    let ran = job(api.pool(), "cleanup_all", false, "status = 'completed', deleted_count = 12, error_count = 1").await;
    let ticks = format!(
        "INSERT INTO schedule_ticks (queue, schedule, scheduled_at, job_id, outcome, reason) VALUES
           ('{queue}', 'nightly-all', '2026-01-01T02:00:00Z', '{ran}', 'enqueued', NULL),
           ('{queue}', 'nightly-all', '2026-01-02T02:00:00Z', gen_random_uuid(), 'skipped', 'overlap: still running'),
           ('another-queue', 'weekly-orphans', '2026-01-04T03:00:00Z', gen_random_uuid(), 'enqueued', NULL)"
    );
    sqlx::query(&ticks).execute(api.pool()).await.unwrap();
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(api.pool()).await.unwrap();
    let next = |name: &str| {
        let schedule = Schedule::defaults().into_iter().find(|s| s.name == name).unwrap();
        format!(r#"datetime="{}""#, schedule.next_after(now).unwrap().to_rfc3339())
    };
    let cookie = session(&api, OPS.1).await;

    let page = get(&api, "/schedules", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    let nightly = element(&text, r#"<tr data-schedule="nightly-all">"#, "</tr>");
    assert!(nightly.contains("<code>0 0 2 * * *</code>"), "{nightly}");
    assert!(nightly.contains(&format!(r#"<a href="/jobs/{ran}">2026-01-01 02:00:00 UTC</a>"#)), "{nightly}");
    assert!(nightly.contains("completed") && nightly.contains("12 deleted, 1 errors"), "{nightly}");
    assert!(nightly.contains("Skipped at 2026-01-02 02:00:00 UTC: overlap: still running"), "{nightly}");
    assert!(nightly.contains(&next("nightly-all")), "{nightly}");
    let weekly = element(&text, r#"<tr data-schedule="weekly-orphans">"#, "</tr>");
    assert!(weekly.contains("never"), "another queue's ticks are not this one's: {weekly}");
    assert!(weekly.contains(&next("weekly-orphans")), "{weekly}");

    let overview = get(&api, "/", &cookie).await.text();
    let summary = element(&overview, r#"<section id="schedules""#, "</section>");
    let nightly = element(summary, r#"<tr data-schedule="nightly-all">"#, "</tr>");
    assert!(nightly.contains(&format!(r#"href="/jobs/{ran}""#)) && nightly.contains(&next("nightly-all")), "{nightly}");
    assert!(summary.contains(r#"<tr data-schedule="daily-prune">"#), "{summary}");
    api.finish().await;
}

/// Writes `count` audit rows a second apart, the newest `newest_at`
/// seconds ago, as `actor` on `path`.
async fn audit_rows(pool: &PgPool, count: i64, newest_at: i64, actor: &str, path: &str) {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, method, path, status, outcome)
         SELECT now() - make_interval(secs => $2 + $1 - i), $3, 'POST', $4, 200, 'accepted'
         FROM generate_series(1, $1) AS i",
    )
    .bind(count)
    .bind(newest_at as f64)
    .bind(actor)
    .bind(path)
    .execute(pool)
    .await
    .unwrap();
}

/// The audit ids a page lists, in its order.
fn audit_ids(html: &str) -> Vec<i64> {
    html.split(r#"<tr data-audit-id=""#).skip(1).map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap()).collect()
}

/// The "Older entries" link of a page, unescaped.
fn older(html: &str) -> Option<String> {
    let at = html.find(r#"<a rel="next" href=""#)? + r#"<a rel="next" href=""#.len();
    Some(html[at..at + html[at..].find('"').unwrap()].replace("&amp;", "&"))
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_audit_log_pages_newest_first_and_filters(pool: PgPool) {
    let api = Api::start(pool).await;
    audit_rows(api.pool(), 40, 100, "cron", "/api/v1/admin/cleanup/expired").await;
    audit_rows(api.pool(), 30, 10, "ops", "/jobs/x/cancel").await;
    let cookie = session(&api, OPS.1).await; // One more row: the login.
    let all: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM audit_log ORDER BY at DESC, id DESC").fetch_all(api.pool()).await.unwrap();
    assert_eq!(all.len(), 71);

    let first = get(&api, "/audit", &cookie).await.text();
    assert_eq!(audit_ids(&first), all[..50], "newest first, 50 a page");
    let second = get(&api, &older(&first).expect("a next page"), &cookie).await.text();
    assert_eq!(audit_ids(&second), all[50..]);
    assert_eq!(older(&second), None, "the last page has no next");

    let cancels = get(&api, "/audit?actor=ops&action=cancel", &cookie).await.text();
    assert_eq!(audit_ids(&cancels), all[1..31], "the login is ops's too, but no cancel");
    assert!(cancels.contains(r#"<td class="actor">ops</td>"#) && !cancels.contains(">cron<"), "{cancels}");
    let none = get(&api, "/audit?actor=nobody", &cookie).await.text();
    assert!(audit_ids(&none).is_empty() && none.contains("No entry matches."), "{none}");
    let bad = get(&api, "/audit?outcome=bogus", &cookie).await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    let bad = get(&api, "/audit?before=yesterday", &cookie).await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    api.finish().await;
}

/// A filter on a rare actor looks through at most 5,000 entries a page and
/// then links on, instead of walking the whole log.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_filtered_audit_page_looks_through_a_bounded_stretch(pool: PgPool) {
    let api = Api::start(pool).await;
    audit_rows(api.pool(), 1, 20_000, "rare", "/jobs/y/retry").await;
    audit_rows(api.pool(), 6_000, 10, "cron", "/api/v1/admin/cleanup/expired").await;
    let cookie = session(&api, OPS.1).await;
    let first = get(&api, "/audit?actor=rare", &cookie).await.text();
    assert!(audit_ids(&first).is_empty(), "the match is older than the first 5,000 entries");
    assert!(first.contains("These are the matches among the 5000 entries before."), "{first}");
    let next = older(&first).expect("a link to look further");
    assert!(next.starts_with("/audit?actor=rare&before="), "{next}");
    let second = get(&api, &next, &cookie).await.text();
    let rare: i64 =
        sqlx::query_scalar("SELECT id FROM audit_log WHERE actor = 'rare'").fetch_one(api.pool()).await.unwrap();
    assert_eq!(audit_ids(&second), [rare]);
    assert_eq!(older(&second), None, "the log ends within this stretch");
    api.finish().await;
}

/// The cells of the activity table's row of an hour.
fn hour_row(html: &str, hour: DateTime<Utc>) -> &str {
    element(html, &format!(r#"<tr data-hour="{}">"#, hour.format("%Y-%m-%dT%H:00Z")), "</tr>")
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_overview_charts_the_last_24_hours_deletions_and_errors(pool: PgPool) {
    let api = Api::start(pool).await;
    crate::support::seed_expired(api.pool(), &api.env.store, 5, 100).await;
    // A dry run deletes nothing, and is not counted; the real run is.
    for run in [&["run", "expired", "--dry-run", "--json"][..], &["run", "expired", "--json"]] {
        let (code, _, stderr) = api.env.janitor(run).await;
        assert_eq!(code, 0, "{stderr}");
    }
    job(api.pool(), "cleanup_orphaned_files", false, "status = 'failed', error_count = 2").await;
    // An hour three hours ago, and a slot that still holds an hour of
    // yesterday (24 hours ago: no longer shown).
    let three_ago: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO job_activity (slot, shard, hour, deleted, bytes, errors, failed)
         SELECT (floor(extract(epoch FROM h) / 3600)::bigint % 24)::smallint, 99, h, d, 0, 0, 0
         FROM (VALUES (janitor_activity_hour(now()) - interval '3 hours', 4),
                      (janitor_activity_hour(now()) - interval '24 hours', 1000)) AS v(h, d)
         RETURNING hour",
    )
    .fetch_one(api.pool())
    .await
    .unwrap();
    let cookie = session(&api, OPS.1).await;

    let overview = get(&api, "/", &cookie).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    let text = overview.text();
    let activity = element(&text, r#"<section id="activity""#, "</section>");
    assert!(activity.contains(r#"<span id="deleted-24h">9</span> deleted (500 B)"#), "{activity}");
    assert!(activity.contains(r#"<span id="errors-24h">2</span> item errors"#), "{activity}");
    assert!(activity.contains(r#"<span id="failed-24h">1</span> failed jobs"#), "{activity}");
    let three = hour_row(activity, three_ago);
    assert!(three.contains(r#"<td class="num deleted">4</td>"#), "{three}");
    assert_eq!(activity.matches("<tr data-hour=").count(), 24, "{activity}");
    // Two charts of 24 bars, each an image named and described.
    assert_eq!(activity.matches("<rect ").count(), 48, "{activity}");
    for (id, title) in [("deleted-chart", "Deletions per hour"), ("errors-chart", "Errors per hour")] {
        let svg = format!(r#"id="{id}" viewBox="0 0 600 140" role="img" aria-labelledby="{id}-title {id}-desc">"#);
        assert!(activity.contains(&svg), "{svg} in {activity}");
        assert!(activity.contains(&format!(r#"<title id="{id}-title">{title}</title><desc id="{id}-desc">"#)));
    }
    assert!(activity.contains(r#"data-value="4""#), "the bar of three hours ago: {activity}");
    assert!(!activity.contains("1000"), "yesterday's slot is not shown: {activity}");
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_job_page_draws_its_batch_durations(pool: PgPool) {
    let api = Api::start(pool).await;
    let checkpoint = r#"{"batch_seconds": [0, 3, 0, 0, 0, 0, 0, 0, 0, 1], "batch_seconds_sum": 12.06}"#;
    let timed = job(api.pool(), "cleanup_expired_images", false, &format!("checkpoint = '{checkpoint}'")).await;
    let untimed = job(api.pool(), "cleanup_expired_images", false, "status = 'running'").await;
    let cookie = session(&api, OPS.1).await;

    let page = get(&api, &format!("/jobs/{timed}"), &cookie).await.text();
    let batches = element(&page, r#"<section id="batches""#, "</section>");
    assert!(batches.contains("4 batches, 3015 ms each on average."), "{batches}");
    assert!(batches.contains(r#"id="batch-chart" viewBox="0 0 600 140" role="img""#), "{batches}");
    assert_eq!(batches.matches("<rect ").count(), 10, "a bar per bucket: {batches}");
    assert!(batches.contains(r#"<title>≤25 ms: 3 batches</title>"#), "{batches}");
    for (bucket, count) in [("≤10 ms", 0), ("≤25 ms", 3), ("≤10 s", 0), (">10 s", 1)] {
        let cells = format!(r#"<th scope="row">{}</th><td class="num">{count}</td>"#, bucket.replace('>', "&gt;"));
        assert!(batches.contains(&cells), "{cells} in {batches}");
    }
    let page = get(&api, &format!("/jobs/{untimed}"), &cookie).await.text();
    let batches = element(&page, r#"<section id="batches""#, "</section>");
    assert!(batches.contains("No batch has been timed yet.") && !batches.contains("<svg"), "{batches}");
    api.finish().await;
}

/// The overview's reclaimable bytes are `stats`'s, computed in the
/// background: the first view does not wait for them and says so, a later
/// one shows them.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_overview_shows_the_reclaimable_bytes_without_waiting_for_them(pool: PgPool) {
    use crate::support::{insert_image, Image};
    let api = Api::start(pool).await;
    insert_image(api.pool(), None, &Image::expired("photos/a.jpg", 1000)).await;
    insert_image(api.pool(), None, &Image::expired("photos/b.jpg", 2500)).await;
    insert_image(api.pool(), None, &Image::fresh("photos/c.jpg", 7000)).await;
    let cookie = session(&api, OPS.1).await;

    let first = get(&api, "/", &cookie).await.text();
    assert!(element(&first, "<section id=\"reclaimable\"", "</section>").contains("Being computed"), "{first}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let section = loop {
        let page = get(&api, "/", &cookie).await.text();
        let section = element(&page, "<section id=\"reclaimable\"", "</section>").to_owned();
        if section.contains("data-bytes") {
            break section;
        }
        assert!(std::time::Instant::now() < deadline, "the figures never came: {section}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let stats = janitor_workers::jobs::stats::collect(api.pool()).await.unwrap();
    assert_eq!(stats.reclaimable_bytes, 3500);
    assert!(section.contains(r#"data-bytes="3500""#), "{section}");
    assert!(section.contains("in 2 expired images"), "{section}");
}

/// The jobs list's time filter: jobs created before a time (the form's
/// `datetime-local` value, read as UTC, or RFC 3339); a bad one is a 422.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_jobs_list_filters_by_creation_time(pool: PgPool) {
    let api = Api::start(pool).await;
    let mut ids = Vec::new();
    for at in ["2026-01-01T08:00:00Z", "2026-01-02T08:00:00Z", "2026-01-03T08:00:00Z"] {
        let id = job(api.pool(), "cleanup_expired_images", false, &format!("created_at = '{at}'")).await;
        ids.push(id);
    }
    let cookie = session(&api, OPS.1).await;

    for until in ["2026-01-02T09:00", "2026-01-02T09:00:00Z"] {
        let page = get(&api, &format!("/jobs?until={until}"), &cookie).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let text = page.text();
        let shown: Vec<bool> = ids.iter().map(|id| text.contains(&id.to_string())).collect();
        assert_eq!(shown, [true, true, false], "until {until}");
        assert!(text.contains(&format!(r#"value="{until}""#)), "the form keeps the filter");
    }
    let bad = get(&api, "/jobs?until=yesterday", &cookie).await;
    assert_eq!(bad.status, 422, "{}", bad.text());
}
