//! `janitor-bench console`: how long each console page takes with a large
//! history. Seeds `--jobs` job rows (with audit rows, schedule ticks and
//! dead letters) into its own database, starts a real `janitor serve`,
//! logs in through `POST /login`, and requests every page `--rounds`
//! times, the pages in turn, each on a fresh connection. The goal is the
//! console's promise: every page in under 100 ms at a million jobs.
//!
//! - `seed`: the rows and dead letters.
//! - `server`: the `janitor serve` child and a minimal HTTP client.

mod seed;
mod server;

use std::time::{Duration, Instant};

use janitor_workers::layout::Layout;
use serde_json::json;
use uuid::Uuid;

use self::server::{Serve, ServeEnv};
use crate::{quantile_ms, BenchDb};

/// The promise: every page, every time, under this.
const GOAL_MS: f64 = 100.0;

#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleBench {
    /// Job rows seeded into `job_results`.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: i64,
    /// Times each page is requested.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
}

/// A page to time: its name in the table, its path, and whether a 404 means
/// only that this build has no such page yet.
struct Page {
    name: &'static str,
    path: String,
    optional: bool,
}

pub async fn run(args: &ConsoleBench, database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    let db = BenchDb::create(database_url).await?;
    let redis = redis::Client::open(redis_url)?;
    let prefix = format!("janitor-bench:{}", Uuid::new_v4().simple());
    let outcome = measure(args, &db, &redis, redis_url, &prefix).await;
    crate::delete_keys(&redis, &prefix).await?;
    db.drop().await;
    report(args, &outcome?);
    Ok(())
}

async fn measure(
    args: &ConsoleBench,
    db: &BenchDb,
    redis: &redis::Client,
    redis_url: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(Page, Vec<Duration>)>> {
    let seeded = Instant::now();
    seed::rows(&db.pool, args.jobs, prefix).await?;
    seed::dead_letters(&db.pool, redis, &Layout::new(prefix), 150).await?;
    eprintln!("seeded {} job rows in {:.1?}", args.jobs, seeded.elapsed());
    let pages = pages(&db.pool).await?;

    let token = Uuid::new_v4().simple().to_string();
    let storage = tempfile::tempdir()?;
    let env = ServeEnv {
        database_url: db.url(),
        redis_url,
        queue: prefix,
        admin_tokens: &format!("bench={token}"),
        storage_root: storage.path(),
    };
    let serve = Serve::start(&env).await?;
    let timed = time_pages(&serve, &token, pages, args.rounds).await;
    serve.stop().await?;
    timed
}

/// Every page, each filter of the jobs list on its own and one combination
/// that matches nothing, a page deep in the history, a job.
async fn pages(pool: &sqlx::PgPool) -> anyhow::Result<Vec<Page>> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results").fetch_one(pool).await?;
    // The cursor of the job 90% of the way down the list, as the "Older"
    // link would carry it after thousands of pages.
    let deep: Uuid =
        sqlx::query_scalar("SELECT job_id FROM job_results ORDER BY created_at DESC, job_id DESC OFFSET $1 LIMIT 1")
            .bind(rows * 9 / 10)
            .fetch_one(pool)
            .await?;
    let deep = janitor_workers::results::get(pool, deep).await?.map(|record| janitor_workers::results::cursor(&record));
    let cursor = url::form_urlencoded::byte_serialize(deep.unwrap_or_default().as_bytes()).collect::<String>();
    let month_ago =
        (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let job: Uuid = sqlx::query_scalar(
        "SELECT job_id FROM job_results WHERE status = 'failed' AND operation = 'cleanup_all' LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    let page = |name, path: &str| Page { name, path: path.to_owned(), optional: false };
    let optional = |name, path: &str| Page { name, path: path.to_owned(), optional: true };
    Ok(vec![
        page("overview", "/"),
        page("running jobs (polled)", "/console/running"),
        page("jobs", "/jobs"),
        page("jobs, status failed", "/jobs?status=failed"),
        page("jobs, status cancelled", "/jobs?status=cancelled"),
        page("jobs, operation prune_records", "/jobs?operation=prune_records"),
        page("jobs, requested by alice (rare)", "/jobs?requested_by=alice"),
        page("jobs, requested by nobody (none)", "/jobs?requested_by=nobody"),
        page("jobs, session jobs by scheduler (none)", "/jobs?operation=cleanup_session&requested_by=scheduler"),
        page("jobs, before a month ago", &format!("/jobs?before={month_ago}")),
        page("jobs, deep page (90% down)", &format!("/jobs?before={cursor}")),
        page("jobs, failed, deep page", &format!("/jobs?status=failed&before={cursor}")),
        page("job detail", &format!("/jobs/{job}")),
        page("dead letters", "/dead"),
        optional("schedules", "/schedules"),
        optional("audit log", "/audit"),
        optional("audit log, actor cron", "/audit?actor=cron"),
        optional("plan a cleanup (form)", "/plan"),
    ])
}

/// Requests the pages in turn, `rounds` times. A page answered with 404
/// that is optional is left out (said on stderr); any other status but 200
/// is an error.
async fn time_pages(
    serve: &Serve,
    token: &str,
    pages: Vec<Page>,
    rounds: usize,
) -> anyhow::Result<Vec<(Page, Vec<Duration>)>> {
    let cookie = serve.login(token).await?;
    let mut timed: Vec<(Page, Vec<Duration>)> = Vec::new();
    for page in pages {
        // A first request warms what a first request warms (connections,
        // prepared statements, caches) and checks the page is there.
        let response = server::request(serve.addr, "GET", &page.path, &cookie, "").await?;
        match response.status {
            200 => timed.push((page, Vec::with_capacity(rounds))),
            404 if page.optional => eprintln!("{} ({}) is not in this build: left out", page.name, page.path),
            status => anyhow::bail!("GET {} answered {status}: {}", page.path, response.body),
        }
    }
    for _ in 0..rounds {
        for (page, samples) in &mut timed {
            let started = Instant::now();
            let response = server::request(serve.addr, "GET", &page.path, &cookie, "").await?;
            samples.push(started.elapsed());
            anyhow::ensure!(response.status == 200, "GET {} answered {}", page.path, response.status);
        }
    }
    Ok(timed)
}

fn report(args: &ConsoleBench, timed: &[(Page, Vec<Duration>)]) {
    let mut summary = serde_json::Map::new();
    let mut slowest: f64 = 0.0;
    println!("{:<44} {:>9} {:>9}  path", format!("page ({} job rows)", args.jobs), "p50 ms", "max ms");
    for (page, samples) in timed {
        let mut samples = samples.clone();
        let max = samples.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0;
        let p50 = quantile_ms(&mut samples, 0.5);
        slowest = slowest.max(max);
        println!("{:<44} {p50:>9.2} {max:>9.2}  {}", page.name, page.path);
        summary.insert(page.name.to_owned(), json!({ "p50_ms": p50, "max_ms": max }));
    }
    let met = slowest < GOAL_MS;
    let verdict = if met { "met" } else { "NOT met" };
    println!("goal: every page under {GOAL_MS} ms, every time: {verdict} (slowest request {slowest:.2} ms)");
    let settings = json!({ "jobs": args.jobs, "rounds": args.rounds });
    println!(
        "{}",
        json!({ "benchmark": "console", "settings": settings, "goal_ms": GOAL_MS, "met": met,
                "slowest_ms": slowest, "pages": summary })
    );
}
