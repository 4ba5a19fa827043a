//! A Postgres server of the test's own (`initdb` in a temporary folder, on a
//! free port), which a test may stop and start under a running worker. The
//! shared server is never touched. Stopped when dropped, also when the test
//! fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// The server binaries: `PG_BIN` if set, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries under /usr/lib/postgresql (or set PG_BIN)")
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an installed Postgres server version").1
}

/// Whether this process runs as root (initdb and postgres refuse to).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|l| l.strip_prefix("Uid:").map(|rest| rest.trim().to_owned())))
        .is_some_and(|uids| uids.split_whitespace().next() == Some("0"))
}

pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    /// Holds `data/` (the cluster), `sock/` (its Unix socket) and `log`.
    dir: TempDir,
}

impl PrivatePostgres {
    /// Creates a cluster (trust authentication, superuser `postgres`) and
    /// starts it on a free loopback port.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self { port, bin: bin_dir(), dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir(server.dir.path().join("sock")).unwrap();
        if is_root() {
            let status = Command::new("chown").arg("-R").arg("postgres:postgres").arg(server.dir.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the cluster folder to postgres");
        }
        let data = server.data();
        server
            .pg(vec![
                server.bin.join("initdb").into_os_string(),
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "postgres".into(),
                "-D".into(),
                data.into_os_string(),
            ])
            .await;
        server.start_again().await;
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().join("sock").display()
        );
        self.pg_ctl(&["start", "-w", "-t", "60", "-o", &options, "-l", &self.dir.path().join("log").to_string_lossy()])
            .await;
    }

    /// `pg_ctl stop -m fast`: open transactions are aborted and every
    /// connection is cut, as in a failover or a restart for maintenance.
    pub async fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"]).await;
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once,
    /// without writing what is still in its WAL buffers, as in a crash.
    pub async fn crash(&self) {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "immediate"]).await;
    }

    async fn pg_ctl(&self, args: &[&str]) {
        let mut command = vec![self.bin.join("pg_ctl").into_os_string(), "-D".into(), self.data().into_os_string()];
        command.extend(args.iter().map(Into::into));
        self.pg(command).await;
    }

    /// Runs a server binary (as `postgres` when we are root) to its end.
    async fn pg(&self, command: Vec<std::ffi::OsString>) {
        let output =
            tokio::task::spawn_blocking(move || as_postgres(&command).output().expect("run a Postgres binary"))
                .await
                .unwrap();
        assert!(
            output.status.success(),
            "Postgres command failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

fn as_postgres(command: &[std::ffi::OsString]) -> Command {
    let mut runner = if is_root() {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", "postgres", "--"]).args(command);
        runuser
    } else {
        let mut direct = Command::new(&command[0]);
        direct.args(&command[1..]);
        direct
    };
    runner.stdin(std::process::Stdio::null());
    runner
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate: nothing here needs a clean shutdown, and a failing test
        // must not leave a server behind.
        let command = [
            self.bin.join("pg_ctl").into_os_string(),
            "-D".into(),
            self.data().into_os_string(),
            "stop".into(),
            "-m".into(),
            "immediate".into(),
            "-w".into(),
        ];
        let _ = as_postgres(&command).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    }
}
