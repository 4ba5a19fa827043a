use std::process::ExitCode;

use janitor::cli::Cli;

fn main() -> ExitCode {
    // The config file's settings become defaults for the flags, so it is read
    // before the command line is parsed.
    let args: Vec<String> = std::env::args().collect();
    if let Err(err) = janitor::config::apply(janitor::config::path_from(&args).as_deref()) {
        eprintln!("error: {err:#}");
        return ExitCode::from(janitor::commands::exit::USAGE);
    }
    let cli = Cli::parse_args();
    // The runtime (and its threads) only now: the file's settings were
    // exported while the process had one thread.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(janitor::commands::exit::FAILED);
        }
    };
    janitor::telemetry::init(&cli.settings.log_format, janitor::telemetry::DEFAULT_FILTER);
    match runtime.block_on(janitor::commands::dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(janitor::commands::exit::FAILED)
        }
    }
}
