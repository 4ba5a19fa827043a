use std::process::ExitCode;

use clap::Parser;
use janitor::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    janitor::telemetry::init(&cli.settings.log_format);
    match janitor::commands::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(janitor::commands::exit::FAILED)
        }
    }
}
