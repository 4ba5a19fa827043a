//! One typed `Settings`, read from flags or the environment, with defaults
//! that work on a developer's machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use janitor_workers::{Engine, EngineSettings, RedisTarget};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// TOML config file: `[[schedule]]` tables and any of these settings
    /// (flags and environment variables override it).
    #[arg(long, env = "JANITOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Postgres connection URL. `janitor migrate` creates the database if it
    /// is missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/janitor",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    /// The storage root holding photos/, templates/, preprocessed/ and results/.
    #[arg(long, env = "JANITOR_STORAGE_ROOT", default_value = "./storage", global = true)]
    pub storage_root: PathBuf,

    /// Rows (or scanned files) per batch; each batch is one transaction.
    #[arg(long, env = "JANITOR_BATCH_SIZE", default_value_t = 1000, global = true,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Files unlinked at once within a batch.
    #[arg(long, env = "JANITOR_UNLINK_CONCURRENCY", default_value_t = 8, global = true,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub unlink_concurrency: u32,

    /// Cap on deletions per second per job (unset: no cap). Mass deletes slow
    /// the file system down for a while; throttle big cleanups on a live app.
    #[arg(long, env = "JANITOR_MAX_DELETES_PER_SEC", global = true)]
    pub max_deletes_per_sec: Option<u32>,

    /// The orphan sweep deletes nothing if more than this share (0 to 1) of
    /// the files it scans look orphaned: a sign of a wrong storage root or
    /// database.
    #[arg(long, env = "JANITOR_MAX_ORPHAN_RATIO", default_value_t = 0.2, global = true, value_parser = parse_ratio)]
    pub max_orphan_ratio: f64,

    /// Unlink orphans instead of moving them to `.janitor-trash/<job id>/`.
    #[arg(long, env = "JANITOR_NO_QUARANTINE", global = true)]
    pub no_quarantine: bool,

    /// The shortest `--min-age` the orphan sweep accepts. A younger file may
    /// be one the application is still writing, before it commits its row.
    #[arg(long, env = "JANITOR_MIN_GRACE", default_value = "10m", global = true, value_parser = crate::input::parse_duration)]
    pub min_grace: Duration,

    /// Postgres ends a janitor session that sits this long inside a
    /// transaction (a stopped or wedged process), releasing its row locks.
    /// Janitor never waits inside a transaction itself. It is sent when
    /// connecting; 0 sends nothing, for a pooler that refuses the startup
    /// option (PgBouncer): set it on janitor's role there instead.
    #[arg(long, env = "JANITOR_IDLE_TRANSACTION_TIMEOUT", default_value = "60s", global = true,
          value_parser = crate::input::parse_duration)]
    pub idle_transaction_timeout: Duration,

    /// Most database connections this process opens.
    #[arg(long, env = "JANITOR_DB_CONNECTIONS", default_value_t = 20, global = true,
          value_parser = clap::value_parser!(u32).range(2..=500))]
    pub db_connections: u32,

    /// Prepared statements sqlx keeps per connection; 0 turns the cache off.
    /// Behind PgBouncer older than 1.21 in transaction mode (no
    /// `max_prepared_statements`) set 0: a named statement prepared on one
    /// server connection is missing on the next, or collides with another
    /// client's (`prepared statement "sqlx_s_1" already exists`).
    #[arg(long, env = "JANITOR_DB_STATEMENT_CACHE", default_value_t = 100, global = true,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub db_statement_cache: u32,

    /// Redis, which carries the queue. With --redis-cluster, a comma-separated
    /// list of cluster nodes to learn the cluster from.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true, hide_env_values = true)]
    pub redis_url: String,

    /// REDIS_URL is a Redis Cluster (ElastiCache or Memorystore in cluster
    /// mode, Redis Cluster): commands follow the cluster's redirections and
    /// its failovers. Every key sits in the queue's hash slot.
    #[arg(long, env = "JANITOR_REDIS_CLUSTER", global = true)]
    pub redis_cluster: bool,

    /// The queue's name: every Redis key of this deployment starts with it,
    /// as a hash tag (`{janitor}:session:jobs`).
    #[arg(long = "queue", env = "JANITOR_QUEUE", default_value = "janitor", global = true,
          value_parser = crate::input::parse_queue_name)]
    pub queue: String,

    /// Log format on stderr: text or json.
    #[arg(long, env = "JANITOR_LOG_FORMAT", default_value = "text", global = true,
          value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(flatten)]
    pub retention: crate::retention::RetentionSettings,
}

impl Settings {
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            batch_size: self.batch_size as usize,
            unlink_concurrency: self.unlink_concurrency as usize,
            max_deletes_per_sec: self.max_deletes_per_sec,
            max_orphan_ratio: self.max_orphan_ratio,
            quarantine: !self.no_quarantine,
            min_grace: self.min_grace,
            ..EngineSettings::default()
        }
    }

    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let options: PgConnectOptions = self
            .database_url
            .parse()
            .with_context(|| format!("DATABASE_URL is not a valid Postgres URL: {}", redact(&self.database_url)))?;
        let options = options.statement_cache_capacity(self.db_statement_cache as usize);
        if self.idle_transaction_timeout.is_zero() {
            // Left to the role's setting (see `pool`, which warns if none).
            return Ok(options);
        }
        // A paused or wedged process must not hold row locks for long: its
        // session ends, its transaction rolls back, and its batch is redone.
        // (No file is touched before a batch commits, so this is safe.)
        let timeout = format!("{}ms", self.idle_transaction_timeout.as_millis());
        Ok(options.options([("idle_in_transaction_session_timeout", timeout.as_str())]))
    }

    pub fn redis(&self) -> anyhow::Result<RedisTarget> {
        let what = if self.redis_cluster { "a list of Redis URLs" } else { "a valid Redis URL" };
        RedisTarget::open(&self.redis_url, self.redis_cluster)
            .with_context(|| format!("REDIS_URL is not {what}: {}", self.redis_shown()))
    }

    /// `REDIS_URL` with its passwords hidden, for messages.
    pub fn redis_shown(&self) -> String {
        if self.redis_cluster {
            self.redis_url.split(',').map(|node| redact(node.trim())).collect::<Vec<_>>().join(",")
        } else {
            redact(&self.redis_url)
        }
    }

    /// Connects a producer: Postgres for the job rows, Redis for the queue.
    pub async fn producer(&self) -> anyhow::Result<Producer> {
        let pool = self.pool().await?;
        Producer::connect(pool, self.redis()?, Layout::new(&self.queue))
            .await
            .with_context(|| format!("cannot connect to Redis at {}", self.redis_shown()))
    }

    /// A producer that connects to Redis on first use (see [`Producer::lazy`]).
    pub async fn lazy_producer(&self) -> anyhow::Result<Producer> {
        Ok(Producer::lazy(self.pool().await?, self.redis()?, Layout::new(&self.queue))?)
    }

    /// Connects to the database, failing fast with a message that names it
    /// (without its password) and the real cause.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        let options = self.connect_options()?;
        // One direct connection first: the pool would retry a refused
        // connection until its timeout and then report only "timed out".
        let mut probe = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("cannot connect to the database at {}", redact(&self.database_url)))?;
        warn_without_idle_timeout(&mut probe).await;
        let _ = probe.close().await;
        Ok(PgPoolOptions::new()
            .max_connections(self.db_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(options))
    }

    pub async fn engine(&self) -> anyhow::Result<Engine> {
        Ok(Engine::new(self.pool().await?, self.storage_root.clone(), self.engine_settings()))
    }
}

/// Warns when the server ends no session idle in a transaction: with
/// `--idle-transaction-timeout 0` the role or database must set it, or a
/// stopped janitor holds its row locks until its connection dies.
async fn warn_without_idle_timeout(probe: &mut PgConnection) {
    let shown: Result<String, _> =
        sqlx::query_scalar("SELECT current_setting('idle_in_transaction_session_timeout')").fetch_one(probe).await;
    if matches!(shown.as_deref(), Ok("0")) {
        tracing::warn!(
            "idle_in_transaction_session_timeout is off for this connection: a stopped janitor would hold its row \
             locks; set JANITOR_IDLE_TRANSACTION_TIMEOUT, or behind PgBouncer `ALTER ROLE ... SET \
             idle_in_transaction_session_timeout = '60s'`"
        );
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("must be a number from 0 to 1, got {raw:?}")),
    }
}

/// A connection URL with its password replaced, fit for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://user:s3cret@db:5432/app"), "postgres://user:***@db:5432/app");
        assert_eq!(redact("postgres://user@db/app"), "postgres://user@db/app");
        assert!(!redact("not a url with s3cret").contains("s3cret"));
    }
}
