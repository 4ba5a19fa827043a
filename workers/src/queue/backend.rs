//! [`RedisStreamBackend`]: the apalis `Backend` over a Redis stream consumer group.
//!
//! # How the worker drives it
//!
//! apalis polls, in order, `poll_ready` (always ready here), the service's
//! `poll_ready` (the `.concurrency(n)` limit), then `poll_next`. So `poll_next`
//! runs only when a slot is free, and the backend fetches at most the number of
//! free slots: entries are never buffered where a crash or shutdown could strand
//! them for a whole lease.
//!
//! On shutdown apalis waits for running tasks, then calls `poll_close`, which
//! finishes any fetch in flight, hands unstarted entries back, and removes the
//! consumer from the group.

use std::{
    collections::VecDeque,
    fmt,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{finalize::Ephemeral, Backend, BackendConfig},
    task::Task,
    worker::{context::WorkerContext, ext::ack::AcknowledgeLayer},
};
use futures::{future::BoxFuture, FutureExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{
    ack::StreamAcker,
    config::{QueueConfig, HANDOFF_CONSUMER, HANDOFF_IDLE},
    consumer::{spawn_heartbeat, Consumer},
    error::QueueError,
    fetch::Fetcher,
    queue::StreamQueue,
    scripts::{self, Release},
    wire::Delivery,
};

impl StreamQueue {
    /// A backend for one apalis worker. Call it inside the `Monitor::register`
    /// factory so a restarted worker gets a fresh consumer name.
    ///
    /// `concurrency` must equal the worker's `.concurrency(n)`: the backend
    /// fetches at most that many entries minus those still running, so entries
    /// are never buffered without a free slot to run them.
    pub fn backend<Args>(&self, concurrency: usize) -> RedisStreamBackend<Args> {
        RedisStreamBackend::new(self.clone(), concurrency.max(1), PhantomData)
    }
}

/// Upper bound on the shutdown hand-back, so a dead Redis cannot hang shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type FetchFuture<Args> = BoxFuture<'static, (Fetcher, Vec<Task<Args>>)>;

/// An apalis backend reading one Redis stream as one consumer of its group.
///
/// Build it with [`StreamQueue::backend`] inside the worker factory.
pub struct RedisStreamBackend<Args> {
    queue: StreamQueue,
    consumer: Arc<Consumer>,
    /// Must match the worker's `.concurrency(n)`.
    concurrency: usize,
    /// Fetched entries not yet handed to the worker (at most the free slots).
    buffer: VecDeque<Task<Args>>,
    /// Idle fetcher, or `None` while a fetch future owns it.
    fetcher: Option<Fetcher>,
    fetching: Option<FetchFuture<Args>>,
    heartbeat: Option<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    closed: bool,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> RedisStreamBackend<Args> {
    pub(crate) fn new(queue: StreamQueue, concurrency: usize, _args: PhantomData<Args>) -> Self {
        let consumer = Arc::new(Consumer::new());
        let fetcher = Fetcher::new(queue.clone(), consumer.clone());
        Self {
            queue,
            consumer,
            concurrency,
            buffer: VecDeque::new(),
            fetcher: Some(fetcher),
            fetching: None,
            heartbeat: None,
            closing: None,
            closed: false,
            _args: PhantomData,
        }
    }

    /// This backend's consumer name in the group (`host-pid-random`).
    pub fn consumer_name(&self) -> &str {
        &self.consumer.name
    }
}

impl<Args> fmt::Debug for RedisStreamBackend<Args> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamBackend")
            .field("consumer", &self.consumer.name)
            .field("concurrency", &self.concurrency)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<Args> Drop for RedisStreamBackend<Args> {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}

impl<Args> Backend for RedisStreamBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        // Start the heartbeat on first use: construction may happen outside a runtime.
        if self.heartbeat.is_none() && !self.closed {
            self.heartbeat = Some(spawn_heartbeat(self.queue.clone(), self.consumer.clone()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                if let Some(delivery) = task.ctx().data().get::<Delivery>() {
                    self.consumer.start(&delivery.entry_id);
                }
                return Poll::Ready(Some(Ok(task)));
            }
            if self.consumer.is_closing() {
                // Closing: the fetch loop would only return empty batches.
                return Poll::Ready(None);
            }
            if !self.poll_fetch(cx).is_ready() {
                return Poll::Pending;
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        // The fetch loop sees this flag after its current read (at most `block`)
        // and returns whatever that read delivered, so nothing is left half-read.
        self.consumer.set_closing();
        if self.fetching.is_some() && self.poll_fetch(cx).is_pending() {
            return Poll::Pending;
        }
        let closing = self.closing.get_or_insert_with(|| {
            let ids = self
                .buffer
                .drain(..)
                .filter_map(|t| t.ctx().data().get::<Delivery>().map(|d| d.entry_id.clone()))
                .collect();
            close(self.queue.clone(), self.consumer.clone(), ids).boxed()
        });
        if closing.poll_unpin(cx).is_pending() {
            return Poll::Pending;
        }
        self.closing = None;
        self.closed = true;
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        Poll::Ready(Ok(()))
    }
}

impl<Args> RedisStreamBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    /// Starts a fetch if none is running and polls it; on completion the
    /// results are in `buffer`. Pending means the waker is registered.
    fn poll_fetch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fetching.is_none() {
            let Some(fetcher) = self.fetcher.take() else {
                return Poll::Pending; // Unreachable: the fetcher is only away while fetching.
            };
            // Free slots; at least one, since apalis calls us only with a slot free.
            let want = self.concurrency.saturating_sub(self.consumer.running()).max(1);
            self.fetching = Some(fetcher.next_batch::<Args>(want).boxed());
        }
        let Some(fetching) = self.fetching.as_mut() else {
            return Poll::Pending;
        };
        let (fetcher, tasks) = futures::ready!(fetching.poll_unpin(cx));
        self.fetching = None;
        self.fetcher = Some(fetcher);
        self.buffer.extend(tasks);
        Poll::Ready(())
    }
}

/// Hands unstarted entries back and leaves the group if nothing is left pending.
///
/// Handed-back entries move to the [`HANDOFF_CONSUMER`] with a large idle time
/// and their delivery count reduced by one (they never ran), so any live
/// consumer rescues them on its next `XAUTOCLAIM` pass instead of after
/// `min_idle`. Moving them off this consumer lets it be deleted: deleting a
/// consumer that still owns entries would drop those entries for good.
async fn close(queue: StreamQueue, consumer: Arc<Consumer>, ids: Vec<String>) {
    let work = async {
        let mut conn = queue.connection();
        let group = &queue.config().group;
        if !ids.is_empty() {
            let how = Release { to: HANDOFF_CONSUMER, idle: HANDOFF_IDLE, count_delta: -1 };
            match scripts::release(&mut conn, queue.keys(), group, &consumer.name, how, &ids).await {
                Ok(moved) => info!(moved, "handed back unstarted entries"),
                Err(e) => {
                    warn!(error = %e, "could not hand back entries; they will be rescued after min_idle")
                }
            }
        }
        match scripts::delete_idle_consumer(&mut conn, queue.keys(), group, &consumer.name).await {
            Ok(true) => info!(consumer = %consumer.name, "left the consumer group"),
            Ok(false) => {
                warn!(consumer = %consumer.name, "consumer still owns entries; leaving it for rescue")
            }
            Err(e) => warn!(error = %e, "could not remove consumer from the group"),
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, work).await.is_err() {
        warn!(consumer = %consumer.name, "shutdown hand-back timed out");
    }
}

impl<Args> BackendConfig for RedisStreamBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = AcknowledgeLayer<StreamAcker>;

    fn config(&self) -> &Self::Config {
        self.queue.config()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        AcknowledgeLayer::new(StreamAcker::new(self.queue.clone(), self.consumer.clone()))
    }
}
