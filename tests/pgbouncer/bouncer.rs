//! A private `pgbouncer` in front of the test's database, and the `janitor`
//! binary run through it.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, PgPool};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::support::Store;

/// How PgBouncer hands server connections to clients.
#[derive(Clone, Copy)]
pub enum Mode {
    Session,
    Transaction,
}

/// Which PgBouncer: Debian 12's package (1.18), or 1.21 or newer built from
/// Debian's source by `scripts/build-pgbouncer`, which carries named
/// prepared statements across server connections
/// (`max_prepared_statements`).
#[derive(Clone, Copy)]
pub enum Version {
    Debian12,
    PreparedStatements,
}

/// A running `pgbouncer`; killed when dropped.
pub struct Bouncer {
    _child: Child,
    dir: TempDir,
    port: u16,
    database: String,
}

impl Bouncer {
    /// Starts `pgbouncer` for the pool's database and waits until it
    /// answers a query. Fails the test if `pgbouncer` is not installed.
    pub async fn start(pool: &PgPool, mode: Mode) -> Self {
        Self::start_version(pool, mode, Version::Debian12).await
    }

    /// Starts the given PgBouncer; fails the test if it is not there.
    pub async fn start_version(pool: &PgPool, mode: Mode, version: Version) -> Self {
        let binary = match version {
            Version::Debian12 => find_pgbouncer().unwrap_or_else(|| {
                panic!("pgbouncer is not installed (not on PATH nor in /usr/sbin): apt-get install pgbouncer")
            }),
            Version::PreparedStatements => {
                let built = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/pgbouncer/bin/pgbouncer"));
                assert!(built.is_file(), "{} is missing: run scripts/build-pgbouncer", built.display());
                built
            }
        };
        let database = pool.connect_options().get_database().expect("the test pool names its database").to_owned();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        // PgBouncer refuses to run as root; it switches to `nobody` (`-u`),
        // who must read the ini.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, ini_text(&database, port, mode, version, &dir.path().join("users.txt"))).unwrap();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        let log = std::fs::File::create(dir.path().join("pgbouncer.log")).unwrap();
        let mut command = Command::new(binary);
        if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
            command.args(["-u", "nobody"]);
        }
        let child =
            command.arg(&ini).stdout(Stdio::null()).stderr(log).kill_on_drop(true).spawn().expect("pgbouncer starts");
        let bouncer = Self { _child: child, dir, port, database };
        bouncer.wait_ready().await;
        bouncer
    }

    /// The URL of the test's database through PgBouncer.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.database)
    }

    /// PgBouncer's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Polls until a query through PgBouncer succeeds (at most 20 s).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = PgConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    let _ = conn.close().await;
                    return;
                }
            }
            assert!(Instant::now() < deadline, "pgbouncer did not answer within 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Server connections per database and user. In session mode each client
/// connection holds one for its whole life, so the pool must cover every
/// connection of the janitor processes at once (the tests run up to three,
/// 20 each, `JANITOR_DB_CONNECTIONS`'s default); a smaller pool makes a
/// process that needs one more wait until `query_wait_timeout` (120 s).
/// In transaction mode with PgBouncer 1.21+ a few server connections serve
/// them all, which is the point of it, so that test's pool is small:
/// janitor's clients really share them. (1.18's transaction mode keeps the
/// large pool its failure test was written against: with few server
/// connections a short run may by chance reuse its own, and pass.)
fn pool_size(mode: Mode, version: Version) -> u32 {
    match (mode, version) {
        (Mode::Transaction, Version::PreparedStatements) => 5,
        _ => 60,
    }
}

fn ini_text(database: &str, port: u16, mode: Mode, version: Version, users: &Path) -> String {
    let pool_size = pool_size(mode, version);
    let extra = match (mode, version) {
        (_, Version::PreparedStatements) => "max_prepared_statements = 200\n",
        // 1.18's transaction mode: hand out the server connections in turn
        // (oldest idle first) from several open ones, so that a statement
        // prepared on one is bound on another, as under load, on every run.
        (Mode::Transaction, Version::Debian12) => "server_round_robin = 1\nmin_pool_size = 4\n",
        (Mode::Session, Version::Debian12) => "",
    };
    let mode = match mode {
        Mode::Session => "session",
        Mode::Transaction => "transaction",
    };
    format!(
        "[databases]\n\
         {database} = host=127.0.0.1 port=5432 dbname={database} user=postgres\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {users}\n\
         pool_mode = {mode}\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = 200\n\
         ignore_startup_parameters = extra_float_digits\n\
         {extra}",
        users = users.display(),
    )
}

fn find_pgbouncer() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
}

/// What one run of the binary left behind.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "janitor failed\n--- stdout:\n{}\n--- stderr:\n{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("stdout is not JSON ({err}):\n{}", self.stdout))
    }
}

/// `janitor <args>` with `DATABASE_URL` through PgBouncer, the store, a
/// queue prefix and the extra settings in `env`.
pub fn janitor(url: &str, store: &Store, queue: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_janitor"));
    for name in ["JANITOR_BATCH_SIZE", "JANITOR_DB_STATEMENT_CACHE", "JANITOR_IDLE_TRANSACTION_TIMEOUT"] {
        command.env_remove(name);
    }
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env("JANITOR_STORAGE_ROOT", store.root())
        .env("JANITOR_QUEUE", queue)
        .env("REDIS_URL", std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()))
        .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(env.iter().copied())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end.
pub async fn output(mut command: Command) -> Output {
    let output = command.output().await.expect("janitor runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
