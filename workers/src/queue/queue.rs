//! [`StreamQueue`]: the handle producers enqueue with and workers build backends from.

use std::sync::Arc;

use redis::{streams::StreamRangeReply, AsyncCommands};
use serde::Serialize;
use tracing::{debug, info};

use crate::connection::{RedisConnection, RedisTarget, Timeouts};

use super::{
    config::{Keys, QueueConfig},
    error::QueueError,
    wire::{self, DeadLetter, JOB_FIELD},
};

/// A Redis Streams job queue: one stream, one consumer group, one dead-letter stream.
///
/// Cheap to clone; clones share one auto-reconnecting command connection.
/// Blocking reads never use that connection: each backend opens its own, so
/// acknowledgements never queue behind a `BLOCK`.
#[derive(Clone)]
pub struct StreamQueue {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    keys: Keys,
    target: RedisTarget,
    /// Shared connection for enqueue, ack, heartbeat and rescue commands.
    commands: RedisConnection,
}

impl std::fmt::Debug for StreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQueue").field("keys", &self.inner.keys).finish_non_exhaustive()
    }
}

impl StreamQueue {
    /// Validates `config`, connects, and creates the consumer group if missing.
    pub async fn connect(target: impl Into<RedisTarget>, config: QueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let target = target.into();
        let commands = target.connect(Timeouts::response(config.command_timeout)).await?;
        let keys = config.keys();
        let queue = Self { inner: Arc::new(Inner { config, keys, target, commands }) };
        queue.ensure_group().await?;
        Ok(queue)
    }

    /// Creates the stream and consumer group if they do not exist.
    ///
    /// The group starts at id `0`, not `$`: jobs enqueued before the group
    /// existed (or after someone deleted it) are still delivered.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.connection();
        let created: redis::RedisResult<()> =
            conn.xgroup_create_mkstream(&self.inner.keys.stream, &self.inner.config.group, "0").await;
        match created {
            Ok(()) => info!(stream = %self.inner.keys.stream, "created consumer group"),
            Err(e) if e.code() == Some("BUSYGROUP") => debug!("consumer group already exists"),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Enqueues one job; returns its stream entry id (which becomes its `TaskId`).
    pub async fn enqueue<T: Serialize>(&self, job: &T) -> Result<String, QueueError> {
        let payload = wire::encode(job)?;
        self.enqueue_json(&payload).await
    }

    /// Enqueues an already-serialised JSON payload, exactly as another language would.
    pub async fn enqueue_json(&self, payload: &str) -> Result<String, QueueError> {
        let mut conn = self.connection();
        let id: String = conn.xadd(&self.inner.keys.stream, "*", &[(JOB_FIELD, payload)]).await?;
        Ok(id)
    }

    /// The settings this queue was built with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// The Redis keys this queue uses.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Number of entries in the group's pending list (delivered, not acknowledged).
    pub async fn pending_count(&self) -> Result<usize, QueueError> {
        let mut conn = self.connection();
        let reply: redis::streams::StreamPendingReply =
            conn.xpending(&self.inner.keys.stream, &self.inner.config.group).await?;
        Ok(reply.count())
    }

    /// Reads up to `count` dead letters, oldest first.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.connection();
        let reply: StreamRangeReply = conn.xrange_count(&self.inner.keys.dead, "-", "+", count).await?;
        Ok(reply.ids.iter().map(DeadLetter::from_entry).collect())
    }

    /// A clone of the shared command connection.
    pub(crate) fn connection(&self) -> RedisConnection {
        self.inner.commands.clone()
    }

    /// A new, dedicated connection for blocking reads, created lazily.
    ///
    /// Its response timeout is `block` plus the command timeout: redis-rs's
    /// default of 500 ms would abort every longer `BLOCK`, while no timeout at
    /// all would hang forever on a silently dropped connection.
    pub(crate) fn reader_connection(&self) -> redis::RedisResult<RedisConnection> {
        let timeout = self.inner.config.block + self.inner.config.command_timeout;
        self.inner.target.connect_lazy(Timeouts::response(timeout))
    }
}
