//! The optional TOML config file (`--config PATH` or `JANITOR_CONFIG`).
//!
//! It may hold `[[schedule]]` tables and any setting that also has an
//! environment variable. Precedence: flags, then environment, then the file,
//! then the built-in defaults. The file's settings are applied by exporting
//! them as the environment variables clap reads, for the ones not already
//! set, before the command line is parsed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use janitor_workers::schedule::ScheduleConfig;
use serde::Deserialize;

/// The file's contents. Unknown keys are errors, so a typo is not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub storage_root: Option<String>,
    pub queue: Option<String>,
    pub batch_size: Option<u32>,
    pub unlink_concurrency: Option<u32>,
    pub max_deletes_per_sec: Option<u32>,
    pub log_format: Option<String>,
    /// How long missed ticks are still run, e.g. "6h".
    pub catch_up: Option<String>,
    /// Absent: the default schedules. `schedule = []`: none.
    pub schedule: Option<Vec<ScheduleConfig>>,
    /// Admin API tokens (`JANITOR_ADMIN_TOKENS` adds to them).
    #[serde(default)]
    pub admin_token: Vec<crate::http::auth::AdminToken>,
    pub listen: Option<String>,
    pub rate_limits: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    /// The environment variables this file sets.
    fn variables(&self) -> Vec<(&'static str, String)> {
        let text = |name, value: &Option<String>| value.clone().map(|v| (name, v));
        let number = |name, value: Option<u32>| value.map(|v| (name, v.to_string()));
        [
            text("DATABASE_URL", &self.database_url),
            text("REDIS_URL", &self.redis_url),
            text("JANITOR_STORAGE_ROOT", &self.storage_root),
            text("JANITOR_QUEUE", &self.queue),
            number("JANITOR_BATCH_SIZE", self.batch_size),
            number("JANITOR_UNLINK_CONCURRENCY", self.unlink_concurrency),
            number("JANITOR_MAX_DELETES_PER_SEC", self.max_deletes_per_sec),
            text("JANITOR_LOG_FORMAT", &self.log_format),
            text("JANITOR_CATCH_UP", &self.catch_up),
            text("JANITOR_LISTEN", &self.listen),
            text("JANITOR_RATE_LIMITS", &self.rate_limits),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The schedules: the file's `[[schedule]]` tables, or the defaults when
/// there is no file or it has none.
pub fn schedules(path: Option<&Path>) -> anyhow::Result<Vec<janitor_workers::schedule::Schedule>> {
    use janitor_workers::schedule::Schedule;
    let tables = match path {
        Some(path) => FileConfig::load(path)?.schedule,
        None => None,
    };
    match tables {
        None => Ok(Schedule::defaults()),
        Some(tables) => Ok(Schedule::parse_all(tables)?),
    }
}

/// The config file named on the command line or in `JANITOR_CONFIG`.
pub fn path_from(args: &[String]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("JANITOR_CONFIG").map(PathBuf::from)
}

/// Loads the file (if any) and exports its settings as environment
/// variables that are not already set. Call before parsing the command line,
/// while the process has a single thread.
pub fn apply(path: Option<&Path>) -> anyhow::Result<Option<FileConfig>> {
    let Some(path) = path else { return Ok(None) };
    let config = FileConfig::load(path)?;
    for (name, value) in config.variables() {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(Some(config))
}
