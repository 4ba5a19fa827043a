//! The fetch loop: rescue abandoned entries, read new ones, decode them into tasks.
//!
//! A [`Fetcher`] is moved into one fetch future at a time and handed back when
//! it resolves, so the backend never needs a lock around the reader connection.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use apalis_core::task::{builder::TaskBuilder, task_id::TaskId, Task};
use redis::{
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadOptions,
        StreamReadReply,
    },
    AsyncCommands, RedisResult,
};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::connection::RedisConnection;

use super::{
    backoff::Backoff,
    consumer::Consumer,
    queue::StreamQueue,
    scripts::{self, DeadLetterArgs},
    wire::{self, Delivery},
};

/// State carried between fetches of one backend.
pub(crate) struct Fetcher {
    queue: StreamQueue,
    consumer: Arc<Consumer>,
    /// Dedicated connection for `XREADGROUP … BLOCK`; created on first use.
    reader: Option<RedisConnection>,
    /// When the next `XAUTOCLAIM` pass is due.
    next_rescue: Instant,
    /// `XAUTOCLAIM` scan cursor; `0-0` starts a new pass over the pending list.
    rescue_cursor: String,
    /// When to look next for consumers that died (see [`Fetcher::forget_dead`]).
    next_forget: Instant,
    backoff: Backoff,
}

/// How often a consumer looks for dead ones to remove from the group.
const FORGET_INTERVAL: Duration = Duration::from_secs(10);

impl Fetcher {
    pub(crate) fn new(queue: StreamQueue, consumer: Arc<Consumer>) -> Self {
        Self {
            queue,
            consumer,
            reader: None,
            next_rescue: Instant::now(),
            rescue_cursor: "0-0".to_owned(),
            next_forget: Instant::now() + FORGET_INTERVAL,
            backoff: Backoff::new(),
        }
    }

    /// Returns at least one task, or none once the consumer is closing.
    ///
    /// Never fails: transient errors are logged and retried with backoff,
    /// because an error from `poll_next` would end the apalis worker.
    pub(crate) async fn next_batch<Args: DeserializeOwned>(mut self, want: usize) -> (Self, Vec<Task<Args>>) {
        while !self.consumer.is_closing() {
            match self.fetch_once(want).await {
                Ok(tasks) => {
                    self.backoff.reset();
                    if !tasks.is_empty() {
                        return (self, tasks);
                    }
                }
                Err(e) => {
                    let delay = self.backoff.step();
                    warn!(error = %e, retry_in = ?delay, "fetch failed; retrying");
                    if e.code() == Some("NOGROUP") {
                        // Someone deleted the stream or group; recreate it.
                        if let Err(e) = self.queue.ensure_group().await {
                            warn!(error = %e, "could not recreate consumer group");
                        }
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        (self, Vec::new())
    }

    /// One rescue-or-read round.
    async fn fetch_once<Args: DeserializeOwned>(&mut self, want: usize) -> RedisResult<Vec<Task<Args>>> {
        if Instant::now() >= self.next_rescue {
            let rescued = self.rescue(want).await?;
            if !rescued.is_empty() {
                return Ok(rescued);
            }
        }
        // Never block past the next rescue pass, so rescue latency stays near
        // `rescue_interval` even on an idle queue.
        let until_rescue = self.next_rescue.saturating_duration_since(Instant::now());
        let block = self.queue.config().block.min(until_rescue);
        self.read_new(want, block).await
    }

    /// `XREADGROUP GROUP <group> <me> COUNT <want> BLOCK <ms> STREAMS <stream> >`.
    async fn read_new<Args: DeserializeOwned>(&mut self, want: usize, block: Duration) -> RedisResult<Vec<Task<Args>>> {
        let config = self.queue.config();
        let mut options = StreamReadOptions::default().group(&config.group, &self.consumer.name).count(want);
        // `BLOCK 0` would wait forever; below 1 ms read without blocking.
        let block_ms = usize::try_from(block.as_millis()).unwrap_or(usize::MAX);
        if block_ms > 0 {
            options = options.block(block_ms);
        }
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self.reader.insert(self.queue.reader_connection()?),
        };
        let reply: StreamReadReply = reader.xread_options(&[&self.queue.keys().stream], &[">"], &options).await?;
        let entries: Vec<(StreamId, u64)> =
            reply.keys.into_iter().flat_map(|key| key.ids).map(|entry| (entry, 1)).collect();
        Ok(self.to_tasks(entries).await)
    }

    /// Claims up to `want` entries idle longer than `min_idle`, then reads their
    /// delivery counts with `XPENDING` (Redis 7.0's `XAUTOCLAIM` omits them).
    async fn rescue<Args: DeserializeOwned>(&mut self, want: usize) -> RedisResult<Vec<Task<Args>>> {
        let config = self.queue.config();
        let keys = self.queue.keys();
        let mut conn = self.queue.connection();
        let min_idle_ms = u64::try_from(config.min_idle.as_millis()).unwrap_or(u64::MAX);
        let reply: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &keys.stream,
                &config.group,
                &self.consumer.name,
                min_idle_ms,
                &self.rescue_cursor,
                StreamAutoClaimOptions::default().count(want),
            )
            .await?;
        let pass_done = reply.next_stream_id == "0-0";
        self.rescue_cursor = reply.next_stream_id;
        if pass_done && Instant::now() >= self.next_forget {
            self.next_forget = Instant::now() + FORGET_INTERVAL;
            if let Err(e) = self.forget_dead(&mut conn).await {
                warn!(error = %e, "could not look for dead consumers");
            }
        }
        // A full batch or an unfinished scan means more may be waiting: look again next round.
        self.next_rescue = if pass_done && reply.claimed.len() < want {
            Instant::now() + config.rescue_interval
        } else {
            Instant::now()
        };
        if !reply.deleted_ids.is_empty() {
            debug!(count = reply.deleted_ids.len(), "dropped pending entries deleted from the stream");
        }
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        let counts = self.delivery_counts(&mut conn, &reply.claimed).await?;
        let mut entries = Vec::with_capacity(reply.claimed.len());
        for entry in reply.claimed {
            // Missing from our pending list: another consumer took it meanwhile.
            if let Some(count) = counts.get(&entry.id).copied() {
                entries.push((entry, count));
            }
        }
        info!(consumer = %self.consumer.name, rescued = entries.len(), "claimed entries whose lease expired or retry delay passed");
        Ok(self.to_tasks(entries).await)
    }

    /// Removes from the group the consumers that died (`kill -9`): their
    /// entries have been rescued (none pending) and they have been silent for
    /// twice the lease, and at least ten seconds. A live consumer polls every
    /// few seconds when it has a free slot, and owns its running entries when
    /// it has none, so it is never removed (and if it were, its next read
    /// would add it back: it owned nothing); the script checks the pending
    /// list again atomically before it deletes. So the group does not grow
    /// with every crash.
    async fn forget_dead(&self, conn: &mut RedisConnection) -> RedisResult<()> {
        let keys = self.queue.keys();
        let config = self.queue.config();
        let silent = (config.min_idle * 2).max(Duration::from_secs(10));
        let reply: redis::streams::StreamInfoConsumersReply = conn.xinfo_consumers(&keys.stream, &config.group).await?;
        for consumer in reply.consumers {
            let dead = consumer.name != self.consumer.name
                && consumer.pending == 0
                && Duration::from_millis(consumer.idle as u64) > silent;
            if dead && scripts::delete_idle_consumer(conn, keys, &config.group, &consumer.name).await? {
                info!(consumer = %consumer.name, "removed a dead consumer from the group");
            }
        }
        Ok(())
    }

    /// Delivery counts of this consumer's pending entries within the claimed id range.
    async fn delivery_counts(
        &self,
        conn: &mut RedisConnection,
        claimed: &[StreamId],
    ) -> RedisResult<HashMap<String, u64>> {
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(HashMap::new());
        };
        // Our own running entries can fall inside the range, hence the larger count.
        let limit = claimed.len() + self.consumer.running() + 16;
        let reply: StreamPendingCountReply = conn
            .xpending_consumer_count(
                &self.queue.keys().stream,
                &self.queue.config().group,
                &first.id,
                &last.id,
                limit,
                &self.consumer.name,
            )
            .await?;
        Ok(reply.ids.into_iter().map(|p| (p.id, p.times_delivered as u64)).collect())
    }

    /// Turns entries into tasks; dead-letters undecodable and exhausted ones.
    async fn to_tasks<Args: DeserializeOwned>(&self, entries: Vec<(StreamId, u64)>) -> Vec<Task<Args>> {
        let max_attempts = u64::from(self.queue.config().max_attempts);
        let mut tasks = Vec::with_capacity(entries.len());
        for (entry, delivery_count) in entries {
            if delivery_count > max_attempts {
                let reason = format!(
                    "abandoned: delivered {delivery_count} times without completing (max_attempts {max_attempts})"
                );
                self.dead_letter(&entry.id, &reason, delivery_count - 1).await;
                continue;
            }
            match wire::decode::<Args>(&entry) {
                Ok(args) => tasks.push(build_task(args, entry.id, delivery_count, max_attempts)),
                Err(reason) => self.dead_letter(&entry.id, &reason, delivery_count).await,
            }
        }
        tasks
    }

    /// Best effort: on failure the entry stays pending and is retried after `min_idle`.
    async fn dead_letter(&self, entry_id: &str, reason: &str, attempts: u64) {
        let config = self.queue.config();
        let args =
            DeadLetterArgs { entry_id, reason, attempts, delete: config.delete_on_ack, max_len: config.dead_max_len };
        let mut conn = self.queue.connection();
        let result = scripts::dead_letter(&mut conn, self.queue.keys(), &config.group, &self.consumer.name, args).await;
        match result {
            Ok(_) => warn!(entry_id, reason, "moved entry {entry_id} to the dead-letter stream"),
            Err(e) => {
                warn!(entry_id, error = %e, "could not dead-letter entry {entry_id}; it stays pending")
            }
        }
    }
}

/// Builds the apalis task for one stream entry.
///
/// The recorded attempt is `delivery_count - 1` because apalis's lifecycle
/// layer adds one when the task starts, so handlers see the 1-based delivery count.
fn build_task<Args>(args: Args, entry_id: String, delivery_count: u64, max_attempts: u64) -> Task<Args> {
    let previous = usize::try_from(delivery_count.saturating_sub(1)).unwrap_or(usize::MAX);
    TaskBuilder::new(args)
        .task_id(TaskId::from_string(entry_id.clone()))
        .attempt(previous)
        .max_attempts(usize::try_from(max_attempts).unwrap_or(usize::MAX))
        .data(Delivery { entry_id, delivery_count })
        .build()
}
