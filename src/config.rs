//! The optional TOML config file (`--config PATH` or `JANITOR_CONFIG`).
//!
//! It may hold `[[schedule]]` and `[[admin_token]]` tables and every setting
//! that a flag with an environment variable takes, under the flag's long
//! name (`max_orphan_ratio = 0.1`). Precedence: flags, then environment,
//! then the file, then the built-in defaults. The file's settings are
//! applied by exporting them as the environment variables clap reads, for
//! the ones not already set, before the command line is parsed and before
//! any thread is started (`main` builds the runtime afterwards).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use janitor_workers::schedule::ScheduleConfig;
use serde::Deserialize;

/// The file's tables; every other key is a setting (see [`settings`]).
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    /// Absent: the default schedules. `schedule = []`: none.
    pub schedule: Option<Vec<ScheduleConfig>>,
    /// Admin API tokens (`JANITOR_ADMIN_TOKENS` adds to them).
    #[serde(default)]
    pub admin_token: Vec<crate::http::auth::AdminToken>,
    /// Every other key: settings, checked against [`settings`].
    #[serde(flatten)]
    pub settings: BTreeMap<String, toml::Value>,
}

/// The settings a file may hold, derived from the command line itself so
/// that the two cannot drift: every flag of every command that has an
/// environment variable, under its long name with `_` for `-`
/// (`--max-orphan-ratio` is `max_orphan_ratio`), mapped to that variable.
/// `--config` itself is not one.
pub fn settings() -> BTreeMap<String, &'static str> {
    use clap::CommandFactory as _;
    fn walk(command: &clap::Command, out: &mut BTreeMap<String, &'static str>) {
        for arg in command.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else { continue };
            let Some(env) = env.to_str() else { continue };
            if env != "JANITOR_CONFIG" {
                // Leaked once per distinct name: a few dozen short strings.
                let env: &'static str = Box::leak(env.to_owned().into_boxed_str());
                out.entry(long.replace('-', "_")).or_insert(env);
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&crate::cli::Cli::command(), &mut out);
    out
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.variables()?;
        Ok(config)
    }

    /// The environment variables this file sets. A key that is no setting
    /// is an error, so a typo is not ignored.
    pub fn variables(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let known = settings();
        self.settings
            .iter()
            .map(|(key, value)| {
                let env = known.get(key).copied().ok_or_else(|| {
                    let keys: Vec<&str> = known.keys().map(String::as_str).collect();
                    anyhow::anyhow!("unknown key {key:?}; the settings are: {}", keys.join(", "))
                })?;
                let value = match value {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => anyhow::bail!("{key} must be a string, number or boolean, not {}", other.type_str()),
                };
                Ok((env, value))
            })
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
    for (name, value) in config.variables()? {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_with_a_variable_is_a_key_and_nothing_else_is() {
        let known = settings();
        for (key, env) in [
            ("max_orphan_ratio", "JANITOR_MAX_ORPHAN_RATIO"),
            ("no_quarantine", "JANITOR_NO_QUARANTINE"),
            ("db_connections", "JANITOR_DB_CONNECTIONS"),
            ("lease", "JANITOR_LEASE"),
            ("outage_horizon", "JANITOR_OUTAGE_HORIZON"),
            ("queue", "JANITOR_QUEUE"),
            ("catch_up", "JANITOR_CATCH_UP"),
            ("database_url", "DATABASE_URL"),
        ] {
            assert_eq!(known.get(key).copied(), Some(env), "{key}");
        }
        assert!(!known.contains_key("config"));
        let config =
            FileConfig::parse("lease = \"45s\"\nmax_orphan_ratio = 0.1\nno_quarantine = true\nbatch_size = 50\n")
                .unwrap();
        let mut vars = config.variables().unwrap();
        vars.sort();
        assert_eq!(
            vars,
            [
                ("JANITOR_BATCH_SIZE", "50".to_owned()),
                ("JANITOR_LEASE", "45s".to_owned()),
                ("JANITOR_MAX_ORPHAN_RATIO", "0.1".to_owned()),
                ("JANITOR_NO_QUARANTINE", "true".to_owned()),
            ]
        );
        let typo = FileConfig::parse("batchsize = 5").unwrap_err();
        assert!(format!("{typo:#}").contains("unknown key \"batchsize\""), "{typo:#}");
        assert!(FileConfig::parse("lease = [1]").is_err());
    }
}
