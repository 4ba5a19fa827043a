//! Logging: one subscriber on stderr, text or JSON, filtered by `RUST_LOG`
//! (default: `info` for janitor, `warn` for the rest).

use tracing_subscriber::EnvFilter;

/// The service's default filter.
pub const DEFAULT_FILTER: &str = "warn,janitor=info,janitor_workers=info";

/// Installs the subscriber; `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: &str, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
