//! One Redis server or a Redis Cluster, behind one connection type.
//!
//! [`RedisTarget`] is where Redis is: a single server's URL, or (with
//! `JANITOR_REDIS_CLUSTER=true`) a comma-separated list of a cluster's seed
//! nodes, for the `redis` crate's cluster client. [`RedisConnection`] is a
//! connection to either: an auto-reconnecting [`ConnectionManager`], or a
//! [`ClusterConnection`], which follows `MOVED`/`ASK` redirections and
//! refreshes its slot map after a failover. Both implement
//! [`ConnectionLike`], so every command, pipeline and script runs on either.
//!
//! Every key janitor writes carries its deployment's hash tag (see
//! [`crate::layout`]), so every script and `MULTI` touches one slot, which
//! is what a cluster requires.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is: one server, or a cluster's seed nodes.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    /// The seed nodes; a client is built per connection, with that
    /// connection's timeouts (a cluster client fixes them when built).
    Cluster(Vec<redis::ConnectionInfo>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither client's Debug is shown: it would print a password.
        f.write_str(if self.is_cluster() { "RedisTarget::Cluster" } else { "RedisTarget::Single" })
    }
}

impl From<redis::Client> for RedisTarget {
    fn from(client: redis::Client) -> Self {
        Self::Single(client)
    }
}

/// How a connection waits: for the connection, for each reply, and how
/// often a single server's connection is retried. `None` keeps the `redis`
/// crate's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
    pub retries: Option<usize>,
}

impl Timeouts {
    pub fn response(response: Duration) -> Self {
        Self { response: Some(response), ..Self::default() }
    }
}

impl RedisTarget {
    /// `url` is one Redis URL; with `cluster`, a comma-separated list of seed
    /// nodes' URLs (one reachable node is enough to learn the others).
    pub fn open(url: &str, cluster: bool) -> RedisResult<Self> {
        if !cluster {
            return Ok(Self::Single(redis::Client::open(url)?));
        }
        let seeds: Vec<redis::ConnectionInfo> = url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(redis::IntoConnectionInfo::into_connection_info)
            .collect::<RedisResult<_>>()?;
        if seeds.is_empty() {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster seed node given")));
        }
        // Checks the seeds agree on credentials, as the client requires.
        ClusterClientBuilder::new(seeds.clone()).build()?;
        Ok(Self::Cluster(seeds))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Connects now: fails if Redis cannot be reached.
    pub async fn connect(&self, timeouts: Timeouts) -> RedisResult<RedisConnection> {
        let link = match self {
            Self::Single(client) => {
                Link::Single(ConnectionManager::new_with_config(client.clone(), manager_config(timeouts)).await?)
            }
            Self::Cluster(seeds) => Link::Cluster(
                cluster_client(seeds, timeouts)?.get_async_connection_with_config(cluster_config(timeouts)).await?,
            ),
        };
        Ok(RedisConnection(link))
    }

    /// Connects on first use: for a process that must start while Redis is down.
    pub fn connect_lazy(&self, timeouts: Timeouts) -> RedisResult<RedisConnection> {
        let link = match self {
            Self::Single(client) => {
                Link::Single(ConnectionManager::new_lazy_with_config(client.clone(), manager_config(timeouts))?)
            }
            Self::Cluster(seeds) => Link::Cluster(
                cluster_client(seeds, timeouts)?.get_pending_async_connection_with_config(cluster_config(timeouts)),
            ),
        };
        Ok(RedisConnection(link))
    }
}

/// What is not set keeps the `redis` crate's default.
fn manager_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    let mut config = ConnectionManagerConfig::new();
    if let Some(connect) = timeouts.connect {
        config = config.set_connection_timeout(Some(connect));
    }
    if let Some(response) = timeouts.response {
        config = config.set_response_timeout(Some(response));
    }
    if let Some(retries) = timeouts.retries {
        config = config.set_number_of_retries(retries);
    }
    config
}

/// A cluster client with bounded waits. The crate's defaults retry a
/// command 16 times with waits of up to 11 minutes and set no overall
/// bound, so a cut-off master would hang every caller; here a command gets
/// a few retries 0.1 to 2 s apart (enough to ride out a failover's seconds
/// without a master) and gives up after its response timeout plus 10 s.
/// Unset timeouts are those of a single server's connection (1 s to
/// connect, 500 ms per reply).
fn cluster_client(seeds: &[redis::ConnectionInfo], timeouts: Timeouts) -> RedisResult<redis::cluster::ClusterClient> {
    let (connect, response) = cluster_timeouts(timeouts);
    ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(connect)
        .response_timeout(response)
        .overall_response_timeout(Some(response + CLUSTER_RETRY_BUDGET))
        .retries(u32::try_from(timeouts.retries.unwrap_or(CLUSTER_RETRIES)).unwrap_or(u32::MAX))
        .min_retry_wait(100)
        .max_retry_wait(2000)
        .build()
}

/// The per-connection config: the same timeouts again, since applying a
/// config replaces the client's response timeout with the config's.
fn cluster_config(timeouts: Timeouts) -> redis::cluster::ClusterConfig {
    let (connect, response) = cluster_timeouts(timeouts);
    redis::cluster::ClusterConfig::new().set_connection_timeout(connect).set_response_timeout(response)
}

fn cluster_timeouts(timeouts: Timeouts) -> (Duration, Duration) {
    (timeouts.connect.unwrap_or(Duration::from_secs(1)), timeouts.response.unwrap_or(Duration::from_millis(500)))
}

/// Retries of a cluster command (redirections, a failover, a reconnect).
const CLUSTER_RETRIES: usize = 6;
/// What retries may add to a cluster command's response timeout.
const CLUSTER_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// A connection to one server or to a cluster. Cheap to clone: clones share
/// the underlying multiplexed connections.
#[derive(Clone)]
pub struct RedisConnection(Link);

impl RedisConnection {
    /// Whether this is a connection to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Link::Cluster(_))
    }

    /// Whether a command may be sent more than once: a cluster connection
    /// retries a command that timed out, so a later "connection refused" does
    /// not prove that an earlier attempt did not land.
    pub fn resends(&self) -> bool {
        self.is_cluster()
    }
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_is_a_list_of_seeds() {
        assert!(RedisTarget::open("redis://127.0.0.1:7000, redis://127.0.0.1:7001", true).unwrap().is_cluster());
        assert!(!RedisTarget::open("redis://127.0.0.1:6379", false).unwrap().is_cluster());
        assert!(RedisTarget::open(" , ", true).is_err());
        assert!(RedisTarget::open("redis://127.0.0.1:7000,not a url", true).is_err());
    }
}
