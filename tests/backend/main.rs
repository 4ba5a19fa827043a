//! The Redis Streams backend under apalis, against the real Redis
//! (`REDIS_URL`), with test jobs instead of cleanups.
//!
//! Each test uses its own key prefix and deletes only its own keys.

mod delivery;
mod failures;
mod shutdown;
mod support;
