use std::process::ExitCode;

use clap::Parser;
use janitor::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    // The config file's settings become defaults for the flags, so it is read
    // before the command line is parsed.
    let args: Vec<String> = std::env::args().collect();
    if let Err(err) = janitor::config::apply(janitor::config::path_from(&args).as_deref()) {
        eprintln!("error: {err:#}");
        return ExitCode::from(janitor::commands::exit::USAGE);
    }
    let cli = Cli::parse();
    janitor::telemetry::init(&cli.settings.log_format, janitor::telemetry::DEFAULT_FILTER);
    match janitor::commands::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(janitor::commands::exit::FAILED)
        }
    }
}
