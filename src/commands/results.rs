//! `janitor results`: recorded job outcomes.

use std::process::ExitCode;

use janitor_workers::report::result_json;
use janitor_workers::results::{self, ListFilter};

use super::exit;
use crate::cli::ResultsArgs;
use crate::output;
use crate::settings::Settings;

pub async fn show(settings: &Settings, args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let pool = settings.pool().await?;
    if let Some(job_id) = args.job_id {
        let Some(record) = results::get(&pool, job_id).await.map_err(super::schema_hint)? else {
            eprintln!("no job {job_id} is recorded");
            return Ok(ExitCode::from(exit::FAILED));
        };
        let result = record.result.clone().unwrap_or_else(|| result_json(&record));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            print!("{}", output::result(&result));
        }
        return Ok(ExitCode::from(exit::OK));
    }
    let filter = ListFilter {
        operation: args.operation,
        status: args.status,
        requested_by: None,
        before: None,
        limit: args.limit,
    };
    let records = results::list(&pool, &filter).await.map_err(super::schema_hint)?;
    let results: Vec<_> =
        records.iter().map(|record| record.result.clone().unwrap_or_else(|| result_json(record))).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", output::table(&results));
    }
    Ok(ExitCode::from(exit::OK))
}
