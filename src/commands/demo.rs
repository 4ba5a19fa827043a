//! `janitor demo`: a first run that shows something. It seeds a small store
//! in a database and folder of its own (expired uploads, some used by active
//! tasks, a session, templates, old results, orphan files), then shows
//! `stats`, a dry run of `all`, the real run and `stats` again, and says
//! where the store is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use janitor_workers::{CleanupJob, DaysOld, JobSpec};
use sqlx::migrate::MigrateDatabase as _;

use super::{exit, run};
use crate::settings::{redact, Settings};

/// The file that marks a folder as a demo store, so that a second demo may
/// empty it and nothing else is ever emptied.
const MARKER: &str = ".janitor-demo";

/// The orphan guard of the demo's sweep (the default is 0.2).
const DEMO_ORPHAN_RATIO: f64 = 0.5;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo's storage folder (emptied and seeded again on each demo;
    /// an existing folder that is not a demo store is refused).
    #[arg(long, default_value = "janitor-demo")]
    pub dir: PathBuf,
    /// The demo's database, on the server of DATABASE_URL (dropped and
    /// created again on each demo).
    #[arg(long, default_value = "janitor_demo")]
    pub database: String,
    /// Images to seed (plus 5% orphan files).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(20..=100_000))]
    pub images: u32,
}

pub async fn demo(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        eprintln!("error: --database must be letters, digits and underscores");
        return Ok(ExitCode::from(exit::USAGE));
    }
    if let Err(err) = fresh_folder(&args.dir) {
        eprintln!("error: {err:#}");
        return Ok(ExitCode::from(exit::USAGE));
    }
    let mut url = url::Url::parse(&settings.database_url).context("DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{}", args.database));
    let url = url.to_string();
    if sqlx::Postgres::database_exists(&url).await.with_context(|| format!("cannot reach {}", redact(&url)))? {
        sqlx::Postgres::force_drop_database(&url).await.context("cannot drop the previous demo database")?;
    }
    sqlx::Postgres::create_database(&url).await.context("cannot create the demo database")?;
    // The demo's files are seconds old: no grace period, or the orphans
    // would wait an hour. And once the expired uploads are gone, its orphans
    // are about a quarter of the files left, above the 20% that makes a real
    // sweep refuse (a sign of a wrong root or database).
    let demo = Settings {
        database_url: url.clone(),
        storage_root: args.dir.clone(),
        min_grace: Duration::ZERO,
        max_orphan_ratio: DEMO_ORPHAN_RATIO,
        ..settings.clone()
    };
    let pool = demo.pool().await?;
    janitor_workers::MIGRATOR.run(&pool).await.context("applying migrations failed")?;
    let n = args.images as usize;
    crate::seed::seed(&pool, &args.dir, n, 2).await?;
    let (expired, in_use) = crate::seed::expected(n);
    println!(
        "Seeded a demo store of {n} images and {} files:\n  {} expired temporary uploads, {in_use} of them used by \
         pending or processing tasks\n  {} uploads of live sessions, {} templates\n  {} results of tasks finished \
         40 days ago\n  {} files no row refers to\n",
        n + n / 20,
        expired + in_use,
        n * 8 / 100,
        n * 6 / 100,
        n - n * 94 / 100,
        n / 20
    );
    println!("== janitor stats");
    let stats = janitor_workers::jobs::stats::collect(&pool).await?;
    print!("{}", crate::output::stats(&stats));
    let engine = demo.engine().await?;
    let all = CleanupJob::All { days_old: DaysOld::default(), min_age_secs: 0 };
    println!(
        "\n== janitor run all --min-age 0s --max-orphan-ratio {DEMO_ORPHAN_RATIO} --dry-run   (nothing is changed)"
    );
    run::execute(&engine, &JobSpec::new(all.clone(), true), None, false).await?;
    println!(
        "\n== janitor run all --min-age 0s --max-orphan-ratio {DEMO_ORPHAN_RATIO}   (orphans go to {}/.janitor-trash)",
        args.dir.display()
    );
    let code = run::execute(&engine, &JobSpec::new(all, false), None, false).await?;
    println!("\n== janitor stats");
    let stats = janitor_workers::jobs::stats::collect(&pool).await?;
    print!("{}", crate::output::stats(&stats));
    println!(
        "\nThe store is in {} and the database {}. The images in use, the sessions' uploads, the templates and \
         the task rows stayed. Try more against it:\n  DATABASE_URL='{}' JANITOR_STORAGE_ROOT='{}' janitor results\n\
         and `janitor restore <job id>` with the `all` job's id puts the orphans back.",
        args.dir.display(),
        args.database,
        redact(&url),
        args.dir.display()
    );
    Ok(code)
}

/// Empties a previous demo's folder, or creates it; refuses any other
/// existing folder.
fn fresh_folder(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        // Check: the marker says this is a demo store. No lock covers the
        // check and the removal: the folder is the operator's own, named on
        // the command line, and `remove_dir_all` removes a symlink itself,
        // never what it points to, so a swapped-in link cannot widen it.
        anyhow::ensure!(
            dir.join(MARKER).is_file(),
            "{} exists and is not a demo store (no {MARKER} in it); pick another --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "a janitor demo store; `janitor demo` empties it\n")?;
    Ok(())
}
