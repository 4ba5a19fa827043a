//! # janitor: the command line and service layers
//!
//! The cleanup itself lives in the `janitor-workers` crate; this crate turns
//! it into a program.
//!
//! ## Layout
//! - [`cli`]: the clap definitions; input is validated here, by the engine's
//!   own types.
//! - [`input`]: parsers of durations, session ids and other input, shared
//!   by the command line and the settings.
//! - [`settings`]: the typed `Settings` (flags or environment) and
//!   connections.
//! - [`config`]: the optional TOML config file (schedules and settings).
//! - [`retention`]: the retention settings a prune job carries.
//! - [`http`]: `janitor serve`, the admin HTTP API.
//! - [`commands`]: one function per subcommand, returning the exit code.
//! - [`output`]: human-readable renderings (`--json` bypasses them).
//! - [`telemetry`]: the tracing subscriber.

pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod input;
pub mod output;
pub mod retention;
pub mod seed;
pub mod settings;
pub mod telemetry;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
