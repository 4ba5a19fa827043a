//! The queue on a real Redis Cluster: three masters and three replicas, each
//! a `redis-server --cluster-enabled yes` of the test's own on spare ports,
//! joined with `redis-cli --cluster create`. Workers, producers and the API
//! run with `JANITOR_REDIS_CLUSTER=true` and the nodes as seeds.
//!
//! The crash, dedup, dead-letter and reconciler scenarios of the other
//! modules run here unchanged; a failover test kills the master that holds
//! the queue's slot while jobs run and are enqueued, and checks that every
//! job finishes, once, with exact counts.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use janitor_workers::layout::Lane;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{wait_until, Env};
use crate::support::{count_images, insert_image, Image};

/// Six `redis-server` processes in cluster mode, killed when dropped.
pub struct RedisCluster {
    /// The nodes' working folders (`nodes.conf`), removed when dropped.
    _dir: tempfile::TempDir,
    /// (port, process); `None` once killed.
    nodes: Vec<(u16, Option<Child>)>,
}

impl RedisCluster {
    /// Starts three masters with one replica each and waits until every
    /// slot is served and every master's replica is in sync.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = spare_ports(6);
        let nodes = ports.iter().map(|&port| (port, Some(spawn_node(dir.path(), port)))).collect();
        let cluster = Self { _dir: dir, nodes };
        for &port in &ports {
            wait_until("a cluster node answers", Duration::from_secs(10), || async move {
                node_text(port, &["PING"]).await.is_some()
            })
            .await;
        }
        let output = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed");
        assert!(output.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&output.stdout));
        wait_until("the cluster serves every slot, each master with a synced replica", Duration::from_secs(60), || {
            cluster.settled()
        })
        .await;
        cluster
    }

    /// The live nodes' URLs, comma-separated: `REDIS_URL` for cluster mode.
    pub fn seeds(&self) -> String {
        self.live().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|(_, child)| child.is_some()).map(|(port, _)| *port)
    }

    /// Every live node sees the cluster as healthy, and every master has a
    /// replica whose link to it is up.
    async fn settled(&self) -> bool {
        for port in self.live() {
            let Some(info) = node_text(port, &["CLUSTER", "INFO"]).await else { return false };
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return false;
            }
        }
        let Some(nodes) = self.nodes_view().await else { return false };
        let masters = nodes.iter().filter(|n| n.master && !n.failed && !n.slots.is_empty()).count();
        if masters != 3 {
            return false;
        }
        for node in nodes.iter().filter(|n| !n.master && !n.failed) {
            let Some(replication) = node_text(node.port, &["INFO", "replication"]).await else { return false };
            if !replication.contains("master_link_status:up") {
                return false;
            }
        }
        nodes.iter().filter(|n| !n.master && !n.failed).count() >= 3
    }

    /// The cluster as one live node sees it.
    async fn nodes_view(&self) -> Option<Vec<NodeView>> {
        let port = self.live().next()?;
        let text = node_text(port, &["CLUSTER", "NODES"]).await?;
        Some(text.lines().filter_map(NodeView::parse).collect())
    }

    /// The port of the master that serves `key`'s slot, as a live node sees
    /// it; `None` while no master does (during a failover).
    pub async fn master_of(&self, key: &str) -> Option<u16> {
        let port = self.live().next()?;
        let slot: i64 = node_query(port, &["CLUSTER", "KEYSLOT", key]).await?;
        let nodes = self.nodes_view().await?;
        nodes
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
    }

    /// Kills a node with SIGKILL, as a crashed host would end.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|(p, _)| *p == port).expect("a node of this cluster");
        if let Some(mut child) = node.1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until another node serves `key`'s slot in place of `old`, and
    /// the cluster is healthy again.
    pub async fn wait_for_failover(&self, key: &str, old: u16) -> u16 {
        wait_until("a replica has taken over the slot", Duration::from_secs(60), || async {
            let infos_ok = {
                let mut ok = true;
                for port in self.live() {
                    ok &= node_text(port, &["CLUSTER", "INFO"]).await.is_some_and(|i| i.contains("cluster_state:ok"));
                }
                ok
            };
            infos_ok && self.master_of(key).await.is_some_and(|master| master != old)
        })
        .await;
        self.master_of(key).await.expect("a master serves the slot after the failover")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One line of `CLUSTER NODES`.
struct NodeView {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(i64, i64)>,
}

impl NodeView {
    /// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields.get(1)?;
        let port = address.split('@').next()?.rsplit(':').next()?.parse().ok()?;
        let flags = fields.get(2)?;
        let slots = fields
            .iter()
            .skip(8)
            .filter(|slot| !slot.starts_with('['))
            .filter_map(|slot| match slot.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => slot.parse().ok().map(|s| (s, s)),
            })
            .collect();
        Some(Self { port, master: flags.contains("master"), failed: flags.contains("fail"), slots })
    }
}

/// `count` ports that are free, each with its cluster bus port (+10000).
fn spare_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Some(bus) = port.checked_add(10_000) else { continue };
        if ports.contains(&port) || ports.contains(&bus) || ports.iter().any(|&p| p + 10_000 == port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

fn spawn_node(dir: &Path, port: u16) -> Child {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).unwrap();
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
        // A dead master is noticed after a second, and any replica may take
        // over however long ago it last heard from it.
        .args(["--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"])
        .arg("--dir")
        .arg(&node_dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed")
}

/// A command to one node (no redirections); `None` if it does not answer.
async fn node_query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.ok()
}

async fn node_text(port: u16, args: &[&str]) -> Option<String> {
    node_query::<String>(port, args).await
}

/// A world on a fresh cluster of its own.
async fn cluster_env(pool: PgPool) -> (RedisCluster, Env) {
    let cluster = RedisCluster::start().await;
    let env = Env::on_cluster(pool, cluster.seeds());
    (cluster, env)
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_killed_workers_job_is_finished_by_a_new_worker(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::crash::a_job_whose_worker_is_killed_is_finished_by_a_new_worker_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_running_worker_rescues_the_job_of_a_killed_one(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::crash::a_running_worker_rescues_the_job_of_a_killed_one_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_poison_job_is_failed_and_dead_lettered(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::crash::a_job_that_fails_every_time_is_failed_and_dead_lettered_after_max_attempts_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_job_that_kills_its_worker_is_dead_lettered(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::crash::a_job_that_kills_its_worker_every_time_is_dead_lettered_and_failed_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_equal_session_jobs_are_deduplicated(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::delivery::equal_session_jobs_are_deduplicated_until_the_first_ends_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_job_delivered_twice_deletes_once(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::delivery::deliver_twice(env, &[]).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_a_raw_xadd_without_a_job_id_runs(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::delivery::a_raw_xadd_without_a_job_id_runs_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_bad_messages_are_dead_lettered(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::delivery::bad_messages_are_dead_lettered_and_the_worker_goes_on_on(env).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_the_reconciler_recovers_a_job_that_lost_its_entry(pool: PgPool) {
    let (_cluster, env) = cluster_env(pool).await;
    crate::lifecycle::a_job_that_lost_its_worker_and_its_entry_is_recovered_on(env).await;
}

/// Every key of a deployment hashes to one slot: the scripts that touch the
/// stream, the ids hash and a dedup key together would fail with CROSSSLOT
/// otherwise. Checked on every key a real run leaves on this test's own
/// cluster (`KEYS *`: a key written without the tag shows up too).
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn on_a_cluster_every_key_of_a_deployment_is_in_one_slot(pool: PgPool) {
    let (cluster, env) = cluster_env(pool).await;
    insert_image(&env.pool, Some(&env.store), &Image::fresh("photos/k/0.jpg", 5).session("k")).await;
    env.enqueue(&["session", "k"]).await;
    env.enqueue(&["expired", "--dry-run"]).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut env.redis().await).await.unwrap();
    assert!(keys.len() >= 3, "stream(s), ids and a dedup key: {keys:?}");
    let port = cluster.live().next().unwrap();
    let mut slots = std::collections::BTreeSet::new();
    for key in &keys {
        slots.insert(node_query::<i64>(port, &["CLUSTER", "KEYSLOT", key]).await.unwrap());
    }
    assert_eq!(slots.len(), 1, "{keys:?} hash to {slots:?}");
    env.cleanup_keys().await;
}

/// The master that holds the queue's slot dies (SIGKILL) while a long job
/// runs and session jobs are being enqueued; its replica takes over. Every
/// job, enqueued before, during or after the failover, completes once, and
/// every image is deleted exactly once. Writes the dead master had not yet
/// replicated are recovered from Postgres by the reconciler. `/metrics`
/// answers from the new master.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_failover_of_the_queues_master_loses_no_job(pool: PgPool) {
    let (mut cluster, env) = cluster_env(pool).await;
    const SESSIONS: usize = 30;
    crate::crash::seed_slow_job(&env, crate::crash::SEEDED).await;
    for i in 0..SESSIONS {
        let image = Image::fresh(&format!("photos/f/{i}.jpg"), 7).session(&format!("f{i}"));
        insert_image(&env.pool, Some(&env.store), &image).await;
    }
    let knobs = [
        &crate::crash::SLOW[..],
        &[("JANITOR_LEASE", "3s"), ("JANITOR_RECONCILE_INTERVAL", "500ms"), ("JANITOR_RECONCILE_GRACE", "2s")],
    ]
    .concat();
    let workers = [env.worker(&[], &knobs), env.worker(&[], &knobs)];
    let bulk = env.enqueue(&["expired"]).await;
    let mut sessions = Vec::new();
    for i in 0..SESSIONS / 3 {
        sessions.push(env.enqueue(&["session", &format!("f{i}")]).await);
    }
    crate::harness::wait_for_job(&env.pool, bulk, "the long job is under way", Duration::from_secs(30), |r| r.1 > 0)
        .await;

    let stream = env.layout().stream(Lane::Bulk);
    let old = cluster.master_of(&stream).await.expect("a master serves the queue's slot");
    cluster.kill(old);
    // Enqueued while the slot has no master: the enqueue may fail (the row
    // then stays queued for the reconciler) or wait for the new master.
    for i in SESSIONS / 3..2 * SESSIONS / 3 {
        let (code, stdout, stderr) = env.janitor(&["enqueue", "session", &format!("f{i}"), "--json"]).await;
        match serde_json::from_str::<serde_json::Value>(&stdout) {
            Ok(reply) => sessions.push(reply["job_id"].as_str().unwrap().parse().unwrap()),
            Err(_) => eprintln!("enqueue during the failover failed (exit {code}): {stderr}"),
        }
    }
    let new = cluster.wait_for_failover(&stream, old).await;
    assert_ne!(new, old);
    for i in 2 * SESSIONS / 3..SESSIONS {
        sessions.push(env.enqueue(&["session", &format!("f{i}")]).await);
    }

    let row = env.finished(bulk, Duration::from_secs(120)).await;
    assert_eq!((row.0.as_str(), row.1), ("completed", crate::crash::SEEDED as i64), "{row:?}");
    for job in &sessions {
        let row = env.finished(*job, Duration::from_secs(60)).await;
        assert_eq!((row.0.as_str(), row.1), ("completed", 1), "{job}: {row:?}");
    }
    // A session whose enqueue failed during the failover is cleaned by its
    // next logout; every session that was enqueued is clean.
    assert_eq!(count_images(&env.pool).await, (SESSIONS - sessions.len()) as i64);
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM job_results WHERE status NOT IN ('completed')")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(unfinished, 0, "every job row completed");

    let metrics = metrics_on(&env).await;
    assert!(metrics.contains("janitor_queue_depth{lane=\"bulk\"}"), "{metrics}");
    assert!(metrics.contains("janitor_dead_letters{lane=\"session\"} 0"), "{metrics}");

    for worker in workers {
        worker.signal("TERM").await;
        assert_eq!(worker.exit_code(Duration::from_secs(30)).await, Some(0));
    }
    drop(cluster);
}

/// `janitor serve` on the cluster; returns the body of `GET /metrics` once
/// it answers with the queue's gauges.
async fn metrics_on(env: &Env) -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let server = env.spawn(&["serve", "--listen", &listen, "--allow-unauthenticated"], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(reply) = get(&listen, "/metrics").await {
            if reply.starts_with("HTTP/1.1 200") && reply.contains("janitor_queue_depth") {
                break reply;
            }
        }
        assert!(std::time::Instant::now() < deadline, "/metrics did not answer with the queue's gauges");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.signal("TERM").await;
    body
}

/// A plain HTTP/1.1 GET; the whole reply, or `None` if the server is not up.
async fn get(address: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    Some(reply)
}
