//! `janitor-bench`: benchmarks that compare janitor, in the same run, with a
//! baseline doing the same work by hand. Each run makes its own database,
//! Redis key prefix and storage root, and removes them at the end. A
//! workspace member of its own: nothing of it ships in `janitor`.

mod baseline;
pub mod console;
pub mod engine;
pub mod metrics;
pub mod queue;
pub mod sessions;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

/// A throwaway database on the server of `DATABASE_URL`.
pub struct BenchDb {
    pub pool: PgPool,
    url: String,
}

impl BenchDb {
    pub async fn create(server_url: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(server_url).context("DATABASE_URL parses")?;
        url.set_path(&format!("janitor_bench_{}", Uuid::new_v4().simple()));
        let url = url.to_string();
        sqlx::Postgres::create_database(&url).await.context("create the bench database")?;
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new().max_connections(48).connect_with(options).await?;
        janitor_workers::MIGRATOR.run(&pool).await?;
        Ok(Self { pool, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn drop(self) {
        self.pool.close().await;
        if let Err(err) = sqlx::Postgres::force_drop_database(&self.url).await {
            eprintln!("warning: could not drop the bench database: {err}");
        }
    }
}

/// Items per second.
pub fn rate(items: usize, took: Duration) -> f64 {
    items as f64 / took.as_secs_f64().max(1e-9)
}

/// The `q`-quantile (0..=1) of some durations, in milliseconds.
pub fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}

/// Deletes every Redis key under `prefix`.
pub async fn delete_keys(redis: &redis::Client, prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    // The queue's keys are hash-tagged (`{prefix:a}:…`), the raw ones are not.
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{prefix}*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// The machine's CPU time since boot, all cores together (Linux
/// `/proc/stat`): what was busy, and what sat waiting for the disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub busy: Duration,
    pub iowait: Duration,
}

impl CpuTimes {
    /// Zero where `/proc/stat` cannot be read.
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        let per_sec = rustix::param::clock_ticks_per_second().max(1);
        let time = |fields: &[usize]| {
            let sum: u64 = fields.iter().filter_map(|&i| ticks.get(i)).sum();
            Duration::from_secs_f64(sum as f64 / per_sec as f64)
        };
        // user nice system idle iowait irq softirq steal
        Self { busy: time(&[0, 1, 2, 5, 6, 7]), iowait: time(&[4]) }
    }

    pub fn since(self, earlier: Self) -> Self {
        Self { busy: self.busy.saturating_sub(earlier.busy), iowait: self.iowait.saturating_sub(earlier.iowait) }
    }
}
