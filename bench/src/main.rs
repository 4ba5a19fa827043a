//! Benchmarks that print numbers, each against a baseline in the same run.
//!
//! `cargo build --release -p janitor -p janitor-bench && target/release/janitor-bench queue`
//! (see docs/PERFORMANCE.md).

use clap::{Parser, Subcommand};
use janitor_bench::console::ConsoleBench;
use janitor_bench::engine::EngineBench;
use janitor_bench::metrics::MetricsBench;
use janitor_bench::queue::QueueBench;

#[derive(Debug, Parser)]
#[command(name = "janitor-bench", about = "janitor benchmarks, each against a baseline")]
struct Cli {
    /// The Postgres server; the benchmark makes (and drops) its own database.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Enqueue rates, small-job throughput and logout latency vs raw Redis.
    Queue(QueueBench),
    /// Every operation through a real worker on a seeded store, vs the
    /// hand-written baseline on an identical store.
    Engine(EngineBench),
    /// `/metrics` scrape times with a million job rows, vs the old scrape's
    /// aggregate over `job_results`.
    Metrics(MetricsBench),
    /// Session jobs alone (the logout path) vs one transaction per session,
    /// with CPU, commits and WAL flushes per job.
    Sessions(EngineBench),
    /// Every console page's time with a million job rows, through a real
    /// `janitor serve` (goal: under 100 ms).
    Console(ConsoleBench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The benchmark enqueues thousands of jobs: only warnings, unless asked.
    janitor::telemetry::init("text", "warn");
    match &cli.bench {
        Bench::Queue(args) => janitor_bench::queue::run(args, &cli.database_url, &cli.redis_url).await,
        Bench::Engine(args) => janitor_bench::engine::run(args, &cli.database_url, &cli.redis_url).await,
        Bench::Sessions(args) => janitor_bench::sessions::run(args, &cli.database_url, &cli.redis_url).await,
        Bench::Metrics(args) => janitor_bench::metrics::run(args, &cli.database_url, &cli.redis_url).await,
        Bench::Console(args) => janitor_bench::console::run(args, &cli.database_url, &cli.redis_url).await,
    }
}
