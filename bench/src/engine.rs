//! The engine benchmark: every operation through the real queue and a real
//! `janitor worker` process, on a seeded store, next to the hand-written
//! baseline on an identical, freshly seeded store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt as _};
use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use janitor_workers::{CleanupJob, DaysOld, JobRecord, JobSpec, SessionId};
use serde_json::json;
use uuid::Uuid;

use crate::{baseline, quantile_ms, rate, BenchDb, CpuTimes};
use janitor::seed;

#[derive(Debug, Clone, clap::Args)]
pub struct EngineBench {
    /// Images in the seeded store (plus 5% orphan files).
    #[arg(long, default_value_t = 20_000)]
    pub images: usize,
    /// The worker's batch size.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// The worker's (and the baseline's) unlink threads.
    #[arg(long, default_value_t = 8)]
    pub unlink_concurrency: usize,
    /// Where to put the stores (a folder on the file system to measure).
    #[arg(long, default_value = "target/bench-storage")]
    pub storage: PathBuf,
    /// Store sizes to run in turn instead of `--images` (for example
    /// `200000,1000000`), followed by a table of each operation's cost per
    /// item at every size.
    #[arg(long, value_delimiter = ',', conflicts_with = "images")]
    pub scale: Vec<usize>,
}

/// One seeded store: its own database and storage root.
pub(crate) struct Store {
    pub(crate) db: BenchDb,
    pub(crate) root: tempfile::TempDir,
}

impl Store {
    pub(crate) async fn seeded(args: &EngineBench, database_url: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.storage)?;
        let store = Self { db: BenchDb::create(database_url).await?, root: tempfile::tempdir_in(&args.storage)? };
        let started = Instant::now();
        seed::seed(&store.db.pool, store.root.path(), args.images, 8).await?;
        settle(&store).await;
        eprintln!("seeded {} images in {:.1} s", args.images, started.elapsed().as_secs_f64());
        Ok(store)
    }
}

/// Writes the seed out to disk (its files and the database's pages), so that
/// the kernel's and Postgres's delayed writes of the seeding do not land in
/// the middle of what is measured next, janitor's or the baseline's.
async fn settle(store: &Store) {
    if let Err(err) = sqlx::query("CHECKPOINT").execute(&store.db.pool).await {
        eprintln!("warning: CHECKPOINT after seeding failed (not a superuser?): {err}");
    }
    let root = store.root.path().to_owned();
    let synced = tokio::task::spawn_blocking(move || {
        let dir = std::fs::File::open(root)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|synced| synced);
    if let Err(err) = synced {
        eprintln!("warning: syncing the seeded storage failed: {err}");
    }
}

/// A `janitor worker` child process on one store.
pub(crate) struct WorkerProcess {
    child: tokio::process::Child,
}

impl WorkerProcess {
    pub(crate) fn start(
        args: &EngineBench,
        store: &Store,
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        // The binary of the same build (the bench is its own package, so
        // building it does not build `janitor`).
        let janitor = std::env::current_exe()?.with_file_name("janitor");
        anyhow::ensure!(
            janitor.is_file(),
            "{} is missing: build it with the bench (cargo build --release -p janitor -p janitor-bench)",
            janitor.display()
        );
        let child = tokio::process::Command::new(janitor)
            .arg("worker")
            .env("DATABASE_URL", store.db.url())
            .env("REDIS_URL", redis_url)
            .env("JANITOR_QUEUE", prefix)
            .env("JANITOR_STORAGE_ROOT", store.root.path())
            .env("JANITOR_BATCH_SIZE", args.batch_size.to_string())
            .env("JANITOR_UNLINK_CONCURRENCY", args.unlink_concurrency.to_string())
            .env("JANITOR_CONCURRENCY", "32")
            // After the expired cleanup, the seeded orphans are a quarter of
            // what is left: above the default guard, by design of the data.
            .env("JANITOR_MAX_ORPHAN_RATIO", "1")
            // The seeded orphans are minutes old; the sweeps take them all.
            .env("JANITOR_MIN_GRACE", "0s")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().map(|(key, value)| (*key, value.as_str())))
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// Peak resident memory (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else { return 0.0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await?;
        }
        self.child.wait().await?;
        Ok(())
    }
}

/// One job through the queue: its record, time, batch durations (from the
/// row's `updated_at`, which every batch commit sets) and, for `all`, the
/// time each phase took.
struct Timed {
    record: JobRecord,
    took: Duration,
    batches: Vec<Duration>,
    phases: Vec<Duration>,
    /// Each batch's start (its transaction's `now()`, after the pacer let it
    /// through) and the job's deletions once it committed.
    commits: Vec<(chrono::DateTime<chrono::Utc>, i64)>,
}

async fn timed(producer: &Producer, pool: &sqlx::PgPool, job: CleanupJob, dry_run: bool) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let enqueued = producer.enqueue(&JobSpec { job, dry_run, limit: None }, Some("bench")).await?;
    let watch = tokio::spawn(watch(pool.clone(), enqueued.job_id));
    let record = producer.wait(enqueued.job_id, Duration::from_secs(6 * 3600)).await?;
    let took = started.elapsed();
    let Watched { batches, phase_starts, commits } = watch.await??;
    anyhow::ensure!(
        record.status == "completed",
        "{} ended {}: {:?}",
        record.operation,
        record.status,
        record.last_error
    );
    let mut bounds = vec![started];
    bounds.extend(phase_starts);
    bounds.push(started + took);
    let phases = bounds.windows(2).map(|w| w[1].saturating_duration_since(w[0])).collect();
    Ok(Timed { record, took, batches, phases, commits })
}

struct Watched {
    batches: Vec<Duration>,
    commits: Vec<(chrono::DateTime<chrono::Utc>, i64)>,
    /// When the row first showed each phase after the first.
    phase_starts: Vec<Instant>,
}

/// Follows a job's row until it ends, every 3 ms.
async fn watch(pool: sqlx::PgPool, job_id: Uuid) -> anyhow::Result<Watched> {
    let mut stamps: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    let mut commits = Vec::new();
    let mut phase_starts = Vec::new();
    let mut phase = 0;
    loop {
        let row: Option<(String, chrono::DateTime<chrono::Utc>, Option<i32>, i64)> = sqlx::query_as(
            "SELECT status, updated_at, (checkpoint->>'phase')::int, deleted_count FROM job_results WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_optional(&pool)
        .await?;
        match row {
            Some((status, at, now_in, deleted)) if status == "running" => {
                if stamps.last() != Some(&at) {
                    stamps.push(at);
                    commits.push((at, deleted));
                }
                // A phase shorter than a poll starts and ends at once.
                while now_in.is_some_and(|now_in| now_in > phase) {
                    phase += 1;
                    phase_starts.push(Instant::now());
                }
            }
            Some((status, ..)) if status != "queued" => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // The first stamp is the start; the gaps after it are batches.
    let batches = stamps.windows(2).filter_map(|w| (w[1] - w[0]).to_std().ok()).collect();
    Ok(Watched { batches, phase_starts, commits })
}

/// The most deletions whose batches started within one second of each
/// other: what a 1-s window of the job's deletions saw at its busiest.
fn busiest_second(commits: &[(chrono::DateTime<chrono::Utc>, i64)]) -> i64 {
    // Each batch's own deletions, at its start.
    let batches: Vec<(chrono::DateTime<chrono::Utc>, i64)> = commits
        .iter()
        .scan(0, |before, &(at, total)| {
            let size = total - *before;
            *before = total;
            Some((at, size))
        })
        .collect();
    let (mut busiest, mut sum, mut first) = (0, 0, 0);
    for &(at, size) in &batches {
        sum += size;
        while at - batches[first].0 >= chrono::Duration::seconds(1) {
            sum -= batches[first].1;
            first += 1;
        }
        busiest = busiest.max(sum);
    }
    busiest
}

/// Deletions per second in the pacing run.
const PACE: u32 = 2000;

/// `all` through a worker with `--max-deletes-per-sec` on a store of its own
/// (at most 20,000 images: enough seconds to see the windows): the busiest
/// 1-s window of deletions and the mean rate while deleting. `all` idles
/// through its orphan walk, so a pacer that budgets from the job's start
/// would burst after it.
async fn pacing(args: &EngineBench, database_url: &str, redis_url: &str, prefix: &str) -> anyhow::Result<(i64, f64)> {
    let small = EngineBench { images: args.images.min(20_000), ..args.clone() };
    let d = Store::seeded(&small, database_url).await?;
    let paced = [("JANITOR_MAX_DELETES_PER_SEC", PACE.to_string())];
    let worker = WorkerProcess::start(&small, &d, redis_url, &format!("{prefix}:d"), &paced)?;
    let producer =
        Producer::connect(d.db.pool.clone(), redis::Client::open(redis_url)?, Layout::new(format!("{prefix}:d")))
            .await?;
    let all =
        timed(&producer, &d.db.pool, CleanupJob::All { days_old: DaysOld::default(), min_age_secs: 0 }, false).await?;
    worker.stop().await?;
    d.db.drop().await;
    let deleting = match (all.commits.first(), all.commits.last()) {
        (Some(first), Some(last)) => (last.0 - first.0).to_std().unwrap_or_default().as_secs_f64(),
        _ => 0.0,
    };
    Ok((busiest_second(&all.commits), all.record.deleted_count as f64 / deleting.max(1e-9)))
}

struct Row {
    what: String,
    janitor: f64,
    baseline: Option<f64>,
    unit: &'static str,
}

impl Row {
    /// Decimals to print: seconds to the hundredth, the rest to the tenth.
    fn precision(&self) -> usize {
        if self.unit == "s" {
            2
        } else {
            1
        }
    }
}

pub async fn run(args: &EngineBench, database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    if args.scale.is_empty() {
        let (rows, summary) = run_one(args, database_url, redis_url).await?;
        print_table(&rows);
        println!("{summary}");
        return Ok(());
    }
    let mut summaries = Vec::new();
    for &images in &args.scale {
        let args = EngineBench { images, scale: Vec::new(), ..args.clone() };
        println!("== {images} images");
        let (rows, summary) = run_one(&args, database_url, redis_url).await?;
        print_table(&rows);
        summaries.push(summary);
    }
    print_scaling(&summaries);
    println!("{}", json!({ "benchmark": "engine-scale", "runs": summaries }));
    Ok(())
}

async fn run_one(
    args: &EngineBench,
    database_url: &str,
    redis_url: &str,
) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let prefix = format!("janitor-bench:{}", Uuid::new_v4().simple());
    let redis = redis::Client::open(redis_url)?;
    let outcome = measure(args, database_url, redis_url, &prefix).await;
    crate::delete_keys(&redis, &prefix).await?;
    outcome
}

/// Each operation's cost per item and ratio to its baseline at every size
/// of one `--scale` run, and how the cost per item grew from the smallest
/// store to the largest.
fn print_scaling(summaries: &[serde_json::Value]) {
    let num = |summary: &serde_json::Value, key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    // (what, janitor's seconds, the items it handled and the unit's share
    // of a second, the ratio)
    let per_item = [
        ("expired, µs per image", "expired_s", "expired_images", 1e6, "expired_over_overlap_limit"),
        ("orphan scan, µs per file", "orphan_scan_s", "files", 1e6, "orphan_scan_ratio"),
        ("orphan sweep, µs per file", "orphan_sweep_s", "files", 1e6, "orphan_sweep_ratio"),
        ("session jobs, ms per job", "session_s", "sessions", 1e3, "session_ratio"),
        ("all, µs per image", "all_s", "images", 1e6, "all_ratio"),
    ];
    println!("scaling: cost per item (ratio to its baseline), at each size");
    let sizes: Vec<String> = summaries.iter().map(|s| format!("{} images", num(s, "images"))).collect();
    println!("{:<28} {}  growth", "measure", sizes.iter().map(|s| format!("{s:>22}")).collect::<String>());
    for (what, seconds, items, unit, ratio) in per_item {
        let costs: Vec<f64> = summaries.iter().map(|s| num(s, seconds) * unit / num(s, items)).collect();
        let cells: String = summaries
            .iter()
            .zip(&costs)
            .map(|(s, cost)| format!("{:>22}", format!("{cost:.2} ({:.2})", num(s, ratio))))
            .collect();
        let growth = costs.last().unwrap_or(&f64::NAN) / costs.first().unwrap_or(&f64::NAN);
        println!("{what:<28} {cells}  {growth:.2}");
    }
    let rss: String =
        summaries.iter().map(|s| format!("{:>22}", format!("{:.1} MiB", num(s, "worker_peak_rss_mib")))).collect();
    println!("{:<28} {rss}", "worker peak RSS");
    println!("(ratios: expired to the overlap limit; the rest to their baselines' times, sessions to their jobs/s)");
}

fn print_table(rows: &[Row]) {
    println!("{:<50} {:>12} {:>12} {:>7}  unit", "measure", "janitor", "baseline", "ratio");
    for row in rows {
        let (baseline, ratio) = match row.baseline {
            Some(b) => (format!("{b:.prec$}", prec = row.precision()), format!("{:.2}", row.janitor / b)),
            None => ("-".into(), "-".into()),
        };
        let janitor = format!("{:.prec$}", row.janitor, prec = row.precision());
        println!("{:<50} {janitor:>12} {baseline:>12} {ratio:>7}  {}", row.what, row.unit);
    }
    println!("baselines, run with bash -c in the store's root (ROOT, DATABASE_URL set), warm cache:");
    println!("  orphan sweep: {}", baseline::ORPHAN_SWEEP);
    println!("  orphan scan:  {}", baseline::ORPHAN_SCAN);
}

async fn measure(
    args: &EngineBench,
    database_url: &str,
    redis_url: &str,
    prefix: &str,
) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let n = args.images;
    let (expired_free, in_use) = seed::expected(n);
    let mut rows = Vec::new();
    let a = Store::seeded(args, database_url).await?;
    let worker = WorkerProcess::start(args, &a, redis_url, &format!("{prefix}:a"), &[])?;
    let producer =
        Producer::connect(a.db.pool.clone(), redis::Client::open(redis_url)?, Layout::new(format!("{prefix}:a")))
            .await?;

    let stats_time = time_stats(&a.db.pool).await?;
    rows.push(Row { what: "stats".into(), janitor: stats_time * 1000.0, baseline: None, unit: "ms" });
    let dry = timed(&producer, &a.db.pool, CleanupJob::Expired, true).await?;
    anyhow::ensure!(dry.record.deleted_count as usize == expired_free, "dry run counted {}", dry.record.deleted_count);
    rows.push(Row {
        what: "expired, dry run".into(),
        janitor: rate(n * 80 / 100, dry.took),
        baseline: None,
        unit: "rows/s",
    });

    // The orphan sweep against the one-line shell baseline, each timed run
    // after the same warm-up (see `baseline::warm`).
    baseline::warm(a.root.path(), a.db.url()).await?;
    let (base_orphans, base_scan) = baseline::shell(baseline::ORPHAN_SCAN, a.root.path(), a.db.url()).await?;
    let base_orphans: usize = base_orphans.parse()?;
    baseline::warm(a.root.path(), a.db.url()).await?;
    let scan = timed(&producer, &a.db.pool, CleanupJob::Orphaned { min_age_secs: 0 }, true).await?;
    anyhow::ensure!(
        scan.record.deleted_count as usize == base_orphans,
        "orphans: janitor {} vs comm {base_orphans}",
        scan.record.deleted_count
    );
    rows.push(Row {
        what: "orphan scan (dry run), time".into(),
        janitor: scan.took.as_secs_f64(),
        baseline: Some(base_scan.as_secs_f64()),
        unit: "s",
    });
    baseline::warm(a.root.path(), a.db.url()).await?;
    let sweep = timed(&producer, &a.db.pool, CleanupJob::Orphaned { min_age_secs: 0 }, false).await?;
    anyhow::ensure!(sweep.record.deleted_count as usize == base_orphans, "swept {}", sweep.record.deleted_count);

    let cpu = CpuTimes::now();
    let expired = timed(&producer, &a.db.pool, CleanupJob::Expired, false).await?;
    let expired_cpu = CpuTimes::now().since(cpu);
    anyhow::ensure!(
        expired.record.deleted_count as usize == expired_free && expired.record.skipped_count as usize == in_use
    );
    let old = timed(&producer, &a.db.pool, CleanupJob::OldResults { days_old: DaysOld::default() }, false).await?;
    let session_ids = session_ids(n);
    let (sessions, mut session_latency) = sessions(&producer, &session_ids).await?;
    rows.push(Row {
        what: "old results".into(),
        janitor: rate(old.record.deleted_count as usize, old.took),
        baseline: None,
        unit: "images/s",
    });
    let rss = worker.peak_rss_mib();
    worker.stop().await?;
    a.db.drop().await;

    let b = Store::seeded(args, database_url).await?;
    let files_before = baseline::count_files(b.root.path(), b.db.url()).await?;
    baseline::warm(b.root.path(), b.db.url()).await?;
    let (_, base_sweep) = baseline::shell(baseline::ORPHAN_SWEEP, b.root.path(), b.db.url()).await?;
    let files_after = baseline::count_files(b.root.path(), b.db.url()).await?;
    anyhow::ensure!(files_before - files_after == base_orphans, "the baseline removed {}", files_before - files_after);
    rows.push(Row {
        what: "orphan sweep (deleting; janitor quarantines), time".into(),
        janitor: sweep.took.as_secs_f64(),
        baseline: Some(base_sweep.as_secs_f64()),
        unit: "s",
    });
    let cpu = CpuTimes::now();
    let (base_deleted, base_time, base_delete) =
        baseline::expired(&b.db.pool, b.root.path(), args.unlink_concurrency).await?;
    let base_cpu = CpuTimes::now().since(cpu);
    anyhow::ensure!(base_deleted == expired_free, "baseline deleted {base_deleted}");
    let expired_rate = rate(expired_free, expired.took);
    // After stats and the dry run, before the orphan scan.
    let expired_rows = [
        Row {
            what: "expired".into(),
            janitor: expired_rate,
            baseline: Some(rate(base_deleted, base_time)),
            unit: "images/s",
        },
        Row {
            what: "  baseline: its DELETE, then its unlinks".into(),
            janitor: base_delete.as_secs_f64(),
            baseline: Some((base_time - base_delete).as_secs_f64()),
            unit: "s",
        },
        Row {
            what: "expired, machine CPU busy (all cores)".into(),
            janitor: expired_cpu.busy.as_secs_f64(),
            baseline: Some(base_cpu.busy.as_secs_f64()),
            unit: "s",
        },
        Row {
            what: "expired, machine CPU waiting on disk".into(),
            janitor: expired_cpu.iowait.as_secs_f64(),
            baseline: Some(base_cpu.iowait.as_secs_f64()),
            unit: "s",
        },
    ];
    let overlap_limit = base_delete.max(base_time - base_delete);
    rows.splice(2..2, expired_rows);
    rows.push(Row {
        what: "expired, time (baseline: the overlap limit)".into(),
        janitor: expired.took.as_secs_f64(),
        baseline: Some(overlap_limit.as_secs_f64()),
        unit: "s",
    });
    let (base_sessions, mut base_latency) =
        baseline::sessions(&b.db.pool, b.root.path(), &session_ids, SESSION_CONCURRENCY).await?;
    rows.push(Row {
        what: "session jobs (10 images each)".into(),
        janitor: sessions,
        baseline: Some(base_sessions),
        unit: "jobs/s",
    });
    let (latency_p50, latency_p99) = (quantile_ms(&mut session_latency, 0.5), quantile_ms(&mut session_latency, 0.99));
    let base_p99 = quantile_ms(&mut base_latency, 0.99);
    rows.push(Row {
        what: "session job p99, enqueue to done".into(),
        janitor: latency_p99,
        baseline: Some(base_p99),
        unit: "ms",
    });
    b.db.drop().await;

    let c = Store::seeded(args, database_url).await?;
    let worker = WorkerProcess::start(args, &c, redis_url, &format!("{prefix}:c"), &[])?;
    let producer =
        Producer::connect(c.db.pool.clone(), redis::Client::open(redis_url)?, Layout::new(format!("{prefix}:c")))
            .await?;
    let all =
        timed(&producer, &c.db.pool, CleanupJob::All { days_old: DaysOld::default(), min_age_secs: 0 }, false).await?;
    // The sweep ran first on store a (on the whole store); in `all` it runs
    // last, on what expired and old results left.
    let parts = expired.took + old.took + sweep.took;
    rows.push(Row {
        what: "all, time (baseline: sum of its parts)".into(),
        janitor: all.took.as_secs_f64(),
        baseline: Some(parts.as_secs_f64()),
        unit: "s",
    });
    for ((name, part), phase) in
        ["expired", "old results", "orphans"].iter().zip([&expired, &old, &sweep]).zip(&all.phases)
    {
        rows.push(Row {
            what: format!("  all's {name} phase (baseline: the job alone)"),
            janitor: phase.as_secs_f64(),
            baseline: Some(part.took.as_secs_f64()),
            unit: "s",
        });
    }
    let rss = rss.max(worker.peak_rss_mib());
    worker.stop().await?;
    c.db.drop().await;

    let (busiest, paced_rate) = pacing(args, database_url, redis_url, prefix).await?;
    rows.push(Row {
        what: "paced all: busiest 1-s window (baseline: the cap)".into(),
        janitor: busiest as f64,
        baseline: Some(f64::from(PACE)),
        unit: "deletions",
    });
    rows.push(Row {
        what: "paced all: mean rate while deleting".into(),
        janitor: paced_rate,
        baseline: Some(f64::from(PACE)),
        unit: "deletions/s",
    });

    let mut batches = expired.batches.clone();
    let (p50, p99) = (quantile_ms(&mut batches, 0.5), quantile_ms(&mut batches, 0.99));
    rows.push(Row { what: "expired batch p50".into(), janitor: p50, baseline: None, unit: "ms" });
    rows.push(Row { what: "expired batch p99".into(), janitor: p99, baseline: None, unit: "ms" });
    rows.push(Row { what: "worker peak RSS".into(), janitor: rss, baseline: None, unit: "MiB" });
    let mut summary = json!({
        "benchmark": "engine",
        "images": n,
        "settings": { "batch_size": args.batch_size, "unlink_concurrency": args.unlink_concurrency },
        "expired_per_s": expired_rate, "expired_baseline_per_s": rate(base_deleted, base_time),
        "expired_ratio": expired_rate / rate(base_deleted, base_time),
        "expired_s": expired.took.as_secs_f64(), "expired_baseline_s": base_time.as_secs_f64(),
        "expired_baseline_delete_s": base_delete.as_secs_f64(),
        "expired_cpu_busy_s": expired_cpu.busy.as_secs_f64(), "expired_baseline_cpu_busy_s": base_cpu.busy.as_secs_f64(),
        "expired_iowait_s": expired_cpu.iowait.as_secs_f64(), "expired_baseline_iowait_s": base_cpu.iowait.as_secs_f64(),
        "expired_dry_run_rows_per_s": rate(n * 80 / 100, dry.took),
        "orphan_scan_s": scan.took.as_secs_f64(), "orphan_scan_baseline_s": base_scan.as_secs_f64(),
        "orphan_scan_ratio": scan.took.as_secs_f64() / base_scan.as_secs_f64(),
        "orphan_sweep_s": sweep.took.as_secs_f64(), "orphan_sweep_baseline_s": base_sweep.as_secs_f64(),
        "orphan_sweep_ratio": sweep.took.as_secs_f64() / base_sweep.as_secs_f64(),
        "orphans": base_orphans,
        "expired_overlap_limit_s": overlap_limit.as_secs_f64(),
        "expired_over_overlap_limit": expired.took.as_secs_f64() / overlap_limit.as_secs_f64(),
        "session_jobs_baseline_per_s": base_sessions,
        "session_ratio": sessions / base_sessions,
        "session_p50_ms": latency_p50, "session_p99_ms": latency_p99, "session_baseline_p99_ms": base_p99,
        "cache": "warm: before each timed orphan run, an untimed find over the root and a COPY of the stored paths",
        "stats_ms": stats_time * 1000.0,
        "all_s": all.took.as_secs_f64(), "all_parts_s": parts.as_secs_f64(),
        "all_ratio": all.took.as_secs_f64() / parts.as_secs_f64(),
        "all_phases_s": all.phases.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
        "session_jobs_per_s": sessions,
        "batch_p50_ms": p50, "batch_p99_ms": p99, "batch_p99_over_p50": p99 / p50.max(1e-9),
        "worker_peak_rss_mib": rss,
    });
    // What the scaling table divides by (`print_scaling`).
    summary["sessions"] = json!(session_ids.len());
    summary["session_s"] = json!(session_ids.len() as f64 / sessions);
    summary["expired_images"] = json!(expired_free);
    summary["files"] = json!(files_before);
    summary["pacing"] = json!({
        "cap_per_s": PACE, "busiest_second": busiest,
        "busiest_over_cap": busiest as f64 / f64::from(PACE), "mean_per_s": paced_rate,
    });
    Ok((rows, summary))
}

/// The slowest of three `stats` calls, in seconds.
async fn time_stats(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        janitor_workers::jobs::stats::collect(pool).await?;
        worst = worst.max(started.elapsed());
    }
    Ok(worst.as_secs_f64())
}

/// How many session jobs (or baseline transactions) run at once.
pub(crate) const SESSION_CONCURRENCY: usize = 32;

/// The seeded sessions' ids.
pub(crate) fn session_ids(n: usize) -> Vec<String> {
    (0..n)
        .filter(|i| seed::kind(*i, n) == seed::Kind::Session)
        .map(|i| i / 10)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|s| format!("bench-{s}"))
        .collect()
}

/// Every seeded session cleaned by its own job (the logout path),
/// [`SESSION_CONCURRENCY`] at a time: jobs per second, and each job's time
/// from enqueue to done.
pub(crate) async fn sessions(producer: &Producer, ids: &[String]) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(ids)
        .map(|s| async move {
            let began = Instant::now();
            let job = CleanupJob::Session { session_id: SessionId::parse(s)? };
            let enqueued = producer.enqueue(&JobSpec { job, dry_run: false, limit: None }, Some("bench")).await?;
            producer.wait(enqueued.job_id, Duration::from_secs(600)).await?;
            Ok(began.elapsed())
        })
        .buffer_unordered(SESSION_CONCURRENCY)
        .collect()
        .await;
    let latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((rate(ids.len(), started.elapsed()), latencies))
}

#[cfg(test)]
mod tests {
    use super::busiest_second;

    fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn the_busiest_second_counts_batches_that_start_within_one_second() {
        // 200 deletions every 100 ms: ten batches start in any second.
        let steady: Vec<_> = (0..30).map(|k| (at(k * 100), 200 * (k + 1))).collect();
        assert_eq!(busiest_second(&steady), 2000);
        // After a 5-s idle, a burst of 3000 in half a second shows as such.
        let mut burst = steady.clone();
        let total = burst.last().unwrap().1;
        burst.extend((0..5).map(|k| (at(8000 + k * 100), total + 600 * (k + 1))));
        assert_eq!(busiest_second(&burst), 3000);
        assert_eq!(busiest_second(&[]), 0);
    }
}
