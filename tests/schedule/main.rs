//! The scheduler end to end: several real `janitor scheduler` processes, a
//! real worker, real Postgres and Redis, schedules that tick every couple of
//! seconds. Tests wait on recorded ticks, never on fixed sleeps.

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod ticks;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{Env, Worker};

/// A config file with one schedule, in the test's storage root's parent.
pub struct Config {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Config {
    pub fn new(schedules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("janitor.toml");
        std::fs::write(&path, schedules).unwrap();
        Self { _dir: dir, path }
    }

    pub fn every(seconds: u32, operation: &str) -> Self {
        Self::new(&format!(
            "[[schedule]]\nname = \"tick\"\ncron = \"*/{seconds} * * * * *\"\noperation = \"{operation}\"\n"
        ))
    }
}

pub fn scheduler(env: &Env, config: &Config, extra: &[(&str, &str)]) -> Worker {
    let mut vars = vec![("JANITOR_CONFIG", config.path.to_str().unwrap())];
    vars.extend_from_slice(extra);
    env.spawn(&["scheduler"], &vars)
}

/// (scheduled_at, job_id, outcome, reason) of every recorded tick, in order.
pub async fn ticks(pool: &PgPool) -> Vec<(DateTime<Utc>, Uuid, String, Option<String>)> {
    sqlx::query_as("SELECT scheduled_at, job_id, outcome, reason FROM schedule_ticks ORDER BY scheduled_at")
        .fetch_all(pool)
        .await
        .unwrap()
}

pub async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.unwrap()
}
