//! The config file: every setting a flag with an environment variable takes
//! is a key of the file under the flag's long name, and reaches the flag.

use std::collections::BTreeMap;

use clap::CommandFactory as _;

/// Every command path (`["worker"]`, `["run", "orphaned"]`, …).
fn command_paths(command: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
        let mut path = path.clone();
        path.push(sub.get_name().to_owned());
        out.push(path.clone());
        command_paths(sub, path, out);
    }
}

/// Environment variables whose values `--help` never shows (secrets).
fn hidden(command: &clap::Command, out: &mut Vec<String>) {
    for arg in command.get_arguments().filter(|arg| arg.is_hide_env_values_set()) {
        if let Some(env) = arg.get_env() {
            out.push(env.to_string_lossy().into_owned());
        }
    }
    command.get_subcommands().for_each(|sub| hidden(sub, out));
}

#[tokio::test]
async fn every_setting_round_trips_from_the_file_to_its_flag() {
    let settings: BTreeMap<String, &str> = janitor::config::settings();
    assert!(settings.len() >= 25, "{settings:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("janitor.toml");
    let toml: String = settings.keys().map(|key| format!("{key} = \"file-{key}\"\n")).collect();
    std::fs::write(&file, toml).unwrap();

    let cli = janitor::cli::Cli::command();
    // `janitor --help` lists the global settings; each command's its own.
    let mut paths = vec![Vec::new()];
    command_paths(&cli, Vec::new(), &mut paths);
    let mut secret = Vec::new();
    hidden(&cli, &mut secret);
    let mut help = String::new();
    for path in &paths {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_janitor"));
        settings.values().for_each(|env| {
            command.env_remove(env);
        });
        let output = command.arg("--config").arg(&file).args(path).arg("--help").output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "janitor {path:?} --help with the file: {stderr}");
        help.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    for (key, env) in &settings {
        if secret.iter().any(|s| s == env) {
            continue;
        }
        let shown = format!("[env: {env}=file-{key}]");
        assert!(help.contains(&shown), "the file's {key} does not reach {env}: no {shown} in any --help");
    }
}

#[tokio::test]
async fn a_bad_value_or_an_unknown_key_in_the_file_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("batch_size = 0\n", "--batch-size"),
        ("max_orphan_ratio = 7\n", "--max-orphan-ratio"),
        ("batchsize = 5\n", "unknown key \"batchsize\""),
    ] {
        let file = dir.path().join("janitor.toml");
        std::fs::write(&file, text).unwrap();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_janitor"))
            .env_remove("JANITOR_BATCH_SIZE")
            .env_remove("JANITOR_MAX_ORPHAN_RATIO")
            // Nothing may be reached: the database URL points nowhere.
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .arg("--config")
            .arg(&file)
            .args(["run", "expired", "--dry-run"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}
