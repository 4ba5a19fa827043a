//! Running the `janitor` executable. It blocks until its job ends, so it runs
//! as a child process awaited through `tokio::process`, never on the test's
//! own thread.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sqlx::PgPool;

use crate::support::{self, Store};

/// The binary, pointed at one database and one storage root.
pub struct Janitor {
    database_url: String,
    storage_root: PathBuf,
}

/// What one run of the binary left behind.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Janitor {
    /// The binary against the test's own database and storage root.
    pub fn new(pool: &PgPool, store: &Store) -> Self {
        Self::at(&support::database_url(pool), store.root())
    }

    /// The binary against any database URL (a missing or unreachable one).
    pub fn at(database_url: &str, storage_root: &Path) -> Self {
        Self { database_url: database_url.to_owned(), storage_root: storage_root.to_owned() }
    }

    /// Runs `janitor <args>` to its end. Settings come only from what this
    /// test sets: any `JANITOR_*` tuning in the caller's environment is
    /// removed so that it cannot change the outcome.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_janitor"));
        for name in
            ["JANITOR_BATCH_SIZE", "JANITOR_UNLINK_CONCURRENCY", "JANITOR_MAX_DELETES_PER_SEC", "JANITOR_LOG_FORMAT"]
        {
            command.env_remove(name);
        }
        let output = command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("JANITOR_STORAGE_ROOT", &self.storage_root)
            .kill_on_drop(true)
            .output()
            .await
            .expect("the janitor binary starts");
        Output {
            code: output.status.code().expect("janitor exited on its own"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `janitor <args>`, checks the exit code and parses stdout as JSON.
    pub async fn json(&self, args: &[&str], code: i32) -> Value {
        self.run(args).await.expect_code(code).json()
    }
}

impl Output {
    /// Fails the test, showing both streams, unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code\n--- stdout:\n{}\n--- stderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!("stdout is not JSON ({err}):\n{}", self.stdout);
        })
    }

    /// Both streams, for checks on everything the user was shown.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// How many jobs `job_results` records.
pub async fn count_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_results").fetch_one(pool).await.unwrap()
}

/// A timestamp field of a result, parsed; fails the test if it is missing
/// or not RFC 3339.
pub fn timestamp(value: &Value, key: &str) -> chrono::DateTime<chrono::Utc> {
    let raw = value[key].as_str().unwrap_or_else(|| panic!("{key} is a string in {value}"));
    chrono::DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|err| panic!("{key} {raw:?} is not RFC 3339: {err}"))
        .to_utc()
}
