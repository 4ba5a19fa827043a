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
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is: one server, or a cluster's seed nodes.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
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
        let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).collect();
        if seeds.is_empty() {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster seed node given")));
        }
        Ok(Self::Cluster(Box::new(ClusterClient::new(seeds)?)))
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
            Self::Cluster(client) => {
                Link::Cluster(client.get_async_connection_with_config(cluster_config(timeouts)).await?)
            }
        };
        Ok(RedisConnection(link))
    }

    /// Connects on first use: for a process that must start while Redis is down.
    pub fn connect_lazy(&self, timeouts: Timeouts) -> RedisResult<RedisConnection> {
        let link = match self {
            Self::Single(client) => {
                Link::Single(ConnectionManager::new_lazy_with_config(client.clone(), manager_config(timeouts))?)
            }
            Self::Cluster(client) => {
                Link::Cluster(client.get_pending_async_connection_with_config(cluster_config(timeouts)))
            }
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

fn cluster_config(timeouts: Timeouts) -> ClusterConfig {
    let mut config = ClusterConfig::new();
    if let Some(connect) = timeouts.connect {
        config = config.set_connection_timeout(connect);
    }
    if let Some(response) = timeouts.response {
        config = config.set_response_timeout(response);
    }
    config
}

/// A connection to one server or to a cluster. Cheap to clone: clones share
/// the underlying multiplexed connections.
#[derive(Clone)]
pub struct RedisConnection(Link);

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
