//! `janitor` child processes with an explicit environment (a private
//! Postgres, a role of its own, URLs with passwords), whose stdout and
//! stderr are kept for the test to read while they run.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How to start `janitor`: the environment every command of a test shares.
#[derive(Debug, Clone)]
pub struct Janitor {
    vars: Vec<(String, String)>,
}

impl Janitor {
    /// The four settings every command needs; `RUST_LOG` follows `TEST_LOG`
    /// (default `warn`) unless a test sets it.
    pub fn new(database_url: &str, redis_url: &str, prefix: &str, storage_root: &std::path::Path) -> Self {
        let log = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into());
        Self {
            vars: vec![
                ("DATABASE_URL".into(), database_url.into()),
                ("REDIS_URL".into(), redis_url.into()),
                ("JANITOR_QUEUE".into(), prefix.into()),
                ("JANITOR_STORAGE_ROOT".into(), storage_root.to_string_lossy().into_owned()),
                ("RUST_LOG".into(), log),
            ],
        }
    }

    /// The same, with `name` set (replacing an earlier value).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.into()));
        self
    }

    pub fn with_all(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |janitor, (name, value)| janitor.with(name, value))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_janitor"));
        command.args(args).kill_on_drop(true);
        for (name, value) in &self.vars {
            command.env(name, value);
        }
        command
    }

    /// Runs `janitor <args>` to its end (at most `timeout`); returns
    /// (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str], timeout: Duration) -> (i32, String, String) {
        let output = tokio::time::timeout(timeout, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("janitor {args:?} did not exit within {timeout:?}"))
            .expect("janitor runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts a long-running `janitor <args>`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("janitor starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            tokio::spawn(collect(child.stdout.take().unwrap(), Arc::clone(&stdout), false)),
            tokio::spawn(collect(child.stderr.take().unwrap(), Arc::clone(&stderr), true)),
        ];
        Proc { child, stdout, stderr, readers }
    }
}

/// Appends every line of `stream` to `sink` (and echoes stderr when
/// `TEST_LOG` is set, so a failing test can be watched).
async fn collect(stream: impl AsyncRead + Unpin, sink: Arc<Mutex<String>>, is_stderr: bool) {
    let echo = is_stderr && std::env::var_os("TEST_LOG").is_some();
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("{line}");
        }
        let mut sink = sink.lock().unwrap();
        sink.push_str(&line);
        sink.push('\n');
    }
}

/// A running `janitor` process; killed when dropped.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The tasks copying stdout and stderr; they end when the pipes close.
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process has not been reaped")
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().await.unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and for its output to be read in
    /// full; returns its exit code.
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("janitor did not exit within {timeout:?}; stderr:\n{}", self.stderr()))
            .expect("wait for janitor");
        for reader in self.readers.drain(..) {
            // The pipes close with the process, so the readers end at once.
            tokio::time::timeout(Duration::from_secs(5), reader).await.expect("output readers end").unwrap();
        }
        status.code()
    }
}

/// The resident set size of process `pid`, in KiB (`VmRSS` in
/// `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Deletes the keys under `prefix` (and only those).
pub async fn cleanup_keys(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("*{prefix}*")).query_async(&mut conn).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// A fresh Redis key prefix for one test.
pub fn prefix() -> String {
    format!("janitor-faults:{}", uuid::Uuid::new_v4().simple())
}
