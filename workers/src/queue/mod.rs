//! A Redis Streams job queue for apalis 1.0: the backend janitor's workers
//! pull from (apalis-redis 1.0 jams, ignores `max_attempts` and is slow to
//! rescue; see docs/ARCHITECTURE.md).
//!
//! # Layout
//!
//! - [`config`]: [`QueueConfig`] (lease, attempts, intervals) and the key layout.
//! - [`queue`]: [`StreamQueue`], the handle to enqueue jobs and build backends.
//! - [`backend`]: [`RedisStreamBackend`], the apalis `Backend` (fetch, close).
//! - [`ack`]: [`StreamAcker`], which settles each finished task (ack, retry, dead-letter).
//! - `fetch`: the fetch loop (`XAUTOCLAIM` rescue, `XREADGROUP` reads, decoding).
//! - `backoff`: capped exponential backoff for transient Redis errors.
//! - `consumer`: per-backend consumer state and the lease heartbeat.
//! - `scripts`: Lua scripts for the steps that must check ownership atomically.
//! - [`wire`]: the stream formats other languages rely on.
//!
//! # One job's path
//!
//! 1. A producer runs `XADD {prefix}:jobs * job <json>` ([`StreamQueue::enqueue`]).
//! 2. A backend with a free slot reads it with `XREADGROUP … BLOCK` on its own connection.
//! 3. The task carries `TaskId` = entry id and attempt = delivery count.
//! 4. While it runs, the heartbeat refreshes its lease (`XCLAIM … JUSTID` if still owned).
//! 5. On success the acker sends `XACK` + `XDEL`. On error it backdates the
//!    entry's idle time so a rescue retries it after `retry_delay`; after
//!    `max_attempts` (or on `AbortError`) it moves it to `{prefix}:dead`.
//! 6. If the worker dies, the entry's lease expires and another consumer's
//!    `XAUTOCLAIM` rescues it after `min_idle`.
//!
//! **Invariant:** a consumer never touches an entry it no longer owns, except
//! `XACK` of a job it finished: every other write checks ownership in Lua.
//!
//! Delivery is at-least-once: a job can run twice if a worker dies mid-job or
//! loses its lease, so handlers must be idempotent.

pub mod ack;
pub mod backend;
mod backoff;
pub mod config;
mod consumer;
pub mod error;
mod fetch;
#[allow(clippy::module_inception)]
pub mod queue;
pub(crate) mod scripts;
pub mod wire;

pub use ack::StreamAcker;
pub use backend::RedisStreamBackend;
pub use config::{has_hash_tag, hash_tagged, Keys, QueueConfig};
pub use error::{HandBack, QueueError, Relinquish};
pub use queue::StreamQueue;
pub use wire::{DeadLetter, Delivery};
