//! `janitor serve`: the admin HTTP API.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::exit;
use crate::cli::ServeArgs;
use crate::http::auth::Tokens;
use crate::http::failures::{self, AuthFailures};
use crate::http::limits::RateLimiter;
use crate::http::{self, AppState};
use crate::settings::Settings;

pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = match tokens(settings, &args) {
        Ok(tokens) => tokens,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    // The console shows the schedules the scheduler runs: the same file.
    let schedules = match crate::config::schedules(settings.config.as_deref()) {
        Ok(schedules) => schedules,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let limits = match RateLimiter::parse(&args.rate_limits) {
        Ok(limits) => Arc::new(limits),
        Err(err) => {
            eprintln!("error: JANITOR_RATE_LIMITS: {err:#}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    // Redis is connected on first use: the API starts, and `/metrics` and
    // `/readyz` answer, while Redis is down (enqueues fail until it is back).
    let producer = settings.lazy_producer().await?;
    let redis = settings.redis()?.connect_lazy(janitor_workers::Timeouts {
        connect: Some(std::time::Duration::from_secs(1)),
        response: Some(std::time::Duration::from_secs(5)),
        retries: None,
    })?;
    let failures = Arc::new(AuthFailures::new(limits.limit("auth_failure").unwrap_or(failures::DEFAULT_LIMIT)));
    let pool = producer.pool().clone();
    if !args.trusted_proxies.is_empty() {
        tracing::info!(trusted_proxies = %args.trusted_proxies, "X-Forwarded-For is believed from these proxies only");
    }
    let proxies = Arc::new(args.trusted_proxies.clone());
    let state = AppState {
        pool,
        producer,
        redis,
        tokens,
        limits,
        failures,
        proxies,
        min_grace: settings.min_grace,
        storage_root: Some(storage_root(settings)),
        schedules: Arc::new(schedules),
        reclaimable: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "admin API listening");
    http::serve(listener, state, crate::shutdown_signal()).await?;
    Ok(ExitCode::from(exit::OK))
}

/// The storage root restores act on. The API starts without it (most of
/// it needs no storage); a root it cannot open is said once here, and each
/// restore names it again.
fn storage_root(settings: &Settings) -> std::path::PathBuf {
    let root = settings.storage_root.clone();
    if let Err(err) = janitor_workers::storage::Storage::open(&root) {
        tracing::warn!(error = %format!("{err:#}"), "restores of quarantines will fail until JANITOR_STORAGE_ROOT names the workers' storage root");
    }
    root
}

/// The configured tokens; refuses to run without any unless explicitly
/// allowed on a loopback address.
fn tokens(settings: &Settings, args: &ServeArgs) -> anyhow::Result<Option<Arc<Tokens>>> {
    let mut all = match settings.config.as_deref() {
        Some(path) => crate::config::FileConfig::load(path)?.admin_token,
        None => Vec::new(),
    };
    if let Some(raw) = &args.admin_tokens {
        all.extend(Tokens::parse_env(raw)?);
    }
    if all.is_empty() {
        anyhow::ensure!(
            args.allow_unauthenticated,
            "no admin token is configured (JANITOR_ADMIN_TOKENS or [[admin_token]]); refusing to serve the admin API \
             without authentication (--allow-unauthenticated allows it on a loopback address only)"
        );
        anyhow::ensure!(
            args.listen.ip().is_loopback(),
            "--allow-unauthenticated is only allowed on a loopback address, not {}",
            args.listen
        );
        tracing::warn!("serving the admin API WITHOUT authentication on loopback");
        return Ok(None);
    }
    Ok(Some(Arc::new(Tokens::new(all)?)))
}
