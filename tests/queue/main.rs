//! The queue end to end: real `janitor worker` processes, real Redis, real
//! Postgres. Each test has its own database, storage root and Redis key
//! prefix (or its own `redis-server` when it must restart Redis).

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod cluster;
mod crash;
mod delivery;
mod health;
mod lifecycle;
mod recovery;
mod signals;
mod smoke;
